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
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"reactorlab/shared/harness"
	"reactorlab/shared/protocol"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// expectations is this chapter's column of the capability matrix, one per
// poller. A limit names the failure that proves it; the README's matrix is
// checked against this table by TestMatrix.
var expectations = map[string]harness.Expectations{
	"select": {
		"reply":      harness.Passes(),
		"framing":    harness.Passes(),
		"echo":       harness.Passes(),
		"concurrent": harness.Passes(),
		"many": harness.Limited(harness.Refused, "one line on each of 1,100",
			"fds past 1023 cannot go in an fd_set, so they are refused"),
		"pipeline": harness.Passes(),
		"bulk":     harness.Passes(),
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
	},
	"poll": {
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
	},
}

var pollers = []string{"select", "poll"}

func TestScenarios(t *testing.T) {
	server := harness.Build(t, ".")
	for _, poller := range pollers {
		t.Run(poller, func(t *testing.T) {
			harness.Check(t, server.With("-poller", poller), expectations[poller])
		})
	}
}

// TestMatrix keeps the README's capability matrix true: each poller's
// column must say what expectations declares, and what TestScenarios
// proves.
func TestMatrix(t *testing.T) {
	for _, poller := range pollers {
		harness.CheckMatrix(t, "../README.md", "02 "+poller, expectations[poller])
	}
}

// TestREADMENamesLimits: the chapter README's "what breaks" section names
// every scenario this chapter declares a limit, so a student who reads it
// knows what the tests prove.
func TestREADMENamesLimits(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for poller, exp := range expectations {
		for name, e := range exp {
			if e.Outcome == harness.Limit && !strings.Contains(string(b), "`"+name+"`") {
				t.Errorf("README.md does not name `%s`, a limit of -poller %s (%s)", name, poller, e.Why)
			}
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
			want: config{addr: "127.0.0.1:12345", maxLine: 65536, poller: "poll"}},
		{name: "select echo", args: []string{"-poller", "select", "-mode", "echo", "-addr", "127.0.0.1:0"},
			want: config{addr: "127.0.0.1:0", mode: 1, maxLine: 65536, poller: "select"}},
		{name: "unknown poller", args: []string{"-poller", "epoll"}, wantErr: `unknown -poller "epoll"`},
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

// TestFitsFdSet: the guard in front of FdSet.Set admits exactly the fds an
// fd_set has a bit for. The `many` scenario shows the same end to end.
func TestFitsFdSet(t *testing.T) {
	if bits := int(unsafe.Sizeof(unix.FdSet{})) * 8; bits != fdSetSize {
		t.Fatalf("unix.FdSet has %d bits, fdSetSize is %d", bits, fdSetSize)
	}
	tests := []struct {
		fd   int
		want bool
	}{
		{fd: 0, want: true},
		{fd: 1023, want: true},
		{fd: 1024, want: false},
		{fd: 4096, want: false},
		{fd: -1, want: false},
	}
	for _, tt := range tests {
		if got := fitsFdSet(tt.fd); got != tt.want {
			t.Errorf("fitsFdSet(%d) = %v, want %v", tt.fd, got, tt.want)
		}
	}
}

func TestReventString(t *testing.T) {
	tests := []struct {
		revents int16
		want    string
	}{
		{revents: 0x1, want: "POLLIN"},
		{revents: 0x1 | 0x10, want: "POLLIN|POLLHUP"},
		{revents: 0x8 | 0x10, want: "POLLERR|POLLHUP"},
		{revents: 0x20, want: "POLLNVAL"},
		{revents: 0, want: ""},
	}
	for _, tt := range tests {
		if got := reventString(tt.revents); got != tt.want {
			t.Errorf("reventString(%#x) = %q, want %q", tt.revents, got, tt.want)
		}
	}
}

func TestMsecTimeval(t *testing.T) {
	if tv := msecTimeval(-1); tv != nil {
		t.Errorf("msecTimeval(-1) = %+v, want nil (block until ready)", *tv)
	}
	tests := []struct {
		msec int
		want unix.Timeval
	}{
		{msec: 0, want: unix.Timeval{}},
		{msec: 1500, want: unix.Timeval{Sec: 1, Usec: 500000}},
	}
	for _, tt := range tests {
		tv := msecTimeval(tt.msec)
		if tv == nil || *tv != tt.want {
			t.Errorf("msecTimeval(%d) = %v, want %+v", tt.msec, tv, tt.want)
		}
	}
}

// TestStage: what the grader's stage requires is what this chapter passes
// (TestScenarios proves each pass), so `grade -stage N` passes against it.
// select is the stage-2 server; poll also passes stage 3's `many`.
func TestStage(t *testing.T) {
	for poller, stage := range map[string]int{"select": 2, "poll": 3} {
		scenarios, err := harness.Stage(stage)
		require.NoError(t, err)
		for _, s := range scenarios {
			if got := expectations[poller][s.Name].Outcome; got != harness.Pass {
				t.Errorf("-poller %s, stage %d scenario %s: declared %q, want %q", poller, stage, s.Name, got, harness.Pass)
			}
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
	for _, poller := range pollers {
		t.Run(poller, func(t *testing.T) {
			const lines, maxLine = 2000, 1024
			s := runServer(t, config{mode: protocol.Stamp, maxLine: maxLine, poller: poller})
			c := dialServer(t, s)

			line := append(bytes.Repeat([]byte("a"), 500), '\n')
			req := append(bytes.Repeat(line, lines), bytes.Repeat([]byte("x"), 2*maxLine)...)
			req = append(req, '\n')
			go func() {
				// Until the test closes c: a client that has not read the
				// error line yet has no reason to stop.
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
		})
	}
}

// TestUnfinishedLineAtShutdown: at the end of grace, a line the client
// has not finished is dropped, not answered: only the client's FIN makes
// an unterminated last line a line. The client gets its one reply, then
// EOF.
func TestUnfinishedLineAtShutdown(t *testing.T) {
	for _, poller := range pollers {
		t.Run(poller, func(t *testing.T) {
			s := runServer(t, config{mode: protocol.Stamp, maxLine: protocol.DefaultMaxLine, poller: poller})
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
		})
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
func listeningServer(t *testing.T, poller string) *server {
	t.Helper()
	s, err := newServer(config{addr: "127.0.0.1:0", mode: protocol.Echo, maxLine: protocol.DefaultMaxLine, poller: poller})
	require.NoError(t, err)
	t.Cleanup(func() {
		for _, c := range s.conns {
			unix.Close(c.fd)
		}
		unix.Close(s.lfd)
	})
	return s
}

// TestAcceptErrorDoesNotSpin: whatever makes accept fail, a connection
// still waits in the backlog, so a level-triggered listener stays ready.
// Unless the loop stops asking about it, every wait returns at once,
// forever.
func TestAcceptErrorDoesNotSpin(t *testing.T) {
	for _, poller := range pollers {
		for _, errno := range []unix.Errno{unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM, unix.EPERM} {
			t.Run(poller+"/"+unix.ErrnoName(errno), func(t *testing.T) {
				s := listeningServer(t, poller)
				failAccept(t, errno)
				dialServer(t, s)
				if fired, err := s.wait(); len(fired) != 1 || err != nil {
					t.Fatalf("wait with a client in the backlog: %v, %v; want the listener", fired, err)
				}
				s.acceptOne()
				if !s.acceptPaused {
					t.Fatalf("after accept failed with %s the listener is still in the set: "+
						"every wait returns at once, and the loop spins", unix.ErrnoName(errno))
				}
				if s.timeout() < 0 {
					t.Fatalf("timeout() = -1 with accepting paused: the wait would sleep forever (see TestPausedAcceptRetries)")
				}
				if fired, err := s.wait(); len(fired) != 0 || err != nil {
					t.Errorf("wait after accept failed with %s: %v, %v; want nothing until the pause ends",
						unix.ErrnoName(errno), fired, err)
				}
			})
		}
	}
}

// TestPausedAcceptRetries: accepting paused for want of fds resumes on a
// timer too, not only when one of the server's own connections closes:
// the fds may be held by another process, or the server may have no
// connection to close. The pause doubles from 10 ms to 1 s while accept
// keeps failing.
func TestPausedAcceptRetries(t *testing.T) {
	for _, poller := range pollers {
		t.Run(poller, func(t *testing.T) {
			s := listeningServer(t, poller)
			failAccept(t, unix.EMFILE)
			dialServer(t, s)
			s.wait()
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
				require.NoError(t, s.turn(buf))
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
		})
	}
}

// TestWaitEINTR: a signal ends the wait early, and selectWait and pollWait
// say so with 0 fds, so that the loop recomputes its timeout. Retrying
// with the original timeout would let every signal push the end of grace
// back. SIGURG is the runtime's own preemption signal: harmless to send.
func TestWaitEINTR(t *testing.T) {
	waits := map[string]func() (int, error){
		"select": func() (int, error) {
			var none unix.FdSet
			return selectWait(0, &none, msecTimeval(5000))
		},
		"poll": func() (int, error) { return pollWait(nil, 5000) },
	}
	for _, poller := range pollers {
		t.Run(poller, func(t *testing.T) {
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
				n, err := waits[poller]()
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
					t.Fatalf("%s still waiting after 2 s of signals; returned after %v: %d, %v", poller, got.elapsed, got.n, got.err)
				case got := <-done:
					if got.n != 0 || got.err != nil || got.elapsed > time.Second {
						t.Errorf("interrupted %s(5 s) = %d, %v after %v; want 0, nil well before 5 s", poller, got.n, got.err, got.elapsed)
					}
				}
				return
			}
		})
	}
}

// TestHandleAllocs: with -v off, one event's work (read a request, answer
// it) allocates nothing: tracing must not build its arguments, and the
// errors the hot path meets must not be wrapped until they end something.
func TestHandleAllocs(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	cfg := config{mode: protocol.Echo, maxLine: protocol.DefaultMaxLine, poller: "poll"}
	s := &server{cfg: cfg, lfd: -1, conns: map[int]*conn{}}
	c := newConn(fds[0], cfg)
	s.conns[c.fd] = c
	req := bytes.Repeat([]byte("x"), 300) // a read's n above 255 would box
	reply := make([]byte, 2*len(req))
	buf := make([]byte, readSize)
	allocs := testing.AllocsPerRun(100, func() {
		unix.Write(fds[1], req)
		s.handle(c, unix.POLLIN, buf)
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
	for _, poller := range pollers {
		t.Run(poller, func(t *testing.T) {
			s := harness.StartServer(t, harness.Build(t, "."), "-poller", poller, "-mode", "echo")
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
		})
	}
}

// FuzzServer sends random streams, cut at random points, on several
// connections at once, and checks every reply against the protocol
// package's own answer (see harness.FuzzServer for how to fuzz longer).
func FuzzServer(f *testing.F) {
	harness.FuzzServer(f, harness.Build(f, "."))
}
