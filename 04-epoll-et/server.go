//go:build linux

package main

import (
	"errors"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The contract's shutdown: after SIGINT or SIGTERM, open connections get
// grace to be read and answered; hardStop is when main gives up on a loop
// stuck waiting to write, to exit by 2 s.
const (
	grace    = 1 * time.Second
	hardStop = 1800 * time.Millisecond
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
	// state. Only the loop goroutine touches it.
	conns map[int]*conn

	// backlogMayHold: accept failed for lack of fds, so connections may
	// wait in the backlog with no edge left to announce them; the next
	// close accepts again (see acceptAll).
	backlogMayHold bool

	// revisit holds connections whose read budget ran out before EAGAIN:
	// bytes wait in their sockets that no new edge will announce. The loop
	// serves them after each round of events, and does not sleep in
	// epoll_wait while the list is not empty.
	revisit []*conn

	stopping atomic.Bool // set by shutdown, from the signal goroutine
	deadline time.Time   // end of grace, once the loop has seen the stop
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

// serve is the event loop: wait for edges, handle each, give the
// connections owed a read their next turn, repeat. It returns once shutdown
// has closed every connection.
func (s *server) serve() error {
	defer unix.Close(s.lfd)
	defer unix.Close(s.epfd)
	events := make([]unix.EpollEvent, maxEvents)
	buf := make([]byte, readSize)
	for {
		n, err := epollWait(s.epfd, events, s.timeout())
		if err != nil {
			return err
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			trace.Printf("fd=%d %s", fd, eventString(ev.Events))
			if fd == s.lfd {
				s.acceptAll()
				continue
			}
			// An fd closed earlier in this batch may still have an event
			// here; the table, not the event, says what is open.
			if c := s.conns[fd]; c != nil {
				s.handle(c, ev.Events, buf)
			}
		}
		s.serveRevisits(buf)
		if s.drained() {
			return nil
		}
	}
}

// timeout is epoll_wait's: -1 (sleep until something happens) except while
// shutting down, when the loop must wake at the end of grace even if no
// client speaks, and 0 while the revisit list owes reads: no edge will come
// for those bytes, so sleeping could mean sleeping forever. A loop that
// wakes on a timer while idle is the seed's mistake (epoll_wait with
// 10 ms): it burns CPU with nothing to do.
func (s *server) timeout() int {
	if len(s.revisit) > 0 {
		return 0
	}
	if s.deadline.IsZero() {
		return -1
	}
	ms := time.Until(s.deadline).Milliseconds() + 1 // round up: never wake early
	return int(max(ms, 0))
}

// acceptAll accepts until EAGAIN. One accept per event would be a bug
// here: the edge said "connections arrived", not how many, and those left
// in the backlog get no new edge of their own; they wait, connected and
// unanswered, until yet another client happens to connect.
func (s *server) acceptAll() {
	for {
		fd, sa, err := accept(s.lfd)
		switch {
		case err == nil:
		case s.stopping.Load():
			s.beginDrain()
			return
		case errors.Is(err, unix.EAGAIN):
			s.backlogMayHold = false
			return // the backlog is empty: the next connection is an edge
		case errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE):
			// Out of fds, with connections still in the backlog. 03 had to
			// switch the listener's EPOLLIN off here, because a level-
			// triggered listener stays ready and epoll_wait would return
			// at once, again and again: a spin. This edge is spent and no
			// other comes for connections already queued, so there is no
			// spin to stop, but nothing will remind the loop of them
			// either: remember, and accept again when a close frees an fd.
			trace.Printf("accept: %v; accepting again when a connection closes", err)
			s.backlogMayHold = true
			return
		case errors.Is(err, unix.ECONNABORTED):
			trace.Printf("accept: %v", err) // the client gave up while queued
			continue
		default:
			// ENOBUFS, ENOMEM: short of memory, not fds; the same remedy.
			trace.Printf("accept: %v", err)
			s.backlogMayHold = true
			return
		}
		trace.Printf("accept fd=%d from %s", fd, sockaddrString(sa))
		// EPOLLRDHUP reports the client's FIN as an event of its own, so a
		// half-close is seen even when it arrives with no data. Bytes that
		// came before this call are not lost: EPOLL_CTL_ADD checks the
		// socket once, and if it is readable already that is the first edge.
		if err := s.watch(fd, unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLET); err != nil {
			trace.Printf("%v", err)
			unix.Close(fd)
			continue
		}
		s.conns[fd] = newConn(fd, s.cfg)
	}
}

func accept(lfd int) (fd int, sa unix.Sockaddr, err error) {
	err = ignoringEINTR(func() error {
		// SOCK_NONBLOCK: under edge-triggered epoll every read goes on
		// until it fails with EAGAIN; on a blocking socket that last read
		// would sleep, and the whole loop with it.
		fd, sa, err = unix.Accept4(lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		return err
	})
	return fd, sa, os.NewSyscallError("accept4", err)
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
	trace.Printf("close fd=%d (%s)", c.fd, why)
	if s.backlogMayHold && s.deadline.IsZero() {
		s.acceptAll()
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

// beginDrain stops accepting and starts the grace period.
func (s *server) beginDrain() {
	if s.deadline.IsZero() {
		s.unwatch(s.lfd)
		s.deadline = time.Now().Add(grace)
	}
}

// drained reports whether the loop may return: shutting down, and either
// every client has gone or grace is over, in which case the remaining
// connections get what they are owed and are closed.
func (s *server) drained() bool {
	if s.deadline.IsZero() {
		return false
	}
	if len(s.conns) > 0 && time.Now().Before(s.deadline) {
		return false
	}
	for _, c := range s.conns {
		s.finish(c, "grace over")
	}
	return true
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
