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

// expectations is this chapter's column of the capability matrix, one per
// model. A limit names the failure that proves it; the README's matrix is
// checked against this table by TestMatrix.
var expectations = map[string]harness.Expectations{
	"serial": {
		"reply":   harness.Passes(),
		"framing": harness.Passes(),
		"echo":    harness.Passes(),
		"concurrent": harness.Limited(harness.Stall, "client 3 of 3",
			"the second client waits in the listen backlog until the first disconnects"),
		"many": harness.Limited(harness.Stall, "one line on each of 1,100",
			"one connection is served; 1,099 wait in the backlog"),
		"pipeline": harness.Limited(harness.Stall, "reply 1 of 20000 pipelined lines",
			"connection 1 is served to the end while the other 19 wait in the backlog"),
		"bulk": harness.Passes(),
		"slow-reader": harness.Limited(harness.Stall, "another client, while one floods",
			"the server is busy with the client that never reads, so nobody else is served"),
		"close":      harness.Passes(),
		"faults":     harness.Passes(),
		"half-close": harness.Passes(),
		"long-line":  harness.Passes(),
		"hostile":    harness.Passes(),
		"linger":     harness.Passes(),
		"idle": harness.Limited(harness.Stall, "reply to idle client 2 of 10",
			"the server reads client 1 and nobody else, so only one of ten idle clients is ever registered"),
		"shutdown":   harness.Passes(),
		"unfinished": harness.Passes(),
		"shutdown-load": harness.Limited(harness.Stall, "client 2 of 32: reply 1, before SIGTERM",
			"client 1 of 32 is served while the other 31 wait in the backlog, so the load never gets under way"),
		"fd-limit": harness.Limited(harness.Stall, "fds taken while",
			"one client at a time never takes the fds its limit allows, so accept never meets EMFILE"),
	},
	"thread": {
		"reply":         harness.Passes(),
		"framing":       harness.Passes(),
		"echo":          harness.Passes(),
		"concurrent":    harness.Passes(),
		"many":          harness.Passes(),
		"pipeline":      harness.Passes(),
		"bulk":          harness.Passes(),
		"slow-reader":   harness.Passes(),
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

var models = []string{"serial", "thread"}

func TestScenarios(t *testing.T) {
	server := harness.Build(t, ".")
	for _, model := range models {
		t.Run(model, func(t *testing.T) {
			harness.Check(t, server.With("-model", model), expectations[model])
		})
	}
}

// TestMatrix keeps the README's capability matrix true: each model's column
// must say what expectations declares, and what TestScenarios proves.
func TestMatrix(t *testing.T) {
	for _, model := range models {
		harness.CheckMatrix(t, "../README.md", "01 "+model, expectations[model])
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
	for model, exp := range expectations {
		for name, e := range exp {
			if e.Outcome == harness.Limit && !strings.Contains(string(b), "`"+name+"`") {
				t.Errorf("README.md does not name `%s`, a limit of -model %s (%s)", name, model, e.Why)
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
			want: config{addr: "127.0.0.1:12345", maxLine: 65536, model: "serial"}},
		{name: "thread echo", args: []string{"-model", "thread", "-mode", "echo", "-addr", "127.0.0.1:0"},
			want: config{addr: "127.0.0.1:0", mode: 1, maxLine: 65536, model: "thread"}},
		{name: "unknown model", args: []string{"-model", "fork"}, wantErr: `unknown -model "fork"`},
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

func TestParseAddr(t *testing.T) {
	tests := []struct {
		addr    string
		want    string
		wantErr bool
	}{
		{addr: "127.0.0.1:12345", want: "127.0.0.1:12345"},
		{addr: "localhost:0", want: "127.0.0.1:0"},
		{addr: "0.0.0.0:80", want: "0.0.0.0:80"},
		{addr: "[::1]:80", wantErr: true},
		{addr: "12345", wantErr: true},
		{addr: "127.0.0.1:99999", wantErr: true},
	}
	for _, tt := range tests {
		sa, err := parseAddr(tt.addr)
		if tt.wantErr {
			if err == nil {
				t.Errorf("parseAddr(%q) = %v, want an error", tt.addr, sockaddrString(sa))
			}
			continue
		}
		if err != nil {
			t.Errorf("parseAddr(%q): %v", tt.addr, err)
			continue
		}
		if got := sockaddrString(sa); got != tt.want {
			t.Errorf("parseAddr(%q) = %s, want %s", tt.addr, got, tt.want)
		}
	}
}

// TestListenTwice: the seed sets SO_REUSEPORT, so a second server started
// on the same port binds without complaint and silently takes half of the
// connections. With SO_REUSEADDR alone, the second bind must fail.
func TestListenTwice(t *testing.T) {
	fd, addr, err := listenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatalf("first listenTCP: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	fd2, _, err := listenTCP(addr)
	if err == nil {
		unix.Close(fd2)
		t.Fatalf("second listenTCP(%s) succeeded, want EADDRINUSE", addr)
	}
	if !errors.Is(err, unix.EADDRINUSE) {
		t.Errorf("second listenTCP(%s) error = %v, want EADDRINUSE", addr, err)
	}
}

// TestStage: what the grader's stage requires is what this chapter passes
// (TestScenarios proves each pass), so `grade -stage N` passes against it.
// Serial is the stage-1 server; thread passes everything up to stage 4.
func TestStage(t *testing.T) {
	for model, stage := range map[string]int{"serial": 1, "thread": 4} {
		scenarios, err := harness.Stage(stage)
		require.NoError(t, err)
		for _, s := range scenarios {
			if got := expectations[model][s.Name].Outcome; got != harness.Pass {
				t.Errorf("-model %s, stage %d scenario %s: declared %q, want %q", model, stage, s.Name, got, harness.Pass)
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
	for _, model := range models {
		t.Run(model, func(t *testing.T) {
			const lines, maxLine = 2000, 1024
			s := runServer(t, config{mode: protocol.Stamp, maxLine: maxLine, model: model})
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
	for _, model := range models {
		t.Run(model, func(t *testing.T) {
			s := runServer(t, config{mode: protocol.Stamp, maxLine: protocol.DefaultMaxLine, model: model})
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

// TestLateBytesAfterGraceEnd: at the end of grace the server shuts its
// write side and lingers, reading and dropping what the client still
// sends until the client closes. A socket shut for reading as well (the
// easy way to wake a thread blocked in read) would answer those bytes with
// a RST instead, and a RST throws away every reply still on its way.
func TestLateBytesAfterGraceEnd(t *testing.T) {
	for _, model := range models {
		t.Run(model, func(t *testing.T) {
			s := runServer(t, config{mode: protocol.Stamp, maxLine: protocol.DefaultMaxLine, model: model})
			c := dialServer(t, s)
			_, err := c.Write([]byte("hello\n"))
			require.NoError(t, err)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			r := bufio.NewReader(c)
			_, err = r.ReadBytes('\n')
			require.NoError(t, err)
			s.shutdown()
			if b, err := r.ReadByte(); err != io.EOF {
				t.Fatalf("after shutdown: byte %q, error %v; want EOF", b, err)
			}
			// The server has shut its write side. Bytes sent now must be
			// read and dropped: a RST would make a later write fail.
			junk := bytes.Repeat([]byte("late line\n"), 100)
			c.SetWriteDeadline(time.Now().Add(time.Second))
			for end := time.Now().Add(200 * time.Millisecond); time.Now().Before(end); {
				if _, err := c.Write(junk); err != nil {
					t.Fatalf("write after the server's FIN: %v; want the server to drop the bytes, not reset", err)
				}
			}
		})
	}
}

// TestRegisteredAfterGraceEnds: a connection accepted as grace ends, whose
// thread starts only after endGrace has swept the table, must still be
// drained; a thread left blocked in read would keep serve, and the
// process, from ever returning.
func TestRegisteredAfterGraceEnds(t *testing.T) {
	s := runServer(t, config{mode: protocol.Stamp, maxLine: protocol.DefaultMaxLine, model: "thread"})
	s.endGrace()
	c := dialServer(t, s)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if b, err := bufio.NewReader(c).ReadByte(); err != io.EOF {
		t.Errorf("a connection accepted after grace: byte %q, error %v; want EOF at once", b, err)
	}
}

// TestHandleAllocs: with -v off, one read's work (read a request, answer
// it) allocates nothing: tracing must not build its arguments, and the
// errors the hot path meets must not be wrapped until they end something.
func TestHandleAllocs(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	cfg := config{mode: protocol.Echo, maxLine: protocol.DefaultMaxLine}
	s := &server{cfg: cfg, lfd: -1, conns: map[int]*conn{}}
	c := newConn(fds[0], cfg)
	s.conns[c.fd] = c
	req := bytes.Repeat([]byte("x"), 300) // a read's n above 255 would box
	reply := make([]byte, 2*len(req))
	buf := make([]byte, readSize)
	allocs := testing.AllocsPerRun(100, func() {
		unix.Write(fds[1], req)
		s.handle(c, buf)
		if n, err := unix.Read(fds[1], reply); n != len(req) || err != nil {
			t.Fatalf("echo: read %d bytes, %v; want %d", n, err, len(req))
		}
	})
	if allocs != 0 {
		t.Errorf("allocations per read in echo mode, tracing off = %v, want 0", allocs)
	}
}

// TestHardStopFails: a thread stuck writing to a client that never reads
// cannot finish; the hard stop that ends the process must not report
// success.
func TestHardStopFails(t *testing.T) {
	for _, model := range models {
		t.Run(model, func(t *testing.T) {
			s := harness.StartServer(t, harness.Build(t, "."), "-model", model)
			c, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
			require.NoError(t, err)
			t.Cleanup(func() { c.Close() })
			// Flood until the server stops taking bytes: it is blocked
			// writing. Short lines make each read's replies 20 times its
			// size, more than one write interrupted by endGrace can
			// finish with.
			chunk := bytes.Repeat([]byte("x\n"), 32<<10)
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
