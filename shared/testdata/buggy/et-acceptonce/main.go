// Command et-acceptonce has THE bug of the seed's accept thread, carried
// into edge-triggered epoll: it accepts once per listener edge. An edge says
// "connections arrived", not how many; a burst of connects makes one edge,
// one is accepted, and the rest wait in the backlog, connected and never
// answered, until some later client's connect makes another edge.
//
// The grader must fail it in `many` (kind stall) with a hint that says to
// accept until EAGAIN. Everything else is a correct single-loop ET server
// (raw epoll through golang.org/x/sys/unix, like the chapters): it reads
// until EAGAIN, waits in poll(2) when a write would block, and shuts down
// with a grace period. ../et-nodrain/main.go is the same server with the
// other classic ET bug instead, so `diff` between them shows both.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/netip"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"reactorlab/shared/protocol"
)

// grace is how long open connections are still served after a signal;
// hardStop ends a loop stuck writing to a client that does not read, so
// the process is gone within the contract's 2 s.
const (
	grace    = time.Second
	hardStop = 1800 * time.Millisecond
)

// readSize is one read's worth; handle reads until EAGAIN.
const readSize = 64 << 10

var trace = log.New(io.Discard, "server: ", log.Lmicroseconds)

type conn struct {
	fd   int
	sess *protocol.Session
	out  []byte
}

type server struct {
	lfd, epfd int
	mode      protocol.Mode
	maxLine   int
	conns     map[int]*conn
	buf       []byte

	backlogMayHold bool        // accept hit EMFILE: accept again after a close
	stopping       atomic.Bool // set by the signal goroutine
	deadline       time.Time   // end of grace, once the loop saw the stop
}

func main() {
	addr := flag.String("addr", "127.0.0.1:12345", "listen address")
	modeFlag := flag.String("mode", "stamp", "stamp or echo")
	maxLine := flag.Int("max-line", protocol.DefaultMaxLine, "longest line accepted in stamp mode")
	verbose := flag.Bool("v", false, "trace to stderr")
	flag.Parse()
	mode, err := protocol.ParseMode(*modeFlag)
	if err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(2)
	}
	if *verbose {
		trace.SetOutput(os.Stderr)
	}
	s, bound, err := newServer(*addr, mode, *maxLine)
	if err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(1)
	}
	fmt.Printf("listening on %s\n", bound)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		// Wakes the loop: its next accept fails with EINVAL.
		s.stopping.Store(true)
		unix.Shutdown(s.lfd, unix.SHUT_RD)
		time.AfterFunc(hardStop, func() { os.Exit(0) })
	}()
	if err := s.loop(); err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(1)
	}
}

func newServer(addr string, mode protocol.Mode, maxLine int) (*server, string, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		return nil, "", fmt.Errorf("-addr %q: want IPv4 HOST:PORT", addr)
	}
	lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, "", os.NewSyscallError("socket", err)
	}
	unix.SetsockoptInt(lfd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.Bind(lfd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
		return nil, "", os.NewSyscallError("bind", err)
	}
	if err := unix.Listen(lfd, unix.SOMAXCONN); err != nil {
		return nil, "", os.NewSyscallError("listen", err)
	}
	sa, err := unix.Getsockname(lfd)
	if err != nil {
		return nil, "", os.NewSyscallError("getsockname", err)
	}
	in4 := sa.(*unix.SockaddrInet4)
	bound := netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), uint16(in4.Port)).String()
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, "", os.NewSyscallError("epoll_create1", err)
	}
	s := &server{lfd: lfd, epfd: epfd, mode: mode, maxLine: maxLine, conns: map[int]*conn{}, buf: make([]byte, readSize)}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(lfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, lfd, &ev); err != nil {
		return nil, "", os.NewSyscallError("epoll_ctl", err)
	}
	return s, bound, nil
}

func (s *server) loop() error {
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(s.epfd, events, s.timeout())
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("epoll_wait", err)
		}
		for _, ev := range events[:n] {
			if int(ev.Fd) == s.lfd {
				s.acceptOne()
			} else if c := s.conns[int(ev.Fd)]; c != nil {
				s.handle(c, ev.Events)
			}
		}
		if s.drained() {
			return nil
		}
	}
}

func (s *server) timeout() int {
	if s.deadline.IsZero() {
		return -1
	}
	return int(max(time.Until(s.deadline).Milliseconds()+1, 0))
}

// acceptOne accepts one connection per listener edge.
func (s *server) acceptOne() {
	// BUG: one accept per edge. The connections still in the backlog were
	// announced by this edge and will not be announced again; the loop
	// must accept until EAGAIN.
	fd, _, err := unix.Accept4(s.lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
	switch {
	case err == nil:
	case s.stopping.Load():
		if s.deadline.IsZero() {
			unix.EpollCtl(s.epfd, unix.EPOLL_CTL_DEL, s.lfd, nil)
			s.deadline = time.Now().Add(grace)
		}
		return
	case err == unix.EAGAIN || err == unix.EINTR || err == unix.ECONNABORTED:
		s.backlogMayHold = false
		return
	default: // EMFILE and friends: the backlog keeps them for later
		trace.Printf("accept: %v", err)
		s.backlogMayHold = true
		return
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}
	if err := unix.EpollCtl(s.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		unix.Close(fd)
		return
	}
	trace.Printf("accept fd=%d", fd)
	s.conns[fd] = &conn{fd: fd, sess: protocol.NewSession(s.mode, s.maxLine)}
}

// handle serves one edge on a client: it reads until EAGAIN.
func (s *server) handle(c *conn, events uint32) {
	if events&unix.EPOLLERR != 0 {
		s.closeConn(c)
		return
	}
	for {
		n, err := unix.Read(c.fd, s.buf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return
		case err != nil:
			s.closeConn(c)
			return
		case n == 0:
			s.finish(c)
			return
		}
		trace.Printf("read fd=%d n=%d", c.fd, n)
		var perr error
		c.out, perr = c.sess.Input(c.out[:0], s.buf[:n])
		if err := writeAll(c.fd, c.out); err != nil || errors.Is(perr, protocol.ErrClosing) {
			s.closeConn(c)
			return
		}
	}
}

// finish answers a last line without '\n', then closes.
func (s *server) finish(c *conn) {
	writeAll(c.fd, c.sess.EOF(c.out[:0]))
	s.closeConn(c)
}

func (s *server) closeConn(c *conn) {
	unix.EpollCtl(s.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	delete(s.conns, c.fd)
	unix.Close(c.fd)
	trace.Printf("close fd=%d", c.fd)
	if s.backlogMayHold && s.deadline.IsZero() {
		s.acceptOne()
	}
}

// drained reports whether the loop may return: shutting down, and every
// client gone or grace over (then what is owed is sent and all closed).
func (s *server) drained() bool {
	if s.deadline.IsZero() || (len(s.conns) > 0 && time.Now().Before(s.deadline)) {
		return false
	}
	for _, c := range s.conns {
		s.finish(c)
	}
	return true
}

// writeAll writes p on a non-blocking socket, waiting in poll(2) while the
// socket is full.
func writeAll(fd int, p []byte) error {
	for len(p) > 0 {
		n, err := unix.Write(fd, p)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
			if _, err := unix.Poll(fds, -1); err != nil && err != unix.EINTR {
				return os.NewSyscallError("poll", err)
			}
			continue
		case err != nil:
			return os.NewSyscallError("write", err)
		}
		p = p[n:]
	}
	return nil
}
