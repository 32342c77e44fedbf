//go:build linux

package main

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// backlog is the listen queue: connections the kernel completes before the
// server calls accept. It is as deep as the kernel allows (net.core.somaxconn
// caps it), so that a burst of a thousand connects waits in the queue
// instead of being dropped and retried a second later.
const backlog = unix.SOMAXCONN

// listenTCP is socket, setsockopt, bind and listen: the four calls that
// make a listening socket. It returns the fd and the address actually bound
// (the port is the kernel's choice when addr asks for port 0).
func listenTCP(addr string) (int, string, error) {
	sa, err := parseAddr(addr)
	if err != nil {
		return -1, "", err
	}
	// SOCK_CLOEXEC: a socket must not leak into a program we might exec.
	// No SOCK_NONBLOCK: the acceptor has nothing to do but accept, so it
	// waits in accept4 for the next connection instead of in epoll_wait.
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, "", os.NewSyscallError("socket", err)
	}
	// SO_REUSEADDR lets a restarted server bind while old connections to the
	// same port sit in TIME_WAIT, which a demo restarts into all the time.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		unix.Close(fd)
		return -1, "", os.NewSyscallError("setsockopt", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, "", fmt.Errorf("%s: %w", addr, os.NewSyscallError("bind", err))
	}
	if err := unix.Listen(fd, backlog); err != nil {
		unix.Close(fd)
		return -1, "", os.NewSyscallError("listen", err)
	}
	bound, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return -1, "", os.NewSyscallError("getsockname", err)
	}
	return fd, sockaddrString(bound), nil
}

// parseAddr turns "127.0.0.1:12345" into the kernel's sockaddr_in. The lab
// speaks IPv4 only; "localhost" means 127.0.0.1.
func parseAddr(addr string) (*unix.SockaddrInet4, error) {
	if host, port, ok := strings.Cut(addr, ":"); ok && host == "localhost" {
		addr = "127.0.0.1:" + port
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		return nil, fmt.Errorf("-addr %q: want IPv4 HOST:PORT, such as 127.0.0.1:12345", addr)
	}
	return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}, nil
}

func sockaddrString(sa unix.Sockaddr) string {
	if in4, ok := sa.(*unix.SockaddrInet4); ok {
		return netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), uint16(in4.Port)).String()
	}
	return "?"
}

// accept4 is unix.Accept4, a variable so that tests can make accept fail
// the ways a busy machine does (EMFILE, ENOBUFS), as internal/poll's
// Accept4Func lets the net package's tests do.
var accept4 = unix.Accept4

// ignoringEINTR retries a system call that a signal interrupted. Go's
// runtime sends signals to threads to preempt goroutines, so EINTR is not
// rare here; with SA_RESTART most blocking calls restart by themselves, but
// not all (epoll_wait, poll and select never do).
func ignoringEINTR(fn func() error) error {
	for {
		err := fn()
		if err != unix.EINTR {
			return err
		}
	}
}

// readFD is read(2) with EINTR retried. The error is the bare errno:
// wrapping allocates, and the read path must not (TestHandleAllocs); the
// caller names the syscall when an error ends the connection.
func readFD(fd int, p []byte) (n int, err error) {
	err = ignoringEINTR(func() error {
		n, err = unix.Read(fd, p)
		return err
	})
	return n, err
}

// writeAll writes all of p. The socket is non-blocking, so write may take
// part of p, or fail with EAGAIN while the client's receive window and our
// send buffer are full. This chapter still has nowhere to keep the rest
// (07 gives each connection a send buffer and asks for EPOLLOUT), so it
// waits, right here, for this one fd: the whole loop stalls meanwhile,
// exactly like 03's blocking write, and `slow-reader` stays the limit.
//
// The wait is poll(2), not the seed's sleep(10) and retry on EWOULDBLOCK:
// that stalls the loop just the same, and then goes on sleeping for
// seconds after the client has made room.
func writeAll(fd int, p []byte) error {
	defer region("write").end()
	for len(p) > 0 {
		var n int
		err := ignoringEINTR(func() (err error) {
			n, err = unix.Write(fd, p)
			return err
		})
		if err == unix.EAGAIN {
			if tracing {
				trace.Printf("write fd=%d EAGAIN; poll until writable", fd)
			}
			if err := waitWritable(fd); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return os.NewSyscallError("write", err)
		}
		if tracing {
			trace.Printf("write fd=%d n=%d", fd, n)
		}
		p = p[n:]
	}
	return nil
}

// waitWritable sleeps in poll(2) until fd can take more bytes, with no
// timeout. An error or hangup on the socket ends the wait too, and the next
// write reports it.
func waitWritable(fd int) error {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	return os.NewSyscallError("poll", ignoringEINTR(func() error {
		_, err := unix.Poll(fds, -1)
		return err
	}))
}

// epollWait is epoll_wait(2). A signal ends the wait with EINTR (never
// restarted, whatever SA_RESTART says), and Go's runtime signals its
// threads often. It is not retried here: retried with the same timeout,
// every signal would push the wait's end back (the end of grace, say).
// It returns 0 events instead, as the runtime's netpoll does, and the loop
// computes the timeout afresh.
func epollWait(epfd int, events []unix.EpollEvent, msec int) (int, error) {
	n, err := unix.EpollWait(epfd, events, msec)
	if err == unix.EINTR {
		return 0, nil
	}
	return n, os.NewSyscallError("epoll_wait", err)
}

// waker is how a goroutine wakes a loop asleep in epoll_wait: the loop
// watches fd for EPOLLIN among its connections, wake makes it readable,
// and drain, on the loop, makes it unreadable again and reports how many
// wakes it found. The loop's task queue (see queueInLoop) writes at most
// once per batch of tasks, so drain usually finds exactly one.
//
// The seed names three ways to make such an fd; -wakeup picks one. All
// three are non-blocking and close-on-exec, and watched level-triggered:
// a wake that drain has not consumed yet wakes the next epoll_wait too.
type waker interface {
	fd() int
	wake() error
	drain() (int, error)
	close()
}

// wakeupKinds are -wakeup's choices, the first the default.
var wakeupKinds = []string{"eventfd", "pipe", "socketpair"}

func newWaker(kind string) (waker, error) {
	switch kind {
	case "eventfd":
		return newEventfdWaker()
	case "pipe":
		return newPipeWaker()
	case "socketpair":
		return newSocketpairWaker()
	}
	return nil, fmt.Errorf("unknown -wakeup %q", kind)
}

// eventfdWaker is eventfd(2): one fd holding a 64-bit counter. A write
// adds its 8 bytes to the counter; a read returns the counter and sets it
// to 0, so the kernel itself coalesces any number of wakes into one read.
// One fd, not two, and no buffer to fill: Linux's own choice for this job
// (Go's runtime wakes its netpoller with one).
type eventfdWaker struct{ efd int }

func newEventfdWaker() (*eventfdWaker, error) {
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, os.NewSyscallError("eventfd", err)
	}
	return &eventfdWaker{efd: efd}, nil
}

func (w *eventfdWaker) fd() int { return w.efd }

// LAB(eventfd-wake): wake adds 1 to the eventfd counter; drain reads the counter back, which resets it
// eventfdOne is what a wake writes: the number 1 in the machine's own byte
// order, as the counter is a plain uint64.
var eventfdOne = binary.NativeEndian.AppendUint64(nil, 1)

// wake adds 1 to the counter. The write fails with EAGAIN only if the
// counter would reach 2^64-1, which no loop lives to see; then, too, a
// wake is pending, which is all wake has to make sure of.
func (w *eventfdWaker) wake() error {
	if tracing {
		trace.Printf("wake: eventfd fd=%d += 1", w.efd)
	}
	return writeWake(w.efd, eventfdOne)
}

func (w *eventfdWaker) drain() (int, error) {
	var b [8]byte
	if _, err := readFD(w.efd, b[:]); err != nil && err != unix.EAGAIN {
		return 0, os.NewSyscallError("read", err)
	}
	n := int(binary.NativeEndian.Uint64(b[:]))
	if tracing {
		trace.Printf("wakeup: eventfd fd=%d read 8 bytes: counter was %d, now 0", w.efd, n)
	}
	return n, nil
}

// END LAB

func (w *eventfdWaker) close() { unix.Close(w.efd) }

// streamWaker is a byte stream with the loop at one end: a wake writes one
// byte at the other end, drain reads until EAGAIN and counts the bytes.
// The kernel coalesces nothing: every wake is a byte to read back, and a
// read that stopped short of EAGAIN would leave the fd readable, so the
// next epoll_wait would return at once for nothing.
type streamWaker struct {
	kind string // "pipe" or "socketpair", for the trace
	r, w int
}

// newPipeWaker is pipe2(2): a read end and a write end, one-way, a 64 KiB
// buffer between them.
func newPipeWaker() (*streamWaker, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return nil, os.NewSyscallError("pipe2", err)
	}
	return &streamWaker{kind: "pipe", r: p[0], w: p[1]}, nil
}

// newSocketpairWaker is socketpair(2): two connected sockets, either end
// can write to the other; the loop reads sv[0], wakers write sv[1]. It must
// be AF_UNIX, the only domain Linux makes socket pairs in. The stream
// carries the bytes through two socket buffers (sv[1]'s send, sv[0]'s
// receive) rather than one pipe buffer; to the loop it reads the same.
func newSocketpairWaker() (*streamWaker, error) {
	sv, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socketpair", err)
	}
	return &streamWaker{kind: "socketpair", r: sv[0], w: sv[1]}, nil
}

func (w *streamWaker) fd() int { return w.r }

// wakeByte is what a stream wake writes; any byte would do.
var wakeByte = []byte{1}

// wake writes one byte. EAGAIN means the buffer is full of wakes the loop
// has not read yet: the fd is readable already, so this wake is pending
// as surely as if its byte had gone in.
func (w *streamWaker) wake() error {
	if tracing {
		trace.Printf("wake: %s fd=%d write 1 byte", w.kind, w.w)
	}
	return writeWake(w.w, wakeByte)
}

func (w *streamWaker) drain() (int, error) {
	var b [64]byte
	total := 0
	for {
		n, err := readFD(w.r, b[:])
		if err == unix.EAGAIN {
			break
		}
		if err != nil {
			return total, os.NewSyscallError("read", err)
		}
		total += n
	}
	if tracing {
		trace.Printf("wakeup: %s fd=%d read until EAGAIN: %d wakes, a byte each", w.kind, w.r, total)
	}
	return total, nil
}

func (w *streamWaker) close() {
	unix.Close(w.r)
	unix.Close(w.w)
}

// writeWake writes a wake's bytes to fd; EAGAIN counts as done (see the
// wakers' wake methods).
func writeWake(fd int, p []byte) error {
	err := ignoringEINTR(func() error {
		_, err := unix.Write(fd, p)
		return err
	})
	if err != nil && err != unix.EAGAIN {
		return os.NewSyscallError("write", err)
	}
	return nil
}

// connAborted reports whether accept failed for the connection it would
// have returned, not for the server: the client gave up while queued
// (ECONNABORTED), or Linux passed on a network error pending on the new
// socket (see accept(2), "Error handling"). The next connection may be
// fine.
func connAborted(err error) bool {
	switch err {
	case unix.ECONNABORTED, unix.EPROTO, unix.ENETDOWN, unix.ENOPROTOOPT, unix.EHOSTDOWN,
		unix.ENONET, unix.EHOSTUNREACH, unix.EOPNOTSUPP, unix.ENETUNREACH:
		return true
	}
	return false
}

// soError reads and clears the socket's pending error, for the trace.
func soError(fd int) string {
	errno, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return os.NewSyscallError("getsockopt", err).Error()
	}
	return unix.Errno(errno).Error()
}

// eventNames spells an event mask for -v, e.g. "EPOLLIN|EPOLLRDHUP".
var eventNames = []struct {
	bit  uint32
	name string
}{
	{unix.EPOLLIN, "EPOLLIN"},
	{unix.EPOLLOUT, "EPOLLOUT"},
	{unix.EPOLLRDHUP, "EPOLLRDHUP"},
	{unix.EPOLLPRI, "EPOLLPRI"},
	{unix.EPOLLERR, "EPOLLERR"},
	{unix.EPOLLHUP, "EPOLLHUP"},
}

func eventString(events uint32) string {
	var s string
	for _, e := range eventNames {
		if events&e.bit != 0 {
			if s != "" {
				s += "|"
			}
			s += e.name
		}
	}
	return s
}

// initRuntimePoller makes Go's runtime open its own poller (an epoll fd
// and an eventfd) now. Chapters never use package net, so the runtime does
// that lazily, the first time a timer is set, which here is the shutdown
// timers. If that first time comes when the process has run out of fds,
// the runtime dies with "netpollinit failed": the `fd-limit` scenario found
// it.
func initRuntimePoller() {
	time.AfterFunc(time.Hour, func() {}).Stop()
}
