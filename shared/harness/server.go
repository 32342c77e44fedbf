package harness

import (
	"bufio"
	"bytes"
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
// which compiles before it listens. It stays well inside scenarioTimeout,
// so a server that never prints its ready line fails as a startup with the
// hint that says so, not as a scenario that ran out of time.
var readyTimeout = scaled(45 * time.Second)

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

	fds0, threads0 int // open fds and OS threads once ready: the leak check's baseline

	stdout     *os.File      // our end of the server's stdout
	stdoutDone chan struct{} // closed when readStdout has copied the last byte
}

// Addr is the address from the ready line, e.g. "127.0.0.1:40123".
func (s *Server) Addr() string { return s.addr }

// PID is the process holding the listening socket: the server itself even
// when the command was a wrapper such as `go run` or a shell script.
func (s *Server) PID() int { return s.pid }

// Start launches cmd with -addr 127.0.0.1:0 and args and waits for its
// ready line, for tools that run servers outside a test (the compare
// command). The caller must Stop it. Lines the server prints after its
// ready line go to out, prefixed, when out is not nil.
func Start(ctx context.Context, cmd Command, out io.Writer, args ...string) (*Server, error) {
	return start(ctx, cmd, args, out)
}

// start launches cmd with args and waits for the ready line.
func start(ctx context.Context, c Command, args []string, out io.Writer) (*Server, error) {
	args = append(append(append([]string(nil), c.Args...), "-addr", "127.0.0.1:0"), args...)
	cmd := exec.Command(c.Path, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own process group, so Stop reaches every process a wrapper started.
		Setpgid: true,
		// If the test binary is killed, Stop never runs: the kernel ends
		// the server instead of leaving it listening. Pdeathsig fires when
		// the thread that started the child exits, not the process; the
		// harness never locks OS threads, and Go ends a thread only when a
		// goroutine exits while locked to it, so here the two coincide.
		Pdeathsig: syscall.SIGKILL,
	}
	cmd.Env = append(os.Environ(), "GORACE="+raceOptions())
	t := newTail(out)
	cmd.Stderr = t
	// A pipe of our own rather than cmd.StdoutPipe: Wait closes that one as
	// soon as the process exits, which would cut off output still in the
	// pipe, and Stop must be able to wait for the last byte.
	stdout, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = w
	err = cmd.Start()
	w.Close() // the child holds its own copy; ours would keep the pipe open
	if err != nil {
		stdout.Close()
		return nil, Fail(Startup, "start "+c.String(), err.Error(), "a running server", "is the server command right and executable?")
	}
	s := &Server{cmd: cmd, out: t, exited: make(chan struct{}), stdout: stdout, stdoutDone: make(chan struct{})}
	first := make(chan string, 1)
	go s.readStdout(first)
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
		// Ctrl-C, or a scenario deadline shorter than the ready timeout:
		// either way the server had not said it was ready.
		s.Stop()
		return nil, Fail(Startup, "wait for the ready line", "nothing on stdout when the scenario ended ("+ctx.Err().Error()+")",
			"listening on HOST:PORT", "print the ready line (and flush stdout) as soon as the socket listens")
	}
	s.pid = listenerOwner(cmd.Process.Pid, s.addr)
	// What the server holds at rest, for the leak check after the
	// scenario; zero (no check) if /proc cannot say.
	s.fds0, _ = s.OpenFDs()
	s.threads0, _ = s.Threads()
	return s, nil
}

// readStdout hands the first line to first and copies the rest to the tail
// until every process holding the pipe has gone.
func (s *Server) readStdout(first chan<- string) {
	defer close(s.stdoutDone)
	defer s.stdout.Close()
	br := bufio.NewReader(s.stdout)
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
// SIGKILL after stopGrace. It waits until the process is gone and what it
// printed has been read, so no output arrives after Stop returns.
func (s *Server) Stop() {
	pgid := s.cmd.Process.Pid
	if s.Alive() {
		unix.Kill(-pgid, unix.SIGTERM)
		timer := time.NewTimer(stopGrace)
		select {
		case <-s.exited:
		case <-timer.C:
		}
		timer.Stop()
	}
	// The server ignored SIGTERM, or a wrapper exited before its child:
	// end the whole group, which closes the last copies of its stdout.
	unix.Kill(-pgid, unix.SIGKILL)
	<-s.exited
	timer := time.NewTimer(stopGrace)
	defer timer.Stop()
	select {
	case <-s.stdoutDone:
	case <-timer.C:
		// A process that left the group still holds the pipe: stop
		// reading rather than wait for it.
		s.stdout.Close()
		<-s.stdoutDone
	}
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

// tail keeps the last few KiB a server printed, and the lines that say why
// it died, and forwards lines to an optional writer with a prefix, so a
// grader's log keeps them apart.
type tail struct {
	mu      sync.Mutex
	buf     []byte
	forward io.Writer
	partial []byte // the line being printed, until its '\n'
	// cause is the first line that says why the process is dying, and the
	// few after it: a Go panic or race report puts its key line above a
	// goroutine dump far longer than the tail.
	cause     []string
	causeMore int // lines after the cause line still to keep
}

const tailSize = 4 << 10

// causeAfter lines follow the cause line: enough for a panic's first frame
// or a race report's first access, few enough for a hint.
const causeAfter = 5

// isCause reports whether line starts a report of why a process dies: Go's
// runtime panics, fatal errors and race reports, and a segfault signal.
func isCause(line []byte) bool {
	for _, p := range []string{"panic: ", "fatal error: ", "WARNING: DATA RACE"} {
		if bytes.HasPrefix(line, []byte(p)) {
			return true
		}
	}
	return bytes.Contains(line, []byte("SIGSEGV"))
}

func newTail(forward io.Writer) *tail { return &tail{forward: forward} }

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 2*tailSize {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-tailSize:]...)
	}
	t.partial = append(t.partial, p...)
	for {
		i := bytes.IndexByte(t.partial, '\n')
		switch {
		case i >= 0:
			t.line(t.partial[:i])
			t.partial = t.partial[i+1:]
		case len(t.partial) > tailSize:
			// A line that never ends is taken in pieces, to stay bounded.
			t.line(t.partial[:tailSize])
			t.partial = t.partial[tailSize:]
		default:
			return len(p), nil
		}
	}
}

// line handles one complete line; t.mu is held.
func (t *tail) line(l []byte) {
	if t.forward != nil {
		fmt.Fprintf(t.forward, "  server | %s\n", l)
	}
	switch {
	case t.cause == nil && isCause(l):
		t.cause, t.causeMore = []string{string(l)}, causeAfter
	case t.causeMore > 0:
		t.cause = append(t.cause, string(l))
		t.causeMore--
	}
}

// Cause is the first report of why the process died, or "" if none was
// printed.
func (t *tail) Cause() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.cause, "\n")
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
