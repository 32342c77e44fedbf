//go:build linux

package main

import (
	"errors"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The contract's shutdown: after SIGINT or SIGTERM, open connections get
// grace to be read and answered; hardStop is the last moment the server
// still waits for a write that a client is not reading, to exit by 2 s.
const (
	grace    = 1 * time.Second
	hardStop = 1800 * time.Millisecond
)

// Accept failures for lack of fds are retried after a pause that doubles up
// to a second, as net/http does: retrying at once would spin the CPU until
// a connection closes.
const (
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = 1 * time.Second
)

type server struct {
	cfg  config
	lfd  int
	addr string

	wg sync.WaitGroup // one per connection being served (thread model)

	mu       sync.Mutex
	conns    map[int]bool // fds being served, for shutdown to reach them
	stopping bool
}

func newServer(cfg config) (*server, error) {
	lfd, addr, err := listenTCP(cfg.addr)
	if err != nil {
		return nil, err
	}
	return &server{cfg: cfg, lfd: lfd, addr: addr, conns: map[int]bool{}}, nil
}

// serve accepts clients until shutdown and returns once every connection
// is closed. In the serial model each client is served to the end before
// the next accept: a second client waits in the listen backlog, connected
// but unanswered, for as long as the first stays.
func (s *server) serve() error {
	defer unix.Close(s.lfd)
	backoff := time.Duration(0)
	for {
		fd, sa, err := accept(s.lfd)
		switch {
		case err == nil:
			backoff = 0
		case s.isStopping():
			s.wg.Wait()
			return nil
		case errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE):
			backoff = min(max(2*backoff, minAcceptBackoff), maxAcceptBackoff)
			trace.Printf("accept: %v; retrying in %v", err, backoff)
			time.Sleep(backoff)
			continue
		case errors.Is(err, unix.ECONNABORTED):
			continue // the client gave up while queued: nothing to serve
		default:
			return err
		}
		trace.Printf("accept fd=%d from %s", fd, sockaddrString(sa))
		if s.cfg.model == "serial" {
			s.handle(fd)
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			// One OS thread per client, as a C server would pthread_create:
			// the goroutine never leaves this thread, and the thread ends
			// with it.
			runtime.LockOSThread()
			s.handle(fd)
		}()
	}
}

func accept(lfd int) (fd int, sa unix.Sockaddr, err error) {
	err = ignoringEINTR(func() error {
		fd, sa, err = unix.Accept4(lfd, unix.SOCK_CLOEXEC)
		return err
	})
	return fd, sa, os.NewSyscallError("accept4", err)
}

// track records fd as served, unless shutdown has already ended the grace
// period for everyone.
func (s *server) track(fd int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns[fd] = true
}

// untrack must run before close(fd): once the number is closed the kernel
// may hand it to a new connection, and shutdown must never reach that one.
func (s *server) untrack(fd int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, fd)
}

func (s *server) isStopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopping
}

// shutdown stops accepting at once and ends open connections after grace.
//
// Closing the listening fd would not do: on Linux, close() only drops the
// descriptor table's reference, and the thread blocked in accept() holds
// its own reference to the socket, so it sleeps on. shutdown(SHUT_RD) acts
// on the socket itself and wakes it with EINVAL.
func (s *server) shutdown() {
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	if err := unix.Shutdown(s.lfd, unix.SHUT_RD); err != nil {
		trace.Printf("shutdown listener: %v", err)
	}
	// A read blocked on a client that says nothing returns 0 once its
	// socket is shut for reading: the handler takes that as the end of
	// input, sends what it owes and closes. A write blocked on a client
	// that does not read fails once the socket is shut for writing too.
	time.AfterFunc(grace, func() { s.shutdownConns(unix.SHUT_RD) })
	time.AfterFunc(hardStop, func() { s.shutdownConns(unix.SHUT_RDWR) })
}

func (s *server) shutdownConns(how int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for fd := range s.conns {
		unix.Shutdown(fd, how)
	}
}
