//go:build linux

package main

import (
	"os"
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

// maxEvents is how many ready fds one epoll_wait may return. More ready fds
// than that are not lost: level-triggered epoll reports them again on the
// next call. 128 amortises the syscall without a large array per loop.
const maxEvents = 128

// readSize is one read's worth. The loop reads into one buffer shared by
// every connection (only the protocol's unfinished line stays per
// connection), where 01's thread model needed a buffer per client.
const readSize = 64 << 10

type server struct {
	cfg  config
	lfd  int
	addr string
	epfd int

	// conns turns the fd in an epoll event back into the connection's
	// state. Only the loop goroutine touches it; live is its size, for
	// main's hard stop, which cannot ask the loop.
	conns map[int]*conn
	live  atomic.Int64

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

	stopping atomic.Bool // set by shutdown, from the signal goroutine
	deadline time.Time   // end of grace, once the loop has seen the stop; zero once over
	stopBy   time.Time   // once the loop has seen the stop: every connection is closed by then
}

func newServer(cfg config) (*server, error) {
	lfd, addr, err := listenTCP(cfg.addr)
	if err != nil {
		return nil, err
	}
	// EPOLL_CLOEXEC is the only flag epoll_create1 takes. The seed passes
	// 1, which the kernel rejects with EINVAL: its server never started.
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		unix.Close(lfd)
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	s := &server{cfg: cfg, lfd: lfd, addr: addr, epfd: epfd, conns: map[int]*conn{}}
	// EPOLLIN only: the seed also asks for EPOLLOUT on the listener, which
	// means nothing for a listening socket.
	if err := s.watch(lfd, unix.EPOLLIN); err != nil {
		unix.Close(epfd)
		unix.Close(lfd)
		return nil, err
	}
	return s, nil
}

// serve is the event loop. It returns once shutdown has closed every
// connection.
func (s *server) serve() error {
	defer unix.Close(s.lfd)
	defer unix.Close(s.epfd)
	events := make([]unix.EpollEvent, maxEvents)
	buf := make([]byte, readSize)
	for !s.done() {
		if err := s.turn(events, buf); err != nil {
			return err
		}
	}
	return nil
}

// LAB(wait): wait in epoll_wait, hand each ready fd to the listener or to its connection, then do what has fallen due
// turn is one turn of the loop: wait for ready fds, handle each, then do
// what has fallen due.
func (s *server) turn(events []unix.EpollEvent, buf []byte) error {
	n, err := epollWait(s.epfd, events, s.timeout())
	if err != nil {
		return err
	}
	for _, ev := range events[:n] {
		s.dispatch(ev, buf)
	}
	s.expire(time.Now())
	return nil
}

// dispatch hands one event to the listener or to its connection.
func (s *server) dispatch(ev unix.EpollEvent, buf []byte) {
	fd := int(ev.Fd)
	if tracing {
		trace.Printf("fd=%d %s", fd, eventString(ev.Events))
	}
	if fd == s.lfd {
		s.acceptOne()
		return
	}
	// An fd closed earlier in this batch may still have an event here;
	// the table, not the event, says what is open.
	if c := s.conns[fd]; c != nil {
		s.handle(c, ev.Events, buf)
	}
}

// END LAB

// timeout is epoll_wait's, in milliseconds: until the first thing expire
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

// LAB(accept): accept one connection; when accept fails for want of fds or memory, pause accepting instead of spinning
// acceptOne accepts one connection. Under level-triggered epoll that is
// enough: if more wait in the backlog, the listener is still readable and
// the next epoll_wait says so again.
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
		// level-triggered listener stays readable and epoll_wait would
		// report it again at once, and again, and again: a spin.
		s.pauseAccept(err)
		return
	}
	s.register(fd, sa)
}

// END LAB

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
	if tracing {
		trace.Printf("accept fd=%d from %s", fd, sockaddrString(sa))
	}
	// EPOLLRDHUP reports the client's FIN as an event of its own, so a
	// half-close is seen even when it arrives with no data.
	if err := s.watch(fd, unix.EPOLLIN|unix.EPOLLRDHUP); err != nil {
		trace.Printf("%v", err)
		unix.Close(fd)
		return
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

// resumeAccept ends a pause. Level-triggered epoll reports the connections
// still waiting in the backlog at the next wait.
func (s *server) resumeAccept() {
	s.acceptRetry = time.Time{}
	s.listen(true)
}

// listen turns the listener's EPOLLIN on or off. Off is an empty event
// mask, not EPOLL_CTL_DEL: epoll reports EPOLLHUP whatever the mask says,
// so a paused listener still wakes the loop when shutdown shuts it.
func (s *server) listen(on bool) {
	var events uint32
	if on {
		events = unix.EPOLLIN
	}
	ev := unix.EpollEvent{Events: events, Fd: int32(s.lfd)}
	if err := unix.EpollCtl(s.epfd, unix.EPOLL_CTL_MOD, s.lfd, &ev); err != nil {
		trace.Printf("epoll_ctl mod listener: %v", err)
	}
}

// closeConn removes c from epoll, then closes it.
//
// EPOLL_CTL_DEL comes before close(2) because epoll watches the open file,
// not the number: if the socket were still open elsewhere (a dup, a forked
// child), close alone would leave it in the interest list, reporting events
// for an fd number the table may already have given to a new client.
func (s *server) closeConn(c *conn, why string) {
	s.unwatch(c.fd)
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
// state; it only makes the listener report an event. shutdown(SHUT_RD) on a
// listening socket wakes every epoll_wait watching it (EPOLLHUP), and the
// loop's next accept fails with EINVAL: the loop learns about the stop from
// the kernel, without a lock. (Chapter 05 gives the loop a wakeup fd for
// this and for any other message from another thread.)
func (s *server) shutdown() {
	s.stopping.Store(true)
	if err := unix.Shutdown(s.lfd, unix.SHUT_RD); err != nil {
		trace.Printf("shutdown listener: %v", err)
	}
}

// beginGrace stops accepting and starts the grace period. Connections
// draining already have their linger cut to stopBy.
func (s *server) beginGrace() {
	if !s.stopBy.IsZero() {
		return
	}
	s.unwatch(s.lfd)
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

func (s *server) watch(fd int, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	return os.NewSyscallError("epoll_ctl", unix.EpollCtl(s.epfd, unix.EPOLL_CTL_ADD, fd, &ev))
}

func (s *server) unwatch(fd int) {
	if err := unix.EpollCtl(s.epfd, unix.EPOLL_CTL_DEL, fd, nil); err != nil {
		trace.Printf("epoll_ctl del fd=%d: %v", fd, err)
	}
}

// earlier is the sooner of two deadlines, where zero means none.
func earlier(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}
