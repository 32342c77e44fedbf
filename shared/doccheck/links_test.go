package doccheck

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
)

// TestCodeLinks keeps every Markdown file's links into the code true
// (the rule is Problem's): code moves, and a link that points a few
// lines off sends the reader into the middle of something else.
func TestCodeLinks(t *testing.T) {
	root := repoRoot(t)
	sources := map[string]Source{}
	checked := 0
	for _, page := range markdownFiles(t, root) {
		b, err := os.ReadFile(filepath.Join(root, page))
		require.NoError(t, err)
		for _, l := range CodeLinks(page, string(b)) {
			checked++
			src, err := sourceOf(root, l.Path(), sources)
			if err != nil {
				t.Errorf("%s: %v", l, err)
				continue
			}
			if p := Problem(l, src); p != "" {
				t.Errorf("%s: %s", l, p)
			}
		}
	}
	require.NotZero(t, checked, "no page links to a line of code: the extraction is broken")
	t.Logf("%d links into code checked", checked)
}

// sourceOf parses a linked file once, however many links point into it.
func sourceOf(root, rel string, cache map[string]Source) (Source, error) {
	if src, ok := cache[rel]; ok {
		return src, nil
	}
	b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(rel)))
	if err != nil {
		return Source{}, err
	}
	src, err := ParseSource(rel, b)
	if err != nil {
		return Source{}, err
	}
	cache[rel] = src
	return src, nil
}

func TestCodeLinksExtract(t *testing.T) {
	page := strings.Join([]string{
		"See [`handle`](conn.go#L87) and [`waker` and its",
		"implementations](../05-wakeup-fd/sys.go#L171-L331).",
		"",
		"```",
		"[`shown`](conn.go#L1) is text in a fence",
		"```",
		"[run A](#a-it-never-starts), [the README](README.md), [a site](https://example.com/x.go#L3)",
		"[04](../04-epoll-et/server.go#L103-L125)",
	}, "\n")
	want := []Link{
		{File: "docs/p.md", Line: 1, Text: "`handle`", Target: "conn.go#L87", From: 87, To: 87},
		{File: "docs/p.md", Line: 1, Text: "`waker` and its implementations",
			Target: "../05-wakeup-fd/sys.go#L171-L331", From: 171, To: 331},
		{File: "docs/p.md", Line: 8, Text: "04", Target: "../04-epoll-et/server.go#L103-L125", From: 103, To: 125},
	}
	got := CodeLinks("docs/p.md", page)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("CodeLinks (-want +got):\n%s", diff)
	}
	if len(got) == 3 && got[1].Path() != "05-wakeup-fd/sys.go" {
		t.Errorf("Path() = %q, want %q", got[1].Path(), "05-wakeup-fd/sys.go")
	}
}

// fixture is a file whose declarations sit on known lines.
const fixture = `package p

// LAB(run): the handout's marker, not documentation
// run is documented
// over two lines.
func (l *loop) run() {
}

type waker interface {
	wake() error
}

// eventfd is one waker.
type eventfd struct{ fd int }

func (e *eventfd) wake() error {
	return nil
}

// limits are grouped.
const (
	// readBudget is one spec.
	readBudget = 16
	maxLine    = 1 << 16
)
`

func TestProblem(t *testing.T) {
	src, err := ParseSource("fixture.go", []byte(fixture))
	require.NoError(t, err)
	require.Equal(t, 25, src.Lines)
	tests := []struct {
		name     string
		text     string
		from, to int
		want     string // "" when the link is right; else a part of the problem
	}{
		{name: "declaration line", text: "`run`", from: 6, to: 6},
		{name: "doc comment is not the declaration line", text: "`run`", from: 4, to: 4, want: "got #L4, want #L6 (run)"},
		{name: "receiver", text: "`loop.run`", from: 6, to: 6},
		{name: "pointer receiver", text: "`(*loop).run`", from: 6, to: 6},
		{name: "wrong receiver", text: "`eventfd.run`", from: 6, to: 6, want: "which the file no longer has"},
		{name: "whole func from its doc, below the LAB marker", text: "`run`", from: 4, to: 7},
		{name: "range from the LAB marker", text: "`run`", from: 3, to: 7, want: "got #L3-L7, want #L4-L7 (run)"},
		{name: "range one short", text: "`run`", from: 4, to: 6, want: "want #L4-L7"},
		{name: "undocumented type", text: "`waker`", from: 9, to: 11},
		{name: "method of a type with the same name elsewhere", text: "`wake`", from: 16, to: 16},
		{name: "interface method is no declaration", text: "`wake`", from: 10, to: 10, want: "want #L16 (wake)"},
		{name: "several declarations", text: "`waker` and its implementations", from: 9, to: 18},
		{name: "several, ending inside one", text: "`waker` and its implementations", from: 9, to: 17,
			want: "want #L9 ending where a declaration ends"},
		{name: "grouped const", text: "`readBudget`", from: 23, to: 23},
		{name: "grouped const, range", text: "`readBudget`", from: 22, to: 23},
		{name: "gone", text: "`acceptAll`", from: 6, to: 6, want: "want the declaration of acceptAll, which the file no longer has"},
		{name: "past the end", text: "`run`", from: 24, to: 26, want: "got #L24-L26, want lines within the file's 25"},
		{name: "plain text, one line anywhere", text: "04", from: 17, to: 17},
		{name: "plain text, whole group", text: "queue.go", from: 20, to: 25},
		{name: "a file name in backticks", text: "`queue.go`", from: 20, to: 25},
		{name: "plain text, inside a func", text: "04", from: 16, to: 17,
			want: "got #L16-L17, want a range of whole declarations, such as the declaration L16 is in, #L16-L18"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := Link{File: "p.md", Line: 1, Text: tt.text, Target: "fixture.go", From: tt.from, To: tt.to}
			got := Problem(l, src)
			switch {
			case tt.want == "" && got != "":
				t.Errorf("Problem(%s) = %q, want none", lines(tt.from, tt.to), got)
			case tt.want != "" && !strings.Contains(got, tt.want):
				t.Errorf("Problem(%s) = %q, want one containing %q", lines(tt.from, tt.to), got, tt.want)
			}
		})
	}
}
