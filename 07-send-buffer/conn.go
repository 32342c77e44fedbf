//go:build linux

package main

import (
	"errors"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"reactorlab/shared/protocol"
)

// connState is where a connection is in its life. The loop reads open,
// flushing and draining connections alike; only what it does with the
// bytes differs.
type connState int

const (
	open     connState = iota // reading requests and answering them
	flushing                  // done with requests: discarding input, sending what the send buffer holds
	draining                  // write side shut; discarding input until EOF or the deadline
	closed                    // fd closed; a list that still holds the conn skips it
)

func (st connState) String() string {
	return [...]string{open: "open", flushing: "flushing", draining: "draining", closed: "closed"}[st]
}

// conn is one client's state between events: its protocol session (which
// holds an unfinished line), its send buffer, and where it is in its life.
//
// The send buffer is what the kernel has not taken yet, in two parts, so
// that no byte is moved once the protocol has written it: rest is what
// earlier writes left over, still to go from rest[sent:]; out is the
// replies made since, which new replies are appended to. When rest is all
// gone, out becomes rest and rest's array, emptied, the next out (see
// wrote): the two arrays take turns, and once they have grown to the
// traffic's size the buffer allocates nothing.
type conn struct {
	fd    int
	sess  *protocol.Session
	out   []byte
	rest  []byte
	sent  int
	state connState

	events uint32 // what epoll watches for c: EPOLLOUT only while the send buffer holds bytes
	paused bool   // the send buffer passed -high-water: c is not read until it drains (see pace)
	eof    bool   // the client's FIN has been read: c closes once its send buffer is empty
	hup    bool   // epoll has reported the FIN (EPOLLRDHUP): read on to the 0 that shows it

	deadline time.Time // while flushing or draining: close then, even if the client still sends
	queued   bool      // on the loop's revisit list

	// active is when c last had an event, and prev and next its neighbours
	// in the loop's idle list, for -idle-timeout (see idleList).
	active     time.Time
	prev, next *conn

	hold hold // -model queue: whether a worker holds it (see queue.go)
}

func newConn(fd int, cfg config, events uint32) *conn {
	return &conn{fd: fd, sess: protocol.NewSession(cfg.mode, cfg.maxLine), events: events}
}

// handle acts on one readiness event. Room to write (EPOLLOUT) sends what
// the send buffer holds. Anything else means "read has news", and handle
// reads until EAGAIN: under edge-triggered epoll the event was the only
// notice of these bytes, and bytes left in the socket are not reported
// again until new ones arrive, which for a client waiting for its reply is
// never. After readBudget reads the connection yields its turn and goes
// on the revisit list (see readBudget); paused (see pace), it stops at
// once, and resuming puts it there.
//
// A read that does not fill buf ends the turn too, without the read that
// would only say EAGAIN (a third of 07's reads under load, before): it
// emptied the socket, and bytes that arrive after epoll_wait reported c
// make a new edge, the next epoll_wait's, whenever they come. The one
// exception is the client's FIN: it came with the data, or before this
// read, if and only if epoll said EPOLLRDHUP, and it shows only to a
// further read, as 0. So c.hup keeps reading on. Netty's epoll transport
// stops at a short read the same way; 04 to 06 read on to EAGAIN, the
// rule as epoll(7) states it.
func (l *loop) handle(c *conn, events uint32, buf []byte) {
	if events&unix.EPOLLERR != 0 {
		// The socket has a pending error (a RST, typically); reading it
		// would return the same error. There is no one left to answer.
		l.closeConn(c, soError(c.fd))
		return
	}
	if events&(unix.EPOLLRDHUP|unix.EPOLLHUP) != 0 {
		c.hup = true
	}
	if events&unix.EPOLLOUT != 0 {
		l.send(c, false)
		if c.state == closed || events&^unix.EPOLLOUT == 0 {
			return
		}
	}
	// EPOLLIN, EPOLLRDHUP and EPOLLHUP all mean "read has news": data, 0
	// for the client's FIN, or an error; then EAGAIN once there is no more.
	defer region("read").end()
	for reads := 0; reads < readBudget; reads++ {
		if !c.reading() {
			if tracing {
				trace.Printf("read fd=%d: not now (%d bytes buffered, paused %v, EOF %v)", c.fd, c.pending(), c.paused, c.eof)
			}
			return
		}
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
		if c.state == closed || n < len(buf) && !c.hup {
			return
		}
	}
	if tracing {
		trace.Printf("read fd=%d budget spent; revisit", c.fd)
	}
	l.revisitSoon(c)
}

// revisitSoon puts c on the revisit list, once: bytes wait in its socket
// that no new edge will announce.
func (l *loop) revisitSoon(c *conn) {
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

// input answers the complete lines in p into c's send buffer, or drops p
// once c is flushing or draining: the server has stopped listening, and
// reads only so that the kernel has no unread bytes to answer with a RST.
//
// With the send buffer empty, as it is for nearly every request, the
// replies are made in the loop's shared buffer and go straight to the
// kernel (see offer); only what it refuses is copied into c's own. An idle
// connection holds no reply buffer at all: at 10,000 connections that is
// memory the process does not keep. muduo's sendInLoop works this way.
func (l *loop) input(c *conn, p []byte) {
	if c.state != open {
		return
	}
	var perr error
	if c.pending() > 0 {
		c.out, perr = c.sess.Input(c.out, p)
		l.send(c, true)
	} else {
		l.replies, perr = c.sess.Input(l.replies[:0], p)
		l.offer(c, l.replies)
	}
	if errors.Is(perr, protocol.ErrClosing) {
		l.drain(c, "line too long")
	}
}

// offer writes p, replies made while c's send buffer was empty, and keeps
// in the send buffer what the kernel does not take, as flush would have.
func (l *loop) offer(c *conn, p []byte) {
	for len(p) > 0 {
		n, err := writeFD(c.fd, p)
		if err == unix.EAGAIN {
			break
		}
		if err != nil {
			l.closeConn(c, os.NewSyscallError("write", err).Error())
			return
		}
		if tracing {
			trace.Printf("write fd=%d n=%d; %d bytes left", c.fd, n, len(p)-n)
		}
		p = p[n:]
	}
	if len(p) > 0 {
		if tracing {
			trace.Printf("write fd=%d EAGAIN; %d bytes buffered", c.fd, len(p))
		}
		c.out = append(c.out, p...)
	}
	l.send(c, true)
}

// send offers the kernel what c's send buffer holds, and never waits: what
// the kernel does not take stays in the buffer, in order, and EPOLLOUT
// says when there is room for it. Replies behind bytes the kernel refused
// (behind) are not offered at all: the socket had no room at the last
// write and no EPOLLOUT has said otherwise since, so a write would only
// meet EAGAIN; they go with the rest when EPOLLOUT comes, in one writev.
// A write that fails (EPIPE, ECONNRESET) means the client is gone: close
// at once.
func (l *loop) send(c *conn, behind bool) {
	if !behind {
		if err := c.flush(); err != nil {
			l.closeConn(c, err.Error())
			return
		}
	}
	if err := l.watchOut(c); err != nil {
		l.closeConn(c, err.Error())
		return
	}
	if c.pace(l.cfg.highWater) {
		l.readAgain(c)
	}
	if c.state == flushing && c.pending() == 0 {
		l.flushed(c)
	}
}

// watchOut makes epoll watch EPOLLOUT for c while its send buffer holds
// bytes, and not otherwise: EPOLL_CTL_MOD on those two transitions only,
// never per write. Off with bytes left, nothing would say when the socket
// has room again, and c would hang. On with nothing left, a socket with
// room is always writable: a level-triggered loop would wake for it at
// once, forever, and even edge-triggered every ACK from the client would
// wake this one for nothing.
func (l *loop) watchOut(c *conn) error {
	ev := c.events &^ unix.EPOLLOUT
	if c.pending() > 0 {
		ev |= unix.EPOLLOUT
	}
	if ev == c.events {
		return nil
	}
	return l.rewatch(c, ev)
}

// drain ends a conversation the server ends and the client may not: after
// an error line, at the end of grace, after -idle-timeout; and after the
// client's FIN while replies are still owed. close(2) now would lose
// replies: with input unread the kernel answers with a RST, and a RST
// throws away every byte still on its way. So c first flushes: it reads
// no more requests (what the client sends is dropped from now on), and
// what its send buffer holds goes out as the socket takes it. Then
// flushed shuts the write side. Both steps together have until c's
// deadline. drain is the one way out of open.
func (l *loop) drain(c *conn, why string) {
	if c.state != open {
		return
	}
	c.state = flushing
	c.deadline = earlier(time.Now().Add(lingerTimeout), l.stopBy)
	l.lingering = append(l.lingering, c)
	l.idle.remove(c)
	if tracing {
		trace.Printf("drain fd=%d (%s): flushing %d bytes, dropping input, until %s",
			c.fd, why, c.pending(), c.deadline.Format("15:04:05.000000"))
	}
	if c.paused {
		// Dropping input does not fill the buffer, and a client blocked
		// sending may not read its replies until it can send again.
		c.paused = false
		l.readAgain(c)
	}
	if c.state == flushing && c.pending() == 0 {
		l.flushed(c)
	}
}

// readAgain lets a c that was paused be read again. In -model loops the
// bytes that came meanwhile have had their edge, and no event will
// announce them again: the revisit list reads them, this turn. In -model
// queue c is armed without EPOLLIN: re-armed with it (level-triggered),
// epoll reports them at once. (A worker that resumes c re-arms it anyway,
// at the end of its step.)
func (l *loop) readAgain(c *conn) {
	if l.requests == nil {
		l.revisitSoon(c)
		return
	}
	c.hold.mu.Lock()
	err := l.rearm(c, c.wants())
	c.hold.mu.Unlock()
	if err != nil {
		l.closeConn(c, err.Error())
	}
}

// flushed moves a flushing c on once its send buffer is empty:
// shutdown(SHUT_WR) puts a FIN behind the replies, so the client reads
// them all and then EOF; and c lingers, dropping what the client still
// sends, until the client closes too (read returns 0) or c's deadline
// passes. A client that has sent its FIN already has nothing left to send:
// c closes at once.
func (l *loop) flushed(c *conn) {
	if c.eof {
		l.closeConn(c, "EOF, replies sent")
		return
	}
	if err := unix.Shutdown(c.fd, unix.SHUT_WR); err != nil {
		l.closeConn(c, os.NewSyscallError("shutdown", err).Error())
		return
	}
	c.state = draining
	if tracing {
		trace.Printf("drain fd=%d: send buffer empty, write side shut, dropping input until EOF", c.fd)
	}
}

// finish ends c after the client's FIN. A last line without '\n' is a line
// now (the client said it is done) and is answered. The client sends
// nothing more, so nothing is left unread to linger for: c closes once
// its send buffer is empty, at once if the kernel took every reply.
func (l *loop) finish(c *conn) {
	c.eof = true
	if c.state == open {
		behind := c.pending() > 0
		c.out = c.sess.EOF(c.out)
		l.send(c, behind)
	}
	switch {
	case c.state == closed:
	case c.pending() > 0:
		l.drain(c, "EOF, replies owed") // flushing already: flushed closes it
	default:
		l.closeConn(c, "EOF")
	}
}

// reading reports whether c is to be read now: not after the client's
// FIN, and not while it is open and paused. Flushing and draining, it is
// read even when paused: what it reads is dropped, and costs no memory.
func (c *conn) reading() bool {
	return !c.eof && (c.state != open || !c.paused)
}

// pace is backpressure: a connection whose send buffer holds more than
// high bytes is paused, not read from, so a client that sends and never
// reads cannot make the server queue replies without end; it resumes once
// the buffer holds a quarter of high or less. pace reports whether it
// resumed. The mark is looked at after each read, so a buffer may pass it
// by one read's replies.
//
// The low mark is well below the high one so that c does not flip between
// paused and reading on every write: each resume comes after the client
// has taken three quarters of the mark, and finds a quarter still queued,
// so the socket has bytes to send while the loop reads and answers the
// next requests.
func (c *conn) pace(high int) (resumed bool) {
	switch n := c.pending(); {
	case !c.paused && n > high:
		c.paused = true
		if tracing {
			trace.Printf("fd=%d %d bytes buffered, over -high-water %d: reads paused", c.fd, n, high)
		}
	case c.paused && n <= high/4:
		c.paused = false
		if tracing {
			trace.Printf("fd=%d %d bytes buffered, down to %d: reads resumed", c.fd, n, high/4)
		}
		return true
	}
	return false
}

// pending is how many bytes c's send buffer holds.
func (c *conn) pending() int {
	return len(c.rest) - c.sent + len(c.out)
}

// flush writes what c's send buffer holds, oldest first, until it is all
// gone or the kernel takes no more (EAGAIN), which leaves the rest for
// EPOLLOUT. Under edge-triggered epoll only EAGAIN is sure to be followed
// by an edge when room comes; a short write is not.
func (c *conn) flush() error {
	defer region("write").end()
	for c.pending() > 0 {
		n, call, err := c.write()
		if err == unix.EAGAIN {
			if tracing {
				trace.Printf("%s fd=%d EAGAIN; %d bytes buffered", call, c.fd, c.pending())
			}
			return nil
		}
		if err != nil {
			return os.NewSyscallError(call, err)
		}
		c.wrote(n)
		if tracing {
			trace.Printf("%s fd=%d n=%d; %d bytes buffered", call, c.fd, n, c.pending())
		}
	}
	return nil
}

// write offers the kernel the whole send buffer in one system call:
// write(2) when one part is empty, else writev(2) with both, the rest of
// earlier replies and the ones made since, so that they need no copying
// into one buffer first and no second call. call names it, for errors.
func (c *conn) write() (n int, call string, err error) {
	rest := c.rest[c.sent:]
	switch {
	case len(rest) == 0:
		n, err = writeFD(c.fd, c.out)
		return n, "write", err
	case len(c.out) == 0:
		n, err = writeFD(c.fd, rest)
		return n, "write", err
	}
	n, err = writevFD(c.fd, rest, c.out)
	return n, "writev", err
}

// wrote drops the n bytes the kernel took from the front of the send
// buffer. Once rest is all sent, out becomes rest, its first bytes perhaps
// sent too, and rest's array, empty, becomes out.
func (c *conn) wrote(n int) {
	left := len(c.rest) - c.sent
	if n < left {
		c.sent += n
		return
	}
	c.rest, c.out, c.sent = c.out, c.rest[:0], n-left
	if c.sent == len(c.rest) {
		c.rest, c.sent = c.rest[:0], 0
	}
}
