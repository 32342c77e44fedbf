package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"reactorlab/shared/harness"
)

// The fixture is one server in ../../testdata/fixture that keeps the whole
// contract, or breaks it in the one way that -bug NAME names (the table is
// in its package comment). harness.Build compiles it once per test binary
// (with -race under -race) into the folder that harness.Main owns.
func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// fixture is the command that starts the fixture with bug put in, or the
// correct server for "".
func fixture(t *testing.T, bug string) harness.Command {
	t.Helper()
	cmd := harness.Command{Path: harness.Build(t, "../../testdata/fixture").Path}
	if bug != "" {
		cmd.Args = []string{"-bug", bug}
	}
	return cmd
}

// argv is cmd as the grader takes it after "--", and reports it.
func argv(cmd harness.Command) []string {
	return append([]string{cmd.Path}, cmd.Args...)
}

// against is the grader's command line: its flags, then "--" and cmd.
func against(cmd harness.Command, flags ...string) []string {
	return append(append(flags, "--"), argv(cmd)...)
}

// needScenarios fails a test whose scenarios the harness does not know: a
// renamed scenario must break the grader's tests, not skip them.
func needScenarios(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, ok := harness.Find(name); !ok {
			t.Fatalf("scenario %q is not in the harness", name)
		}
	}
}

func grade(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

var closingLine = regexp.MustCompile(`^(\d+) passed, (\d+) failed$`)

// lastLine checks the step log's closing line and returns its two counts.
func lastLine(t *testing.T, stdout string) (passed, failed int) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	m := closingLine.FindStringSubmatch(lines[len(lines)-1])
	if m == nil {
		t.Fatalf("last line %q does not match %s; output:\n%s", lines[len(lines)-1], closingLine, stdout)
	}
	passed, _ = strconv.Atoi(m[1])
	failed, _ = strconv.Atoi(m[2])
	return passed, failed
}

func gradeJSON(t *testing.T, args ...string) (int, report, string) {
	t.Helper()
	code, stdout, stderr := grade(t, append([]string{"-json"}, args...)...)
	var rep report
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("-json output is not one report: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	if dec.More() {
		t.Fatalf("-json output has more than one value:\n%s", stdout)
	}
	return code, rep, stderr
}

// Every engine without a bug passes every stage. This also guards the
// harness against a scenario that would fail a server that keeps the
// contract, in each shape the engines take: a goroutine per connection
// (net), one level-triggered loop with a send buffer per connection (lt),
// and a request queue served by workers under EPOLLONESHOT (queue). The
// queue engine passes slow-reader with no high-water mark: a connection
// waiting for EPOLLOUT is not read, so a client that never reads is owed
// one read's replies at most. (et is correct only in what its two bugs are
// about: see TestETFixturesHaveOneBugEach.)
func TestGoodPassesEveryStage(t *testing.T) {
	scenarios, err := harness.Stage(harness.MaxStage)
	require.NoError(t, err)
	for _, engine := range []string{"net", "lt", "queue"} {
		t.Run(engine, func(t *testing.T) {
			good := fixture(t, "").With("-engine", engine)
			code, stdout, stderr := grade(t, against(good, "-stage", strconv.Itoa(harness.MaxStage))...)
			if code != exitPass {
				t.Errorf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", code, exitPass, stdout, stderr)
			}
			passed, failed := lastLine(t, stdout)
			if diff := cmp.Diff([2]int{len(scenarios), 0}, [2]int{passed, failed}); diff != "" {
				t.Errorf("passed, failed (-want +got):\n%s", diff)
			}
			var want, got []string
			for _, s := range scenarios {
				want = append(want, "[grade] ✓ "+s.Name)
			}
			for _, l := range strings.Split(stdout, "\n") {
				if strings.HasPrefix(l, "[grade] ✓ ") || strings.HasPrefix(l, "[grade] ✗ ") {
					got = append(got, l[:strings.LastIndex(l, " (")])
				}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("result lines (-want +got):\n%s", diff)
			}
		})
	}
}

// Each bug must fail the scenario it is about, as the kind that bug shows,
// with a hint that points at it. Each is graded on that one scenario, at the
// stage that first requires it.
func TestBuggyServersFailWithTheRightHint(t *testing.T) {
	for _, tc := range []struct {
		bug      string
		scenario string
		kind     harness.Kind
		hint     string // a phrase the hint must contain
	}{
		// The net engine: a goroutine per connection.
		{"serial", "concurrent", harness.Stall, "one client at a time"},
		{"nodash", "reply", harness.Wrong, "dash between month and day"},
		{"noclose", "close", harness.Leak, "close the fd"},
		{"noclose", "half-close", harness.Stall, "close the connection"},
		{"nograce", "shutdown", harness.Exit, "catch SIGTERM"},
		{"rstgrace", "shutdown-load", harness.Refused, "still sending"},
		{"nolimit", "long-line", harness.Wrong, "-max-line"},
		{"pollaccept", "idle", harness.Spin, ""},
		{"nobackoff", "fd-limit", harness.Spin, "EMFILE"},
		// The lt engine: one level-triggered loop with a send buffer per
		// connection, and the mistakes such a buffer invites.
		{"outarmed", "idle", harness.Spin, "EPOLLOUT left on"},
		{"dropremainder", "bulk", harness.Wrong, "keep the rest"},
		{"rstclose", "linger", harness.Refused, "RST"},
		{"unboundedecho", "slow-reader", harness.Leak, "echo mode"},
		{"offbyone", "long-line", harness.Wrong, "off-by-one"},
		{"pollloop", "idle", harness.Spin, "timeout"},
		{"emfilewait", "fd-limit", harness.Stall, "sleep and retry accept"},
	} {
		t.Run(tc.bug+"/"+tc.scenario, func(t *testing.T) {
			r := gradeOne(t, fixture(t, tc.bug), tc.scenario)
			if r.Passed {
				t.Fatalf("-bug %s passed %s; its bug should fail it", tc.bug, tc.scenario)
			}
			if r.Kind != string(tc.kind) {
				t.Errorf("kind %q, want %q\nstep: %s\ngot: %s\nhint: %s", r.Kind, tc.kind, r.Step, r.Got, r.Hint)
			}
			if !strings.Contains(r.Hint, tc.hint) {
				t.Errorf("hint %q does not mention %q (kind %s, step %s, got %s)", r.Hint, tc.hint, r.Kind, r.Step, r.Got)
			}
		})
	}
}

// The step log of a failure: result line with the kind, then the indented
// step, got, want and hint, then the counts.
func TestFailureLog(t *testing.T) {
	needScenarios(t, "reply", "concurrent")
	serial := fixture(t, "serial")
	code, stdout, _ := grade(t, against(serial, "-stage", "2", "-run", "^(reply|concurrent)$")...)
	if code != exitFail {
		t.Errorf("exit code %d, want %d", code, exitFail)
	}
	passed, failed := lastLine(t, stdout)
	if diff := cmp.Diff([2]int{1, 1}, [2]int{passed, failed}); diff != "" {
		t.Errorf("passed, failed (-want +got):\n%s", diff)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^\[grade\] stage 2 \(2 scenarios\) against: ` + regexp.QuoteMeta(strings.Join(argv(serial), " ")) + `$`),
		regexp.MustCompile(`(?m)^\[grade\] --- reply: one line`),
		regexp.MustCompile(`(?m)^\[grade\] ✓ reply \(\d+\.\ds\)$`),
		regexp.MustCompile(`(?m)^\[grade\] ✗ concurrent \(\d+\.\ds\) \[stall\]$`),
		regexp.MustCompile(`(?m)^ +step: client \d of 3`),
		regexp.MustCompile(`(?m)^ +got: +nothing within the deadline$`),
		regexp.MustCompile(`(?m)^ +want: +reply to "client \d of 3"$`),
		regexp.MustCompile(`(?m)^ +hint: .*one client at a time`),
	} {
		if !want.MatchString(stdout) {
			t.Errorf("step log has no line matching %s:\n%s", want, stdout)
		}
	}
}

func TestJSONReport(t *testing.T) {
	needScenarios(t, "reply")
	nodash := fixture(t, "nodash").With("-v")
	code, rep, stderr := gradeJSON(t, against(nodash, "-stage", "3", "-run", "^reply$")...)
	if code != exitFail {
		t.Errorf("exit code %d, want %d", code, exitFail)
	}
	want := report{
		Stage:   3,
		Command: argv(nodash),
		Passed:  0,
		Failed:  1,
		Scenarios: []result{{
			Name:   "reply",
			Passed: false,
			Kind:   "wrong",
			Step:   "reply to one line",
			Want:   "[YYYY-MM-DD HH:MM:SS]server reply: LINE",
		}},
	}
	ignore := cmpopts.IgnoreFields(result{}, "Got", "Hint", "Seconds", "Output")
	if diff := cmp.Diff(want, rep, ignore); diff != "" {
		t.Errorf("report (-want +got):\n%s", diff)
	}
	// The log still goes somewhere a person can see it.
	if !strings.Contains(stderr, "[grade] ✗ reply") {
		t.Errorf("stderr has no step log:\n%s", stderr)
	}
}

// What the server prints is forwarded, but always behind a prefix, so that
// it cannot be mistaken for (or forge) a grader line.
func TestServerOutputIsPrefixed(t *testing.T) {
	needScenarios(t, "reply")
	good := fixture(t, "").With("-v")
	code, stdout, _ := grade(t, against(good, "-stage", "1", "-run", "^reply$")...)
	if code != exitPass {
		t.Errorf("exit code %d, want %d\n%s", code, exitPass, stdout)
	}
	traced := 0
	for _, l := range strings.Split(stdout, "\n") {
		if strings.Contains(l, "server: ") {
			traced++
			if !strings.HasPrefix(l, "  server | ") {
				t.Errorf("server line without the prefix: %q", l)
			}
		}
	}
	if traced == 0 {
		t.Errorf("no server trace forwarded with -v:\n%s", stdout)
	}
}

func TestList(t *testing.T) {
	code, stdout, _ := grade(t, "-list")
	if code != exitPass {
		t.Errorf("exit code %d, want %d", code, exitPass)
	}
	for n := 1; n <= harness.MaxStage; n++ {
		if !strings.Contains(stdout, fmt.Sprintf("stage %d (", n)) {
			t.Errorf("-list does not show stage %d:\n%s", n, stdout)
		}
	}
	for _, s := range harness.Scenarios() {
		if !strings.Contains(stdout, fmt.Sprintf("  %-12s %s\n", s.Name, s.What)) {
			t.Errorf("-list does not show %s with its What:\n%s", s.Name, stdout)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	notExec := dir + "/server.sh"
	require.NoError(t, os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644))
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{nil, "-stage N is required"},
		{[]string{"--", "true"}, "-stage N is required"},
		{[]string{"-stage", "0", "--", "true"}, "-stage N is required"},
		{[]string{"-stage", "8", "--", "true"}, "-stage 8: want 1 to 7"},
		{[]string{"-stage", "1"}, "no server command"},
		{[]string{"-stage", "1", "-run", "[", "--", "true"}, "-run: error parsing regexp"},
		{[]string{"-stage", "1", "-run", "^nosuch$", "--", "true"}, "matches no scenario of stage 1"},
		{[]string{"-stage", "1", "--", "no-such-server-anywhere"}, "executable file not found"},
		{[]string{"-stage", "1", "--", dir + "/missing"}, "no such file"},
		{[]string{"-stage", "1", "--", dir}, "is a directory"},
		{[]string{"-stage", "1", "--", notExec}, "not executable"},
		{[]string{"-stage", "x"}, "invalid value"},
	} {
		code, stdout, stderr := grade(t, tc.args...)
		if code != exitUsage {
			t.Errorf("grade %q: exit code %d, want %d", tc.args, code, exitUsage)
		}
		if !strings.Contains(stderr, tc.msg) {
			t.Errorf("grade %q: stderr %q does not say %q", tc.args, stderr, tc.msg)
		}
		if stdout != "" {
			t.Errorf("grade %q: stdout %q, want nothing", tc.args, stdout)
		}
	}
}

// A bare name that is a file here but not in PATH gets told to say ./name.
func TestBareNameInCurrentFolder(t *testing.T) {
	t.Chdir(t.TempDir())
	require.NoError(t, os.WriteFile("myserver", []byte("#!/bin/sh\n"), 0o755))
	code, _, stderr := grade(t, "-stage", "1", "--", "myserver")
	if code != exitUsage {
		t.Errorf("exit code %d, want %d", code, exitUsage)
	}
	if !strings.Contains(stderr, "./myserver") {
		t.Errorf("stderr %q does not suggest ./myserver", stderr)
	}
}

// Ctrl-C on the grader must stop the server it started, even one that is
// still starting: unflushed never shows its ready line, so the grader is
// waiting for it when the signal comes.
func TestInterruptStopsTheServer(t *testing.T) {
	needScenarios(t, "reply")
	grader := harness.Build(t, ".").Path
	server := fixture(t, "unflushed").With("-v")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, grader, against(server, "-stage", "1", "-run", "^reply$")...)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())

	// The server's -v trace names its pid before it listens.
	pidLine := regexp.MustCompile(`^  server \| .* pid (\d+)$`)
	lines := bufio.NewScanner(stdout)
	var log []string
	serverPID := 0
	for serverPID == 0 && lines.Scan() {
		log = append(log, lines.Text())
		if m := pidLine.FindStringSubmatch(lines.Text()); m != nil {
			serverPID, _ = strconv.Atoi(m[1])
		}
	}
	require.NotZero(t, serverPID, "no pid line from the server; grader output:\n%s", strings.Join(log, "\n"))
	require.NoError(t, unix.Kill(serverPID, 0), "the server should be running")

	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	for lines.Scan() {
		log = append(log, lines.Text())
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != exitInterrupted {
		t.Errorf("grader ended with %v, want exit status %d\n%s", err, exitInterrupted, strings.Join(log, "\n"))
	}
	if err := unix.Kill(serverPID, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("server pid %d after the grader exited: kill -0 says %v, want ESRCH (gone)", serverPID, err)
		unix.Kill(serverPID, syscall.SIGKILL)
	}
	out := strings.Join(log, "\n")
	if !strings.Contains(out, "[grade] interrupted") {
		t.Errorf("grader output does not say it was interrupted:\n%s", out)
	}
	lastLine(t, out)
}
