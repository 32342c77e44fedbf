// Package grading runs the lab's grader from go test, for an instructor
// whose CI runs nothing but go test. Each scenario is a subtest named
// after it, and a scenario that fails fails its subtest with the grader's
// report: the step, what came, what was owed, the hint, and the server's
// last lines.
//
//	func TestGrade(t *testing.T) {
//		server := grading.Build(t, ".") // or []string{"./server"}, built by make
//		for _, stage := range []int{1, 2, 3, 4} {
//			t.Run(fmt.Sprint("stage", stage), func(t *testing.T) {
//				grading.StageAdds(t, stage, server...)
//			})
//		}
//	}
//
// shared/classroom/grade_test.go is that test, ready to copy into a
// student's repository; shared/classroom/README.md says how. As with the
// grader, the student's code runs unsandboxed, as the user who runs go
// test.
package grading

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"reactorlab/shared/harness"
)

// Stage runs every scenario of stage n (stages 1 to n, as the grader's
// -stage n does) against the server that argv starts.
func Stage(t *testing.T, n int, argv ...string) {
	t.Helper()
	scenarios, err := harness.Stage(n)
	if err != nil {
		t.Fatal(err)
	}
	run(t, scenarios, argv)
}

// StageAdds runs the scenarios that stage n adds to stage n-1: a test per
// stage, each with its own points, that add up to the whole. Stage 5 adds
// none (a wakeup fd does not show from outside): its test passes at once.
func StageAdds(t *testing.T, n int, argv ...string) {
	t.Helper()
	scenarios, err := harness.Stage(n)
	if err != nil {
		t.Fatal(err)
	}
	var added []harness.Scenario
	for _, s := range scenarios {
		if s.Stage == n {
			added = append(added, s)
		}
	}
	if len(added) == 0 {
		t.Logf("stage %d adds no scenario the grader can see", n)
		return
	}
	run(t, added, argv)
}

// Scenario runs one scenario by name.
func Scenario(t *testing.T, name string, argv ...string) {
	t.Helper()
	s, ok := harness.Find(name)
	if !ok {
		t.Fatalf("no scenario %q (go run ./shared/cmd/grade -list lists them)", name)
	}
	run(t, []harness.Scenario{s}, argv)
}

func run(t *testing.T, scenarios []harness.Scenario, argv []string) {
	t.Helper()
	if len(argv) == 0 {
		t.Fatal("grading: no server command")
	}
	cmd := harness.Command{Path: argv[0], Args: argv[1:]}
	for _, s := range scenarios {
		t.Run(s.Name, func(t *testing.T) {
			t.Logf("%s: %s", s.Name, s.What)
			r := harness.Run(context.Background(), s, cmd, harness.Options{Logf: t.Logf})
			if r.Failure != nil {
				t.Error(Report(r))
				return
			}
			t.Logf("passed in %.1fs", r.Elapsed.Seconds())
		})
	}
}

// Report is a failed scenario as the grader prints it.
func Report(r harness.Result) string {
	f := r.Failure
	if f == nil {
		return fmt.Sprintf("%s passed in %.1fs", r.Scenario, r.Elapsed.Seconds())
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s failed after %.1fs [%s]", r.Scenario, r.Elapsed.Seconds(), f.Kind)
	for _, line := range []struct{ label, text string }{
		{"step", f.Step}, {"got", f.Got}, {"want", f.Want}, {"hint", f.Hint}, {"server", r.Output},
	} {
		if line.text == "" {
			continue
		}
		lines := strings.Split(strings.TrimRight(line.text, "\n"), "\n")
		fmt.Fprintf(&b, "\n  %-7s %s", line.label+":", lines[0])
		for _, l := range lines[1:] {
			fmt.Fprintf(&b, "\n          %s", l)
		}
	}
	return b.String()
}

// Build compiles the Go main package in dir (relative to the test's
// folder) into the test's temporary folder and returns the command that
// starts it. For a server in another language, build it first (make,
// build.sh) and pass its path instead.
func Build(t testing.TB, dir string) []string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "server")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build in %s: %v\n%s", dir, err, out)
	}
	return []string{bin}
}

// Program returns the command for a server built some other way, after
// checking that path is there and executable: a missing build is one
// clear failure, not the same startup failure in every scenario.
func Program(t testing.TB, path string, args ...string) []string {
	t.Helper()
	info, err := os.Stat(path)
	switch {
	case err != nil:
		t.Fatalf("the server %s: %v (did the build run?)", path, err)
	case info.IsDir() || info.Mode()&0o111 == 0:
		t.Fatalf("the server %s is not an executable file", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{abs}, args...)
}
