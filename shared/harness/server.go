package harness

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Command is how to start a server: a program and the arguments that choose
// its model. The harness appends -addr 127.0.0.1:0 and any scenario flags.
type Command struct {
	Path string
	Args []string
}

// With returns a copy of c with more arguments.
func (c Command) With(args ...string) Command {
	c.Args = append(append([]string(nil), c.Args...), args...)
	return c
}

func (c Command) String() string {
	return strings.Join(append([]string{c.Path}, c.Args...), " ")
}

// readyTimeout is generous because a grader may be handed `go run ./x`,
// which compiles before it listens.
const readyTimeout = 90 * time.Second

// stopGrace is how long Stop waits after SIGTERM before SIGKILL: the
// contract gives a server 2 s to exit.
const stopGrace = 3 * time.Second

var readyLine = regexp.MustCompile(`^listening on (127\.0\.0\.1|localhost|\[::1\]):([0-9]+)$`)

// Server is one running server process.
type Server struct {
	cmd    *exec.Cmd
	addr   string
	pid    int // the process that owns the listening socket
	out    *tail
	exited chan struct{}
	status error // cmd.Wait's result, valid once exited is closed
}

// Addr is the address from the ready line, e.g. "127.0.0.1:40123".
func (s *Server) Addr() string { return s.addr }

// PID is the process holding the listening socket: the server itself even
// when the command was a wrapper such as `go run` or a shell script.
func (s *Server) PID() int { return s.pid }

// start launches cmd with args and waits for the ready line.
func start(ctx context.Context, c Command, args []string, out io.Writer) (*Server, error) {
	args = append(append(append([]string(nil), c.Args...), "-addr", "127.0.0.1:0"), args...)
	cmd := exec.Command(c.Path, args...)
	// Own process group, so Stop reaches every process a wrapper started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Env = append(os.Environ(), "GORACE="+raceOptions())
	t := newTail(out)
	cmd.Stderr = t
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, Fail(Startup, "start "+c.String(), err.Error(), "a running server", "is the server command right and executable?")
	}
	s := &Server{cmd: cmd, out: t, exited: make(chan struct{})}
	first := make(chan string, 1)
	go s.readStdout(stdout, first)
	go func() {
		s.status = cmd.Wait()
		close(s.exited)
	}()

	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	select {
	case line, ok := <-first:
		if !ok {
			<-s.exited
			return nil, Fail(Startup, "wait for the ready line", "exit before any output ("+exitString(s.status)+")",
				"listening on HOST:PORT", "the server exited at start; its output:\n"+t.String())
		}
		m := readyLine.FindStringSubmatch(line)
		if m == nil {
			s.Stop()
			return nil, Fail(Startup, "read the ready line", fmt.Sprintf("%q", line), `"listening on 127.0.0.1:PORT"`,
				"the first line on stdout must be exactly `listening on HOST:PORT`, with the real port the kernel chose for -addr 127.0.0.1:0")
		}
		s.addr = "127.0.0.1:" + m[2]
	case <-timer.C:
		s.Stop()
		return nil, Fail(Startup, "wait for the ready line", "nothing on stdout after "+readyTimeout.String(),
			"listening on HOST:PORT", "print the ready line (and flush stdout) as soon as the socket listens")
	case <-ctx.Done():
		s.Stop()
		return nil, ctx.Err()
	}
	s.pid = listenerOwner(cmd.Process.Pid, s.addr)
	return s, nil
}

// readStdout hands the first line to first and copies the rest to the tail.
func (s *Server) readStdout(r io.Reader, first chan<- string) {
	br := bufio.NewReader(r)
	line, err := br.ReadString('\n')
	if err != nil && line == "" {
		close(first)
		return
	}
	first <- strings.TrimRight(line, "\r\n")
	io.Copy(s.out, br)
}

// Exited is closed when the started process has exited.
func (s *Server) Exited() <-chan struct{} { return s.exited }

// ExitStatus is the process's exit error (nil for status 0); call it only
// after Exited is closed.
func (s *Server) ExitStatus() error { return s.status }

// Alive reports whether the process is still running.
func (s *Server) Alive() bool {
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// Signal sends sig to the server process (the listener's owner).
func (s *Server) Signal(sig syscall.Signal) error {
	return unix.Kill(s.pid, sig)
}

// Stop ends the server if it still runs: SIGTERM to its process group, then
// SIGKILL after stopGrace. It waits until the process is gone.
func (s *Server) Stop() {
	if !s.Alive() {
		return
	}
	pgid := s.cmd.Process.Pid
	unix.Kill(-pgid, unix.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(stopGrace):
		unix.Kill(-pgid, unix.SIGKILL)
		<-s.exited
	}
	// A wrapper may have exited before its child: clean the group anyway.
	unix.Kill(-pgid, unix.SIGKILL)
}

// Output is the tail of everything the server printed after its ready line.
func (s *Server) Output() string { return s.out.String() }

// raceOptions are for servers built with -race (harmless for others):
// exit at once rather than after the race runtime's default 1 s pause,
// which would eat half the 2 s shutdown budget, and stop at the first data
// race, so that a race fails the scenario as a crash with its report.
func raceOptions() string {
	return strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0 halt_on_error=1")
}

func exitString(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// tail keeps the last few KiB a server printed and forwards lines to an
// optional writer with a prefix, so a grader's log keeps them apart.
type tail struct {
	mu      sync.Mutex
	buf     []byte
	forward io.Writer
	partial []byte
}

const tailSize = 4 << 10

func newTail(forward io.Writer) *tail { return &tail{forward: forward} }

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 2*tailSize {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-tailSize:]...)
	}
	if t.forward != nil {
		t.partial = append(t.partial, p...)
		for {
			i := strings.IndexByte(string(t.partial), '\n')
			if i < 0 {
				break
			}
			fmt.Fprintf(t.forward, "  server | %s\n", t.partial[:i])
			t.partial = t.partial[i+1:]
		}
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buf
	if len(b) > tailSize {
		b = b[len(b)-tailSize:]
	}
	return string(b)
}
