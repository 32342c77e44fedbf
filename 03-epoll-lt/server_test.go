//go:build linux

package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"reactorlab/shared/harness"
	"reactorlab/shared/protocol"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// expectations is this chapter's column of the capability matrix. A limit
// names the failure that proves it; TestMatrix holds the README to it.
var expectations = harness.Expectations{
	"reply":      harness.Passes(),
	"framing":    harness.Passes(),
	"echo":       harness.Passes(),
	"concurrent": harness.Passes(),
	"many":       harness.Passes(),
	"pipeline":   harness.Passes(),
	"bulk":       harness.Passes(),
	"slow-reader": harness.Limited(harness.Stall, "another client, while one floods",
		"the loop blocks in write() to the client that never reads, and every other client waits"),
	"close":         harness.Passes(),
	"faults":        harness.Passes(),
	"half-close":    harness.Passes(),
	"long-line":     harness.Passes(),
	"hostile":       harness.Passes(),
	"linger":        harness.Passes(),
	"idle":          harness.Passes(),
	"shutdown":      harness.Passes(),
	"unfinished":    harness.Passes(),
	"shutdown-load": harness.Passes(),
	"fd-limit":      harness.Passes(),
}

func TestScenarios(t *testing.T) {
	harness.Check(t, harness.Build(t, "."), expectations)
}

// TestMatrix keeps the README's capability matrix true to expectations,
// which TestScenarios proves.
func TestMatrix(t *testing.T) {
	harness.CheckMatrix(t, "../README.md", "03 epoll-lt", expectations)
}

// TestREADMENamesLimits: the chapter README's "what breaks" section names
// every scenario this chapter declares a limit.
func TestREADMENamesLimits(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for name, e := range expectations {
		if e.Outcome == harness.Limit && !strings.Contains(string(b), "`"+name+"`") {
			t.Errorf("README.md does not name `%s`, a limit of this chapter (%s)", name, e.Why)
		}
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    config
		wantErr string
	}{
		{name: "defaults", args: nil,
			want: config{addr: "127.0.0.1:12345", maxLine: 65536}},
		{name: "echo", args: []string{"-mode", "echo", "-addr", "127.0.0.1:0"},
			want: config{addr: "127.0.0.1:0", mode: 1, maxLine: 65536}},
		{name: "unknown mode", args: []string{"-mode", "upper"}, wantErr: `unknown mode "upper"`},
		{name: "zero max-line", args: []string{"-max-line", "0"}, wantErr: "-max-line 0"},
		{name: "stray argument", args: []string{"12345"}, wantErr: `unexpected argument "12345"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFlags(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseFlags(%q) error = %v, want one containing %q", tt.args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseFlags(%q): %v", tt.args, err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(config{})); diff != "" {
				t.Errorf("parseFlags(%q) (-want +got):\n%s", tt.args, diff)
			}
		})
	}
}

func TestEventString(t *testing.T) {
	tests := []struct {
		events uint32
		want   string
	}{
		{events: 0x1, want: "EPOLLIN"},
		{events: 0x1 | 0x2000, want: "EPOLLIN|EPOLLRDHUP"},
		{events: 0x8 | 0x10, want: "EPOLLERR|EPOLLHUP"},
		{events: 0, want: ""},
	}
	for _, tt := range tests {
		if got := eventString(tt.events); got != tt.want {
			t.Errorf("eventString(%#x) = %q, want %q", tt.events, got, tt.want)
		}
	}
}

// TestStage: what the grader's stage requires is what this chapter passes
// (TestScenarios proves each pass), so `grade -stage 3` passes against it.
func TestStage(t *testing.T) {
	scenarios, err := harness.Stage(3)
	require.NoError(t, err)
	for _, s := range scenarios {
		if got := expectations[s.Name].Outcome; got != harness.Pass {
			t.Errorf("stage 3 scenario %s: declared %q, want %q", s.Name, got, harness.Pass)
		}
	}
}

// runServer runs the chapter's server in this process on 127.0.0.1:0 and
// shuts it down when the test ends.
func runServer(t *testing.T, cfg config) *server {
	t.Helper()
	cfg.addr = "127.0.0.1:0"
	s, err := newServer(cfg)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- s.serve() }()
	t.Cleanup(func() {
		s.shutdown()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("serve still running 5 s after shutdown")
		}
	})
	return s
}

// dialServer connects a client to s, closed when the test ends.
func dialServer(t *testing.T, s *server) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.addr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// TestNoRepliesLostAfterError is the data loss of closing with input
// unread: the kernel answers the client's next bytes with a RST, and a RST
// throws away every reply still in flight. The client pipelines 2,000
// lines and one over -max-line, then keeps sending; it must read every
// reply, then the error line, then EOF.
func TestNoRepliesLostAfterError(t *testing.T) {
	const lines, maxLine = 2000, 1024
	s := runServer(t, config{mode: protocol.Stamp, maxLine: maxLine})
	c := dialServer(t, s)

	line := append(bytes.Repeat([]byte("a"), 500), '\n')
	req := append(bytes.Repeat(line, lines), bytes.Repeat([]byte("x"), 2*maxLine)...)
	req = append(req, '\n')
	go func() {
		// Until the test closes c: a client that has not read the error
		// line yet has no reason to stop.
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(req); err != nil {
			return
		}
		junk := bytes.Repeat([]byte("j"), 4<<10)
		for {
			if _, err := c.Write(junk); err != nil {
				return
			}
		}
	}()

	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	for i := range lines {
		got, err := r.ReadBytes('\n')
		if err != nil {
			t.Fatalf("reply %d of %d: %v", i+1, lines, err)
		}
		if !bytes.Contains(got, []byte("server reply: "+string(line))) {
			t.Fatalf("reply %d of %d = %.60q..., want a reply to the 500-byte line", i+1, lines, got)
		}
	}
	got, err := r.ReadBytes('\n')
	if err != nil || !bytes.HasPrefix(got, []byte("error: ")) {
		t.Fatalf("after %d replies: %q, %v; want the error line", lines, got, err)
	}
	if b, err := r.ReadByte(); err != io.EOF {
		t.Fatalf("after the error line: byte %q, error %v; want EOF", b, err)
	}
}

// TestUnfinishedLineAtShutdown: at the end of grace, a line the client
// has not finished is dropped, not answered: only the client's FIN makes
// an unterminated last line a line. The client gets its one reply, then
// EOF.
func TestUnfinishedLineAtShutdown(t *testing.T) {
	s := runServer(t, config{mode: protocol.Stamp, maxLine: protocol.DefaultMaxLine})
	c := dialServer(t, s)
	_, err := c.Write([]byte("hello\nhalf-a-li"))
	require.NoError(t, err)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	got, err := r.ReadBytes('\n')
	if err != nil || !bytes.HasSuffix(got, []byte("server reply: hello\n")) {
		t.Fatalf("first reply: %q, %v; want the reply to hello", got, err)
	}
	s.shutdown()
	rest, err := io.ReadAll(r)
	if err != nil || len(rest) != 0 {
		t.Errorf("after shutdown: %q, %v; want EOF and nothing else", rest, err)
	}
}

// failAccept makes every accept fail with errno until the test ends.
func failAccept(t *testing.T, errno unix.Errno) {
	t.Helper()
	accept4 = func(int, int) (int, unix.Sockaddr, error) { return -1, nil, errno }
	t.Cleanup(func() { accept4 = unix.Accept4 })
}

// listeningServer is a server that listens on 127.0.0.1:0, with no loop
// running: the test drives it.
func listeningServer(t *testing.T) *server {
	t.Helper()
	s, err := newServer(config{addr: "127.0.0.1:0", mode: protocol.Echo, maxLine: protocol.DefaultMaxLine})
	require.NoError(t, err)
	t.Cleanup(func() {
		for _, c := range s.conns {
			unix.Close(c.fd)
		}
		unix.Close(s.epfd)
		unix.Close(s.lfd)
	})
	return s
}

// TestAcceptErrorDoesNotSpin: whatever makes accept fail, a connection
// still waits in the backlog, so a level-triggered listener stays ready.
// Unless the loop stops watching it, epoll_wait returns at once, forever.
func TestAcceptErrorDoesNotSpin(t *testing.T) {
	for _, errno := range []unix.Errno{unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM, unix.EPERM} {
		t.Run(unix.ErrnoName(errno), func(t *testing.T) {
			s := listeningServer(t)
			failAccept(t, errno)
			dialServer(t, s)
			events := make([]unix.EpollEvent, 4)
			if n, err := epollWait(s.epfd, events, 5000); n != 1 || err != nil {
				t.Fatalf("epoll_wait with a client in the backlog: %d events, %v; want 1", n, err)
			}
			s.acceptOne()
			if n, _ := epollWait(s.epfd, events, 0); n != 0 {
				t.Errorf("epoll_wait after accept failed with %s: %d events (%s), want 0: the loop spins",
					unix.ErrnoName(errno), n, eventString(events[0].Events))
			}
		})
	}
}

// TestPausedAcceptRetries: accepting paused for want of fds resumes on a
// timer too, not only when one of the server's own connections closes:
// the fds may be held by another process, or the server may have no
// connection to close. The pause doubles from 10 ms to 1 s while accept
// keeps failing.
func TestPausedAcceptRetries(t *testing.T) {
	s := listeningServer(t)
	failAccept(t, unix.EMFILE)
	dialServer(t, s)
	events := make([]unix.EpollEvent, 4)
	epollWait(s.epfd, events, 5000)
	s.acceptOne()
	if got := s.timeout(); got < 1 || got > 11 {
		t.Fatalf("timeout() with accepting paused = %d, want 1 to 11 ms", got)
	}

	// The shortage ends, and no connection closes to say so.
	accept4 = unix.Accept4
	buf := make([]byte, readSize)
	for deadline := time.Now().Add(time.Second); len(s.conns) == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("no connection accepted 1 s after accept4 works again (timeout() = %d)", s.timeout())
		}
		require.NoError(t, s.turn(events, buf))
	}
	if got := s.timeout(); got != -1 {
		t.Errorf("timeout() once accepting again = %d, want -1", got)
	}

	var got []time.Duration
	for range 9 {
		s.pauseAccept(unix.EMFILE)
		got = append(got, s.acceptBackoff)
	}
	want := []time.Duration{10, 20, 40, 80, 160, 320, 640, 1000, 1000}
	for i := range want {
		want[i] *= time.Millisecond
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("pauses while accept keeps failing (-want +got):\n%s", diff)
	}
}

// TestEpollWaitEINTR: a signal ends the wait early, and epollWait says so
// with 0 events, so that the loop recomputes its timeout. Retrying with
// the original timeout would let every signal push the end of grace back.
// SIGURG is the runtime's own preemption signal: harmless to send.
func TestEpollWaitEINTR(t *testing.T) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(epfd) })
	type result struct {
		n       int
		err     error
		elapsed time.Duration
	}
	tid := make(chan int, 1)
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tid <- unix.Gettid()
		start := time.Now()
		n, err := epollWait(epfd, make([]unix.EpollEvent, 1), 5000)
		done <- result{n: n, err: err, elapsed: time.Since(start)}
	}()
	thread := <-tid
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	stop := time.After(2 * time.Second)
	for {
		select {
		case <-tick.C:
			unix.Tgkill(unix.Getpid(), thread, unix.SIGURG)
			continue
		case <-stop:
			got := <-done
			t.Fatalf("epollWait still waiting after 2 s of signals; returned after %v: %d, %v", got.elapsed, got.n, got.err)
		case got := <-done:
			if got.n != 0 || got.err != nil || got.elapsed > time.Second {
				t.Errorf("interrupted epollWait(5 s) = %d, %v after %v; want 0, nil well before 5 s", got.n, got.err, got.elapsed)
			}
		}
		return
	}
}

// TestHandleAllocs: with -v off, one event's work (read a request, answer
// it) allocates nothing: tracing must not build its arguments, and the
// errors the hot path meets must not be wrapped until they end something.
func TestHandleAllocs(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	cfg := config{mode: protocol.Echo, maxLine: protocol.DefaultMaxLine}
	s := &server{cfg: cfg, lfd: -1, epfd: -1, conns: map[int]*conn{}}
	c := newConn(fds[0], cfg)
	s.conns[c.fd] = c
	req := bytes.Repeat([]byte("x"), 300) // a read's n above 255 would box
	reply := make([]byte, 2*len(req))
	buf := make([]byte, readSize)
	allocs := testing.AllocsPerRun(100, func() {
		unix.Write(fds[1], req)
		s.handle(c, unix.EPOLLIN, buf)
		if n, err := unix.Read(fds[1], reply); n != len(req) || err != nil {
			t.Fatalf("echo: read %d bytes, %v; want %d", n, err, len(req))
		}
	})
	if allocs != 0 {
		t.Errorf("allocations per event in echo mode, tracing off = %v, want 0", allocs)
	}
}

// TestHardStopFails: a loop stuck writing to a client that never reads
// cannot finish; the hard stop that ends it must not report success.
func TestHardStopFails(t *testing.T) {
	s := harness.StartServer(t, harness.Build(t, "."), "-mode", "echo")
	c, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	// Flood until the server stops taking bytes: it is blocked writing.
	chunk := make([]byte, 64<<10)
	for sent := 0; ; sent += len(chunk) {
		c.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
		if _, err := c.Write(chunk); err != nil {
			break
		}
		require.Less(t, sent, 1<<30, "the server took 1 GiB without blocking")
	}
	require.NoError(t, s.Signal(unix.SIGTERM))
	select {
	case <-s.Exited():
	case <-time.After(5 * time.Second):
		t.Fatal("still running 5 s after SIGTERM")
	}
	var exit *exec.ExitError
	if err := s.ExitStatus(); !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Errorf("exit status after a hard stop: %v, want exit status 1", err)
	}
	if out := s.Output(); !strings.Contains(out, "connections abandoned: 1") {
		t.Errorf("stderr after a hard stop: %q, want it to say 1 connection was abandoned", out)
	}
}

// FuzzServer sends random streams, cut at random points, on several
// connections at once, and checks every reply against the protocol
// package's own answer (see harness.FuzzServer for how to fuzz longer).
func FuzzServer(f *testing.F) {
	harness.FuzzServer(f, harness.Build(f, "."))
}
