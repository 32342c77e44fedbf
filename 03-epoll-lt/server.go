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
// stuck in a blocking write, to exit by 2 s.
const (
	grace    = 1 * time.Second
	hardStop = 1800 * time.Millisecond
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
	// state. Only the loop goroutine touches it.
	conns map[int]*conn

	// acceptPaused: accept failed for lack of fds, so the listener's
	// EPOLLIN is off until a connection closes (see acceptOne).
	acceptPaused bool

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
	// means nothing for a listening socket.
	if err := s.watch(lfd, unix.EPOLLIN); err != nil {
		unix.Close(epfd)
		unix.Close(lfd)
		return nil, err
	}
	return s, nil
}

// serve is the event loop: wait for ready fds, handle each, repeat. It
// returns once shutdown has closed every connection.
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
				s.acceptOne()
				continue
			}
			// An fd closed earlier in this batch may still have an event
			// here; the table, not the event, says what is open.
			if c := s.conns[fd]; c != nil {
				s.handle(c, ev.Events, buf)
			}
		}
		if s.drained() {
			return nil
		}
	}
}

// timeout is epoll_wait's: -1 (sleep until something happens) except while
// shutting down, when the loop must wake at the end of grace even if no
// client speaks. A loop that wakes on a timer while idle is the seed's
// mistake (epoll_wait with 10 ms): it burns CPU with nothing to do.
func (s *server) timeout() int {
	if s.deadline.IsZero() {
		return -1
	}
	ms := time.Until(s.deadline).Milliseconds() + 1 // round up: never wake early
	return int(max(ms, 0))
}

// acceptOne accepts one connection. Under level-triggered epoll that is
// enough: if more wait in the backlog, the listener is still readable and
// the next epoll_wait says so again.
func (s *server) acceptOne() {
	fd, sa, err := accept(s.lfd)
	switch {
	case err == nil:
	case s.stopping.Load():
		s.beginDrain()
		return
	case errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE):
		// Out of fds. Level-triggered epoll would report the listener as
		// readable again at once, and again, and again: a spin. Stop
		// watching it until a connection closes and frees an fd.
		trace.Printf("accept: %v; pausing accepts until a connection closes", err)
		s.listen(false)
		return
	default:
		trace.Printf("accept: %v", err) // ECONNABORTED: the client gave up
		return
	}
	trace.Printf("accept fd=%d from %s", fd, sockaddrString(sa))
	// EPOLLRDHUP reports the client's FIN as an event of its own, so a
	// half-close is seen even when it arrives with no data.
	if err := s.watch(fd, unix.EPOLLIN|unix.EPOLLRDHUP); err != nil {
		trace.Printf("%v", err)
		unix.Close(fd)
		return
	}
	s.conns[fd] = newConn(fd, s.cfg)
}

func accept(lfd int) (fd int, sa unix.Sockaddr, err error) {
	err = ignoringEINTR(func() error {
		fd, sa, err = unix.Accept4(lfd, unix.SOCK_CLOEXEC)
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
	if s.acceptPaused && s.deadline.IsZero() {
		s.listen(true)
	}
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
	s.acceptPaused = !on
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
