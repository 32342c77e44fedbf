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

	queued bool // on the server's revisit list
}

func newConn(fd int, cfg config) *conn {
	return &conn{fd: fd, sess: protocol.NewSession(cfg.mode, cfg.maxLine)}
}

// handle acts on one readiness event. It reads until EAGAIN: under
// edge-triggered epoll the event was the only notice of these bytes, and
// bytes left in the socket are not reported again until new ones arrive,
// which for a client waiting for its reply is never. A short read is no
// proof of EAGAIN: a FIN that came with the data shows only to the next
// read, as 0. After readBudget reads the connection yields its turn and
// goes on the revisit list (see readBudget).
func (s *server) handle(c *conn, events uint32, buf []byte) {
	if events&unix.EPOLLERR != 0 {
		// The socket has a pending error (a RST, typically); reading it
		// would return the same error. There is no one left to answer.
		s.closeConn(c, soError(c.fd))
		return
	}
	// EPOLLIN, EPOLLRDHUP and EPOLLHUP all mean "read has news": data, 0
	// for the client's FIN, or an error; then EAGAIN once there is no more.
	for reads := 0; reads < readBudget; reads++ {
		n, err := readFD(c.fd, buf)
		switch {
		case errors.Is(err, unix.EAGAIN):
			trace.Printf("read fd=%d EAGAIN (drained after %d of %d reads)", c.fd, reads, readBudget)
			return
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
		// A write that waits: while it waits for a client that does not
		// read, every other client waits too. Chapter 07 fixes that.
		if err := writeAll(c.fd, c.out); err != nil {
			s.closeConn(c, err.Error())
			return
		}
		if errors.Is(perr, protocol.ErrClosing) {
			s.closeConn(c, "line too long")
			return
		}
	}
	trace.Printf("read fd=%d budget spent; revisit", c.fd)
	if !c.queued {
		c.queued = true
		s.revisit = append(s.revisit, c)
	}
}

// serveRevisits gives each connection on the revisit list its next turn,
// once every fd with an event has had its own. The list is taken whole:
// a connection that spends its budget again joins the next round's list.
func (s *server) serveRevisits(buf []byte) {
	owed := s.revisit
	s.revisit = nil
	for _, c := range owed {
		c.queued = false
		// Closed by an event earlier in this round, its fd number perhaps
		// already given to a new client: the table says, not the list.
		if s.conns[c.fd] == c {
			trace.Printf("revisit fd=%d", c.fd)
			s.handle(c, unix.EPOLLIN, buf)
		}
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
