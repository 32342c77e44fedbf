//go:build linux

package main

import (
	"errors"
	"fmt"
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
	// table. Only the loop goroutine touches it.
	conns map[int]*conn

	// pfds is poll's array, rebuilt before every wait; it is kept between
	// waits only so that rebuilding it allocates nothing.
	pfds []unix.PollFd

	// acceptPaused: accept failed for lack of fds, so the listener is left
	// out of the wait until a connection closes (see acceptOne).
	acceptPaused bool

	// refused counts the connections select could not watch because their
	// fd was past FD_SETSIZE; main reports it at exit.
	refused int

	stopping atomic.Bool // set by shutdown, from the signal goroutine
	deadline time.Time   // end of grace, once the loop has seen the stop
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

// serve is the event loop: wait for ready fds, handle each, repeat. It
// returns once shutdown has closed every connection.
func (s *server) serve() error {
	defer unix.Close(s.lfd)
	buf := make([]byte, readSize)
	var fired []ready
	for {
		var err error
		fired, err = s.wait(fired[:0])
		if err != nil {
			return err
		}
		for _, r := range fired {
			if r.fd == s.lfd {
				s.acceptOne()
				continue
			}
			// An fd closed earlier in this batch may still be in the list;
			// the table, not the list, says what is open.
			if c := s.conns[r.fd]; c != nil {
				s.handle(c, r.revents, buf)
			}
		}
		if s.drained() {
			return nil
		}
	}
}

// wait asks the kernel about every fd the loop owns and appends the ready
// ones to fired. This is what the chapter is about: select and poll keep
// nothing between calls, so each call copies the whole set into the
// kernel, the kernel checks every fd in it, and the loop scans the whole
// set again on return to find the few that fired. With 1,000 idle clients
// and one busy one, each of its requests costs 1,000 checks on both sides
// of the call. Chapter 03's epoll keeps the set in the kernel and returns
// only the ready fds.
func (s *server) wait(fired []ready) ([]ready, error) {
	if s.cfg.poller == "select" {
		return s.waitSelect(fired)
	}
	return s.waitPoll(fired)
}

// waitSelect builds a bitmap from the table, selects, then tests every bit
// up to the highest fd: its cost follows the highest fd number, however
// few fds are open below it.
func (s *server) waitSelect(fired []ready) ([]ready, error) {
	var rset unix.FdSet
	maxfd := -1
	add := func(fd int) {
		rset.Set(fd) // fd fits: acceptOne refuses every fd past FD_SETSIZE
		maxfd = max(maxfd, fd)
	}
	// A paused listener is left out: select cannot ask about a socket
	// without asking whether it is readable, and it is. The cost: while
	// paused, shutdown's SHUT_RD cannot wake the loop, which learns of the
	// signal only when a connection closes and puts the listener back, if
	// that happens before main's hard stop ends the process.
	if s.deadline.IsZero() && !s.acceptPaused {
		add(s.lfd)
	}
	for fd := range s.conns {
		add(fd)
	}
	// No write set: writes block (see handle). No except set: for TCP it
	// means urgent data only; errors and hangups make a socket readable.
	if _, err := selectWait(maxfd+1, &rset, msecTimeval(s.timeout())); err != nil {
		return fired, err
	}
	// select returns how many fds are ready, not which.
	for fd := 0; fd <= maxfd; fd++ {
		if rset.IsSet(fd) {
			trace.Printf("fd=%d readable", fd)
			fired = append(fired, ready{fd: fd, revents: unix.POLLIN})
		}
	}
	return fired, nil
}

// waitPoll builds poll's array from the table, polls, then scans the whole
// array: its cost follows the number of open fds, whatever their numbers,
// and no fd is too big for it.
func (s *server) waitPoll(fired []ready) ([]ready, error) {
	s.pfds = s.pfds[:0]
	if s.deadline.IsZero() {
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
	if _, err := pollWait(s.pfds, s.timeout()); err != nil {
		return fired, err
	}
	// poll, too, returns how many entries fired, not which.
	for _, p := range s.pfds {
		if p.Revents != 0 {
			trace.Printf("fd=%d %s", p.Fd, reventString(p.Revents))
			fired = append(fired, ready{fd: int(p.Fd), revents: p.Revents})
		}
	}
	return fired, nil
}

// timeout is the wait's, in poll's milliseconds: -1 (sleep until something
// happens) except while shutting down, when the loop must wake at the end
// of grace even if no client speaks. A loop that wakes on a timer while
// idle is the seed's mistake (a 10 ms timeout): it burns CPU with nothing
// to do.
func (s *server) timeout() int {
	if s.deadline.IsZero() {
		return -1
	}
	ms := time.Until(s.deadline).Milliseconds() + 1 // round up: never wake early
	return int(max(ms, 0))
}

// acceptOne accepts one connection. select and poll are level-triggered:
// if more wait in the backlog, the listener is still readable and the next
// wait says so again.
func (s *server) acceptOne() {
	fd, sa, err := accept(s.lfd)
	switch {
	case err == nil:
	case s.stopping.Load():
		s.beginDrain()
		return
	case errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE):
		// Out of fds. The listener stays readable, so the next wait would
		// return at once, and again, and again: a spin. Stop asking about
		// it until a connection closes and frees an fd.
		trace.Printf("accept: %v; pausing accepts until a connection closes", err)
		s.listen(false)
		return
	default:
		trace.Printf("accept: %v", err) // ECONNABORTED: the client gave up
		return
	}
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
	trace.Printf("accept fd=%d from %s", fd, sockaddrString(sa))
	s.conns[fd] = newConn(fd, s.cfg)
}

func accept(lfd int) (fd int, sa unix.Sockaddr, err error) {
	err = ignoringEINTR(func() error {
		fd, sa, err = unix.Accept4(lfd, unix.SOCK_CLOEXEC)
		return err
	})
	return fd, sa, os.NewSyscallError("accept4", err)
}

// closeConn removes c from the table, then closes it. The table is the
// whole interest list: the next wait no longer asks about the fd, and
// there is nothing in the kernel to clean up first.
func (s *server) closeConn(c *conn, why string) {
	delete(s.conns, c.fd)
	unix.Close(c.fd)
	trace.Printf("close fd=%d (%s)", c.fd, why)
	if s.acceptPaused && s.deadline.IsZero() {
		s.listen(true)
	}
}

// listen turns accepting on or off. Nothing tells the kernel: the next
// wait builds its set from this flag (waitSelect and waitPoll say how each
// poller leaves a paused listener out).
func (s *server) listen(on bool) {
	s.acceptPaused = !on
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

// beginDrain stops accepting and starts the grace period: the next waits
// are built without the listener.
func (s *server) beginDrain() {
	if s.deadline.IsZero() {
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
