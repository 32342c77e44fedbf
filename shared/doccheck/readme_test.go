package doccheck

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fullRun is how to run every command, not only the fast ones; the
// timeout is the go test binary's, above the sum of the commands' own.
const fullRun = "REACTORLAB_DOCS=all go test -run TestREADMECommands -timeout 30m -v reactorlab/shared/doccheck"

// TestREADMECommands runs, as printed, the commands of every README.md of
// the repository (and of docs/*.md): by default only the fast ones, every
// other one classified and listed; with REACTORLAB_DOCS=all every one but
// the allow-list's. Each page is a subtest, run in page order, because a
// page's server serves the commands that follow it:
//
//	REACTORLAB_DOCS=all go test -run 'TestREADMECommands/03-epoll-lt' -v reactorlab/shared/doccheck
func TestREADMECommands(t *testing.T) {
	root := repoRoot(t)
	all := os.Getenv("REACTORLAB_DOCS") == "all"
	counts := map[Status]int{}
	servers := 0
	var failed []string
	for _, page := range pages(t, root) {
		cmds := extractFile(t, root, page)
		if len(cmds) == 0 {
			continue
		}
		t.Run(subtestName(page), func(t *testing.T) {
			p := &Page{Root: root, All: all}
			defer p.Close()
			for _, c := range cmds {
				res := p.Do(Classify(c))
				counts[res.Status]++
				if res.Kind == Server && res.Status != NotRun {
					servers++
				}
				t.Log(logLine(res))
				if res.Status == Failed {
					failed = append(failed, fmt.Sprintf("%s:%d: %s", res.File, res.Line, res.Ran))
					t.Errorf("%s:%d: %s\n  ran: %s\n  %s", res.File, res.Line, res.Text, res.Ran,
						strings.ReplaceAll(strings.TrimRight(res.Detail, "\n"), "\n", "\n  "))
				}
			}
		})
	}
	total := counts[OK] + counts[Failed] + counts[Skipped] + counts[NotRun]
	t.Logf("%d commands: %d ran ok (%d of them servers started), %d failed, %d skipped (allow-list), %d not run",
		total, counts[OK], servers, counts[Failed], counts[Skipped], counts[NotRun])
	if !all {
		t.Logf("only the fast commands ran; every one runs with:\n  %s", fullRun)
	}
	if len(failed) > 0 {
		t.Logf("failed:\n  %s", strings.Join(failed, "\n  "))
	}
}

// TestRulesAllUsed keeps the allow-list and the other rules short and
// true: a rule that no command of any page matches any more is stale.
func TestRulesAllUsed(t *testing.T) {
	root := repoRoot(t)
	used := make([]bool, len(rules))
	for _, page := range pages(t, root) {
		for _, c := range extractFile(t, root, page) {
			text := Bare(c.Text)
			for i, r := range rules {
				if r.re.MatchString(text) {
					used[i] = true
					break
				}
			}
		}
	}
	for i, r := range rules {
		if !used[i] {
			t.Errorf("rule %d (%s %q) matches no command of any page: remove it", i, r.kind, r.re)
		}
		if r.kind == Skip && r.why == "" {
			t.Errorf("allow-list rule %q has no reason", r.re)
		}
	}
}

func logLine(r Result) string {
	s := fmt.Sprintf("%-8s %-6s %s:%d: %s", r.Status, r.Kind, r.File, r.Line, r.Ran)
	if r.Elapsed > 0 {
		s += fmt.Sprintf("  (%.1fs)", r.Elapsed.Seconds())
	}
	if r.Status == OK && r.Exit != 0 {
		s += fmt.Sprintf("  exit %d: %s", r.Exit, r.Why)
	}
	if r.Status == Skipped || r.Status == NotRun {
		s += "  -- " + r.Detail
	}
	return s
}

// repoRoot is the folder with go.work above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Skip("no go.work above this package: not in the lab's repository")
		}
		dir = parent
	}
}

// pages are every README.md of the repository (and its translations,
// README.zh-CN.md), and docs/*.md, relative to root and sorted.
func pages(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	for _, rel := range markdownFiles(t, root) {
		name := path.Base(rel)
		readme := name == "README.md" || (strings.HasPrefix(name, "README.") && strings.HasSuffix(name, ".md"))
		if readme || path.Dir(rel) == "docs" {
			out = append(out, rel)
		}
	}
	return out
}

// markdownFiles are every .md file of the repository outside testdata
// and hidden folders, relative to root, with slashes, and sorted.
func markdownFiles(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			if rel != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(d.Name(), ".md") {
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func extractFile(t *testing.T, root, page string) []Cmd {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, page))
	if err != nil {
		t.Fatal(err)
	}
	return Extract(page, string(b))
}

// subtestName names a page's subtest by its folder ("03-epoll-lt",
// "shared_classroom"), "README" for the top-level page.
func subtestName(page string) string {
	dir := filepath.Dir(page)
	if filepath.Base(page) != "README.md" {
		dir = strings.TrimSuffix(page, ".md")
	}
	if dir == "." {
		return "README"
	}
	return strings.ReplaceAll(dir, "/", "_")
}
