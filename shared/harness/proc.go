package harness

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// What the harness reads from /proc/PID about the server process. Every
// reader fails with an error (never a zero) once the process is gone, so a
// dead server cannot pass a "no leak" or "no CPU" check.

// clockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat. It
// is 100 on every Linux the harness runs on; the kernel fixes it at build.
const clockTick = 10 * time.Millisecond

// OpenFDs counts the server's open file descriptors.
func (s *Server) OpenFDs() (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", s.pid))
	if err != nil {
		return 0, fmt.Errorf("count open fds: %w", err)
	}
	return len(ents), nil
}

// CPU is the user plus system time the server has used.
func (s *Server) CPU() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.pid))
	if err != nil {
		return 0, fmt.Errorf("read cpu time: %w", err)
	}
	// The command name (field 2) may hold spaces; fields count after ')'.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("read cpu time: short /proc/%d/stat", s.pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("read cpu time: bad /proc/%d/stat", s.pid)
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// RSS is the server's resident memory in bytes.
func (s *Server) RSS() (int64, error) {
	kb, err := statusField(fmt.Sprintf("/proc/%d/status", s.pid), "VmRSS:")
	return kb << 10, err
}

// Threads is the number of OS threads in the server process.
func (s *Server) Threads() (int, error) {
	n, err := statusField(fmt.Sprintf("/proc/%d/status", s.pid), "Threads:")
	return int(n), err
}

// Wakeups counts context switches over all of the server's threads: a
// thread that sleeps in epoll_wait makes none, a 10 ms poll loop makes 100
// a second even when its CPU time rounds to zero ticks.
func (s *Server) Wakeups() (int64, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", s.pid))
	if err != nil {
		return 0, fmt.Errorf("count wakeups: %w", err)
	}
	var total int64
	for _, t := range tasks {
		path := fmt.Sprintf("/proc/%d/task/%s/status", s.pid, t.Name())
		v, err1 := statusField(path, "voluntary_ctxt_switches:")
		n, err2 := statusField(path, "nonvoluntary_ctxt_switches:")
		if err1 != nil || err2 != nil {
			continue // the thread exited between ReadDir and here
		}
		total += v + n
	}
	return total, nil
}

// WaitFDs reads the server's open fd count until done says so or timeout
// passes, and returns the last count. The server gives no event for "I have
// closed (or accepted) them all", so the count is read again every
// pollEvery.
func (s *Server) WaitFDs(ctx context.Context, timeout time.Duration, done func(int) bool) (int, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		n, err := s.OpenFDs()
		if err != nil || done(n) {
			return n, err
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			return s.OpenFDs()
		case <-ctx.Done():
			return n, ctx.Err()
		}
	}
}

// SetFDLimit lowers the server's soft RLIMIT_NOFILE (the hard limit stays),
// as `prlimit --nofile` would, and returns the previous soft limit.
func (s *Server) SetFDLimit(soft uint64) (uint64, error) {
	var old unix.Rlimit
	if err := unix.Prlimit(s.pid, unix.RLIMIT_NOFILE, nil, &old); err != nil {
		return 0, fmt.Errorf("prlimit: %w", err)
	}
	lim := unix.Rlimit{Cur: soft, Max: old.Max}
	if err := unix.Prlimit(s.pid, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
		return 0, fmt.Errorf("prlimit: %w", err)
	}
	return old.Cur, nil
}

func statusField(path, key string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key); ok {
			return strconv.ParseInt(strings.Fields(v)[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s", path, key)
}

// listenerOwner finds, among root and its descendants, the process holding
// the socket that listens on addr, so that /proc readings and signals reach
// the server and not a `go run` or shell wrapper. It falls back to root.
func listenerOwner(root int, addr string) int {
	inode := listenInode(addr)
	if inode == "" {
		return root
	}
	want := "socket:[" + inode + "]"
	for _, pid := range descendants(root) {
		fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
		for _, fd := range fds {
			if link, err := os.Readlink(fd); err == nil && link == want {
				return pid
			}
		}
	}
	return root
}

// listenInode returns the inode of the LISTEN socket on addr's port, from
// /proc/net/tcp (state 0A is TCP_LISTEN).
func listenInode(addr string) string {
	_, port, _ := strings.Cut(addr, ":")
	p, err := strconv.Atoi(port)
	if err != nil {
		return ""
	}
	hexPort := fmt.Sprintf(":%04X", p)
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) > 9 && strings.HasSuffix(f[1], hexPort) && f[3] == "0A" {
				return f[9]
			}
		}
	}
	return ""
}

// descendants returns root and every process below it, root first.
func descendants(root int) []int {
	children := map[int][]int{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(path)))
		if len(f) > 1 {
			ppid, _ := strconv.Atoi(f[1])
			children[ppid] = append(children[ppid], pid)
		}
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// unreadBy returns how many bytes c has sent that the server has not yet
// read: the receive queue of the server's end of the connection, from
// /proc/net/tcp (rx_queue of the socket whose local port is the server's
// and whose remote port is c's). Replies to those bytes are owed by the
// server process itself, not by a kernel buffer.
func (s *Server) unreadBy(c *Client) (int, error) {
	_, sport, _ := strings.Cut(s.addr, ":")
	sp, _ := strconv.Atoi(sport)
	cp := c.conn.LocalAddr().(*net.TCPAddr).Port
	local, remote := fmt.Sprintf(":%04X", sp), fmt.Sprintf(":%04X", cp)
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasSuffix(f[1], local) && strings.HasSuffix(f[2], remote) {
			_, rx, _ := strings.Cut(f[4], ":")
			n, err := strconv.ParseInt(rx, 16, 64)
			return int(n), err
		}
	}
	return 0, nil // the server has closed its end: it holds nothing unread
}

// lowestFreeFD is the number the server's next new fd would get: the
// kernel always hands out the lowest free one, and RLIMIT_NOFILE limits fd
// numbers, not counts. A limit of exactly this number leaves the server no
// fd at all, whatever holes its fd table has.
func (s *Server) lowestFreeFD() (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", s.pid))
	if err != nil {
		return 0, fmt.Errorf("list open fds: %w", err)
	}
	used := map[int]bool{}
	for _, e := range ents {
		n, _ := strconv.Atoi(e.Name())
		used[n] = true
	}
	n := 0
	for used[n] {
		n++
	}
	return n, nil
}
