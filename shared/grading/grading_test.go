package grading

import (
	"errors"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"reactorlab/shared/harness"
)

// fixture is the grader's own test server (shared/testdata/fixture),
// correct or with one bug.
func fixture(t *testing.T, bug string) []string {
	t.Helper()
	argv := Build(t, "../testdata/fixture")
	if bug != "" {
		argv = append(argv, "-bug", bug)
	}
	return argv
}

// TestHelper is what TestFailures runs in a child process: the report of
// a failing subtest is the output to check, and a failing subtest must
// not fail this test binary.
func TestHelper(t *testing.T) {
	switch os.Getenv("GRADING_HELPER") {
	case "":
		t.Skip("run by TestFailures")
	case "nodash":
		Scenario(t, "reply", fixture(t, "nodash")...)
	case "stage-adds-2":
		StageAdds(t, 2, fixture(t, "")...)
	case "stage-adds-5":
		StageAdds(t, 5, fixture(t, "")...)
	}
}

// helper runs TestHelper in a child process and returns its -v output.
func helper(t *testing.T, mode string) (string, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelper$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "GRADING_HELPER="+mode)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

var subtest = regexp.MustCompile(`(?m)^=== RUN   TestHelper/(\S+)$`)

func ran(out string) []string {
	var names []string
	for _, m := range subtest.FindAllStringSubmatch(out, -1) {
		names = append(names, m[1])
	}
	return names
}

func TestFailures(t *testing.T) {
	out, err := helper(t, "nodash")
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("a failing scenario: %v, want the test binary to fail\n%s", err, out)
	}
	for _, want := range []string{"--- FAIL: TestHelper/reply", "reply failed after", "[wrong]", "hint:", "dash between month and day"} {
		if !strings.Contains(out, want) {
			t.Errorf("the report lacks %q:\n%s", want, out)
		}
	}
}

func TestStageAdds(t *testing.T) {
	if testing.Short() {
		t.Skip("runs stage 2's scenarios against the fixture")
	}
	out, err := helper(t, "stage-adds-2")
	if err != nil {
		t.Fatalf("stage 2 against the correct fixture: %v\n%s", err, out)
	}
	if diff := cmp.Diff([]string{"concurrent", "idle", "shutdown-load"}, ran(out)); diff != "" {
		t.Errorf("stage 2 adds (-want +got):\n%s", diff)
	}

	out, err = helper(t, "stage-adds-5")
	if err != nil || len(ran(out)) != 0 || !strings.Contains(out, "stage 5 adds no scenario") {
		t.Errorf("stage 5: %v, ran %v; want a pass with nothing run\n%s", err, ran(out), out)
	}
}

func TestStageIsCumulative(t *testing.T) {
	stage2, _ := harness.Stage(2)
	var names []string
	for _, s := range stage2 {
		names = append(names, s.Name)
	}
	for _, name := range []string{"reply", "concurrent", "idle"} {
		if !slices.Contains(names, name) {
			t.Errorf("stage 2 lacks %s: %v", name, names)
		}
	}
}

func TestReport(t *testing.T) {
	r := harness.Result{
		Scenario: "reply",
		Elapsed:  1500 * time.Millisecond,
		Failure: harness.Fail(harness.Wrong, "reply to one line", `"[2026-1129 ...]"`, `"[YYYY-MM-DD ...]"`,
			"a dash between month and day"),
		Output: "listening on 127.0.0.1:1\npanic: x",
	}
	want := `reply failed after 1.5s [wrong]
  step:   reply to one line
  got:    "[2026-1129 ...]"
  want:   "[YYYY-MM-DD ...]"
  hint:   a dash between month and day
  server: listening on 127.0.0.1:1
          panic: x`
	if diff := cmp.Diff(want, Report(r)); diff != "" {
		t.Errorf("Report (-want +got):\n%s", diff)
	}
}

func TestProgram(t *testing.T) {
	argv := Program(t, os.Args[0], "-x")
	if len(argv) != 2 || argv[1] != "-x" {
		t.Errorf("Program = %q", argv)
	}
}
