package harness

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
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
const dialTimeout = 5 * time.Second

// Dial opens a client connection to s.
func (e *Env) Dial(s *Server) (*Client, error) {
	d := net.Dialer{Timeout: dialTimeout}
	conn, err := d.DialContext(e.Ctx, "tcp", s.Addr())
	if err != nil {
		return nil, Fail(Refused, "connect to "+s.Addr(), err.Error(), "a connection",
			"the server stopped listening or its backlog is full")
	}
	c := &Client{conn: conn.(*net.TCPConn), env: e}
	e.conns.Add(1)
	e.mu.Lock()
	e.clients = append(e.clients, c)
	e.mu.Unlock()
	return c, nil
}

func (e *Env) cost() Cost {
	return Cost{Conns: int(e.conns.Load()), Sent: e.sent.Load(), Recv: e.recv.Load()}
}

func (e *Env) closeClients() {
	e.mu.Lock()
	defer e.mu.Unlock()
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

// crashed reports a server that exited while the scenario still needed it.
func (e *Env) crashed() *Failure {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range e.servers {
		if !s.Alive() {
			return Fail(Crash, "server "+s.Addr(), "exit during the scenario ("+exitString(s.status)+")",
				"a server that keeps running", "the server died; the last lines it printed:\n"+lastLines(s.Output(), 10))
		}
	}
	return nil
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
