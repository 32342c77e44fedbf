//go:build linux

package main

import (
	"errors"

	"golang.org/x/sys/unix"

	"reactorlab/shared/protocol"
)

// conn is one client's state between events: its protocol session (which
// holds an unfinished line) and the reply buffer, reused from read to read.
type conn struct {
	fd   int
	sess *protocol.Session
	out  []byte
}

func newConn(fd int, cfg config) *conn {
	return &conn{fd: fd, sess: protocol.NewSession(cfg.mode, cfg.maxLine)}
}

// handle acts on one readiness event. It reads once: under level-triggered
// epoll, bytes left in the socket are reported again by the next wait, and
// meanwhile other clients get their turn. The price is one epoll_wait per
// read for a client that sends more than one read's worth.
func (s *server) handle(c *conn, events uint32, buf []byte) {
	if events&unix.EPOLLERR != 0 {
		// The socket has a pending error (a RST, typically); reading it
		// would return the same error. There is no one left to answer.
		s.closeConn(c, soError(c.fd))
		return
	}
	// EPOLLIN, EPOLLRDHUP and EPOLLHUP all mean "read will not block": it
	// returns data, 0 for the client's FIN, or an error.
	n, err := readFD(c.fd, buf)
	switch {
	case err != nil:
		s.closeConn(c, err.Error()) // ECONNRESET: gone, owed or not
		return
	case n == 0:
		s.finish(c, "EOF")
		return
	}
	trace.Printf("read fd=%d n=%d", c.fd, n)
	var perr error
	c.out, perr = c.sess.Input(c.out[:0], buf[:n])
	// A blocking write: while it waits for a client that does not read,
	// every other client waits too. Chapter 07 fixes that.
	if err := writeAll(c.fd, c.out); err != nil {
		s.closeConn(c, err.Error())
		return
	}
	if errors.Is(perr, protocol.ErrClosing) {
		s.closeConn(c, "line too long")
	}
}

// finish answers a last line that had no '\n' and closes: the client has
// half-closed, or shutdown's grace is over.
func (s *server) finish(c *conn, why string) {
	if err := writeAll(c.fd, c.sess.EOF(c.out[:0])); err != nil {
		why = err.Error()
	}
	s.closeConn(c, why)
}
