//go:build linux

package main

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The contract's shutdown: after SIGINT or SIGTERM, open connections get
// grace to be read and answered, then drain (see drain). By drainStop
// every connection is closed, lingering or not, so that serve returns and
// the process exits 0 inside the contract's 2 s. hardStop is main's last
// resort, for a thread stuck writing to a client that does not read.
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

// readSize is one read's worth. Every connection owns a buffer of this
// size while it is served, so 1,000 clients cost 16 MiB in buffers alone;
// event-loop chapters share one buffer per loop instead.
const readSize = 16 << 10

type server struct {
	cfg  config
	lfd  int
	addr string

	wg sync.WaitGroup // one per connection served on a thread of its own

	// conns is every connection accepted and not yet closed, for endGrace
	// to reach them from its timer's goroutine; live is its size, for
	// main's hard stop.
	mu    sync.Mutex
	conns map[int]*conn
	live  atomic.Int64

	// acceptBackoff is the last pause after accept failed (see
	// pauseAccept); zero after an accept that worked. Only serve's thread
	// touches it.
	acceptBackoff time.Duration

	stopping  atomic.Bool // set by shutdown, from the signal goroutine
	graceOver atomic.Bool // set by endGrace: every connection drains
	stopBy    time.Time   // guarded by mu; once stopping, every connection is closed by then
}

func newServer(cfg config) (*server, error) {
	lfd, addr, err := listenTCP(cfg.addr)
	if err != nil {
		return nil, err
	}
	return &server{cfg: cfg, lfd: lfd, addr: addr, conns: map[int]*conn{}}, nil
}

// serve accepts clients until shutdown and returns once every connection
// is closed. In the serial model each client is served to the end before
// the next accept: a second client waits in the listen backlog, connected
// but unanswered, for as long as the first stays.
func (s *server) serve() error {
	defer unix.Close(s.lfd)
	// The serial model serves on this very thread, which endGrace may have
	// to interrupt: the goroutine must not move to another.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for !s.done() {
		s.acceptOne()
	}
	s.wg.Wait()
	return nil
}

// acceptOne accepts one connection and serves it: to the end, in the
// serial model; on a thread of its own, in the thread model.
func (s *server) acceptOne() {
	fd, sa, err := accept(s.lfd)
	switch {
	case err == nil:
		s.acceptBackoff = 0
	case s.stopping.Load():
		return // shutdown's SHUT_RD: EINVAL
	case connAborted(err):
		if tracing {
			trace.Printf("accept: %v", err) // the client gave up while queued
		}
		return
	default:
		// Short of fds (EMFILE, ENFILE) or memory (ENOBUFS, ENOMEM), or
		// refused (EPERM): the connection stays in the backlog, and the
		// next accept would fail again at once, and again: a spin.
		s.pauseAccept(err)
		return
	}
	// Registered here, before its thread starts, so that endGrace reaches
	// it however late that thread runs.
	c := s.register(fd, sa)
	if s.cfg.model == "serial" {
		s.serveConn(c)
		return
	}
	s.wg.Go(func() {
		// One OS thread per client, as a C server would pthread_create:
		// the goroutine never leaves this thread, and the thread ends
		// with it.
		runtime.LockOSThread()
		s.serveConn(c)
	})
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

// register makes a newly accepted fd a connection of the server's. One
// registered after grace is over is drained by its first turn (see
// expire): endGrace, which ran before, did not see it.
func (s *server) register(fd int, sa unix.Sockaddr) *conn {
	if tracing {
		trace.Printf("accept fd=%d from %s", fd, sockaddrString(sa))
	}
	c := newConn(fd, s.cfg)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns[fd] = c
	s.live.Add(1)
	return c
}

// pauseAccept stops accepting after accept failed for want of a resource:
// it sleeps for the backoff. A close alone would not end a shortage of
// fds held by another process, nor make room in memory.
func (s *server) pauseAccept(err error) {
	s.acceptBackoff = min(max(2*s.acceptBackoff, minAcceptBackoff), maxAcceptBackoff)
	trace.Printf("accept: %v; accepting again in %v", err, s.acceptBackoff)
	time.Sleep(s.acceptBackoff)
}

// closeConn closes c. It leaves the table first: once the number is
// closed the kernel may hand it to a new connection, and endGrace must
// never reach that one through c.
func (s *server) closeConn(c *conn, why string) {
	s.mu.Lock()
	delete(s.conns, c.fd)
	s.mu.Unlock()
	unix.Close(c.fd)
	c.state = closed
	s.live.Add(-1)
	if tracing {
		trace.Printf("close fd=%d (%s)", c.fd, why)
	}
}

// shutdown stops accepting at once and ends grace for open connections
// when its time comes.
//
// Closing the listening fd would not do: on Linux, close() only drops the
// descriptor table's reference, and the thread blocked in accept() holds
// its own reference to the socket, so it sleeps on. shutdown(SHUT_RD) acts
// on the socket itself and wakes it with EINVAL.
func (s *server) shutdown() {
	s.mu.Lock()
	s.stopBy = time.Now().Add(drainStop)
	s.mu.Unlock()
	s.stopping.Store(true)
	if err := unix.Shutdown(s.lfd, unix.SHUT_RD); err != nil {
		trace.Printf("shutdown listener: %v", err)
	}
	time.AfterFunc(grace, s.endGrace)
}

// endGrace makes every connection drain. Their threads are blocked in
// read, most likely, until the client sends; so each socket gets a read
// timeout (SO_RCVTIMEO) that has already run out, and each thread in read
// a signal. The signal interrupts the read, and the kernel restarts it
// (SIGURG, the runtime's own preemption signal, is installed with
// SA_RESTART), but as a new read: one that sees the timeout, fails with
// EAGAIN, and lets its thread find grace over. A thread blocked in write
// is left alone: it cannot drain before its write is done, and if the
// client never reads, that is what main's hard stop is for.
//
// shutdown(SHUT_RD) would wake the reads too, but it would ruin the drain
// that follows: once a socket is shut both ways, the kernel answers any
// byte the client still sends with a RST, and a RST throws away every
// reply still on its way.
func (s *server) endGrace() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.graceOver.Store(true)
	for _, c := range s.conns {
		if err := setReadTimeout(c.fd, 0); err != nil {
			trace.Printf("fd=%d: %v", c.fd, err)
		}
		if c.tid != 0 && c.reading.Load() {
			if err := interrupt(c.tid); err != nil {
				trace.Printf("fd=%d: %v", c.fd, err)
			}
		}
	}
}

// done reports whether serve may stop accepting: shutdown has begun.
func (s *server) done() bool {
	return s.stopping.Load()
}

// stopDeadline is when shutdown wants every connection closed, or zero
// before shutdown.
func (s *server) stopDeadline() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopBy
}

// earlier is the sooner of two deadlines, where zero means none.
func earlier(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}
