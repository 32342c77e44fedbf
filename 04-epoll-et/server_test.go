//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
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
	"bulk":       harness.Passes(),
	"slow-reader": harness.Limited(harness.Stall, "another client, while one floods",
		"the loop waits in poll() until the client that never reads makes room, and every other client waits"),
	"close":      harness.Passes(),
	"half-close": harness.Passes(),
	"long-line":  harness.Passes(),
	"linger": harness.Limited(harness.Refused, "lines sent before one over -max-line",
		"closes with the client's input unread after the error line: RST throws away replies not yet sent"),
	"idle":     harness.Passes(),
	"shutdown": harness.Passes(),
	"unfinished": harness.Limited(harness.Wrong, "the end of the stream after SIGTERM",
		"answers the unfinished rest of the input at shutdown as if the client had half-closed"),
	"fd-limit": harness.Limited(harness.Stall, "no fd to spare",
		"after EMFILE it accepts again only when a connection of its own closes: never, with none to close"),
}

func TestScenarios(t *testing.T) {
	harness.Check(t, harness.Build(t, "."), expectations)
}

// TestMatrix keeps the README's capability matrix true to expectations,
// which TestScenarios proves.
func TestMatrix(t *testing.T) {
	harness.CheckMatrix(t, "../README.md", "04 epoll-et", expectations)
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
		{events: 0x1 | 0x2000 | 0x10, want: "EPOLLIN|EPOLLRDHUP|EPOLLHUP"},
		{events: 0, want: ""},
	}
	for _, tt := range tests {
		if got := eventString(tt.events); got != tt.want {
			t.Errorf("eventString(%#x) = %q, want %q", tt.events, got, tt.want)
		}
	}
}

// TestStage: what the grader's stage requires is what this chapter passes
// (TestScenarios proves each pass), so `grade -stage 4` passes against it.
func TestStage(t *testing.T) {
	scenarios, err := harness.Stage(4)
	require.NoError(t, err)
	for _, s := range scenarios {
		if got := expectations[s.Name].Outcome; got != harness.Pass {
			t.Errorf("stage 4 scenario %s: declared %q, want %q", s.Name, got, harness.Pass)
		}
	}
}

// TestSeedOneAcceptPerSignal guards against the seed's accept thread, which
// calls accept once per pthread_cond_signal: signals that come while it is
// busy are lost, and so are their connections. Under edge-triggered epoll
// one accept per event is the same mistake, since a burst of connects makes
// one edge. A burst of clients dialling at once must all be answered.
func TestSeedOneAcceptPerSignal(t *testing.T) {
	const clients = 64
	burst := harness.Scenario{
		Name: "accept-burst",
		What: fmt.Sprintf("%d clients connect at once; each is answered within 2 s", clients),
		Run: func(e *harness.Env) error {
			s, err := e.Start()
			if err != nil {
				return err
			}
			deadline := time.Now().Add(2 * time.Second)
			errs := make([]error, clients)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range clients {
				wg.Go(func() {
					<-start
					errs[i] = dialAndAsk(e, s, fmt.Sprintf("burst client %d", i), deadline)
				})
			}
			close(start)
			wg.Wait()
			failed := 0
			for _, err := range errs {
				if err != nil {
					failed++
				}
			}
			for _, err := range errs {
				if err != nil {
					e.Logf("%d of %d clients were not answered; the first:", failed, clients)
					return err
				}
			}
			return nil
		},
	}
	r := harness.Run(context.Background(), burst, harness.Build(t, "."), harness.Options{Logf: t.Logf})
	if r.Failure != nil {
		t.Fatalf("%v\nserver output (tail):\n%s", r.Failure, r.Output)
	}
}

func dialAndAsk(e *harness.Env, s *harness.Server, line string, deadline time.Time) error {
	c, err := e.Dial(s)
	if err != nil {
		return err
	}
	if err := c.Send([]byte(line + "\n")); err != nil {
		return err
	}
	return c.ExpectReply(line, []byte(line), deadline)
}

// testServer is a server with no listener, for calling handle directly on
// one end of a socket pair; the test holds the other end.
func testServer(t *testing.T, mode protocol.Mode) (s *server, c *conn, peer int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config{mode: mode, maxLine: protocol.DefaultMaxLine}
	s = &server{cfg: cfg, lfd: -1, epfd: epfd, conns: map[int]*conn{}}
	t.Cleanup(func() {
		unix.Close(epfd)
		unix.Close(fds[1])
		if s.conns[fds[0]] != nil { // not closed by the server already
			unix.Close(fds[0])
		}
	})
	if err := s.watch(fds[0], unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLET); err != nil {
		t.Fatal(err)
	}
	c = newConn(fds[0], cfg)
	s.conns[c.fd] = c
	return s, c, fds[1]
}

// TestReadBudget: a client with more than a budget's worth of bytes gets
// readBudget reads, then waits on the revisit list; epoll has no second
// edge for the bytes left, so the list is all that remembers them, and
// epoll_wait must not sleep while it is not empty.
func TestReadBudget(t *testing.T) {
	s, c, peer := testServer(t, protocol.Echo)
	const chunk = 1 << 10 // the read size handle is given: a budget is 16 KiB
	sent := bytes.Repeat([]byte("0123456789abcdef"), (readBudget+4)*chunk/16)
	if n, err := unix.Write(peer, sent); n != len(sent) || err != nil {
		t.Fatalf("write %d bytes: n=%d, %v", len(sent), n, err)
	}
	events := make([]unix.EpollEvent, 4)
	if n, _ := epollWait(s.epfd, events, 0); n != 1 {
		t.Fatalf("epoll_wait after the write: %d events, want 1 (the edge)", n)
	}

	buf := make([]byte, chunk)
	s.handle(c, unix.EPOLLIN, buf)
	if !c.queued || len(s.revisit) != 1 {
		t.Fatalf("after %d reads of %d bytes: queued=%v, revisit list of %d; want the connection on it",
			readBudget, len(sent)/chunk, c.queued, len(s.revisit))
	}
	if n, _ := epollWait(s.epfd, events, 0); n != 0 {
		t.Errorf("epoll_wait with bytes left unread: %d events, want 0 (no new edge)", n)
	}
	if got := s.timeout(); got != 0 {
		t.Errorf("timeout() with a revisit owed = %d, want 0", got)
	}

	s.serveRevisits(buf)
	if c.queued || len(s.revisit) != 0 {
		t.Errorf("after the revisit: queued=%v, revisit list of %d; want it drained", c.queued, len(s.revisit))
	}
	if got := s.timeout(); got != -1 {
		t.Errorf("timeout() with nothing owed = %d, want -1", got)
	}
	got := make([]byte, 2*len(sent))
	n, err := unix.Read(peer, got)
	if err != nil || !bytes.Equal(got[:n], sent) {
		t.Errorf("echo: read %d bytes (%v), want the %d sent", n, err, len(sent))
	}

	// The FIN is one more edge, and its read returns 0: close.
	unix.Shutdown(peer, unix.SHUT_WR)
	s.handle(c, unix.EPOLLIN|unix.EPOLLRDHUP, buf)
	if len(s.conns) != 0 {
		t.Errorf("after EOF the table still holds %d connections", len(s.conns))
	}
}

// TestWriteAllWaitsForRoom: on a full non-blocking socket writeAll waits in
// poll(2) and finishes once the reader makes room, instead of failing with
// EAGAIN (or sleeping, as the seed does).
func TestWriteAllWaitsForRoom(t *testing.T) {
	_, c, peer := testServer(t, protocol.Echo)
	filled := fill(t, c.fd)
	more := bytes.Repeat([]byte{'x'}, 1<<20)
	done := make(chan error, 1)
	go func() { done <- writeAll(c.fd, more) }()

	want := len(filled) + len(more)
	unix.SetNonblock(peer, false)
	got := 0
	buf := make([]byte, 64<<10)
	for got < want {
		n, err := unix.Read(peer, buf)
		if err != nil || n == 0 {
			t.Fatalf("read after %d of %d bytes: n=%d, %v", got, want, n, err)
		}
		got += n
	}
	if err := <-done; err != nil {
		t.Errorf("writeAll on a full socket: %v, want nil once the reader made room", err)
	}
}

// TestWriteAllPeerGone: a wait for room ends when the reader goes away.
// (shutdown, not close: the test's cleanup closes the fd.)
func TestWriteAllPeerGone(t *testing.T) {
	_, c, peer := testServer(t, protocol.Echo)
	fill(t, c.fd)
	done := make(chan error, 1)
	go func() { done <- writeAll(c.fd, []byte("more")) }()
	unix.Shutdown(peer, unix.SHUT_RDWR)
	if err := <-done; !errors.Is(err, unix.EPIPE) && !errors.Is(err, unix.ECONNRESET) {
		t.Errorf("writeAll to a closed peer: %v, want EPIPE or ECONNRESET", err)
	}
}

// fill writes to fd until it fails with EAGAIN and returns what it wrote.
func fill(t *testing.T, fd int) []byte {
	t.Helper()
	chunk := bytes.Repeat([]byte{'f'}, 4<<10)
	var all []byte
	for {
		n, err := unix.Write(fd, chunk)
		if err == unix.EAGAIN {
			return all
		}
		if err != nil {
			t.Fatalf("fill: %v", err)
		}
		all = append(all, chunk[:n]...)
	}
}
