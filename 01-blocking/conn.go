//go:build linux

package main

import (
	"errors"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"reactorlab/shared/protocol"
)

// connState is where a connection is in its life. Its thread reads open
// and draining connections alike; only what it does with the bytes
// differs.
type connState int

const (
	open     connState = iota // reading requests and answering them
	draining                  // write side shut; discarding input until EOF or the deadline
	closed                    // fd closed
)

func (st connState) String() string {
	return [...]string{open: "open", draining: "draining", closed: "closed"}[st]
}

// conn is one client's state between reads: its protocol session (which
// holds an unfinished line), the reply buffer, reused from read to read,
// and where it is in its life.
type conn struct {
	fd    int
	sess  *protocol.Session
	out   []byte
	state connState

	deadline time.Time   // while draining: close then, even if the client still sends
	tid      int         // the thread serving it, for endGrace to interrupt; guarded by server.mu
	reading  atomic.Bool // that thread is in read, or about to be
}

func newConn(fd int, cfg config) *conn {
	return &conn{fd: fd, sess: protocol.NewSession(cfg.mode, cfg.maxLine)}
}

// serveConn serves c on the calling thread until it is closed. Every call
// here blocks: read waits for the client to send, write waits until the
// kernel has taken the whole reply.
func (s *server) serveConn(c *conn) {
	s.mu.Lock()
	c.tid = unix.Gettid()
	s.mu.Unlock()
	buf := make([]byte, readSize)
	for c.state != closed {
		s.expire(c, time.Now())
		if c.state != closed {
			s.handle(c, buf)
		}
	}
}

// expire does what has fallen due for c by now: drain it once grace is
// over, close it once its linger is. A draining connection reads with a
// timeout (SO_RCVTIMEO) that ends at its deadline, so that a client that
// neither sends nor closes cannot hold its thread past it.
func (s *server) expire(c *conn, now time.Time) {
	if c.state == open && s.graceOver.Load() {
		s.drain(c, "grace over")
	}
	if c.state != draining {
		return
	}
	// Shutdown may have come since drain set the deadline.
	c.deadline = earlier(c.deadline, s.stopDeadline())
	if !now.Before(c.deadline) {
		s.closeConn(c, "linger over")
		return
	}
	if err := setReadTimeout(c.fd, c.deadline.Sub(now)); err != nil {
		s.closeConn(c, err.Error())
	}
}

// handle does one read and acts on it. It blocks until the client sends,
// closes or resets, or until the read's timeout, if c has one, runs out.
func (s *server) handle(c *conn, buf []byte) {
	c.reading.Store(true)
	n, err := readFD(c.fd, buf)
	c.reading.Store(false)
	switch {
	case err == unix.EAGAIN:
		// The read timed out: c's linger is over, or endGrace woke it.
		// The next turn's expire says which.
		return
	case err != nil:
		// ECONNRESET: gone, owed or not.
		s.closeConn(c, os.NewSyscallError("read", err).Error())
		return
	case n == 0:
		s.finish(c)
		return
	}
	if tracing {
		trace.Printf("read fd=%d n=%d", c.fd, n)
	}
	s.input(c, buf[:n])
}

// input answers the complete lines in p, or drops p once c is draining:
// the server has stopped listening, and reads only so that the kernel has
// no unread bytes to answer with a RST.
func (s *server) input(c *conn, p []byte) {
	if c.state != open {
		return
	}
	var perr error
	c.out, perr = c.sess.Input(c.out[:0], p)
	s.send(c, c.out)
	if errors.Is(perr, protocol.ErrClosing) {
		s.drain(c, "line too long")
	}
}

// send writes p to c and returns once the kernel has taken all of it. A
// write that fails (EPIPE, ECONNRESET) means the client is gone: close at
// once.
func (s *server) send(c *conn, p []byte) {
	if err := writeAll(c.fd, p); err != nil {
		s.closeConn(c, err.Error())
	}
}

// drain ends a conversation the server ends and the client may not: after
// an error line, or at the end of grace. close(2) now would lose replies:
// with input unread the kernel answers with a RST, and a RST throws away
// every byte still on its way. So every reply owed goes first (send has
// already waited for the kernel to take them), then shutdown(SHUT_WR) puts
// a FIN behind them, so the client reads them all and then EOF; and c
// lingers, dropping what the client still sends, until the client closes
// too (read returns 0) or c's deadline passes. drain is the one way out of
// open: a send buffer (chapter 07) will have to empty first, here.
func (s *server) drain(c *conn, why string) {
	if c.state != open {
		return
	}
	if err := unix.Shutdown(c.fd, unix.SHUT_WR); err != nil {
		s.closeConn(c, os.NewSyscallError("shutdown", err).Error())
		return
	}
	c.state = draining
	c.deadline = earlier(time.Now().Add(lingerTimeout), s.stopDeadline())
	if tracing {
		trace.Printf("drain fd=%d (%s): write side shut, dropping input until EOF or %s",
			c.fd, why, c.deadline.Format("15:04:05.000000"))
	}
}

// finish ends c after the client's FIN. A last line without '\n' is a line
// now (the client said it is done) and is answered before the close. The
// client sends nothing more, so nothing is left unread to linger for.
func (s *server) finish(c *conn) {
	if c.state == open {
		s.send(c, c.sess.EOF(c.out[:0]))
	}
	if c.state != closed {
		s.closeConn(c, "EOF")
	}
}
