package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Env is what a scenario works with: it starts servers and opens clients,
// and remembers both so that Run can close and stop all of them whatever
// the scenario did.
type Env struct {
	Ctx  context.Context
	Cmd  Command
	opts Options

	mu      sync.Mutex
	servers []*Server
	clients []*Client
	// closed is set once closeClients has run: a client dialled after
	// that (the scenario's context ended mid-dial) is closed at once.
	closed bool
	// mayExit holds servers a scenario told to exit (shutdown sends
	// SIGTERM), so that their exit is not reported as a crash.
	mayExit map[*Server]bool

	conns      atomic.Int64
	sent, recv atomic.Int64
}

func newEnv(ctx context.Context, cmd Command, opts Options) *Env {
	return &Env{Ctx: ctx, Cmd: cmd, opts: opts}
}

// Logf reports progress within a scenario.
func (e *Env) Logf(format string, args ...any) {
	if e.opts.Logf != nil {
		e.opts.Logf(format, args...)
	}
}

// Start runs the server command with extra flags (for example "-mode",
// "echo") and waits for its ready line.
func (e *Env) Start(args ...string) (*Server, error) {
	s, err := start(e.Ctx, e.Cmd, args, e.opts.ServerOutput)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.servers = append(e.servers, s)
	e.mu.Unlock()
	return s, nil
}

// dialTimeout is long because `many` opens over a thousand connections to
// a server that may accept them one at a time.
var dialTimeout = scaled(5 * time.Second)

// Dial opens a client connection to s.
func (e *Env) Dial(s *Server) (*Client, error) {
	d := net.Dialer{Timeout: dialTimeout}
	conn, err := d.DialContext(e.Ctx, "tcp", s.Addr())
	if err != nil {
		return nil, Fail(Refused, "connect to "+s.Addr(), err.Error(), "a connection",
			"the server stopped listening or its backlog is full")
	}
	c := &Client{conn: conn.(*net.TCPConn), env: e, dialed: time.Now()}
	e.conns.Add(1)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		conn.Close()
		return nil, Fail(Refused, "connect to "+s.Addr(), "the scenario had ended", "a connection", "")
	}
	e.clients = append(e.clients, c)
	return c, nil
}

// startClient starts the server with args and opens one client to it: how
// most scenarios begin.
func (e *Env) startClient(args ...string) (*Server, *Client, error) {
	s, err := e.Start(args...)
	if err != nil {
		return nil, nil, err
	}
	c, err := e.Dial(s)
	return s, c, err
}

func (e *Env) cost() Cost {
	return Cost{Conns: int(e.conns.Load()), Sent: e.sent.Load(), Recv: e.recv.Load()}
}

// closeClients closes every client, now and any dialled later. Run calls
// it when the scenario's context ends, so that reads blocked on a server
// return at once instead of at their deadlines.
func (e *Env) closeClients() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	for _, c := range e.clients {
		c.Close()
	}
	e.clients = nil
}

func (e *Env) stopServers() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range e.servers {
		s.Stop()
	}
}

// expectExit tells Run that s is meant to exit from now on, so its exit is
// the scenario's to judge and not a crash.
func (e *Env) expectExit(s *Server) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mayExit == nil {
		e.mayExit = map[*Server]bool{}
	}
	e.mayExit[s] = true
}

// crashed reports a server that exited while the scenario still needed it.
func (e *Env) crashed() *Failure {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range e.servers {
		if !s.Alive() && !e.mayExit[s] {
			hint := "the server died; the last lines it printed:\n" + lastLines(s.Output(), 10)
			if cause := s.out.Cause(); cause != "" {
				hint = "the server died; the start of its crash report:\n" + cause
			}
			if sig, ok := deathSignal(s.status); ok && sig == syscall.SIGPIPE {
				// The usual death of a C server whose client reset: say why.
				hint = "a write to a connection the client had closed raised SIGPIPE, whose default action " +
					"kills the process: ignore SIGPIPE or write with send(..., MSG_NOSIGNAL)"
			}
			return Fail(Crash, "server "+s.Addr(), "exit during the scenario ("+exitString(s.status)+")",
				"a server that keeps running", hint)
		}
	}
	return nil
}

// deathSignal returns the signal that killed a process, given cmd.Wait's
// result.
func deathSignal(status error) (syscall.Signal, bool) {
	var ee *exec.ExitError
	if !errors.As(status, &ee) {
		return 0, false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() {
		return 0, false
	}
	return ws.Signal(), true
}

func (e *Env) outputTail() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var b strings.Builder
	for _, s := range e.servers {
		fmt.Fprintf(&b, "%s", s.Output())
	}
	return lastLines(b.String(), 20)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Slack for the leak check: a runtime may keep an fd or two it opened on
// first use, and Go's keeps the OS threads it started for blocking calls
// (it never ends an idle thread). How many it started grows with how many
// clients blocked at once: after many's 1,100 clients, 01's thread per
// client once kept 17 more than at rest, one over a fixed slack of 16, in
// 20 runs of the suite. So the thread slack grows by one per
// threadsPerSlack connections the scenario opened. A
// leak per connection shows far above both: every scenario but reply
// opens several connections, and close counts fds exactly.
const (
	fdSlack         = 2
	threadSlack     = 16
	threadsPerSlack = 16
)

// checkLeaks runs once a scenario has passed and closed its clients: every
// server still running must give back the fds and threads it took, within
// closeSettle, so that no scenario passes on a server that leaks.
func (e *Env) checkLeaks() *Failure {
	e.mu.Lock()
	servers := append([]*Server(nil), e.servers...)
	e.mu.Unlock()
	for _, s := range servers {
		if !s.Alive() || s.fds0 == 0 {
			continue
		}
		slack := threadSlack + int(e.conns.Load())/threadsPerSlack
		fds, threads, err := s.settle(e.Ctx, slack)
		if err != nil {
			continue // gone meanwhile, or /proc unreadable: nothing to judge
		}
		if fds > s.fds0+fdSlack || threads > s.threads0+slack {
			return Fail(Leak, "server resources once every client of the scenario has gone",
				fmt.Sprintf("%d fds and %d threads open %s later", fds, threads, closeSettle),
				fmt.Sprintf("about what it held once ready: %d fds, %d threads", s.fds0, s.threads0),
				"close a connection's fd whenever it ends (EOF, error, the server's own close), and end "+
					"whatever thread or worker served it")
		}
	}
	return nil
}

// settle waits, up to closeSettle, for s to hold no more fds and threads
// than at rest plus the slack, and returns what it holds then.
func (s *Server) settle(ctx context.Context, threadSlack int) (fds, threads int, err error) {
	deadline := time.Now().Add(closeSettle)
	for {
		if fds, err = s.OpenFDs(); err != nil {
			return 0, 0, err
		}
		if threads, err = s.Threads(); err != nil {
			return 0, 0, err
		}
		if (fds <= s.fds0+fdSlack && threads <= s.threads0+threadSlack) || !time.Now().Before(deadline) {
			return fds, threads, nil
		}
		t := time.NewTimer(pollEvery)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fds, threads, nil
		}
	}
}
