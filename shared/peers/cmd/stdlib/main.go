// Command stdlib is the lab's contract served the way most Go servers are:
// a goroutine per connection on package net, blocking reads and writes, and
// the runtime's netpoller (epoll, edge-triggered, one for the process)
// doing underneath what chapters 03 and 04 do by hand. It is the peer the
// chapters are measured against: what they must beat, or explain why not.
//
//	go run ./shared/peers/cmd/stdlib -addr 127.0.0.1:0 -mode echo
//
// Same flags, ready line, protocol, shutdown and closing as every chapter
// (DESIGN.md). A client that never reads blocks only its own goroutine, so
// unlike chapters 01 to 06 it has no slow-reader stall; what it pays
// instead is a goroutine stack and a read buffer per connection.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"reactorlab/shared/protocol"
)

const name = "stdlib"

// The contract's shutdown, timed as in the chapters: grace for reading and
// answering, then every connection flushes and drains (see drain) until
// drainStop, and the process is gone before the contract's 2 s. A write
// still blocked at flushStop is a client that does not read: its replies
// are abandoned, and the exit status says so.
const (
	grace     = 1 * time.Second
	flushStop = 1400 * time.Millisecond
	drainStop = 1600 * time.Millisecond
	hardStop  = 1800 * time.Millisecond
)

// lingerTimeout is how long a draining connection waits for its client to
// close after the server's FIN: long enough for a client that reads to take
// the replies in flight and see EOF.
const lingerTimeout = 2 * time.Second

// readSize is each connection's read buffer: every goroutine owns one for
// as long as its connection lives, so it is what an idle connection costs
// besides its stack. 16 KiB keeps 10,000 idle connections under 200 MiB of
// buffers and still takes a typical burst in one read.
const readSize = 16 << 10

// Accept backs off after a failure (EMFILE under a low fd limit): the
// connection it could not take keeps the listener ready, so an immediate
// retry would spin. The timer also notices fds freed elsewhere.
const (
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = time.Second
)

var trace = log.New(io.Discard, name+": ", log.Lmicroseconds)

type config struct {
	addr    string
	mode    protocol.Mode
	maxLine int
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0) // -h: the flag package has printed the usage
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
	s := &server{cfg: cfg, ln: ln, conns: map[*net.TCPConn]*connState{}}
	fmt.Printf("listening on %s\n", ln.Addr())

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	stopped := make(chan time.Time, 1)
	go func() {
		sig := <-sigs
		now := time.Now()
		trace.Printf("signal %v: stop accepting, %v grace for open connections", sig, grace)
		s.shutdown(now)
		stopped <- now
	}()

	s.acceptLoop()
	signalled := <-stopped
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Until(signalled.Add(hardStop))):
		s.mu.Lock()
		s.abandoned += len(s.conns)
		s.mu.Unlock()
	}
	if s.abandoned > 0 {
		fmt.Fprintf(os.Stderr, "%s: stopped %v after the signal; connections abandoned with replies owed: %d\n",
			name, hardStop, s.abandoned)
		os.Exit(1)
	}
	trace.Printf("every connection closed: exit 0")
}

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:12345", "listen address; 127.0.0.1:0 picks a free port")
	mode := fs.String("mode", "stamp", "stamp (timestamped reply per line) or echo (raw bytes back)")
	maxLine := fs.Int("max-line", protocol.DefaultMaxLine, "longest line accepted in stamp mode, in bytes")
	verbose := fs.Bool("v", false, "trace every accept, read, write and close to stderr")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	m, err := protocol.ParseMode(*mode)
	if err != nil {
		return config{}, err
	}
	if *maxLine < 1 {
		return config{}, fmt.Errorf("-max-line %d: want at least 1", *maxLine)
	}
	if *verbose {
		trace.SetOutput(os.Stderr)
	}
	return config{addr: *addr, mode: m, maxLine: *maxLine}, nil
}

// connState is what shutdown needs to know of a connection.
type connState struct {
	draining bool // the server's FIN is sent; the goroutine reads to discard
}

type server struct {
	cfg config
	ln  net.Listener
	wg  sync.WaitGroup

	mu        sync.Mutex
	conns     map[*net.TCPConn]*connState
	closing   bool
	stopAt    time.Time // the signal's time, once closing
	abandoned int       // connections whose owed replies could not be written
}

func (s *server) acceptLoop() {
	var backoff time.Duration
	for {
		c, err := s.ln.Accept()
		switch {
		case err == nil:
			backoff = 0
		case errors.Is(err, net.ErrClosed):
			return
		default:
			backoff = min(max(2*backoff, minAcceptBackoff), maxAcceptBackoff)
			trace.Printf("accept: %v; retry in %v", err, backoff)
			time.Sleep(backoff) // this goroutine has nothing else to do
			continue
		}
		tc := c.(*net.TCPConn)
		// Tracked here, before the goroutine starts, so that shutdown
		// sees every connection accepted before it closed the listener.
		if !s.track(tc) {
			tc.Close()
			continue
		}
		trace.Printf("accept %v", tc.RemoteAddr())
		go s.serve(tc)
	}
}

func (s *server) track(c *net.TCPConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[c] = &connState{}
	s.wg.Add(1)
	return true
}

func (s *server) release(c *net.TCPConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
	trace.Printf("close %v", c.RemoteAddr())
	s.wg.Done()
}

// shutdown stops accepting and sets every connection's deadlines: reads end
// with the grace, writes a little later (a reply owed at the end of grace
// still gets its chance), and a connection already draining keeps draining
// until drainStop.
func (s *server) shutdown(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing, s.stopAt = true, now
	s.ln.Close()
	for c, st := range s.conns {
		if st.draining {
			c.SetReadDeadline(now.Add(drainStop))
			continue
		}
		c.SetReadDeadline(now.Add(grace))
		c.SetWriteDeadline(now.Add(flushStop))
	}
}

func (s *server) serve(c *net.TCPConn) {
	defer s.release(c)
	sess := protocol.NewSession(s.cfg.mode, s.cfg.maxLine)
	buf := make([]byte, readSize)
	var out []byte
	for {
		n, rerr := c.Read(buf)
		var perr error
		out, perr = sess.Input(out[:0], buf[:n])
		if rerr == io.EOF {
			// The client's FIN: a last line without '\n' is a line.
			out = sess.EOF(out)
		}
		if len(out) > 0 {
			if _, err := c.Write(out); err != nil {
				// EPIPE or ECONNRESET: the client is gone, nothing to
				// flush. A deadline: the client did not read by flushStop.
				if errors.Is(err, os.ErrDeadlineExceeded) {
					s.abandon()
				}
				return
			}
		}
		switch {
		case perr != nil:
			s.drain(c, "error line sent")
			return
		case rerr == io.EOF:
			return // every reply owed is written: nothing is left unread
		case errors.Is(rerr, os.ErrDeadlineExceeded):
			// Only shutdown sets a read deadline: grace is over. An
			// unfinished line stays unanswered.
			s.drain(c, "grace over")
			return
		case rerr != nil:
			return // ECONNRESET and the like: close at once
		}
	}
}

func (s *server) abandon() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.abandoned++
}

// drain ends a connection whose client may still be sending. Closing a
// socket with unread input makes the kernel send RST, and RST throws away
// every reply the client has not read yet. So: FIN first (every reply is
// already written), then read and discard until the client's EOF or the
// linger deadline, then close.
func (s *server) drain(c *net.TCPConn, why string) {
	trace.Printf("drain %v: %s", c.RemoteAddr(), why)
	c.CloseWrite()
	s.mu.Lock()
	// Under the lock, so that a shutdown cannot set its own deadline in
	// between and be overwritten with a later one.
	s.conns[c].draining = true
	deadline := time.Now().Add(lingerTimeout)
	if stop := s.stopAt.Add(drainStop); s.closing && stop.Before(deadline) {
		deadline = stop
	}
	c.SetReadDeadline(deadline)
	s.mu.Unlock()
	io.Copy(io.Discard, c)
}
