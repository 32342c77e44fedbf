//go:build linux

package main

import (
	"os"
	"sync"
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

// A failed accept (see pauseAccept) is retried after minAcceptBackoff,
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
	cfg   config
	lfd   int
	addr  string
	loops []*loop

	// exited receives what each loop's run returned (see waitLoops).
	exited chan error

	// live is how many connections are open, for main's hard stop, which
	// cannot ask the loops; the loops keep it.
	live atomic.Int64

	// acceptBackoff is the acceptor's: how long it paused after the last
	// failed accept, zero while accepting works (see pauseAccept). next,
	// the acceptor's too, is the loop that gets the next connection.
	acceptBackoff time.Duration
	next          int

	stopping atomic.Bool   // set by shutdown, from the signal goroutine
	stopped  chan struct{} // closed with it: ends a pause of the acceptor's
	accepted chan struct{} // closed when the acceptor has handed over its last connection
	stopOnce sync.Once     // stopAccepting's
	shutOnce sync.Once     // shutdown's
}

func newServer(cfg config) (*server, error) {
	lfd, addr, err := listenTCP(cfg.addr)
	if err != nil {
		return nil, err
	}
	s := &server{cfg: cfg, lfd: lfd, addr: addr, stopped: make(chan struct{}), accepted: make(chan struct{})}
	if err := s.startLoops(); err != nil {
		unix.Close(lfd)
		return nil, err
	}
	return s, nil
}

// startLoops makes the loops and starts them: -loops of them in -model
// loops; in -model queue one, and -loops workers to serve its requests.
func (s *server) startLoops() error {
	n := s.cfg.loops
	if s.cfg.model == "queue" {
		n = 1
	}
	for i := range n {
		l, err := newLoop(i, s.cfg, &s.live)
		if err != nil {
			for _, l := range s.loops {
				l.close()
			}
			return err
		}
		s.loops = append(s.loops, l)
	}
	if s.cfg.model == "queue" {
		s.loops[0].startWorkers(s.cfg.loops)
	}
	s.exited = make(chan error, n)
	for _, l := range s.loops {
		l.start(s.exited)
	}
	return nil
}

// serve runs the acceptor on a goroutine of its own and waits for the
// loops. It returns once shutdown has closed every connection of every
// loop.
func (s *server) serve() error {
	defer unix.Close(s.lfd)
	defer s.closeLoops()
	go s.acceptLoop()
	err := s.waitLoops()
	// After shutdown the acceptor is gone already. After an error, end it
	// here: closing the listener under a blocked accept4 would not wake
	// it, and a loop it feeds has stopped.
	s.stopAccepting()
	return err
}

// waitLoops waits until every loop has returned, or one has failed.
func (s *server) waitLoops() error {
	for range s.loops {
		if err := <-s.exited; err != nil {
			return err
		}
	}
	return nil
}

// closeLoops closes every loop's fds once no goroutine uses them.
func (s *server) closeLoops() {
	for _, l := range s.loops {
		l.stopWorkers()
		l.close()
	}
}

// turn is one turn of the loop: wait for edges, handle each, give the
// connections owed a read their next turn, then do what has fallen due.
func (l *loop) turn(events []unix.EpollEvent, buf []byte) error {
	wait := region("wait")
	n, err := epollWait(l.epfd, events, l.timeout())
	wait.end()
	if err != nil {
		return err
	}
	for _, ev := range events[:n] {
		l.dispatch(ev, buf)
	}
	l.serveRevisits(buf)
	l.expire(time.Now())
	return nil
}

// dispatch hands one event to the task queue or to its connection, or in
// -model queue to a worker.
func (l *loop) dispatch(ev unix.EpollEvent, buf []byte) {
	fd := int(ev.Fd)
	if tracing {
		trace.Printf("fd=%d %s", fd, eventString(ev.Events))
	}
	if fd == l.waker.fd() {
		tasks := region("tasks")
		l.runTasks()
		tasks.end()
		return
	}
	// An fd closed earlier in this batch may still have an event here;
	// the table, not the event, says what is open.
	c := l.conns[fd]
	if c == nil {
		return
	}
	l.events++
	if l.requests != nil {
		l.request(c, ev.Events) // -model queue: a worker serves it
		return
	}
	l.handle(c, ev.Events, buf)
}

// timeout is epoll_wait's, in milliseconds: 0 while the revisit list owes
// reads (no edge will come for those bytes, so sleeping could mean
// sleeping forever); else until the first thing expire has to do (end
// grace, end a linger), or -1, sleep until something happens, when there
// is none. A loop that wakes on a timer while idle is the seed's mistake
// (epoll_wait with 10 ms): it burns CPU with nothing to do. A task is
// something happening: its wake ends the sleep.
func (l *loop) timeout() int {
	if len(l.revisit) > 0 {
		return 0
	}
	next := l.deadline
	if len(l.lingering) > 0 {
		next = earlier(next, l.lingering[0].deadline)
	}
	if next.IsZero() {
		return -1
	}
	ms := time.Until(next).Milliseconds() + 1 // round up: never wake early
	return int(max(ms, 0))
}

// expire does what has fallen due by now: close the connections whose
// linger is over, end grace.
func (l *loop) expire(now time.Time) {
	for len(l.lingering) > 0 {
		c := l.lingering[0]
		if c.state == draining && now.Before(c.deadline) {
			break
		}
		l.lingering[0] = nil
		l.lingering = l.lingering[1:]
		if c.state == draining && !l.held(c, wantClose) {
			l.closeConn(c, "linger over")
		}
	}
	if !l.deadline.IsZero() && !now.Before(l.deadline) {
		l.endGrace()
	}
}

// acceptLoop is the acceptor goroutine, the seed's accept thread done
// right. The seed's waits on a condition variable that the epoll loop
// signals, and accepts once per signal: a signal sent while it is busy
// is lost, and a connection with it. This one needs no signal: it blocks
// in accept4 itself, so a connection waiting in the backlog is always
// its next to take. Each goes to the loop as a task. It returns once
// shutdown has shut the listener.
func (s *server) acceptLoop() {
	defer close(s.accepted)
	for {
		accepting := region("accept")
		fd, sa, err := accept(s.lfd)
		accepting.end()
		switch {
		case err == nil:
			s.acceptBackoff = 0
		case s.stopping.Load():
			return // shut: accept4 fails with EINVAL from now on
		case connAborted(err):
			if tracing {
				trace.Printf("accept: %v", err) // the client gave up while queued
			}
			continue
		default:
			// Short of fds (EMFILE, ENFILE) or memory (ENOBUFS, ENOMEM), or
			// refused (EPERM), with connections still in the backlog. The
			// loop, which 03 and 04 had to keep from spinning here, is
			// not involved: the acceptor just waits before trying again.
			if !s.pauseAccept(err) {
				return
			}
			continue
		}
		// Round robin: the loops get connections in turn, and each keeps
		// its own for good.
		l := s.loops[s.next]
		s.next = (s.next + 1) % len(s.loops)
		if tracing {
			trace.Printf("accept fd=%d from %s: queued for loop %d", fd, sockaddrString(sa), l.id)
		}
		l.queueInLoop(handoff("register", fd, func() { l.register(fd) }))
	}
}

// accept is accept4(2) with EINTR retried. The error is the bare errno,
// for the caller to sort out: most accept errors are no news to report.
func accept(lfd int) (fd int, sa unix.Sockaddr, err error) {
	err = ignoringEINTR(func() error {
		// SOCK_NONBLOCK: under edge-triggered epoll every read goes on
		// until it fails with EAGAIN; on a blocking socket that last read
		// would sleep, and the whole loop with it. (The listener's own
		// O_NONBLOCK, or here its absence, is not inherited either way.)
		fd, sa, err = accept4(lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		return err
	})
	return fd, sa, err
}

// register makes a newly accepted fd a connection of the loop's. It runs
// on the loop, as a task from the acceptor.
func (l *loop) register(fd int) {
	if tracing {
		trace.Printf("loop %d: register fd=%d", l.id, fd)
	}
	// EPOLLRDHUP reports the client's FIN as an event of its own, so a
	// half-close is seen even when it arrives with no data. Bytes that
	// came before this call (while the fd waited in the task queue, say)
	// are not lost: EPOLL_CTL_ADD checks the socket once, and if it is
	// readable already that is the first edge.
	events := uint32(unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET)
	if l.requests != nil {
		events = armRead // -model queue: one event, then a worker re-arms
	}
	if err := l.watch(fd, events); err != nil {
		trace.Printf("%v", err)
		unix.Close(fd)
		return
	}
	l.conns[fd] = newConn(fd, l.cfg)
	l.live.Add(1)
	l.served++
}

// pauseAccept waits after accept failed for want of a resource, and
// reports whether to try again: false if shutdown came first. The wait
// doubles while accept keeps failing (see minAcceptBackoff). A timer, not
// a connection's close, ends it: the fds may be held by another process,
// or the server may have no connection of its own to close. The acceptor
// has nothing else to do, so sleeping is right here, where the loop could
// not sleep.
func (s *server) pauseAccept(err error) bool {
	s.acceptBackoff = min(max(2*s.acceptBackoff, minAcceptBackoff), maxAcceptBackoff)
	trace.Printf("accept: %v; accepting again in %v", err, s.acceptBackoff)
	pause := time.NewTimer(s.acceptBackoff)
	defer pause.Stop()
	select {
	case <-pause.C:
		return true
	case <-s.stopped:
		return false
	}
}

// closeConn removes c from epoll, then closes it.
//
// EPOLL_CTL_DEL comes before close(2) because epoll watches the open file,
// not the number: if the socket were still open elsewhere (a dup, a forked
// child), close alone would leave it in the interest list, reporting events
// for an fd number the table may already have given to a new client.
func (l *loop) closeConn(c *conn, why string) {
	l.unwatch(c.fd)
	delete(l.conns, c.fd)
	unix.Close(c.fd)
	c.state = closed
	l.live.Add(-1)
	if tracing {
		trace.Printf("loop %d: close fd=%d (%s); %d conns, %d events so far", l.id, c.fd, why, l.served, l.events)
	}
}

// shutdown runs on the signal goroutine, and touches none of the loops'
// state: it ends the acceptor, then hands each loop a task, beginGrace.
// 03 and 04 had the kernel carry the news instead (shutdown on the
// listener made it report EPOLLHUP), a trick that works for one message,
// "stop", from one place; a task carries any message from any goroutine.
// The task goes once the acceptor is gone, so it comes after the last
// connection the acceptor queued, and no loop can finish with one still
// waiting in its queue.
func (s *server) shutdown() {
	s.shutOnce.Do(func() {
		s.stopAccepting()
		for _, l := range s.loops {
			l.runInLoop(handoff("begin grace", -1, l.beginGrace))
		}
	})
}

// stopAccepting ends the acceptor and waits until it has returned.
// shutdown(SHUT_RD) on a listening socket wakes an accept4 blocked on it,
// which fails with EINVAL, as will every accept4 after; closing the fd
// instead would wake nothing.
func (s *server) stopAccepting() {
	s.stopOnce.Do(func() {
		s.stopping.Store(true)
		close(s.stopped)
		if err := unix.Shutdown(s.lfd, unix.SHUT_RD); err != nil {
			trace.Printf("shutdown listener: %v", err)
		}
	})
	<-s.accepted
}

// beginGrace starts the grace period, once no connection can come any
// more. Connections draining already have their linger cut to stopBy.
func (l *loop) beginGrace() {
	if !l.stopBy.IsZero() {
		return
	}
	now := time.Now()
	l.deadline = now.Add(grace)
	l.stopBy = now.Add(drainStop)
	for _, c := range l.lingering {
		c.deadline = earlier(c.deadline, l.stopBy)
	}
}

// endGrace drains every connection still open. A line its client has not
// finished is dropped: only the client's FIN makes it a line.
func (l *loop) endGrace() {
	l.deadline = time.Time{}
	for _, c := range l.conns {
		if !l.held(c, wantDrain) {
			l.drain(c, "grace over")
		}
	}
}

// done reports whether the loop may return: it has seen the stop, and
// every connection is closed, which stopBy guarantees.
func (l *loop) done() bool {
	return !l.stopBy.IsZero() && len(l.conns) == 0
}

func (l *loop) watch(fd int, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	return os.NewSyscallError("epoll_ctl", unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev))
}

func (l *loop) unwatch(fd int) {
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil); err != nil {
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
