package doccheck

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Status is a command's verdict.
type Status string

const (
	OK      Status = "ok"
	Failed  Status = "FAILED"
	Skipped Status = "skipped" // on the allow-list
	NotRun  Status = "not run" // slow or a server, and REACTORLAB_DOCS is not "all"
)

// Result is what became of one command.
type Result struct {
	Plan
	Ran     string // the command as run: pointed at the page's server, for instance
	Status  Status
	Detail  string // why it failed, or why it was not run
	Elapsed time.Duration
}

// Page runs one page's commands in page order. A server a command starts
// stays up for the commands after it on the same page (pages say "in
// another terminal"), until the next server or Close.
type Page struct {
	Root string // the repository root: every command runs there, as the pages say
	All  bool   // run slow commands and servers too, not only the fast ones
	srv  *server
}

// Do runs one command, or says why not.
func (p *Page) Do(plan Plan) (res Result) {
	res = Result{Plan: plan, Ran: Bare(plan.Text)}
	switch {
	case plan.Kind == Skip:
		res.Status, res.Detail = Skipped, plan.Why
		return res
	case !plan.Fast && !p.All:
		res.Status, res.Detail = NotRun, "not fast: REACTORLAB_DOCS=all runs it"
		if plan.Kind == Server {
			res.Detail = "starts a server: REACTORLAB_DOCS=all runs it"
		}
		return res
	}
	start := time.Now()
	defer func() { res.Elapsed = time.Since(start) }()
	if plan.Kind == Server {
		p.Close()
		res.Ran = ServerCommand(plan.Text)
		srv, err := startServer(p.Root, res.Ran, plan.Timeout)
		if err != nil {
			res.Status, res.Detail = Failed, err.Error()
			return res
		}
		p.srv = srv
		res.Status, res.Detail = checkFirstLine(plan.Output, srv.ready)
		return res
	}
	if NeedsServer(plan.Text) {
		if p.srv == nil {
			res.Status, res.Detail = Failed, "talks to a server, but no command before it on the page starts one"
			return res
		}
		res.Ran = Against(plan.Text, p.srv.addr)
	}
	typed, printed := Typed(plan.Text, plan.Output)
	stdin := ""
	if len(typed) > 0 {
		stdin = strings.Join(typed, "\n") + "\n"
	}
	out, code, err := runCommand(p.Root, res.Ran, stdin, plan.Timeout)
	switch {
	case err != nil:
		res.Status, res.Detail = Failed, fmt.Sprintf("%v\n%s", err, out)
	case code != plan.Exit:
		res.Status, res.Detail = Failed, fmt.Sprintf("exit status %d, want %d\n%s", code, plan.Exit, out)
	default:
		res.Status, res.Detail = checkFirstLine(printed, FirstLine(out))
		if res.Status == Failed {
			res.Detail += "\n" + out
		}
	}
	return res
}

// Close stops the page's server, if one runs.
func (p *Page) Close() {
	if p.srv != nil {
		p.srv.stop()
		p.srv = nil
	}
}

// checkFirstLine holds what a command printed first to the shape of the
// first line the page shows.
func checkFirstLine(page []string, got string) (Status, string) {
	want := ""
	if len(page) > 0 {
		want = Shape(page[0])
	}
	if want == "" {
		return OK, ""
	}
	if !regexp.MustCompile(want).MatchString(got) {
		return Failed, fmt.Sprintf("first line of output %q does not have the shape of the page's %q", got, page[0])
	}
	return OK, ""
}

// runCommand runs text with bash in root, in a process group of its own
// so that a timeout (or a background job it leaves) ends every process
// it started. The output is stdout and stderr as they interleaved.
func runCommand(root, text, stdin string, timeout time.Duration) (string, int, error) {
	cmd := exec.Command("bash", "-c", text)
	cmd.Dir = root
	cmd.Stdin = strings.NewReader(stdin)
	out := &boundedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A job left in the background would hold the output pipe open.
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		return "", -1, err
	}
	pgid := cmd.Process.Pid
	var timedOut atomic.Bool
	timer := time.AfterFunc(timeout, func() {
		timedOut.Store(true)
		syscall.Kill(-pgid, syscall.SIGKILL)
	})
	err := cmd.Wait()
	timer.Stop()
	syscall.Kill(-pgid, syscall.SIGKILL) // whatever it left running
	if timedOut.Load() {
		return out.String(), -1, fmt.Errorf("still running after %v: killed", timeout)
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return out.String(), exit.ExitCode(), nil
	}
	if err != nil && !errors.Is(err, exec.ErrWaitDelay) {
		return out.String(), -1, err
	}
	return out.String(), 0, nil
}

// server is a server a page's command started.
type server struct {
	cmd   *exec.Cmd
	addr  string // from its ready line
	ready string // the ready line
	out   *boundedBuffer
	done  chan struct{}
}

var readyLine = regexp.MustCompile(`^listening on (\S+:[0-9]+)$`)

// startServer starts text in a process group of its own and waits for
// its ready line on stdout.
func startServer(root, text string, timeout time.Duration) (*server, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	s := &server{out: &boundedBuffer{}, done: make(chan struct{})}
	// exec: the server (or go run) leads the group, with no shell between.
	s.cmd = exec.Command("bash", "-c", "exec "+text)
	s.cmd.Dir = root
	s.cmd.Stdout, s.cmd.Stderr = w, s.out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = s.cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return nil, err
	}
	go func() {
		s.cmd.Wait()
		close(s.done)
	}()
	first := make(chan string, 1)
	go func() {
		defer r.Close() // at EOF: the server has exited
		sc := bufio.NewScanner(r)
		if sc.Scan() {
			first <- sc.Text()
		}
		close(first)
		// -v traces go to stderr, but keep reading stdout so the server
		// never blocks on a full pipe.
		for sc.Scan() {
			fmt.Fprintln(s.out, sc.Text())
		}
		io.Copy(s.out, r) // past a line too long for the scanner
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case line, ok := <-first:
		m := readyLine.FindStringSubmatch(line)
		if !ok || m == nil {
			<-s.waitOrKill()
			return nil, fmt.Errorf("no ready line: stdout began with %q\n%s", line, s.out)
		}
		s.ready, s.addr = line, m[1]
		return s, nil
	case <-timer.C:
		<-s.waitOrKill()
		return nil, fmt.Errorf("no ready line after %v\n%s", timeout, s.out)
	}
}

// waitOrKill kills the server's group at once and returns a channel
// closed when it has exited.
func (s *server) waitOrKill() <-chan struct{} {
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	return s.done
}

// stop sends SIGTERM to the server's group, as Ctrl-C would, and kills it
// if it has not exited within the contract's 2 s and a margin.
func (s *server) stop() {
	pgid := s.cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		<-s.waitOrKill()
	}
	syscall.Kill(-pgid, syscall.SIGKILL) // a child go run left behind
}

// boundedBuffer keeps the first and the last bytes written to it: enough
// for the first line and for a failure's tail, whatever a command prints.
type boundedBuffer struct {
	mu      sync.Mutex
	head    []byte
	tail    []byte
	dropped int
}

const (
	headMax = 32 << 10
	tailMax = 16 << 10
)

func (b *boundedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(p)
	if room := headMax - len(b.head); room > 0 {
		k := min(room, len(p))
		b.head = append(b.head, p[:k]...)
		p = p[k:]
	}
	b.tail = append(b.tail, p...)
	if over := len(b.tail) - tailMax; over > 0 {
		b.dropped += over
		b.tail = append(b.tail[:0], b.tail[over:]...)
	}
	return n, nil
}

func (b *boundedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dropped == 0 {
		return string(b.head) + string(b.tail)
	}
	return fmt.Sprintf("%s\n[... %d bytes ...]\n%s", b.head, b.dropped, b.tail)
}
