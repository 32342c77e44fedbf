// Command gnet is the lab's contract served by gnet v2
// (github.com/panjf2000/gnet), a production event-loop library: N loops on
// raw epoll, each owning its connections, with per-connection buffers that
// grow without bound instead of blocking the loop. It is what chapters 06
// and 07 build by hand, so it is the peer they are measured against.
//
//	go run ./shared/peers/cmd/gnet -addr 127.0.0.1:0 -mode echo -loops 1
//
// Same flags, ready line, protocol, shutdown and closing as every chapter
// (DESIGN.md), plus -loops N (default: the number of CPUs).
//
// Two things gnet does not do, and this peer does around it:
//   - gnet's own acceptor treats any accept error other than EAGAIN, EINTR
//     and ECONNABORTED as fatal: the first EMFILE under a low fd limit ends
//     the whole engine (acceptor_unix.go returns ErrAcceptSocket, which
//     stops the loop and shuts the engine down). So this peer accepts on a
//     goroutine of its own, with a backoff, and hands each connection to
//     gnet's loops (gnet.Client.Enroll). The per-message path, which is
//     what the benchmarks measure, is gnet's alone.
//   - gnet has no half-close and no "flushed" callback: Conn.Close closes
//     at once. drain below sends FIN itself (shutdown(2) on Conn.Fd) once
//     gnet's outbound buffer is empty, checking it on a short timer.
package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"reactorlab/shared/peers/internal/contract"
	"reactorlab/shared/protocol"
)

const name = "gnet"

// flushCheck is how often a connection waiting to drain looks at gnet's
// outbound buffer: gnet says nothing when it empties. Only connections
// being closed are checked, so an idle server sets no timer.
const flushCheck = 10 * time.Millisecond

var trace = contract.Trace

type config struct {
	contract.Config
	loops int
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	contract.ExitIfBadFlags(name, err)
	s, err := newServer(cfg)
	contract.ExitIf(name, err)
	contract.Run(name, s.ln, s)
}

func parseFlags(args []string) (config, error) {
	fs := contract.NewFlags(name, "trace every accept, drain and close, and gnet's own log, to stderr")
	loops := fs.Int("loops", runtime.NumCPU(), "gnet event loops")
	cc, err := fs.Parse(args)
	if err != nil {
		return config{}, err
	}
	if *loops < 1 || *loops > 256 {
		return config{}, fmt.Errorf("-loops %d: want 1 to 256", *loops)
	}
	return config{Config: cc, loops: *loops}, nil
}

// connState is where a connection is in its closing.
type connState int

const (
	open     connState = iota
	flushing           // done with: waiting for gnet's outbound buffer to empty
	draining           // FIN sent: discarding input until EOF or the deadline
)

// conn is a gnet.Conn's context. Only its loop's goroutine touches it.
type conn struct {
	sess     *protocol.Session
	out      []byte
	state    connState
	deadline time.Time // of flushing and draining
}

type server struct {
	gnet.BuiltinEventEngine
	cfg config
	ln  net.Listener
	cli *gnet.Client

	graceOver atomic.Bool
	abandoned atomic.Int64 // connections closed with replies still owed

	mu      sync.Mutex
	conns   map[gnet.Conn]bool
	closing bool
	stopAt  time.Time
	empty   chan struct{} // closed once closing and no connection is left
}

func newServer(cfg config) (*server, error) {
	s := &server{cfg: cfg, conns: map[gnet.Conn]bool{}, empty: make(chan struct{})}
	cli, err := gnet.NewClient(s,
		gnet.WithNumEventLoop(cfg.loops),
		gnet.WithLogger(gnetLogger{}),
		// The chapters read into a 64 KiB buffer; so does gnet by default.
		gnet.WithReadBufferCap(64<<10),
	)
	if err != nil {
		return nil, err
	}
	if err := cli.Start(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		cli.Stop()
		return nil, err
	}
	s.cli, s.ln = cli, ln
	return s, nil
}

// Take hands a connection the accept loop took to one of gnet's loops.
func (s *server) Take(c net.Conn) {
	trace.Printf("accept %v", c.RemoteAddr())
	// Enroll dups the fd into a loop and closes c. Under EMFILE the dup
	// fails: the client is closed, shed like any load a server cannot
	// take.
	ctx := &conn{sess: protocol.NewSession(s.cfg.Mode, s.cfg.MaxLine)}
	if _, err := s.cli.EnrollContext(c, ctx); err != nil {
		trace.Printf("enroll %v: %v", c.RemoteAddr(), err)
	}
}

// OnOpen runs on the connection's loop once gnet has registered it.
func (s *server) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return nil, gnet.Close // enrolled after the listener closed
	}
	s.conns[c] = true
	return nil, gnet.None
}

// OnTraffic runs on the connection's loop when it has read bytes, and when
// woken (see finish and Shutdown).
func (s *server) OnTraffic(c gnet.Conn) gnet.Action {
	st := c.Context().(*conn)
	in, _ := c.Next(-1)
	switch {
	case st.state == flushing:
		s.flush(c, st)
		return gnet.None
	case st.state == draining:
		return gnet.None // input discarded
	case s.graceOver.Load():
		// An unfinished line stays unanswered, and so do bytes sent
		// after the grace.
		s.finish(c, st, "grace over")
		return gnet.None
	}
	var err error
	st.out, err = st.sess.Input(st.out[:0], in)
	if len(st.out) > 0 {
		c.Write(st.out) // gnet copies what the socket does not take now
	}
	if err != nil {
		s.finish(c, st, "error line sent")
	}
	return gnet.None
}

// OnClose runs on the connection's loop when gnet closes it: after the
// client's FIN (err wraps io.EOF), a reset, or Close.
func (s *server) OnClose(c gnet.Conn, err error) gnet.Action {
	st := c.Context().(*conn)
	if st.state == open && errors.Is(err, io.EOF) && !s.graceOver.Load() {
		// The client's FIN: a last line without '\n' is a line. gnet
		// flushes what it can before it closes.
		if out := st.sess.EOF(st.out[:0]); len(out) > 0 {
			c.Write(out)
		}
	}
	if st.state == flushing && c.OutboundBuffered() > 0 {
		s.abandoned.Add(1)
	}
	trace.Printf("close %v (%v)", c.RemoteAddr(), err)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	if s.closing && len(s.conns) == 0 {
		s.closeEmpty()
	}
	return gnet.None
}

// closeEmpty closes s.empty once; s.mu is held.
func (s *server) closeEmpty() {
	select {
	case <-s.empty:
	default:
		close(s.empty)
	}
}

// finish ends a connection whose client may still be sending: every reply
// owed is flushed, then drain.
func (s *server) finish(c gnet.Conn, st *conn, why string) {
	trace.Printf("finish %v: %s", c.RemoteAddr(), why)
	st.state = flushing
	st.deadline = time.Now().Add(contract.LingerTimeout)
	s.mu.Lock()
	if stop := s.stopAt.Add(contract.DrainStop); s.closing && stop.Before(st.deadline) {
		st.deadline = stop
	}
	s.mu.Unlock()
	s.flush(c, st)
}

// flush waits, on a timer, for gnet's outbound buffer to empty, then
// drains.
func (s *server) flush(c gnet.Conn, st *conn) {
	if c.OutboundBuffered() == 0 {
		s.drain(c, st)
		return
	}
	if time.Now().After(st.deadline) {
		c.Close() // OnClose counts the replies abandoned
		return
	}
	time.AfterFunc(flushCheck, func() { c.Wake(nil) })
}

// drain: closing a socket with unread input makes the kernel send RST,
// and RST throws away every reply the client has not read yet. So FIN
// first, then discard input until the client's EOF (gnet closes on it) or
// the deadline.
func (s *server) drain(c gnet.Conn, st *conn) {
	st.state = draining
	if err := unix.Shutdown(c.Fd(), unix.SHUT_WR); err != nil {
		c.Close() // the client is gone already: nothing to linger for
		return
	}
	time.AfterFunc(time.Until(st.deadline), func() { c.Close() })
}

// Shutdown stops accepting; at the end of grace it wakes every connection,
// whose OnTraffic then finishes it.
func (s *server) Shutdown(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing, s.stopAt = true, now
	s.ln.Close()
	if len(s.conns) == 0 {
		s.closeEmpty()
	}
	time.AfterFunc(contract.Grace, func() {
		s.graceOver.Store(true)
		s.mu.Lock()
		defer s.mu.Unlock()
		for c := range s.conns {
			c.Wake(nil)
		}
	})
}

// Wait waits for the last connection to close, or for hardStop, then stops
// gnet's loops; a connection still open then is abandoned.
func (s *server) Wait(hardStop time.Time) int {
	select {
	case <-s.empty:
	case <-time.After(time.Until(hardStop)):
	}
	s.mu.Lock()
	left := len(s.conns)
	s.mu.Unlock()
	s.cli.Stop()
	return int(s.abandoned.Load()) + left
}

// gnetLogger sends gnet's own log to the trace.
type gnetLogger struct{}

func (gnetLogger) Debugf(format string, args ...any) {}
func (gnetLogger) Infof(format string, args ...any)  { trace.Printf("gnet: "+format, args...) }
func (gnetLogger) Warnf(format string, args ...any)  { trace.Printf("gnet: "+format, args...) }
func (gnetLogger) Errorf(format string, args ...any) { trace.Printf("gnet: "+format, args...) }
func (gnetLogger) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, name+": gnet: "+format+"\n", args...)
	os.Exit(1)
}
