//go:build linux

package main

import (
	"errors"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"reactorlab/shared/protocol"
)

// connState is where a connection is in its life. The loop reads open and
// draining connections alike; only what it does with the bytes differs.
type connState int

const (
	open     connState = iota // reading requests and answering them
	draining                  // write side shut; discarding input until EOF or the deadline
	closed                    // fd closed; a list that still holds the conn skips it
)

func (st connState) String() string {
	return [...]string{open: "open", draining: "draining", closed: "closed"}[st]
}

// conn is one client's state between events: its protocol session (which
// holds an unfinished line), the reply buffer, reused from read to read,
// and where it is in its life.
type conn struct {
	fd    int
	sess  *protocol.Session
	out   []byte
	state connState

	deadline time.Time // while draining: close then, even if the client still sends
}

func newConn(fd int, cfg config) *conn {
	return &conn{fd: fd, sess: protocol.NewSession(cfg.mode, cfg.maxLine)}
}

// handle acts on one ready fd. It reads once: select and poll are
// level-triggered, so bytes left in the socket are reported again by the
// next wait, and meanwhile other clients get their turn. The price is one
// wait, with its scan of every fd, per read for a client that sends more
// than one read's worth.
func (s *server) handle(c *conn, revents int16, buf []byte) {
	if revents&(unix.POLLERR|unix.POLLNVAL) != 0 {
		// The socket has a pending error (a RST, typically); reading it
		// would return the same error. There is no one left to answer.
		// (POLLNVAL, "not an open fd", cannot happen while every set is
		// built from the table of open fds.)
		s.closeConn(c, soError(c.fd))
		return
	}
	// POLLIN and POLLHUP (select's "readable") both mean "read will not
	// block": it returns data, 0 for the client's FIN, or an error.
	n, err := readFD(c.fd, buf)
	switch {
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

// send writes p to c and returns once the kernel has taken all of it: a
// blocking write, and while it waits for a client that does not read,
// every other client waits too (chapter 07 gives c a send buffer
// instead). A write that fails (EPIPE, ECONNRESET) means the client is
// gone: close at once.
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
	c.deadline = earlier(time.Now().Add(lingerTimeout), s.stopBy)
	s.lingering = append(s.lingering, c)
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
