//go:build linux

package main

import (
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

// writeAll writes all of p. A blocking write may still take only part of p
// (a signal, a full buffer that drains partly), so loop until it is all in.
func writeAll(fd int, p []byte) error {
	for len(p) > 0 {
		var n int
		err := ignoringEINTR(func() (err error) {
			n, err = unix.Write(fd, p)
			return err
		})
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

// fdSetSize is FD_SETSIZE: an fd_set is a bitmap with one bit for each fd
// number from 0 to 1023 (unix.FdSet is [16]int64, the C type's layout). An
// fd past it has no bit: C's FD_SET writes past the end of the struct into
// whatever lies next to it, and Go's FdSet.Set panics (index out of range).
const fdSetSize = unix.FD_SETSIZE

// fitsFdSet reports whether select can watch fd at all. It is the only
// guard between an accepted fd and FdSet.Set.
func fitsFdSet(fd int) bool {
	return fd >= 0 && fd < fdSetSize
}

// selectWait is select(2) on a read set only. A nil timeout blocks until
// an fd is ready. On return r holds only the ready fds. A signal ends the
// wait with EINTR (never restarted, whatever SA_RESTART says), and Go's
// runtime signals its threads often. It is not retried here: retried with
// the same timeout, every signal would push the wait's end back (the end
// of grace, say). It returns 0 fds instead, as the runtime's netpoll does,
// and the loop computes the timeout afresh.
func selectWait(nfd int, r *unix.FdSet, timeout *unix.Timeval) (int, error) {
	n, err := unix.Select(nfd, r, nil, nil, timeout)
	if err == unix.EINTR {
		return 0, nil
	}
	return n, os.NewSyscallError("select", err)
}

// pollWait is poll(2), and returns 0 fds on EINTR for the same reason.
// msec -1 blocks until an fd is ready. The kernel writes each entry's
// Revents and leaves Events alone.
func pollWait(fds []unix.PollFd, msec int) (int, error) {
	n, err := unix.Poll(fds, msec)
	if err == unix.EINTR {
		return 0, nil
	}
	return n, os.NewSyscallError("poll", err)
}

// msecTimeval turns poll's timeout into select's: -1 (no timeout) is a nil
// *Timeval, which blocks until an fd is ready.
func msecTimeval(msec int) *unix.Timeval {
	if msec < 0 {
		return nil
	}
	tv := unix.NsecToTimeval(int64(msec) * int64(time.Millisecond))
	return &tv
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

// reventNames spells poll's revents for -v, e.g. "POLLIN|POLLHUP".
var reventNames = []struct {
	bit  int16
	name string
}{
	{unix.POLLIN, "POLLIN"},
	{unix.POLLPRI, "POLLPRI"},
	{unix.POLLOUT, "POLLOUT"},
	{unix.POLLERR, "POLLERR"},
	{unix.POLLHUP, "POLLHUP"},
	{unix.POLLNVAL, "POLLNVAL"},
}

func reventString(revents int16) string {
	var s string
	for _, e := range reventNames {
		if revents&e.bit != 0 {
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
