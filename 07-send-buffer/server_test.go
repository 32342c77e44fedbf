//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"reactorlab/shared/harness"
	"reactorlab/shared/protocol"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// expectations is this chapter's column of the capability matrix, the
// same for both models and any number of loops: no scenario is a limit
// any more. TestMatrix holds the README to it.
var expectations = harness.Expectations{
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
}

// settings are the servers TestScenarios runs: both models, with one loop
// (or worker) and with four. One loop is where 03 to 06 showed their
// limit: a client that never reads stalled it, and everyone on it.
var settings = []struct {
	model string
	loops int
}{
	{model: "loops", loops: 1},
	{model: "loops", loops: 4},
	{model: "queue", loops: 1},
	{model: "queue", loops: 4},
}

func TestScenarios(t *testing.T) {
	server := harness.Build(t, ".")
	for _, st := range settings {
		t.Run(fmt.Sprintf("%s-%d", st.model, st.loops), func(t *testing.T) {
			harness.Check(t, server.With("-model", st.model, "-loops", fmt.Sprint(st.loops)), expectations)
		})
	}
}

// TestMatrix keeps the README's capability matrix true to expectations,
// which TestScenarios proves in every setting.
func TestMatrix(t *testing.T) {
	harness.CheckMatrix(t, "../README.md", "07 send-buffer", expectations)
}

// TestREADMELinks keeps the README's links into the code true: each
// [`name`](file.go#LN) must point at the line of file.go that declares
// name, and the failure says which line does now.
func TestREADMELinks(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	links := regexp.MustCompile("\\[`(\\w+)`\\]\\((\\w+\\.go)#L(\\d+)\\)").FindAllStringSubmatch(string(readme), -1)
	require.NotEmpty(t, links, "README.md links to no line of code")
	for _, m := range links {
		name, file, line := m[1], m[2], m[3]
		src, err := os.ReadFile(file)
		require.NoError(t, err)
		declares := regexp.MustCompile(`^(func (\([^)]*\) )?` + name + `\(|(const|var|type) ` + name + `\b)`)
		lines := strings.Split(string(src), "\n")
		n, _ := strconv.Atoi(line)
		if n < 1 || n > len(lines) || !declares.MatchString(lines[n-1]) {
			t.Errorf("README.md links %s to %s#L%s, which does not declare it; line %d does",
				name, file, line, slices.IndexFunc(lines, declares.MatchString)+1)
		}
	}
}

func TestParseFlags(t *testing.T) {
	cpus := runtime.NumCPU()
	tests := []struct {
		name    string
		args    []string
		want    config
		wantErr string
	}{
		{name: "defaults", args: nil,
			want: config{addr: "127.0.0.1:12345", maxLine: 65536, wakeup: "eventfd", model: "loops", loops: cpus,
				highWater: 1 << 20}},
		{name: "echo", args: []string{"-mode", "echo", "-addr", "127.0.0.1:0"},
			want: config{addr: "127.0.0.1:0", mode: 1, maxLine: 65536, wakeup: "eventfd", model: "loops", loops: cpus,
				highWater: 1 << 20}},
		{name: "pipe", args: []string{"-wakeup", "pipe"},
			want: config{addr: "127.0.0.1:12345", maxLine: 65536, wakeup: "pipe", model: "loops", loops: cpus,
				highWater: 1 << 20}},
		{name: "queue", args: []string{"-model", "queue", "-loops", "3"},
			want: config{addr: "127.0.0.1:12345", maxLine: 65536, wakeup: "eventfd", model: "queue", loops: 3,
				highWater: 1 << 20}},
		{name: "buffer and idle", args: []string{"-high-water", "4096", "-idle-timeout", "90s"},
			want: config{addr: "127.0.0.1:12345", maxLine: 65536, wakeup: "eventfd", model: "loops", loops: cpus,
				highWater: 4096, idleTimeout: 90 * time.Second}},
		{name: "unknown wakeup", args: []string{"-wakeup", "signal"}, wantErr: `unknown -wakeup "signal"`},
		{name: "unknown model", args: []string{"-model", "threads"}, wantErr: `unknown -model "threads"`},
		{name: "no loops", args: []string{"-loops", "0"}, wantErr: "-loops 0"},
		{name: "no high water", args: []string{"-high-water", "0"}, wantErr: "-high-water 0"},
		{name: "negative idle timeout", args: []string{"-idle-timeout", "-1s"}, wantErr: "-idle-timeout -1s"},
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

// TestStage: what the grader's last stage requires is what this chapter
// passes (TestScenarios proves each pass, in every setting), so `grade
// -stage 7` passes against it.
func TestStage(t *testing.T) {
	scenarios, err := harness.Stage(harness.MaxStage)
	require.NoError(t, err)
	require.Equal(t, 7, harness.MaxStage, "the last stage is this chapter's")
	for _, s := range scenarios {
		if got := expectations[s.Name].Outcome; got != harness.Pass {
			t.Errorf("stage 7 scenario %s: declared %q, want %q", s.Name, got, harness.Pass)
		}
	}
}

// TestSeedOneAcceptPerSignal guards against the seed's accept thread, which
// calls accept once per pthread_cond_signal: signals that come while it is
// busy are lost, and so are their connections. This chapter's acceptor
// takes no signal at all (it blocks in accept4 itself), and every
// connection it takes must reach the loop through the task queue: a burst
// of clients dialling at once must all be answered.
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

// testLoop is a loop with no server around it, for calling handle
// directly on one end of a socket pair; the test holds the other end.
func testLoop(t *testing.T, mode protocol.Mode) (l *loop, c *conn, peer int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config{mode: mode, maxLine: protocol.DefaultMaxLine, wakeup: "eventfd", model: "loops", loops: 1,
		highWater: defaultHighWater}
	l, err = newLoop(0, cfg, new(atomic.Int64))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l.close()
		unix.Close(fds[1])
		if l.conns.get(fds[0]) != nil { // not closed by the loop already
			unix.Close(fds[0])
		}
	})
	events := uint32(unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET)
	if err := l.watch(fds[0], events); err != nil {
		t.Fatal(err)
	}
	c = newConn(fds[0], cfg, events)
	l.conns.put(c)
	return l, c, fds[1]
}

// TestReadBudget: a client with more than a budget's worth of bytes gets
// readBudget reads, then waits on the revisit list; epoll has no second
// edge for the bytes left, so the list is all that remembers them, and
// epoll_wait must not sleep while it is not empty.
func TestReadBudget(t *testing.T) {
	l, c, peer := testLoop(t, protocol.Echo)
	const chunk = 1 << 10 // the read size handle is given: a budget is 16 KiB
	sent := bytes.Repeat([]byte("0123456789abcdef"), (readBudget+4)*chunk/16)
	if n, err := unix.Write(peer, sent); n != len(sent) || err != nil {
		t.Fatalf("write %d bytes: n=%d, %v", len(sent), n, err)
	}
	events := make([]unix.EpollEvent, 4)
	if n, _ := epollWait(l.epfd, events, 0); n != 1 {
		t.Fatalf("epoll_wait after the write: %d events, want 1 (the edge)", n)
	}

	buf := make([]byte, chunk)
	l.handle(c, unix.EPOLLIN, buf)
	if !c.queued || len(l.revisit) != 1 {
		t.Fatalf("after %d reads of %d bytes: queued=%v, revisit list of %d; want the connection on it",
			readBudget, len(sent)/chunk, c.queued, len(l.revisit))
	}
	if n, _ := epollWait(l.epfd, events, 0); n != 0 {
		t.Errorf("epoll_wait with bytes left unread: %d events, want 0 (no new edge)", n)
	}
	if got := l.timeout(); got != 0 {
		t.Errorf("timeout() with a revisit owed = %d, want 0", got)
	}

	l.serveRevisits(buf)
	if c.queued || len(l.revisit) != 0 {
		t.Errorf("after the revisit: queued=%v, revisit list of %d; want it drained", c.queued, len(l.revisit))
	}
	if got := l.timeout(); got != -1 {
		t.Errorf("timeout() with nothing owed = %d, want -1", got)
	}
	got := make([]byte, 2*len(sent))
	n, err := unix.Read(peer, got)
	if err != nil || !bytes.Equal(got[:n], sent) {
		t.Errorf("echo: read %d bytes (%v), want the %d sent", n, err, len(sent))
	}

	// The FIN is one more edge, and its read returns 0: close.
	unix.Shutdown(peer, unix.SHUT_WR)
	l.handle(c, unix.EPOLLIN|unix.EPOLLRDHUP, buf)
	if l.conns.n != 0 {
		t.Errorf("after EOF the table still holds %d connections", l.conns.n)
	}
}

// TestShortReadEndsTurn: a read that does not fill the buffer ends the
// connection's turn, with no read to see EAGAIN, and nothing is lost by
// it: bytes that come later make an edge of their own. Unless epoll said
// EPOLLRDHUP: then the FIN waits behind the data, and the turn reads on to
// the 0 that shows it, even when the connection was paused as the FIN's
// event came and is read only later, from the revisit list.
func TestShortReadEndsTurn(t *testing.T) {
	buf := make([]byte, readSize)
	events := make([]unix.EpollEvent, 4)
	reads := func(log *bytes.Buffer) int {
		n := strings.Count(log.String(), "read fd=")
		log.Reset()
		return n
	}

	t.Run("data", func(t *testing.T) {
		l, c, peer := testLoop(t, protocol.Echo)
		log := traceInto(t)
		epollWait(l.epfd, events, 0) // the registration's own edge, if any
		writeAll(t, peer, []byte("first"))
		l.handle(c, unix.EPOLLIN, buf)
		if got := reads(log); got != 1 {
			t.Errorf("reads after a short read of 5 bytes = %d, want 1 (no read for EAGAIN)", got)
		}
		writeAll(t, peer, []byte("second"))
		if n, _ := epollWait(l.epfd, events, 0); n != 1 {
			t.Fatalf("epoll_wait after more bytes: %d events, want 1: the new edge the rule relies on", n)
		}
		l.handle(c, events[0].Events, buf)
		if got, want := string(readN(t, peer, len("firstsecond"))), "firstsecond"; got != want {
			t.Errorf("echo = %q, want %q", got, want)
		}
	})

	t.Run("data then FIN", func(t *testing.T) {
		l, c, peer := testLoop(t, protocol.Echo)
		writeAll(t, peer, []byte("last words"))
		unix.Shutdown(peer, unix.SHUT_WR)
		l.handle(c, unix.EPOLLIN|unix.EPOLLRDHUP, buf)
		if l.conns.n != 0 || c.state != closed {
			t.Errorf("after data and FIN in one event: state %v, %d conns; want closed, 0", c.state, l.conns.n)
		}
		if got, want := string(readN(t, peer, len("last words"))), "last words"; got != want {
			t.Errorf("echo = %q, want %q", got, want)
		}
	})

	t.Run("FIN while paused", func(t *testing.T) {
		l, c, peer := testLoop(t, protocol.Echo)
		c.paused = true
		writeAll(t, peer, []byte("late"))
		unix.Shutdown(peer, unix.SHUT_WR)
		l.handle(c, unix.EPOLLIN|unix.EPOLLRDHUP, buf) // paused: not read
		if c.eof || c.state != open {
			t.Fatalf("paused connection read: eof %v, state %v; want it left alone", c.eof, c.state)
		}
		c.paused = false
		l.readAgain(c)
		l.serveRevisits(buf)
		if c.state != closed {
			t.Errorf("resumed after the FIN's event: state %v, want closed (the FIN read)", c.state)
		}
	})
}

// TestEPOLLOUTOnlyWhilePending: a reply the kernel cannot take stays in
// the send buffer, and EPOLLOUT is watched from that moment until the
// buffer is empty and not a moment longer: one EPOLL_CTL_MOD to turn it
// on, one to turn it off, however many replies queue meanwhile (read off
// the -v trace, which names each). Replies made meanwhile queue behind,
// unwritten, and all arrive in order once the client reads.
func TestEPOLLOUTOnlyWhilePending(t *testing.T) {
	l, c, peer := testLoop(t, protocol.Echo)
	log := traceInto(t)
	filled := fill(t, c.fd)
	buf := make([]byte, readSize)
	var want []byte
	for i := range 10 {
		req := fmt.Appendf(nil, "request %d;", i)
		writeAll(t, peer, req)
		l.handle(c, unix.EPOLLIN, buf)
		want = append(want, req...)
		if c.pending() != len(want) || c.events&unix.EPOLLOUT == 0 {
			t.Fatalf("after request %d on a full socket: %d bytes buffered, EPOLLOUT watched %v; want %d, true",
				i, c.pending(), c.events&unix.EPOLLOUT != 0, len(want))
		}
	}
	if got := strings.Count(log.String(), "write fd="); got != 1 {
		t.Errorf("%d writes for 10 replies on a full socket, want 1 (the first meets EAGAIN, the rest queue):\n%s", got, log)
	}

	// The client reads what filled the socket: room, and EPOLLOUT says so.
	readN(t, peer, len(filled))
	events := make([]unix.EpollEvent, 4)
	deadline := time.Now().Add(5 * time.Second)
	for c.pending() > 0 && time.Now().Before(deadline) {
		n, err := epollWait(l.epfd, events, 1000)
		require.NoError(t, err)
		for _, ev := range events[:n] {
			l.handle(c, ev.Events, buf)
		}
	}
	if c.pending() != 0 || c.events&unix.EPOLLOUT != 0 {
		t.Fatalf("after the client read: %d bytes buffered, EPOLLOUT watched %v; want 0, false", c.pending(), c.events&unix.EPOLLOUT != 0)
	}
	if got := readN(t, peer, len(want)); !bytes.Equal(got, want) {
		t.Errorf("replies = %q, want %q", got, want)
	}
	on, off := strings.Count(log.String(), "EPOLLOUT on"), strings.Count(log.String(), "EPOLLOUT off")
	if on != 1 || off != 1 {
		t.Errorf("EPOLLOUT turned on %d times and off %d times, want once each:\n%s", on, off, log)
	}
}

// TestWritevGathers: with the rest of an earlier write and new replies
// both waiting, one writev sends them, in order; and the send buffer's
// bookkeeping after short writes of every length keeps the bytes in order
// and the two arrays in turn.
func TestWritevGathers(t *testing.T) {
	_, c, peer := testLoop(t, protocol.Echo)
	log := traceInto(t)
	c.rest, c.sent, c.out = []byte("xxhello, "), 2, []byte("world")
	require.NoError(t, c.flush())
	if got := readN(t, peer, len("hello, world")); string(got) != "hello, world" {
		t.Errorf("peer read %q, want %q", got, "hello, world")
	}
	if !strings.Contains(log.String(), "writev fd=") || strings.Count(log.String(), "write") != 1 {
		t.Errorf("trace = %q, want one writev", log)
	}

	const rest, out = "0123456789", "abcdefghij"
	for n := range len(rest) + len(out) + 1 {
		c := &conn{rest: []byte("--" + rest), sent: 2, out: []byte(out)}
		restArray, outArray := &c.rest[0], &c.out[0]
		c.wrote(n)
		if got, want := string(c.rest[c.sent:])+string(c.out), (rest + out)[n:]; got != want {
			t.Errorf("wrote(%d): buffer holds %q, want %q", n, got, want)
		}
		if n >= len(rest) && (cap(c.rest) == 0 || &c.rest[:1][0] != outArray || &c.out[:1][0] != restArray) {
			t.Errorf("wrote(%d): rest sent, the arrays did not swap: the buffer would allocate", n)
		}
	}
}

// traceInto turns the -v trace on, into a buffer, until the test ends.
// Only for tests that run no loop goroutine: tracing is read unlocked.
func traceInto(t *testing.T) *bytes.Buffer {
	t.Helper()
	var b bytes.Buffer
	trace.SetOutput(&b)
	tracing = true
	t.Cleanup(func() {
		tracing = false
		trace.SetOutput(io.Discard)
	})
	return &b
}

// writeAll writes all of p to the non-blocking fd, which must have room.
func writeAll(t *testing.T, fd int, p []byte) {
	t.Helper()
	if n, err := unix.Write(fd, p); n != len(p) || err != nil {
		t.Fatalf("write %d bytes: n=%d, %v", len(p), n, err)
	}
}

// readN reads exactly n bytes from the non-blocking fd, waiting at most 5 s.
func readN(t *testing.T, fd int, n int) []byte {
	t.Helper()
	got := make([]byte, 0, n)
	buf := make([]byte, 64<<10)
	deadline := time.Now().Add(5 * time.Second)
	for len(got) < n {
		m, err := unix.Read(fd, buf[:min(len(buf), n-len(got))])
		switch {
		case err == unix.EAGAIN:
			if time.Now().After(deadline) {
				t.Fatalf("read %d of %d bytes in 5 s", len(got), n)
			}
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			unix.Poll(fds, 100)
			continue
		case err != nil || m == 0:
			t.Fatalf("read after %d of %d bytes: n=%d, %v", len(got), n, m, err)
		}
		got = append(got, buf[:m]...)
	}
	return got
}

// TestBackpressureBounds: a socket pair's peer sends and never reads.
// The send buffer fills to -high-water, passing it by one read's replies
// at most, and then the connection is paused: its input waits in the
// socket, unread, in stamp mode as in echo mode (where every byte read is
// a byte owed). Drained (shutdown's grace is over, say), it reads again
// to drop that input, at once: no edge will announce bytes that came
// while it was paused, so the revisit list must.
func TestBackpressureBounds(t *testing.T) {
	const highWater = 64 << 10
	for _, mode := range []protocol.Mode{protocol.Stamp, protocol.Echo} {
		t.Run(mode.String(), func(t *testing.T) {
			l, c, peer := testLoop(t, mode)
			l.cfg.highWater = highWater
			line := append(bytes.Repeat([]byte("f"), 1<<10-1), '\n')
			buf := make([]byte, readSize)
			for sent := 0; ; sent += len(line) {
				_, err := unix.Write(peer, line)
				if err == unix.EAGAIN && c.paused {
					break
				}
				require.Less(t, sent, 1<<30, "the connection took 1 GiB without pausing")
				l.handle(c, unix.EPOLLIN, buf)
				l.serveRevisits(buf)
			}
			most := highWater + readSize/len(line)*(len(line)+64) // a read's replies past the mark
			if c.pending() > most {
				t.Errorf("paused with %d bytes buffered, want at most %d", c.pending(), most)
			}
			if unread := unreadBytes(t, c.fd); unread == 0 {
				t.Fatalf("paused with no input unread: the connection still reads")
			}
			l.handle(c, unix.EPOLLIN, buf) // a late edge: still not read
			if unread := unreadBytes(t, c.fd); unread == 0 {
				t.Fatalf("paused, an event read the input")
			}

			l.drain(c, "test")
			l.serveRevisits(buf)
			if c.state != flushing || c.paused {
				t.Errorf("drained: state %v, paused %v; want flushing, not paused", c.state, c.paused)
			}
			if unread := unreadBytes(t, c.fd); unread != 0 {
				t.Errorf("drained: %d bytes of input left unread, want 0 (dropped)", unread)
			}
		})
	}
}

// unreadBytes is how many bytes wait in fd's receive queue.
func unreadBytes(t *testing.T, fd int) int {
	t.Helper()
	n, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
	require.NoError(t, err)
	return n
}

// TestFlushingBeforeDraining: a line too long, with the replies before it
// and the error line still in the send buffer (the client is slow to
// read), does not shut the write side yet: the connection flushes, its
// input dropped, and only once the buffer is empty does shutdown(SHUT_WR)
// follow. The client reads every reply, the error line, then EOF; its own
// EOF closes the connection.
func TestFlushingBeforeDraining(t *testing.T) {
	l, c, peer := testLoop(t, protocol.Stamp)
	filled := fill(t, c.fd)
	buf := make([]byte, readSize)
	writeAll(t, peer, []byte("first\nsecond\n"))
	writeAll(t, peer, append(bytes.Repeat([]byte("x"), protocol.DefaultMaxLine+1), '\n'))
	l.handle(c, unix.EPOLLIN, buf)
	if c.state != flushing || c.pending() == 0 {
		t.Fatalf("after a line too long on a full socket: state %v, %d bytes buffered; want flushing, the replies", c.state, c.pending())
	}
	writeAll(t, peer, []byte("still sending\n")) // dropped, not answered
	l.handle(c, unix.EPOLLIN, buf)
	owed := c.pending()

	readN(t, peer, len(filled))
	events := make([]unix.EpollEvent, 4)
	deadline := time.Now().Add(5 * time.Second)
	for c.state == flushing && time.Now().Before(deadline) {
		n, err := epollWait(l.epfd, events, 1000)
		require.NoError(t, err)
		for _, ev := range events[:n] {
			l.handle(c, ev.Events, buf)
		}
	}
	if c.state != draining {
		t.Fatalf("once the client read: state %v, want draining", c.state)
	}
	r := bufio.NewReader(bytes.NewReader(readN(t, peer, owed)))
	for _, line := range []string{"first", "second"} {
		got, err := r.ReadString('\n')
		if err != nil || !strings.HasSuffix(got, "server reply: "+line+"\n") {
			t.Errorf("reply: %q, %v; want the reply to %q", got, err, line)
		}
	}
	if got, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(got, "error: ") {
		t.Errorf("after the replies: %q, %v; want the error line", got, err)
	}
	if n, err := unix.Read(peer, buf); n != 0 || err != nil {
		t.Errorf("after the error line: read n=%d, %v; want 0 (EOF)", n, err)
	}
	unix.Shutdown(peer, unix.SHUT_WR)
	l.handle(c, unix.EPOLLIN|unix.EPOLLRDHUP, buf)
	if c.state != closed {
		t.Errorf("after the client's EOF: state %v, want closed", c.state)
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

// models are -model's choices, for the tests that run in both.
var models = []string{"loops", "queue"}

// runServer runs the chapter's server in this process on 127.0.0.1:0 and
// shuts it down when the test ends.
func runServer(t testing.TB, cfg config) *server {
	t.Helper()
	cfg.addr = "127.0.0.1:0"
	if cfg.wakeup == "" {
		cfg.wakeup = wakeupKinds[0]
	}
	if cfg.model == "" {
		cfg.model, cfg.loops = "loops", 1
	}
	if cfg.highWater == 0 {
		cfg.highWater = defaultHighWater
	}
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
func dialServer(t testing.TB, s *server) *net.TCPConn {
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
			s := runServer(t, config{mode: protocol.Stamp, maxLine: maxLine, model: model, loops: 2})
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
			s := runServer(t, config{mode: protocol.Stamp, maxLine: protocol.DefaultMaxLine, model: model, loops: 2})
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

// ask sends line on c and checks the reply to it, within 5 s.
func ask(t *testing.T, c *net.TCPConn, line string) {
	t.Helper()
	_, err := c.Write([]byte(line + "\n"))
	require.NoError(t, err)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil || !bytes.HasSuffix(got, []byte("server reply: "+line+"\n")) {
		t.Fatalf("reply to %q: %q, %v; want the reply", line, got, err)
	}
}

// loopStats asks l, through its task queue, for the connections it has
// served and the events it has dispatched so far.
func loopStats(t *testing.T, l *loop) (served, events int) {
	t.Helper()
	stats := make(chan [2]int, 1)
	l.runInLoop(func() { stats <- [2]int{l.served, l.events} })
	select {
	case st := <-stats:
		return st[0], st[1]
	case <-time.After(5 * time.Second):
		t.Fatalf("loop %d: no answer to a task in 5 s", l.id)
	}
	return 0, 0
}

// TestLoopsShareWork: the acceptor deals connections to the loops in
// turn, so with 4 loops and 40 connections each loop gets 10, and serves
// their events itself.
func TestLoopsShareWork(t *testing.T) {
	const loops, conns = 4, 40
	s := runServer(t, config{mode: protocol.Stamp, maxLine: protocol.DefaultMaxLine, model: "loops", loops: loops})
	for i := range conns {
		ask(t, dialServer(t, s), fmt.Sprintf("client %d", i))
	}
	for _, l := range s.loops {
		served, events := loopStats(t, l)
		t.Logf("loop %d: %d conns, %d events", l.id, served, events)
		if served != conns/loops {
			t.Errorf("loop %d served %d connections, want %d of %d", l.id, served, conns/loops, conns)
		}
		if events < served {
			t.Errorf("loop %d dispatched %d events for %d connections that each sent a line, want at least one each",
				l.id, events, served)
		}
	}
}

// TestRepliesInOrder: 40 connections at once, each pipelining 400 lines
// cut into writes of 1 to 64 bytes while it reads: on every connection the
// replies come in its own request order, in both models. In -model queue
// that is EPOLLONESHOT's doing: without it, bytes arriving while one
// worker reads a connection make a second event, and a second worker.
func TestRepliesInOrder(t *testing.T) {
	const conns, lines = 40, 400
	for _, model := range models {
		t.Run(model, func(t *testing.T) {
			s := runServer(t, config{mode: protocol.Stamp, maxLine: protocol.DefaultMaxLine, model: model, loops: 4})
			errs := make([]error, conns)
			var wg sync.WaitGroup
			for i := range conns {
				c := dialServer(t, s)
				wg.Go(func() { errs[i] = pipelineLines(c, i, lines) })
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("connection %d: %v", i, err)
				}
			}
		})
	}
}

// pipelineLines writes lines "conn ID line J" on c, cut at random points,
// from a goroutine of its own, while it reads the replies and checks that
// each answers the next line.
func pipelineLines(c *net.TCPConn, id, lines int) error {
	var req []byte
	for j := range lines {
		req = fmt.Appendf(req, "conn %d line %d\n", id, j)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	written := make(chan error, 1)
	go func() {
		rng := rand.New(rand.NewPCG(uint64(id), 6))
		for p := req; len(p) > 0; {
			n := min(len(p), 1+rng.IntN(64))
			if _, err := c.Write(p[:n]); err != nil {
				written <- err
				return
			}
			p = p[n:]
		}
		written <- nil
	}()
	r := bufio.NewReader(c)
	for j := range lines {
		got, err := r.ReadBytes('\n')
		if err != nil {
			return fmt.Errorf("reply %d of %d: %v", j+1, lines, err)
		}
		if want := fmt.Sprintf("server reply: conn %d line %d\n", id, j); !bytes.HasSuffix(got, []byte(want)) {
			return fmt.Errorf("reply %d of %d = %q, want the one ending %q", j+1, lines, got, want)
		}
	}
	return <-written
}

// floodUntilStuck writes 4 KiB lines to c, never reading a reply, until
// the server has taken nothing for 500 ms, and returns what it wrote (the
// last line perhaps cut short).
func floodUntilStuck(t testing.TB, c *net.TCPConn) []byte {
	t.Helper()
	chunk := bytes.Repeat(append(bytes.Repeat([]byte("f"), 4<<10-1), '\n'), 16)
	var sent []byte
	for {
		c.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := c.Write(chunk)
		sent = append(sent, chunk[:n]...)
		if err != nil {
			return sent
		}
		require.Less(t, len(sent), 1<<30, "the server took 1 GiB without stopping")
	}
}

// bufferState is what a task on l sees of its one connection: pending
// bytes, paused or not. With -model queue it waits until no worker holds
// the connection, and takes the hold's lock, so that what the last worker
// did happens before (as -race sees it).
func bufferState(t *testing.T, l *loop) (pending int, paused bool) {
	t.Helper()
	type state struct {
		pending int
		paused  bool
		busy    bool
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		got := make(chan state, 1)
		l.runInLoop(func() {
			for _, c := range l.conns.byFD {
				if c == nil {
					continue
				}
				c.hold.mu.Lock()
				got <- state{pending: c.pending(), paused: c.paused, busy: c.hold.busy}
				c.hold.mu.Unlock()
				return
			}
			got <- state{busy: true}
		})
		select {
		case st := <-got:
			if !st.busy {
				return st.pending, st.paused
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("loop %d: no answer to a task in 5 s", l.id)
		}
	}
	t.Fatalf("loop %d: its connection still held by a worker after 5 s", l.id)
	return 0, false
}

// TestBackpressure, in both models and both modes, with one loop (or
// worker), where 03 to 06 stalled: a client that sends and never reads
// makes the server queue replies up to -high-water (and one read's
// replies past it, at most), and then no more: it is paused, its input
// left in the socket. Meanwhile another client is answered at once. Once
// the flooder reads, it gets every reply owed, in order: resuming read
// what waited in the socket, which under edge-triggered epoll no event
// would have announced.
func TestBackpressure(t *testing.T) {
	const highWater = 256 << 10
	for _, model := range models {
		for _, mode := range []protocol.Mode{protocol.Stamp, protocol.Echo} {
			t.Run(fmt.Sprintf("%s/%v", model, mode), func(t *testing.T) {
				s := runServer(t, config{mode: mode, maxLine: protocol.DefaultMaxLine, model: model, loops: 1,
					highWater: highWater})
				flood := dialServer(t, s)
				sent := floodUntilStuck(t, flood)
				pending, paused := bufferState(t, s.loops[0])
				// A read is at most readSize of 4 KiB lines, each answered with
				// a stamp of under 64 bytes.
				if most := highWater + readSize/(4<<10)*(4<<10+64); !paused || pending > most {
					t.Errorf("after a flood of %d bytes: %d bytes buffered, paused %v; want paused, at most %d",
						len(sent), pending, paused, most)
				}
				if mode == protocol.Stamp {
					ask(t, dialServer(t, s), "not stalled")
				}

				flood.CloseWrite() // the cut line is a line now
				flood.SetReadDeadline(time.Now().Add(20 * time.Second))
				got, err := io.ReadAll(flood)
				require.NoError(t, err)
				if mode == protocol.Echo {
					if !bytes.Equal(got, sent) {
						t.Errorf("echoed %d bytes, want the %d sent", len(got), len(sent))
					}
					return
				}
				lines := bytes.SplitAfter(sent, []byte("\n"))
				replies := bytes.SplitAfter(got, []byte("\n"))
				if len(lines[len(lines)-1]) == 0 {
					lines = lines[:len(lines)-1]
				}
				if len(replies[len(replies)-1]) == 0 {
					replies = replies[:len(replies)-1]
				}
				if len(replies) != len(lines) {
					t.Fatalf("%d replies, want %d, one per line", len(replies), len(lines))
				}
				for i, line := range lines {
					want := "server reply: " + strings.TrimSuffix(string(line), "\n") + "\n"
					if !strings.HasSuffix(string(replies[i]), want) {
						t.Fatalf("reply %d = %.60q..., want one ending %.60q...", i+1, replies[i], want)
					}
				}
			})
		}
	}
}

// failAccept makes the first n accepts fail with errno, and the rest work,
// until the test ends; it returns when each call came. Call it before the
// server starts, so that the test's cleanup stops the acceptor first.
func failAccept(t *testing.T, errno unix.Errno, n int) func() []time.Time {
	t.Helper()
	var mu sync.Mutex
	var calls []time.Time
	accept4 = func(fd, flags int) (int, unix.Sockaddr, error) {
		mu.Lock()
		calls = append(calls, time.Now())
		failing := len(calls) <= n
		mu.Unlock()
		if failing {
			return -1, nil, errno
		}
		return unix.Accept4(fd, flags)
	}
	t.Cleanup(func() { accept4 = unix.Accept4 })
	return func() []time.Time {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(calls)
	}
}

// TestAcceptErrorDoesNotSpin: whatever makes accept fail, the acceptor
// waits before it tries again, 10 ms, then 20, 40 and 80: four failures
// take at least 150 ms, where a spinning acceptor takes microseconds. And
// it tries again on its own, with no connection closing to prompt it: the
// fds may be held by another process, or the server may have none to
// close. The client that waited meanwhile is answered.
func TestAcceptErrorDoesNotSpin(t *testing.T) {
	const failures = 4
	const minSpan = (10 + 20 + 40 + 80) * time.Millisecond
	for _, errno := range []unix.Errno{unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM, unix.EPERM} {
		t.Run(unix.ErrnoName(errno), func(t *testing.T) {
			calls := failAccept(t, errno, failures)
			s := runServer(t, config{mode: protocol.Stamp, maxLine: protocol.DefaultMaxLine})
			c := dialServer(t, s)
			_, err := c.Write([]byte("after the shortage\n"))
			require.NoError(t, err)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, err := bufio.NewReader(c).ReadBytes('\n')
			if err != nil || !bytes.HasSuffix(got, []byte("server reply: after the shortage\n")) {
				t.Fatalf("reply once accept works again: %q, %v; want the reply", got, err)
			}
			at := calls()
			if span := at[failures].Sub(at[0]); span < minSpan {
				t.Errorf("%d failed accepts (%s) took %v, want at least %v: the acceptor spins",
					failures, unix.ErrnoName(errno), span, minSpan)
			}
		})
	}
}

// TestAcceptBackoff: the pause doubles from 10 ms to 1 s while accept
// keeps failing, and shutdown ends a pause at once.
func TestAcceptBackoff(t *testing.T) {
	// No listener, no loop: pauseAccept needs only the acceptor's state.
	s := &server{stopped: make(chan struct{})}
	close(s.stopped) // each pause returns at once, as after shutdown
	var got []time.Duration
	for range 9 {
		if s.pauseAccept(unix.EMFILE) {
			t.Fatalf("pauseAccept after shutdown = true, want false: the acceptor would go on")
		}
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
// it, read again to EAGAIN) allocates nothing: tracing must not build its
// arguments, and the errors the hot path meets (EAGAIN above all) must not
// be wrapped until they end something.
func TestHandleAllocs(t *testing.T) {
	l, c, peer := testLoop(t, protocol.Echo)
	req := bytes.Repeat([]byte("x"), 300) // a read's n above 255 would box
	reply := make([]byte, 2*len(req))
	buf := make([]byte, readSize)
	allocs := testing.AllocsPerRun(100, func() {
		unix.Write(peer, req)
		l.handle(c, unix.EPOLLIN, buf)
		if n, err := unix.Read(peer, reply); n != len(req) || err != nil {
			t.Fatalf("echo: read %d bytes, %v; want %d", n, err, len(req))
		}
	})
	if allocs != 0 {
		t.Errorf("allocations per event in echo mode, tracing off = %v, want 0", allocs)
	}
}

// TestRepliesOfferedFromLoopBuffer: a connection whose client keeps up
// never gets a reply buffer of its own: its replies are made in the
// loop's and written from there. One the kernel refuses, and only that,
// is copied into the connection's send buffer.
func TestRepliesOfferedFromLoopBuffer(t *testing.T) {
	l, c, peer := testLoop(t, protocol.Stamp)
	buf := make([]byte, readSize)
	writeAll(t, peer, []byte("hello\n"))
	l.handle(c, unix.EPOLLIN, buf)
	readN(t, peer, len(protocol.AppendReply(nil, time.Now(), []byte("hello"))))
	if cap(c.out) != 0 || cap(c.rest) != 0 {
		t.Errorf("after a reply the kernel took whole: the connection holds %d+%d bytes of buffer, want 0",
			cap(c.out), cap(c.rest))
	}

	for { // fill the socket, so that the next reply is refused
		if _, err := unix.Write(c.fd, make([]byte, 4<<10)); err == unix.EAGAIN {
			break
		}
	}
	writeAll(t, peer, []byte("again\n"))
	l.handle(c, unix.EPOLLIN, buf)
	want := len(protocol.AppendReply(nil, time.Now(), []byte("again")))
	if c.pending() != want || c.events&unix.EPOLLOUT == 0 {
		t.Errorf("reply refused: %d bytes buffered, EPOLLOUT %v; want %d, true", c.pending(), c.events&unix.EPOLLOUT != 0, want)
	}
}

// TestSendBufferAllocs: the send buffer's own path allocates nothing
// either, once its arrays have grown: a reply the kernel refuses is kept
// (EPOLLOUT on), another queues behind it, room comes and both go in one
// write (EPOLLOUT off); and writev of the two parts.
func TestSendBufferAllocs(t *testing.T) {
	l, c, peer := testLoop(t, protocol.Echo)
	req := bytes.Repeat([]byte("x"), 300)
	chunk := make([]byte, 4<<10)
	sink := make([]byte, 64<<10)
	buf := make([]byte, readSize)
	drainPeer := func() int {
		total := 0
		for {
			n, err := unix.Read(peer, sink)
			if err != nil {
				return total
			}
			total += n
		}
	}
	allocs := testing.AllocsPerRun(50, func() {
		for {
			if _, err := unix.Write(c.fd, chunk); err == unix.EAGAIN {
				break
			}
		}
		unix.Write(peer, req)
		l.handle(c, unix.EPOLLIN, buf) // the kernel takes none of it
		unix.Write(peer, req)
		l.handle(c, unix.EPOLLIN, buf) // behind the first
		drainPeer()
		l.handle(c, unix.EPOLLOUT, buf)
		if c.pending() != 0 || c.events&unix.EPOLLOUT != 0 || drainPeer() != 2*len(req) {
			t.Fatalf("after EPOLLOUT: %d bytes buffered, EPOLLOUT %v; want both replies sent, EPOLLOUT off",
				c.pending(), c.events&unix.EPOLLOUT != 0)
		}
	})
	if allocs != 0 {
		t.Errorf("allocations per round of buffering = %v, want 0", allocs)
	}

	rest, out := bytes.Repeat([]byte("r"), 1000), bytes.Repeat([]byte("o"), 1000)
	allocs = testing.AllocsPerRun(100, func() {
		c.rest, c.sent, c.out = rest, 500, out
		if err := c.flush(); err != nil || c.pending() != 0 || drainPeer() != 1500 {
			t.Fatalf("writev of both parts: %v, %d bytes left", err, c.pending())
		}
	})
	if allocs != 0 {
		t.Errorf("allocations per writev = %v, want 0", allocs)
	}
}

// TestQueueStepAllocs: -model queue's worker step (read, answer, write at
// once, re-arm) allocates nothing either.
func TestQueueStepAllocs(t *testing.T) {
	l, c, peer := testLoop(t, protocol.Echo)
	l.requests = make(chan request) // a -model queue loop, with no workers running
	require.NoError(t, l.rearm(c, armRead))
	w := &worker{l: l, buf: make([]byte, readSize)}
	req := bytes.Repeat([]byte("x"), 300)
	reply := make([]byte, 2*len(req))
	allocs := testing.AllocsPerRun(100, func() {
		unix.Write(peer, req)
		c.hold.busy = true
		w.step(c, unix.EPOLLIN)
		if n, err := unix.Read(peer, reply); n != len(req) || err != nil || c.hold.busy {
			t.Fatalf("echo: read %d bytes, %v, still busy %v; want %d, re-armed", n, err, c.hold.busy, len(req))
		}
	})
	if allocs != 0 {
		t.Errorf("allocations per worker step in echo mode, tracing off = %v, want 0", allocs)
	}
}

// TestIdleList: the list keeps open connections in the order of their
// last event, so its front is the next to time out, and epoll_wait's
// timeout is that one's deadline; with no -idle-timeout nothing is on it,
// and an idle loop sleeps with no timeout at all.
func TestIdleList(t *testing.T) {
	l, c0, _ := testLoop(t, protocol.Stamp)
	l.touch(c0)
	if l.idle.front != nil || l.timeout() != -1 {
		t.Fatalf("without -idle-timeout: front %v, timeout %d; want an empty list, -1", l.idle.front, l.timeout())
	}
	l.cfg.idleTimeout = time.Hour
	a, b, c := &conn{fd: 1}, &conn{fd: 2}, &conn{fd: 3}
	order := func() []int {
		var fds []int
		for x := l.idle.front; x != nil; x = x.next {
			fds = append(fds, x.fd)
		}
		return fds
	}
	steps := []struct {
		name string
		do   func()
		want []int
	}{
		{name: "touch a, b, c", do: func() { l.touch(a); l.touch(b); l.touch(c) }, want: []int{1, 2, 3}},
		{name: "touch a again", do: func() { l.touch(a) }, want: []int{2, 3, 1}},
		{name: "touch the back", do: func() { l.touch(a) }, want: []int{2, 3, 1}},
		{name: "remove the middle", do: func() { l.idle.remove(c) }, want: []int{2, 1}},
		{name: "remove it again", do: func() { l.idle.remove(c) }, want: []int{2, 1}},
		{name: "a flushing conn is not touched", do: func() { c.state = flushing; l.touch(c) }, want: []int{2, 1}},
		{name: "remove the front", do: func() { l.idle.remove(b) }, want: []int{1}},
	}
	for _, st := range steps {
		st.do()
		if diff := cmp.Diff(st.want, order()); diff != "" {
			t.Errorf("%s: idle list fds (-want +got):\n%s", st.name, diff)
		}
	}
	if got := l.timeout(); got < int(time.Hour.Milliseconds())-1000 || got > int(time.Hour.Milliseconds())+1 {
		t.Errorf("timeout() with a connection idle for an hour from now = %d ms, want about %d", got, time.Hour.Milliseconds())
	}
	if l.idle.remove(a); l.idle.front != nil || l.idle.back != nil {
		t.Errorf("after removing the last: front %v, back %v; want an empty list", l.idle.front, l.idle.back)
	}
}

// TestIdleTimeout: with -idle-timeout, a client that sends nothing for
// that long is closed through drain, so it reads EOF, not a reset, while
// one that keeps talking is not closed, in both models.
func TestIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	for _, model := range models {
		t.Run(model, func(t *testing.T) {
			s := runServer(t, config{mode: protocol.Stamp, maxLine: protocol.DefaultMaxLine, model: model, loops: 1,
				idleTimeout: idle})
			silent, active := dialServer(t, s), dialServer(t, s)
			// The server's clock for silent starts when it reads this line,
			// so the test's starts before sending it: after the reply would
			// be a few milliseconds late, and the check below would flake.
			start := time.Now()
			ask(t, silent, "then nothing")
			closed := make(chan error, 1)
			go func() {
				silent.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, err := silent.Read(make([]byte, 1))
				closed <- err
			}()
			tick := time.NewTicker(idle / 4)
			defer tick.Stop()
			var closedAfter time.Duration
			for closedAfter == 0 || time.Since(start) < 3*idle {
				select {
				case err := <-closed:
					closedAfter = time.Since(start)
					if err != io.EOF {
						t.Fatalf("silent client after %v: %v, want EOF", closedAfter, err)
					}
				case <-tick.C:
					ask(t, active, "still here")
				}
			}
			if closedAfter < idle {
				t.Errorf("silent client closed after %v, before -idle-timeout %v", closedAfter, idle)
			}
		})
	}
}

// TestShutdownAbandonsNonReader: a client that never reads cannot hold
// a loop or a worker any more, so the server ends on its own by drainStop,
// inside the contract's 2 s, without the hard stop; but replies were left
// in a send buffer, and the exit status must say so, not report success.
func TestShutdownAbandonsNonReader(t *testing.T) {
	server := harness.Build(t, ".")
	for _, model := range models {
		t.Run(model, func(t *testing.T) {
			file := newTraceFile(t)
			s := harness.StartServer(t, server, "-mode", "echo", "-model", model, "-trace", file)
			c, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
			require.NoError(t, err)
			t.Cleanup(func() { c.Close() })
			// Flood until the server stops taking bytes: it has paused the
			// connection, above high water.
			chunk := make([]byte, 64<<10)
			for sent := 0; ; sent += len(chunk) {
				c.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
				if _, err := c.Write(chunk); err != nil {
					break
				}
				require.Less(t, sent, 1<<30, "the server took 1 GiB without stopping")
			}
			require.NoError(t, s.Signal(unix.SIGTERM))
			select {
			case <-s.Exited():
			case <-time.After(5 * time.Second):
				t.Fatal("still running 5 s after SIGTERM")
			}
			var exit *exec.ExitError
			if err := s.ExitStatus(); !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Errorf("exit status with replies abandoned: %v, want exit status 1", err)
			}
			out := s.Output()
			if !strings.Contains(out, "connections abandoned: 1") {
				t.Errorf("stderr: %q, want it to say 1 connection was abandoned", out)
			}
			if strings.Contains(out, "hard stop") {
				t.Errorf("stderr: %q; want the loops to end by themselves, not the hard stop", out)
			}
			// Exit 1 after serve is os.Exit, which runs no deferred call:
			// the trace must be stopped first, or it ends up to a second
			// early.
			if got := readTimeline(t, file).exit; got != "status 1" {
				t.Errorf("the trace's last word after exit 1: %q, want %q", got, "status 1")
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
