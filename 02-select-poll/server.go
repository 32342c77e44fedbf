//go:build linux

package main

import (
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The contract's shutdown: after SIGINT or SIGTERM, open connections get
// grace to be read and answered, then drain (see drain). By drainStop
// every connection is closed, lingering or not, so that the loop returns
// and the process exits 0 inside the contract's 2 s. hardStop is main's
// last resort, for a loop stuck writing to a client that does not read.
const (
	grace     = 1 * time.Second
	drainStop = 1600 * time.Millisecond
	hardStop  = 1800 * time.Millisecond
)

// lingerTimeout is how long a draining connection (see drain) waits for
// its client to close: long enough for a client that reads to take the
// replies in flight and see EOF. A client that neither reads nor closes is
// dropped at the end, and gets its RST after all. 2 s was too short for
// the harness's linger scenario under -race on a 2-core machine running
// other work: its reader started late, and the RST cost replies.
const lingerTimeout = 5 * time.Second

// A paused accept (see pauseAccept) is retried after minAcceptBackoff,
// then twice as long after each failure in a row, up to maxAcceptBackoff:
// soon enough to use an fd as it frees, rarely enough not to keep a
// machine that is out of fds busy too. net/http's Server.Serve backs off
// the same way, from 5 ms to 1 s.
const (
	minAcceptBackoff = 10 * time.Millisecond
	maxAcceptBackoff = 1 * time.Second
)

// readSize is one read's worth. The loop reads into one buffer shared by
// every connection (only the protocol's unfinished line stays per
// connection), where 01's thread model needed a buffer per client.
const readSize = 64 << 10

type server struct {
	cfg  config
	lfd  int
	addr string

	// conns is all the loop knows about what it watches: select and poll
	// remember nothing between calls, so every wait is built from this
	// table. Only the loop goroutine touches it; live is its size, for
	// main's hard stop, which cannot ask the loop.
	conns map[int]*conn
	live  atomic.Int64

	// pfds is poll's array and fired the fds a wait found ready, both
	// rebuilt on every wait; they are kept between waits only so that
	// rebuilding them allocates nothing.
	pfds  []unix.PollFd
	fired []ready

	// lingering holds the draining connections in the order they began
	// to drain. Each deadline is lingerTimeout after its start, or stopBy
	// if sooner, so that order is also deadline order: the first is the
	// next to expire. One that closed early stays until its deadline,
	// marked closed.
	lingering []*conn

	// acceptRetry: accept failed for want of fds or memory, and accepting
	// is paused until then or until a connection closes, whichever comes
	// first (see pauseAccept); zero while accepting. acceptBackoff is the
	// pause that set it.
	acceptRetry   time.Time
	acceptBackoff time.Duration

	// acceptPaused: the next waits leave the listener out (see listen).
	acceptPaused bool

	// refused counts the connections select could not watch because their
	// fd was past FD_SETSIZE; main reports it at exit.
	refused int

	stopping atomic.Bool // set by shutdown, from the signal goroutine
	deadline time.Time   // end of grace, once the loop has seen the stop; zero once over
	stopBy   time.Time   // once the loop has seen the stop: every connection is closed by then
}

// ready is one fd a wait found ready, in poll's words: select can only
// say "readable", which is POLLIN.
type ready struct {
	fd      int
	revents int16
}

func newServer(cfg config) (*server, error) {
	lfd, addr, err := listenTCP(cfg.addr)
	if err != nil {
		return nil, err
	}
	// Only a process started with a thousand fds already open gets here,
	// but select must never be handed an fd it has no bit for.
	if cfg.poller == "select" && !fitsFdSet(lfd) {
		unix.Close(lfd)
		return nil, fmt.Errorf("listening fd %d is past FD_SETSIZE (%d): select cannot watch it", lfd, fdSetSize)
	}
	return &server{cfg: cfg, lfd: lfd, addr: addr, conns: map[int]*conn{}}, nil
}

// serve is the event loop. It returns once shutdown has closed every
// connection.
func (s *server) serve() error {
	defer unix.Close(s.lfd)
	buf := make([]byte, readSize)
	for !s.done() {
		if err := s.turn(buf); err != nil {
			return err
		}
	}
	return nil
}

// turn is one turn of the loop: wait for ready fds, handle each, then do
// what has fallen due.
func (s *server) turn(buf []byte) error {
	fired, err := s.wait()
	if err != nil {
		return err
	}
	for _, r := range fired {
		s.dispatch(r, buf)
	}
	s.expire(time.Now())
	return nil
}

// dispatch hands one event to the listener or to its connection.
func (s *server) dispatch(r ready, buf []byte) {
	if tracing {
		trace.Printf("fd=%d %s", r.fd, reventString(r.revents))
	}
	if r.fd == s.lfd {
		s.acceptOne()
		return
	}
	// An fd closed earlier in this batch may still be in the list; the
	// table, not the list, says what is open.
	if c := s.conns[r.fd]; c != nil {
		s.handle(c, r.revents, buf)
	}
}

// timeout is the wait's, in milliseconds: until the first thing expire
// has to do (end grace, end a linger, retry a paused accept), or -1, sleep
// until something happens, when there is none. A loop that wakes on a
// timer while idle is the seed's mistake (epoll_wait with 10 ms): it burns
// CPU with nothing to do. A paused listener is not idle: no event would
// say when accepting can resume.
func (s *server) timeout() int {
	next := earlier(s.deadline, s.acceptRetry)
	if len(s.lingering) > 0 {
		next = earlier(next, s.lingering[0].deadline)
	}
	if next.IsZero() {
		return -1
	}
	ms := time.Until(next).Milliseconds() + 1 // round up: never wake early
	return int(max(ms, 0))
}

// expire does what has fallen due by now: close the connections whose
// linger is over, end grace, retry a paused accept.
func (s *server) expire(now time.Time) {
	for len(s.lingering) > 0 {
		c := s.lingering[0]
		if c.state == draining && now.Before(c.deadline) {
			break
		}
		s.lingering[0] = nil
		s.lingering = s.lingering[1:]
		if c.state == draining {
			s.closeConn(c, "linger over")
		}
	}
	if !s.deadline.IsZero() && !now.Before(s.deadline) {
		s.endGrace()
	}
	if !s.acceptRetry.IsZero() && !now.Before(s.acceptRetry) {
		s.resumeAccept()
	}
}

// acceptOne accepts one connection. select and poll are level-triggered:
// if more wait in the backlog, the listener is still readable and the next
// wait says so again.
func (s *server) acceptOne() {
	fd, sa, err := accept(s.lfd)
	switch {
	case err == nil:
		s.acceptBackoff = 0
	case s.stopping.Load():
		s.beginGrace()
		return
	case connAborted(err):
		if tracing {
			trace.Printf("accept: %v", err) // the client gave up while queued
		}
		return
	default:
		// Short of fds (EMFILE, ENFILE) or memory (ENOBUFS, ENOMEM), or
		// refused (EPERM): the connection stays in the backlog, so the
		// level-triggered listener stays readable and the next wait would
		// report it again at once, and again, and again: a spin.
		s.pauseAccept(err)
		return
	}
	s.register(fd, sa)
}

// accept is accept4(2) with EINTR retried. The error is the bare errno,
// for the caller to sort out: most accept errors are no news to report.
func accept(lfd int) (fd int, sa unix.Sockaddr, err error) {
	err = ignoringEINTR(func() error {
		fd, sa, err = accept4(lfd, unix.SOCK_CLOEXEC)
		return err
	})
	return fd, sa, err
}

// register makes a newly accepted fd a connection of the loop's.
func (s *server) register(fd int, sa unix.Sockaddr) {
	if s.cfg.poller == "select" && !fitsFdSet(fd) {
		// The kernel hands out the lowest free number, so this starts at
		// about the 1,020th client open at once. Closing tells the client
		// at once; keeping an fd select cannot watch would leave it
		// unanswered forever.
		s.refused++
		trace.Printf("accept fd=%d from %s: past FD_SETSIZE (%d), refused", fd, sockaddrString(sa), fdSetSize)
		unix.Close(fd)
		return
	}
	if tracing {
		trace.Printf("accept fd=%d from %s", fd, sockaddrString(sa))
	}
	s.conns[fd] = newConn(fd, s.cfg)
	s.live.Add(1)
}

// pauseAccept stops accepting after accept failed for want of a resource,
// until a connection closes (which frees an fd) or the backoff runs out,
// whichever comes first. Closes alone are not enough: the fds may be held
// by another process, or the server may have no connection of its own to
// close, and then nothing would ever say the shortage is over.
func (s *server) pauseAccept(err error) {
	s.acceptBackoff = min(max(2*s.acceptBackoff, minAcceptBackoff), maxAcceptBackoff)
	s.acceptRetry = time.Now().Add(s.acceptBackoff)
	trace.Printf("accept: %v; accepting again in %v, or when a connection closes", err, s.acceptBackoff)
	s.listen(false)
}

// resumeAccept ends a pause. Level-triggered select and poll report the
// connections still waiting in the backlog at the next wait.
func (s *server) resumeAccept() {
	s.acceptRetry = time.Time{}
	s.listen(true)
}

// listen turns accepting on or off. Nothing tells the kernel: the next
// wait builds its set from this flag (waitSelect and waitPoll say how each
// poller leaves a paused listener out).
func (s *server) listen(on bool) {
	s.acceptPaused = !on
}

// closeConn removes c from the table, then closes it. The table is the
// whole interest list: the next wait no longer asks about the fd, and
// there is nothing in the kernel to clean up first.
func (s *server) closeConn(c *conn, why string) {
	delete(s.conns, c.fd)
	unix.Close(c.fd)
	c.state = closed
	s.live.Add(-1)
	if tracing {
		trace.Printf("close fd=%d (%s)", c.fd, why)
	}
	// One fd is free: the accept that failed for want of one may work now.
	if !s.acceptRetry.IsZero() {
		s.resumeAccept()
	}
}

// shutdown runs on the signal goroutine. It must not touch the loop's
// state; it only makes the listener report an event. shutdown(SHUT_RD) on
// a listening socket wakes every select and poll watching it (poll reports
// POLLHUP, select marks it readable), and the loop's next accept fails
// with EINVAL: the loop learns about the stop from the kernel, without a
// lock. (Chapter 05 gives the loop a wakeup fd for this and for any other
// message from another thread.)
func (s *server) shutdown() {
	s.stopping.Store(true)
	if err := unix.Shutdown(s.lfd, unix.SHUT_RD); err != nil {
		trace.Printf("shutdown listener: %v", err)
	}
}

// beginGrace stops accepting (the next waits are built without the
// listener) and starts the grace period. Connections draining already have
// their linger cut to stopBy.
func (s *server) beginGrace() {
	if !s.stopBy.IsZero() {
		return
	}
	s.acceptRetry = time.Time{}
	now := time.Now()
	s.deadline = now.Add(grace)
	s.stopBy = now.Add(drainStop)
	for _, c := range s.lingering {
		c.deadline = earlier(c.deadline, s.stopBy)
	}
}

// endGrace drains every connection still open. A line its client has not
// finished is dropped: only the client's FIN makes it a line.
func (s *server) endGrace() {
	s.deadline = time.Time{}
	for _, c := range s.conns {
		s.drain(c, "grace over")
	}
}

// done reports whether the loop may return: it has seen the stop, and
// every connection is closed, which stopBy guarantees.
func (s *server) done() bool {
	return !s.stopBy.IsZero() && len(s.conns) == 0
}

// wait asks the kernel about every fd the loop owns and returns the ready
// ones. This is what the chapter is about: select and poll keep nothing
// between calls, so each call copies the whole set into the kernel, the
// kernel checks every fd in it, and the loop scans the whole set again on
// return to find the few that fired. With 1,000 idle clients and one busy
// one, each of its requests costs 1,000 checks on both sides of the call.
// Chapter 03's epoll keeps the set in the kernel and returns only the
// ready fds.
func (s *server) wait() ([]ready, error) {
	s.fired = s.fired[:0]
	if s.cfg.poller == "select" {
		return s.waitSelect()
	}
	return s.waitPoll()
}

// waitSelect builds a bitmap from the table, selects, then tests every bit
// up to the highest fd: its cost follows the highest fd number, however
// few fds are open below it.
func (s *server) waitSelect() ([]ready, error) {
	var rset unix.FdSet
	maxfd := -1
	add := func(fd int) {
		rset.Set(fd) // fd fits: register refuses every fd past FD_SETSIZE
		maxfd = max(maxfd, fd)
	}
	// A paused listener is left out: select cannot ask about a socket
	// without asking whether it is readable, and it is. The cost: while
	// paused, shutdown's SHUT_RD cannot wake the loop, which learns of the
	// signal only when the pause ends (a connection closes, or the backoff
	// runs out, after up to a second) and puts the listener back: perhaps
	// too late to finish before main's hard stop.
	if s.stopBy.IsZero() && !s.acceptPaused {
		add(s.lfd)
	}
	for fd := range s.conns {
		add(fd)
	}
	// No write set: writes block (see send). No except set: for TCP it
	// means urgent data only; errors and hangups make a socket readable.
	n, err := selectWait(maxfd+1, &rset, msecTimeval(s.timeout()))
	if err != nil || n == 0 {
		// A timeout, or a signal: after one the kernel leaves rset as it
		// was given, every bit still set, so it must not be scanned.
		return s.fired, err
	}
	// select returns how many fds are ready, not which.
	for fd := 0; fd <= maxfd; fd++ {
		if rset.IsSet(fd) {
			s.fired = append(s.fired, ready{fd: fd, revents: unix.POLLIN})
		}
	}
	return s.fired, nil
}

// waitPoll builds poll's array from the table, polls, then scans the whole
// array: its cost follows the number of open fds, whatever their numbers,
// and no fd is too big for it.
func (s *server) waitPoll() ([]ready, error) {
	s.pfds = s.pfds[:0]
	if s.stopBy.IsZero() {
		// A paused listener stays in the array with no events asked for:
		// poll reports POLLHUP whatever Events says, so shutdown's SHUT_RD
		// still wakes the loop.
		var events int16
		if !s.acceptPaused {
			events = unix.POLLIN
		}
		s.pfds = append(s.pfds, unix.PollFd{Fd: int32(s.lfd), Events: events})
	}
	for fd := range s.conns {
		// POLLIN only: a FIN or a RST makes the socket readable too, and
		// POLLERR and POLLHUP are reported whether asked for or not.
		s.pfds = append(s.pfds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
	}
	n, err := pollWait(s.pfds, s.timeout())
	if err != nil || n == 0 {
		return s.fired, err
	}
	// poll, too, returns how many entries fired, not which.
	for _, p := range s.pfds {
		if p.Revents != 0 {
			s.fired = append(s.fired, ready{fd: int(p.Fd), revents: p.Revents})
		}
	}
	return s.fired, nil
}

// earlier is the sooner of two deadlines, where zero means none.
func earlier(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}
