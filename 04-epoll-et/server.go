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
// than that are not lost, even edge-triggered: they stay on epoll's ready
// list until a later call returns them. 128 amortises the syscall without a
// large array per loop.
const maxEvents = 128

// readSize is one read's worth. The loop reads into one buffer shared by
// every connection (only the protocol's unfinished line stays per
// connection), where 01's thread model needed a buffer per client.
const readSize = 64 << 10

// readBudget is how many reads one connection gets per turn of the loop.
// Edge-triggered epoll wants every read drained to EAGAIN, but a client
// that sends as fast as the loop reads never reaches EAGAIN: drained to
// the end, it would keep the loop (and every other client) for as long as
// it likes. After readBudget reads (up to 1 MiB) the connection waits on
// the revisit list until the other ready fds have had their turn. Netty's
// epoll transport makes the same trade with the same figure
// (maxMessagesPerRead, 16). Measured here (BenchmarkNeighbourOfBulk, in the
// README), 16 costs a streaming client nothing against no budget at all,
// while its neighbour's p99 falls by an order of magnitude; smaller budgets
// help the neighbour a little more and start to cost the streamer.
const readBudget = 16

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

	// revisit holds connections whose read budget ran out before EAGAIN:
	// bytes wait in their sockets that no new edge will announce. The loop
	// serves them after each round of events, and does not sleep in
	// epoll_wait while the list is not empty.
	revisit []*conn

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
	// means nothing for a listening socket. Registered once, edge-triggered,
	// and never modified: no EPOLLONESHOT to re-arm, no pause to undo.
	if err := s.watch(lfd, unix.EPOLLIN|unix.EPOLLET); err != nil {
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
// turn is one turn of the loop: wait for edges, handle each, give the
// connections owed a read their next turn, then do what has fallen due.
func (s *server) turn(events []unix.EpollEvent, buf []byte) error {
	n, err := epollWait(s.epfd, events, s.timeout())
	if err != nil {
		return err
	}
	for _, ev := range events[:n] {
		s.dispatch(ev, buf)
	}
	s.serveRevisits(buf)
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
		s.acceptAll()
		return
	}
	// An fd closed earlier in this batch may still have an event here;
	// the table, not the event, says what is open.
	if c := s.conns[fd]; c != nil {
		s.handle(c, ev.Events, buf)
	}
}

// END LAB

// timeout is epoll_wait's, in milliseconds: 0 while the revisit list owes
// reads (no edge will come for those bytes, so sleeping could mean
// sleeping forever); else until the first thing expire has to do (end
// grace, end a linger, retry a paused accept), or -1, sleep until
// something happens, when there is none. A loop that wakes on a timer
// while idle is the seed's mistake (epoll_wait with 10 ms): it burns CPU
// with nothing to do. A paused listener is not idle: no event would say
// when accepting can resume.
func (s *server) timeout() int {
	if len(s.revisit) > 0 {
		return 0
	}
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

// LAB(accept): accept until EAGAIN; when accept fails for want of fds or memory, pause accepting until a retry or a close
// acceptAll accepts until EAGAIN. One accept per event would be a bug
// here: the edge said "connections arrived", not how many, and those left
// in the backlog get no new edge of their own; they wait, connected and
// unanswered, until yet another client happens to connect.
func (s *server) acceptAll() {
	for {
		fd, sa, err := accept(s.lfd)
		switch {
		case err == nil:
			s.acceptBackoff = 0
		case s.stopping.Load():
			s.beginGrace()
			return
		case err == unix.EAGAIN:
			return // the backlog is empty: the next connection is an edge
		case connAborted(err):
			if tracing {
				trace.Printf("accept: %v", err) // the client gave up while queued
			}
			continue
		default:
			// Short of fds (EMFILE, ENFILE) or memory (ENOBUFS, ENOMEM), or
			// refused (EPERM), with connections still in the backlog. 03
			// had to stop watching its level-triggered listener here, or
			// epoll_wait would return at once, again and again. This edge
			// is spent and no other comes for connections already queued:
			// no spin, but nothing to remind the loop of them either.
			s.pauseAccept(err)
			return
		}
		s.register(fd, sa)
	}
}

// END LAB

// accept is accept4(2) with EINTR retried. The error is the bare errno,
// for the caller to sort out: most accept errors are no news to report.
func accept(lfd int) (fd int, sa unix.Sockaddr, err error) {
	err = ignoringEINTR(func() error {
		// SOCK_NONBLOCK: under edge-triggered epoll every read goes on
		// until it fails with EAGAIN; on a blocking socket that last read
		// would sleep, and the whole loop with it.
		fd, sa, err = accept4(lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
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
	// half-close is seen even when it arrives with no data. Bytes that
	// came before this call are not lost: EPOLL_CTL_ADD checks the socket
	// once, and if it is readable already that is the first edge.
	if err := s.watch(fd, unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLET); err != nil {
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
}

// resumeAccept ends a pause. No edge will announce the connections that
// waited in the backlog meanwhile: accept them now.
func (s *server) resumeAccept() {
	s.acceptRetry = time.Time{}
	s.acceptAll()
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
// listening socket wakes every epoll_wait watching it (EPOLLHUP: a change of
// state, so an edge too), and the loop's next accept fails with EINVAL: the
// loop learns about the stop from the kernel, without a lock. (Chapter 05
// gives the loop a wakeup fd for this and for any other message from
// another thread.)
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
