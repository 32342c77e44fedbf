package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"reactorlab/shared/protocol"
)

// The harness's own tests: everything that needs no chapter server. The
// scenarios themselves are proven by every chapter's go test and by the
// grader's tests against deliberately buggy servers.

func names(ss []Scenario) []string {
	out := make([]string, 0, len(ss))
	for _, s := range ss {
		out = append(out, s.Name)
	}
	return out
}

// designRow is one row of DESIGN.md's scenario table.
type designRow struct {
	Name  string
	Stage int
	What  string
}

// TestDesignTable holds DESIGN.md's scenario table (name, grader stage,
// what it checks) to the harness's table, row for row, so that neither can
// change without the other.
func TestDesignTable(t *testing.T) {
	b, err := os.ReadFile("../../DESIGN.md")
	require.NoError(t, err)
	var got []designRow
	inTable := false
	for _, line := range strings.Split(string(b), "\n") {
		cells := tableCells(line)
		switch {
		case cells == nil:
			inTable = inTable && len(got) == 0
		case cells[0] == "scenario":
			inTable = true
		case inTable && cells[0] != "---" && len(cells) == 3:
			stage, err := strconv.Atoi(cells[1])
			require.NoError(t, err, "DESIGN.md row %q: stage", line)
			got = append(got, designRow{Name: strings.Trim(cells[0], "`"), Stage: stage, What: cells[2]})
		}
	}
	var want []designRow
	for _, s := range Scenarios() {
		want = append(want, designRow{Name: s.Name, Stage: s.Stage, What: s.What})
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("DESIGN.md's scenario table (| scenario | stage | what it checks |) against table.go (-want +got):\n%s", diff)
	}
	for _, s := range Scenarios() {
		if s.What == "" || s.Run == nil || s.Stage < 1 || s.Stage > MaxStage {
			t.Errorf("scenario %q: What %q, Run set %v, Stage %d; want all set", s.Name, s.What, s.Run != nil, s.Stage)
		}
	}
}

func TestFind(t *testing.T) {
	for _, want := range Scenarios() {
		if s, ok := Find(want.Name); !ok || s.Name != want.Name {
			t.Errorf("Find(%q) = %q, %v; want %q, true", want.Name, s.Name, ok, want.Name)
		}
	}
	if s, ok := Find("no-such-scenario"); ok {
		t.Errorf("Find(%q) = %q, true; want false", "no-such-scenario", s.Name)
	}
}

func TestStage(t *testing.T) {
	all, err := Stage(MaxStage)
	require.NoError(t, err)
	if diff := cmp.Diff(names(Scenarios()), names(all)); diff != "" {
		t.Errorf("Stage(%d) is not every scenario (-want +got):\n%s", MaxStage, diff)
	}
	// Cumulative: each stage keeps everything the one before required,
	// and adds exactly the scenarios of its own number.
	prev := map[string]bool{}
	for n := 1; n <= MaxStage; n++ {
		got, err := Stage(n)
		require.NoError(t, err)
		have := map[string]bool{}
		for _, s := range got {
			have[s.Name] = true
			if !prev[s.Name] && s.Stage != n {
				t.Errorf("Stage(%d) adds %q, whose stage is %d", n, s.Name, s.Stage)
			}
		}
		for name := range prev {
			if !have[name] {
				t.Errorf("Stage(%d) drops %q, which stage %d required", n, name, n-1)
			}
		}
		prev = have
	}
	for _, n := range []int{0, -1, MaxStage + 1} {
		if got, err := Stage(n); err == nil {
			t.Errorf("Stage(%d) = %v, want an error", n, names(got))
		}
	}
}

func TestReadScale(t *testing.T) {
	for _, tt := range []struct {
		v    string
		want float64
	}{{"", 1}, {"3", 3}, {"1.5", 1.5}, {"0.5", 1}, {"fast", 1}, {"1000", 1}} {
		if got := readScale(tt.v); got != tt.want {
			t.Errorf("readScale(%q) = %v, want %v", tt.v, got, tt.want)
		}
	}
}

func TestFailureError(t *testing.T) {
	tests := []struct {
		f    *Failure
		want string
	}{
		{Fail(Stall, "reply to one line", "nothing within the deadline", `reply to "hi"`, "hint"),
			`reply to one line [stall]: got nothing within the deadline, want reply to "hi"`},
		{Fail(Crash, "server 127.0.0.1:1", "exit", "", ""), "server 127.0.0.1:1 [crash]: got exit, want "},
		{Fail(Wrong, "scenario", "", "", "hint"), "scenario [wrong]"},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, tt.f.Error()); diff != "" {
			t.Errorf("Error() (-want +got):\n%s", diff)
		}
	}
}

func TestAsFailure(t *testing.T) {
	if f := AsFailure(nil); f != nil {
		t.Errorf("AsFailure(nil) = %v, want nil", f)
	}
	f := Fail(Leak, "step", "3 fds", "0 fds", "close them")
	if got := AsFailure(fmt.Errorf("wrapped: %w", f)); got != f {
		t.Errorf("AsFailure(wrapped failure) = %v, want the failure itself", got)
	}
	got := AsFailure(errors.New("dial: boom"))
	if diff := cmp.Diff(&Failure{Kind: Wrong, Step: "dial: boom"}, got); diff != "" {
		t.Errorf("AsFailure(plain error) (-want +got):\n%s", diff)
	}
}

func TestExplain(t *testing.T) {
	const hint = "the step's own hint"
	tests := []struct {
		name string
		in   *Failure
		want string
	}{
		{"stall", Fail(Stall, "s", "nothing", "reply to x", ""), hint},
		{"refused", Fail(Refused, "s", "FIN", "reply to x", ""), hint},
		{"wrong line", Fail(Wrong, "s", "reply to y", "reply to x", "generic"), hint},
		{"malformed reply keeps its format hint", Fail(Wrong, "s", `"junk"`, "[YYYY-MM-DD HH:MM:SS]server reply: LINE", "format"), "format"},
	}
	for _, tt := range tests {
		got := AsFailure(explain(tt.in, hint)).Hint
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s: hint (-want +got):\n%s", tt.name, diff)
		}
	}
}

func TestSizeString(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0 B"},
		{1023, "1023 B"},
		{1024, "1.0 KiB"},
		{1536, "1.5 KiB"},
		{1<<20 - 1, "1024.0 KiB"},
		{1 << 20, "1.0 MiB"},
		{16 << 20, "16.0 MiB"},
	}
	for _, tt := range tests {
		if got := sizeString(tt.n); got != tt.want {
			t.Errorf("sizeString(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

func TestMatrixColumn(t *testing.T) {
	const readme = "# reactor-lab\n\n" +
		"| chapter | what |\n|---|---|\n| `reply` | not the matrix |\n\n" +
		"The matrix:\n\n" +
		"| scenario | 01 serial | 01 thread |\n" +
		"|:---|:---:|---:|\n" +
		"| `reply` | pass | **pass** |\n" +
		"| `concurrent` | **limit** (stall) | pass |\n" +
		"| many | _limit_ | `skip` |\n" +
		"\nAfter the table.\n\n" +
		"| scenario | 01 serial |\n|---|---|\n| `reply` | skip |\n"
	tests := []struct {
		column  string
		want    map[string]string
		wantErr string
	}{
		{column: "01 serial", want: map[string]string{"reply": "pass", "concurrent": "limit", "many": "limit"}},
		{column: "01 thread", want: map[string]string{"reply": "pass", "concurrent": "pass", "many": "skip"}},
		{column: "07", wantErr: `matrix has no column "07"`},
	}
	for _, tt := range tests {
		got, err := matrixColumn(readme, tt.column)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("matrixColumn(%q) error = %v, want one containing %q", tt.column, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("matrixColumn(%q): %v", tt.column, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("matrixColumn(%q) (-want +got):\n%s", tt.column, diff)
		}
	}
	if got, err := matrixColumn("no table here\n", "01 serial"); err == nil {
		t.Errorf("matrixColumn(no table) = %v, want an error", got)
	}
}

func TestFirstDiff(t *testing.T) {
	tests := []struct {
		got, want string
		i         int
	}{
		{"abc", "abc", -1},
		{"abd", "abc", 2},
		{"ab", "abc", -1}, // a short read is reported by the caller
		{"", "", -1},
	}
	for _, tt := range tests {
		if i := firstDiff([]byte(tt.got), []byte(tt.want)); i != tt.i {
			t.Errorf("firstDiff(%q, %q) = %d, want %d", tt.got, tt.want, i, tt.i)
		}
	}
}

// TestSeededStreamIgnoresChunking guards what echoStream relies on: the
// writer and the reader cut the same seeded stream at different places
// and must still see the same bytes.
func TestSeededStreamIgnoresChunking(t *testing.T) {
	const total = 10_000
	whole := make([]byte, total)
	rand.NewChaCha8(streamSeed).Read(whole)
	pieces := make([]byte, 0, total)
	src := rand.NewChaCha8(streamSeed)
	for _, n := range []int{1, 7, 8, 9, 4093, 5882} {
		p := make([]byte, n)
		src.Read(p)
		pieces = append(pieces, p...)
	}
	if i := firstDiff(pieces, whole); i >= 0 || len(pieces) != total {
		t.Errorf("stream read in pieces differs from one read at offset %d (of %d bytes)", i, len(pieces))
	}
}

// fakeServer is a "server" that prints a ready line and then waits: enough
// for Run's process handling, which needs no socket.
var fakeServer = Command{Path: "/bin/sh", Args: []string{"-c", `echo "listening on 127.0.0.1:9"; exec sleep 30`, "sh"}}

// TestRunCrashAndExpectedExit checks that a server dying mid-scenario is a
// crash, unless the scenario said it would exit (as shutdown does).
func TestRunCrashAndExpectedExit(t *testing.T) {
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skip("no sleep command")
	}
	kill := func(sig syscall.Signal, expect bool) Scenario {
		return Scenario{Name: "kill", Run: func(e *Env) error {
			s, err := e.Start()
			if err != nil {
				return err
			}
			if expect {
				e.expectExit(s)
			}
			if err := s.Signal(sig); err != nil {
				return err
			}
			if !exited(s, time.Now().Add(5*time.Second)) {
				return Fail(Exit, "fake server", "still running", "exited", "")
			}
			return nil
		}}
	}
	r := Run(context.Background(), kill(syscall.SIGTERM, false), fakeServer, Options{})
	if r.Failure == nil || r.Failure.Kind != Crash {
		t.Errorf("server killed, exit not expected: failure %v, want kind %s", r.Failure, Crash)
	}
	r = Run(context.Background(), kill(syscall.SIGTERM, true), fakeServer, Options{})
	if r.Failure != nil {
		t.Errorf("server killed, exit expected: failure %v, want none", r.Failure)
	}
	r = Run(context.Background(), kill(syscall.SIGPIPE, false), fakeServer, Options{})
	if f := r.Failure; f == nil || f.Kind != Crash || !strings.Contains(f.Hint, "SIGPIPE") {
		t.Errorf("server killed by SIGPIPE: failure %+v, want a crash whose hint names SIGPIPE", f)
	}
}

func TestDeathSignal(t *testing.T) {
	err := exec.Command("/bin/sh", "-c", "kill -PIPE $$").Run()
	sig, ok := deathSignal(err)
	if !ok || sig != syscall.SIGPIPE {
		t.Errorf("deathSignal(%v) = %v, %v; want SIGPIPE, true", err, sig, ok)
	}
	err = exec.Command("/bin/sh", "-c", "exit 3").Run()
	if sig, ok := deathSignal(err); ok {
		t.Errorf("deathSignal(%v) = %v, true; want false", err, sig)
	}
	if sig, ok := deathSignal(nil); ok {
		t.Errorf("deathSignal(nil) = %v, true; want false", sig)
	}
}

// loopbackClient returns a Client connected to the other end, which the
// test writes the "server's" bytes into.
func loopbackClient(t *testing.T) (*Client, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	e := newEnv(context.Background(), Command{}, Options{})
	dialed, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dialed.Close(); peer.Close() })
	return &Client{conn: dialed.(*net.TCPConn), env: e, dialed: time.Now()}, peer
}

// TestExpectReplyStamp: a stamp is judged against when the reply could have
// been made (after the connection opened, before it was read), not against
// when the harness got round to reading it.
func TestExpectReplyStamp(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name     string
		dialedAt time.Time
		stamp    time.Time
		wantKind Kind // "" for no failure
	}{
		{"now", now, now, ""},
		{"read 5 s after the reply was made", now.Add(-6 * time.Second), now.Add(-5 * time.Second), ""},
		{"UTC instead of local time, or a frozen clock", now, now.Add(-3 * time.Hour), Wrong},
		{"stamped before the connection opened", now, now.Add(-10 * time.Second), Wrong},
		{"in the future", now, now.Add(time.Hour), Wrong},
	}
	for _, tt := range tests {
		c, peer := loopbackClient(t)
		c.dialed = tt.dialedAt
		peer.SetWriteDeadline(time.Now().Add(ioTimeout))
		if _, err := peer.Write(protocol.AppendReply(nil, tt.stamp, []byte("hi"))); err != nil {
			t.Fatal(err)
		}
		var kind Kind
		if f := AsFailure(c.ExpectReply("reply", []byte("hi"), time.Now().Add(ioTimeout))); f != nil {
			kind = f.Kind
		}
		if kind != tt.wantKind {
			t.Errorf("%s: failure kind %q, want %q", tt.name, kind, tt.wantKind)
		}
	}
}

// A server that never prints its ready line must fail as a startup, with
// the hint that says what to print, whether the ready timeout or the
// scenario's context ends the wait: never as a bare context error.
func TestStartupWithoutReadyLine(t *testing.T) {
	if readyTimeout >= scenarioTimeout {
		t.Errorf("readyTimeout %s, scenarioTimeout %s: want the ready timeout to end first", readyTimeout, scenarioTimeout)
	}
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skip("no sleep command")
	}
	silent := Command{Path: "/bin/sh", Args: []string{"-c", "exec sleep 30", "sh"}}
	start := Scenario{Name: "start", Run: func(e *Env) error {
		_, err := e.Start()
		return err
	}}
	// The context stands in for the ready timeout, which is too long to
	// wait for here; both end in the same select.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	r := Run(ctx, start, silent, Options{})
	if f := r.Failure; f == nil || f.Kind != Startup || !strings.Contains(f.Hint, "print the ready line") {
		t.Errorf("silent server: failure %+v, want kind %s with the ready-line hint", f, Startup)
	}
	if r.Elapsed > 5*time.Second {
		t.Errorf("silent server: Run took %s, want about the context's 200ms", r.Elapsed)
	}
}

// Ending the scenario's context closes its clients, so a read blocked on a
// server that never answers returns at once, not at its deadline.
func TestCancelClosesClients(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	mute := &Server{addr: ln.Addr().String()} // the backlog completes the connect
	blocked := Scenario{Name: "blocked", Run: func(e *Env) error {
		c, err := e.Dial(mute)
		if err != nil {
			return err
		}
		_, err = c.ReadLine(time.Now().Add(time.Minute))
		return err
	}}
	ctx, cancel := context.WithCancel(context.Background())
	stop := time.AfterFunc(200*time.Millisecond, cancel)
	defer stop.Stop()
	r := Run(ctx, blocked, Command{}, Options{})
	if f := r.Failure; f == nil || f.Kind != Stall || !strings.HasPrefix(f.Got, "interrupted") {
		t.Errorf("cancelled scenario: failure %+v, want kind %s, got \"interrupted after ...\"", f, Stall)
	}
	if r.Elapsed > 5*time.Second {
		t.Errorf("cancelled scenario: Run took %s, want about 200ms", r.Elapsed)
	}

	// A client dialled once the clients were closed is closed too.
	e := newEnv(context.Background(), Command{}, Options{})
	e.closeClients()
	if c, err := e.Dial(mute); err == nil {
		t.Errorf("Dial after closeClients = %v, nil; want an error", c)
	}
}

// recorder is a ServerOutput that notes writes made after Run returned.
type recorder struct {
	mu    sync.Mutex
	b     strings.Builder
	ended bool
	late  int
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended {
		r.late++
	}
	return r.b.Write(p)
}

// Run returns only once everything the server printed has been read: a
// server that prints on its way out loses nothing, and prints nothing into
// whatever the caller does next.
func TestRunWaitsForServerOutput(t *testing.T) {
	// On SIGTERM (Stop's), the shell prints far more than a pipe holds, as
	// fast as it can, and exits: what is still in the pipe then must be read.
	loud := Command{Path: "/bin/sh", Args: []string{"-c", `
		trap 'yes late | head -n 100000; echo "last words"; exit 0' TERM
		echo "listening on 127.0.0.1:9"
		sleep 30 & wait`, "sh"}}
	start := Scenario{Name: "start", Run: func(e *Env) error {
		_, err := e.Start()
		return err
	}}
	for _, tool := range []string{"yes", "head", "sleep"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s command", tool)
		}
	}
	var out recorder
	r := Run(context.Background(), start, loud, Options{ServerOutput: &out})
	out.mu.Lock()
	out.ended = true
	got := out.b.String()
	out.mu.Unlock()
	if r.Failure != nil {
		t.Fatalf("failure %v, want none", r.Failure)
	}
	if want := "  server | last words\n"; !strings.HasSuffix(got, want) {
		t.Errorf("server output when Run returned ends %q, want %q", got[max(0, len(got)-40):], want)
	}
	out.mu.Lock()
	defer out.mu.Unlock()
	if out.late > 0 {
		t.Errorf("%d writes of server output after Run returned, want 0", out.late)
	}
}

// The crash hint shows the line that says why a Go server died, though the
// goroutine dump after it is far longer than the tail.
func TestTailCause(t *testing.T) {
	dump := strings.Repeat("goroutine 7 [IO wait]:\n\t/usr/local/go/src/runtime/netpoll.go:351 +0x85\n", 200)
	tests := []struct {
		name, out, want string
	}{
		{
			name: "panic",
			out: "serving\npanic: runtime error: index out of range [3] with length 3\n\ngoroutine 1 [running]:\n" +
				"main.handle(...)\n\t/src/conn.go:42 +0x1d\nmain.main()\n" + dump + "exit status 2\n",
			want: "panic: runtime error: index out of range [3] with length 3\n\ngoroutine 1 [running]:\n" +
				"main.handle(...)\n\t/src/conn.go:42 +0x1d\nmain.main()",
		},
		{
			name: "data race, the first report wins",
			out: "==================\nWARNING: DATA RACE\nWrite at 0x00c000012345 by goroutine 8:\n  main.(*server).handle()\n" +
				dump + "==================\nWARNING: DATA RACE\nRead at 0x1 by goroutine 9:\n",
			want: "WARNING: DATA RACE\nWrite at 0x00c000012345 by goroutine 8:\n  main.(*server).handle()\n" +
				"goroutine 7 [IO wait]:\n\t/usr/local/go/src/runtime/netpoll.go:351 +0x85\ngoroutine 7 [IO wait]:",
		},
		{
			name: "segfault",
			out:  "fine\n[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x4a1b2c]\n",
			want: "[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x4a1b2c]",
		},
		{name: "no crash report", out: "listening\n" + dump, want: ""},
	}
	for _, tt := range tests {
		tl := newTail(nil)
		// Odd-sized writes, so lines arrive in pieces as from a pipe.
		for p := tt.out; p != ""; {
			n := min(len(p), 37)
			tl.Write([]byte(p[:n]))
			p = p[n:]
		}
		if diff := cmp.Diff(tt.want, tl.Cause()); diff != "" {
			t.Errorf("%s: Cause() (-want +got):\n%s", tt.name, diff)
		}
		if got := len(tl.String()); got > tailSize {
			t.Errorf("%s: tail keeps %d bytes, want at most %d", tt.name, got, tailSize)
		}
	}
}

// orphanEnv makes the test binary, run again by TestServerDiesWithHarness,
// start a server, print its pid and wait to be killed.
const orphanEnv = "HARNESS_TEST_ORPHAN"

// If the test binary is killed, Stop never runs: the kernel must end the
// servers it started all the same.
func TestServerDiesWithHarness(t *testing.T) {
	if os.Getenv(orphanEnv) == "1" {
		s := StartServer(t, fakeServer)
		fmt.Println(s.PID())
		<-s.Exited() // until this process is killed
		return
	}
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skip("no sleep command")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestServerDiesWithHarness$")
	cmd.Env = append(os.Environ(), orphanEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	pid, perr := strconv.Atoi(strings.TrimSpace(line))
	cmd.Process.Kill()
	cmd.Wait()
	if err != nil || perr != nil {
		t.Fatalf("child test binary printed %q (%v, %v), want the server's pid", line, err, perr)
	}
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for alive(pid) {
		if time.Now().After(deadline) {
			unix.Kill(pid, unix.SIGKILL)
			t.Fatalf("server %d still running 5s after the test binary that started it was killed", pid)
		}
		<-tick.C
	}
}

// alive reports whether pid runs: a zombie has died, whoever reaps it.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}
