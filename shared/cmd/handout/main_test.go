package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The fixture chapter: testdata/00-fixture, a small server with one LAB
// region of each kind (a function serving the protocol, two pure
// functions, statements inside a function), tests that use each, and two
// tests that use none.
const (
	fixtureRoot    = "testdata"
	fixtureChapter = "00-fixture"
)

// TestStarterFailsExactlyTheTasks is the handout's promise: the starter
// compiles, fails exactly the tests that need a removed region (and a
// scenario by itself with -run), and the chapter it came from passes them
// all.
func TestStarterFailsExactlyTheTasks(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("needs the go command")
	}
	out := filepath.Join(t.TempDir(), "lab")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-root", fixtureRoot, "-chapter", fixtureChapter, "-o", out}, &stdout, &stderr); code != 0 {
		t.Fatalf("handout exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
	t.Logf("handout:\n%s", stdout.String())

	wantFailed := []string{"TestParsePort", "TestReverseWords", "TestScenarios", "TestScenarios/reply", "TestVowels"}
	full := goTest(t, filepath.Join(fixtureRoot, fixtureChapter))
	if failed := full.with("fail"); len(failed) > 0 {
		t.Fatalf("the fixture itself fails %v: fix it first", failed)
	}
	for _, name := range wantFailed {
		if full[name] != "pass" {
			t.Errorf("fixture: %s %s, want pass", name, full[name])
		}
	}

	starter := goTest(t, out)
	if diff := cmp.Diff(wantFailed, starter.with("fail")); diff != "" {
		t.Errorf("the starter's failed tests (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"TestParseFlags", "TestTitle"}, starter.with("pass")); diff != "" {
		t.Errorf("the starter's passed tests (-want +got):\n%s", diff)
	}

	one := goTest(t, out, "-run", "TestScenarios/reply$")
	if diff := cmp.Diff([]string{"TestScenarios", "TestScenarios/reply"}, one.with("fail")); diff != "" {
		t.Errorf("the starter's one scenario, failed (-want +got):\n%s", diff)
	}

	for _, name := range []string{"LAB.md", "shared/go.mod", "shared/harness/harness.go", "shared/protocol/protocol.go"} {
		if _, err := os.Stat(filepath.Join(out, name)); err != nil {
			t.Errorf("starter: %v", err)
		}
	}
	gomod, _ := os.ReadFile(filepath.Join(out, "go.mod"))
	if !strings.Contains(string(gomod), "replace reactorlab/shared => ./shared\n") {
		t.Errorf("starter go.mod does not replace reactorlab/shared with ./shared:\n%s", gomod)
	}
	answer, _ := os.ReadFile(filepath.Join(out, "answer.go"))
	if strings.Contains(string(answer), "sess.Input") || strings.Contains(string(answer), "LAB(") {
		t.Errorf("the starter's answer.go still has the solution or its markers:\n%s", answer)
	}
}

// results maps each test and subtest to its last action: pass, fail or skip.
type results map[string]string

func (r results) with(action string) []string {
	var names []string
	for name, a := range r {
		if a == action {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// goTest runs go test -json in dir, outside any workspace, as a student
// would in the starter.
func goTest(t *testing.T, dir string, args ...string) results {
	t.Helper()
	cmd := exec.Command("go", append([]string{"test", "-count=1", "-json"}, append(args, "./")...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, _ := cmd.Output() // a failing test is an exit status of 1
	res := results{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var ev struct{ Action, Test string }
		if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.Test == "" {
			continue
		}
		switch ev.Action {
		case "pass", "fail", "skip":
			res[ev.Test] = ev.Action
		}
	}
	if len(res) == 0 {
		t.Fatalf("go test in %s ran no test:\n%s\n%s", dir, b, stderr.Bytes())
	}
	return res
}

func TestRunRefuses(t *testing.T) {
	notEmpty := t.TempDir()
	os.WriteFile(filepath.Join(notEmpty, "x"), nil, 0o644)
	root, _ := filepath.Abs(fixtureRoot)
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{name: "no chapter", args: []string{"-o", t.TempDir()}, code: 2, want: "usage"},
		{name: "no such chapter", args: []string{"-root", root, "-chapter", "nope", "-o", t.TempDir()}, code: 1,
			want: "is not a chapter"},
		{name: "output not empty", args: []string{"-root", root, "-chapter", fixtureChapter, "-o", notEmpty}, code: 1,
			want: "is not empty"},
		{name: "output in a workspace", args: []string{"-root", root, "-chapter", fixtureChapter,
			"-o", filepath.Join(workspace(t), "lab-out")}, code: 1, want: "inside the Go workspace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr)
			if code != tt.code || !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("run(%q) = %d, stderr %q; want %d and %q", tt.args, code, stderr.String(), tt.code, tt.want)
			}
		})
	}
}

// workspace is the lab's repository, or a folder made one for the test.
func workspace(t *testing.T) string {
	t.Helper()
	if ws, err := findWorkspace("."); err == nil {
		return ws
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "go.work"), []byte("go 1.26.0\n"), 0o644)
	return dir
}

// TestNoRegions: a chapter with nothing marked is an assignment with
// nothing to do, not a starter.
func TestNoRegions(t *testing.T) {
	root := t.TempDir()
	copyTree(t, filepath.Join(fixtureRoot, fixtureChapter), filepath.Join(root, "01-plain"))
	shared, _ := filepath.Abs("../..")
	gomod := filepath.Join(root, "01-plain", "go.mod")
	b, _ := os.ReadFile(gomod)
	os.WriteFile(gomod, sharedReplaceLine.ReplaceAll(b, []byte("${1}"+shared)), 0o644)
	for _, f := range []string{"answer.go", "words.go"} {
		p := filepath.Join(root, "01-plain", f)
		b, _ := os.ReadFile(p)
		var kept []string
		for _, l := range strings.Split(string(b), "\n") {
			if !marker.MatchString(strings.TrimSpace(l)) {
				kept = append(kept, l)
			}
		}
		os.WriteFile(p, []byte(strings.Join(kept, "\n")), 0o644)
	}
	var stdout, stderr bytes.Buffer
	code := run([]string{"-root", root, "-chapter", "01-plain", "-o", filepath.Join(t.TempDir(), "lab"), "-check=false"}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "nothing would be left for the student") {
		t.Errorf("exit %d, stderr %q; want 1 and a word about the missing regions", code, stderr.String())
	}
}

// TestErrorLeavesNothing: a chapter the handout cannot turn into a
// starter leaves no half-written one behind.
func TestErrorLeavesNothing(t *testing.T) {
	root := t.TempDir()
	chapter := filepath.Join(root, "01-broken")
	copyTree(t, filepath.Join(fixtureRoot, fixtureChapter), chapter)
	shared, _ := filepath.Abs("../..")
	gomod := filepath.Join(chapter, "go.mod")
	b, _ := os.ReadFile(gomod)
	os.WriteFile(gomod, sharedReplaceLine.ReplaceAll(b, []byte("${1}"+shared)), 0o644)
	words := filepath.Join(chapter, "words.go")
	b, _ = os.ReadFile(words)
	os.WriteFile(words, []byte(strings.Replace(string(b), "// END LAB", "", 1)), 0o644)

	out := filepath.Join(t.TempDir(), "lab")
	var stdout, stderr bytes.Buffer
	code := run([]string{"-root", root, "-chapter", "01-broken", "-o", out, "-check=false"}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "begins before LAB(reverse)") {
		t.Errorf("exit %d, stderr %q; want 1 and the unclosed region", code, stderr.String())
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("%s exists after a failed handout, want nothing written", out)
	}
}

func TestOutsideReads(t *testing.T) {
	src := `package main

func TestMatrix(t *testing.T) {
	harness.CheckMatrix(t, "../README.md", "05 wakeup-fd", expectations)
	os.ReadFile("README.md")
	harness.Build(b, "../04-epoll-et")
}
`
	want := []string{
		`server_test.go:4 names "../README.md", outside the starter: what reads it fails there`,
		`server_test.go:6 names "../04-epoll-et", outside the starter: what reads it fails there`,
	}
	if diff := cmp.Diff(want, outsideReads("server_test.go", []byte(src))); diff != "" {
		t.Errorf("outsideReads (-want +got):\n%s", diff)
	}
}

func TestSharedReplace(t *testing.T) {
	for _, gomod := range []string{
		"module m\n\nreplace reactorlab/shared => ../shared\n",
		"module m\n\nreplace (\n\treactorlab/shared v0.0.0 => ../shared\n)\n",
	} {
		got, err := sharedReplace([]byte(gomod))
		if err != nil || got != "../shared" {
			t.Errorf("sharedReplace(%q) = %q, %v; want ../shared", gomod, got, err)
		}
		if out := sharedReplaceLine.ReplaceAllString(gomod, "${1}./shared"); !strings.Contains(out, "=> ./shared\n") {
			t.Errorf("rewritten go.mod %q lost its shape", out)
		}
	}
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return writeFile(filepath.Join(to, rel), b)
	})
	if err != nil {
		t.Fatal(err)
	}
}
