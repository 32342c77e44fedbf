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
	"io"
	"net"
	"os"
	"sync"
	"time"

	"reactorlab/shared/peers/internal/contract"
	"reactorlab/shared/protocol"
)

const name = "stdlib"

// flushStop falls between the contract's Grace and DrainStop: a write
// still blocked then is a client that does not read, whose replies are
// abandoned, and the exit status says so.
const flushStop = 1400 * time.Millisecond

// readSize is each connection's read buffer: every goroutine owns one for
// as long as its connection lives, so it is what an idle connection costs
// besides its stack. 16 KiB keeps 10,000 idle connections under 200 MiB of
// buffers and still takes a typical burst in one read.
const readSize = 16 << 10

var trace = contract.Trace

func main() {
	cfg, err := contract.NewFlags(name, "trace every accept, read, write and close to stderr").Parse(os.Args[1:])
	contract.ExitIfBadFlags(name, err)
	ln, err := net.Listen("tcp", cfg.Addr)
	contract.ExitIf(name, err)
	s := &server{cfg: cfg, ln: ln, conns: map[*net.TCPConn]*connState{}}
	contract.Run(name, ln, s)
}

// connState is what shutdown needs to know of a connection.
type connState struct {
	draining bool // the server's FIN is sent; the goroutine reads to discard
}

type server struct {
	cfg contract.Config
	ln  net.Listener
	wg  sync.WaitGroup

	mu        sync.Mutex
	conns     map[*net.TCPConn]*connState
	closing   bool
	stopAt    time.Time // the signal's time, once closing
	abandoned int       // connections whose owed replies could not be written
}

// Take starts a goroutine for a connection the accept loop took.
func (s *server) Take(c net.Conn) {
	tc := c.(*net.TCPConn)
	// Tracked here, before the goroutine starts, so that Shutdown sees
	// every connection accepted before it closed the listener.
	if !s.track(tc) {
		tc.Close()
		return
	}
	trace.Printf("accept %v", tc.RemoteAddr())
	go s.serve(tc)
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

// Shutdown stops accepting and sets every connection's deadlines: reads end
// with the grace, writes a little later (a reply owed at the end of grace
// still gets its chance), and a connection already draining keeps draining
// until DrainStop.
func (s *server) Shutdown(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing, s.stopAt = true, now
	s.ln.Close()
	for c, st := range s.conns {
		if st.draining {
			c.SetReadDeadline(now.Add(contract.DrainStop))
			continue
		}
		c.SetReadDeadline(now.Add(contract.Grace))
		c.SetWriteDeadline(now.Add(flushStop))
	}
}

func (s *server) serve(c *net.TCPConn) {
	defer s.release(c)
	sess := protocol.NewSession(s.cfg.Mode, s.cfg.MaxLine)
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

// Wait waits for every connection's goroutine, or for hardStop; a
// connection still open then is abandoned.
func (s *server) Wait(hardStop time.Time) int {
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Until(hardStop)):
		s.mu.Lock()
		s.abandoned += len(s.conns)
		s.mu.Unlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.abandoned
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
	deadline := time.Now().Add(contract.LingerTimeout)
	if stop := s.stopAt.Add(contract.DrainStop); s.closing && stop.Before(deadline) {
		deadline = stop
	}
	c.SetReadDeadline(deadline)
	s.mu.Unlock()
	io.Copy(io.Discard, c)
}
