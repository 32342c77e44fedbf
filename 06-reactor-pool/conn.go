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
	queued   bool      // on the loop's revisit list

	hold hold // -model queue: whether a worker holds it (see queue.go)
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
func (l *loop) handle(c *conn, events uint32, buf []byte) {
	if events&unix.EPOLLERR != 0 {
		// The socket has a pending error (a RST, typically); reading it
		// would return the same error. There is no one left to answer.
		l.closeConn(c, soError(c.fd))
		return
	}
	// EPOLLIN, EPOLLRDHUP and EPOLLHUP all mean "read has news": data, 0
	// for the client's FIN, or an error; then EAGAIN once there is no more.
	defer region("read").end()
	for reads := 0; reads < readBudget; reads++ {
		n, err := readFD(c.fd, buf)
		switch {
		case err == unix.EAGAIN:
			if tracing {
				trace.Printf("read fd=%d EAGAIN (drained after %d of %d reads)", c.fd, reads, readBudget)
			}
			return
		case err != nil:
			// ECONNRESET: gone, owed or not.
			l.closeConn(c, os.NewSyscallError("read", err).Error())
			return
		case n == 0:
			l.finish(c)
			return
		}
		if tracing {
			trace.Printf("read fd=%d n=%d", c.fd, n)
		}
		l.input(c, buf[:n])
		if c.state == closed {
			return
		}
	}
	if tracing {
		trace.Printf("read fd=%d budget spent; revisit", c.fd)
	}
	if !c.queued {
		c.queued = true
		l.revisit = append(l.revisit, c)
	}
}

// serveRevisits gives each connection on the revisit list its next turn,
// once every fd with an event has had its own. The list is taken whole:
// a connection that spends its budget again joins the next round's list.
func (l *loop) serveRevisits(buf []byte) {
	owed := l.revisit
	l.revisit = nil
	for _, c := range owed {
		c.queued = false
		// Closed by an event earlier in this round, its fd number perhaps
		// already given to a new client: the state says, not the fd.
		if c.state != closed {
			if tracing {
				trace.Printf("revisit fd=%d", c.fd)
			}
			l.handle(c, unix.EPOLLIN, buf)
		}
	}
}

// input answers the complete lines in p, or drops p once c is draining:
// the server has stopped listening, and reads only so that the kernel has
// no unread bytes to answer with a RST.
func (l *loop) input(c *conn, p []byte) {
	if c.state != open {
		return
	}
	var perr error
	c.out, perr = c.sess.Input(c.out[:0], p)
	l.send(c, c.out)
	if errors.Is(perr, protocol.ErrClosing) {
		l.drain(c, "line too long")
	}
}

// send writes p to c and returns once the kernel has taken all of it: a
// blocking write, and while it waits for a client that does not read,
// every other client waits too (chapter 07 gives c a send buffer
// instead). A write that fails (EPIPE, ECONNRESET) means the client is
// gone: close at once.
func (l *loop) send(c *conn, p []byte) {
	if err := writeAll(c.fd, p); err != nil {
		l.closeConn(c, err.Error())
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
func (l *loop) drain(c *conn, why string) {
	if c.state != open {
		return
	}
	if err := unix.Shutdown(c.fd, unix.SHUT_WR); err != nil {
		l.closeConn(c, os.NewSyscallError("shutdown", err).Error())
		return
	}
	c.state = draining
	c.deadline = earlier(time.Now().Add(lingerTimeout), l.stopBy)
	l.lingering = append(l.lingering, c)
	if tracing {
		trace.Printf("drain fd=%d (%s): write side shut, dropping input until EOF or %s",
			c.fd, why, c.deadline.Format("15:04:05.000000"))
	}
}

// finish ends c after the client's FIN. A last line without '\n' is a line
// now (the client said it is done) and is answered before the close. The
// client sends nothing more, so nothing is left unread to linger for.
func (l *loop) finish(c *conn) {
	if c.state == open {
		l.send(c, c.sess.EOF(c.out[:0]))
	}
	if c.state != closed {
		l.closeConn(c, "EOF")
	}
}
