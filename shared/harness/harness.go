// Package harness runs the named scenarios of DESIGN.md against a server as
// a black box: it starts the server as a child process with
// -addr 127.0.0.1:0, waits for its ready line, talks TCP with a deadline on
// every read and write, reads /proc for fds, CPU and memory, sends signals,
// and always stops what it started.
//
// The same scenarios, by the same names, back every chapter's go test (with
// the chapter's declared expectations), the grader (cmd/grade) and the
// capability matrix in the top-level README.
package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Kind names how a scenario failed. A chapter's known limitation is declared
// as the Kind it must show, so a chapter that fails for another reason (a
// crash where a stall was expected) still fails its test.
type Kind string

const (
	Startup Kind = "startup" // no ready line, or a wrong one
	Wrong   Kind = "wrong"   // bytes arrived, but not the bytes owed
	Stall   Kind = "stall"   // a reply owed did not come in time; the server still runs
	Refused Kind = "refused" // the server closed or reset a connection it should have served
	Crash   Kind = "crash"   // the server process exited during the scenario
	Leak    Kind = "leak"    // fds or memory not given back
	Spin    Kind = "spin"    // CPU burned or wakeups made with nothing to do
	Exit    Kind = "exit"    // wrong exit status, or too slow to exit
)

// Failure is a scenario's verdict when it did not pass. Got and Want carry
// concrete values; Hint says what is most likely wrong in the server, in
// words a student can act on.
type Failure struct {
	Kind Kind
	Step string // what the harness was checking
	Got  string
	Want string
	Hint string
}

func (f *Failure) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s [%s]", f.Step, f.Kind)
	if f.Got != "" || f.Want != "" {
		fmt.Fprintf(&b, ": got %s, want %s", f.Got, f.Want)
	}
	return b.String()
}

// Fail builds a *Failure; scenarios return it as their error.
func Fail(kind Kind, step, got, want, hint string) *Failure {
	return &Failure{Kind: kind, Step: step, Got: got, Want: want, Hint: hint}
}

// AsFailure returns err as a *Failure, wrapping any other error as Wrong so
// that every verdict has a kind.
func AsFailure(err error) *Failure {
	if err == nil {
		return nil
	}
	var f *Failure
	if errors.As(err, &f) {
		return f
	}
	return &Failure{Kind: Wrong, Step: err.Error()}
}

// Scenario is one named check from DESIGN.md.
type Scenario struct {
	Name  string
	Stage int    // the grader's stage that first requires it (see table.go)
	What  string // one line: what passing means, as DESIGN.md says it
	Run   func(e *Env) error
}

// scenarioTimeout bounds every scenario, so a hung server fails one
// scenario instead of the whole test binary's timeout. It is twice
// readyTimeout, so that a server slow to start (`go run` compiling first)
// fails as a startup with its own hint, and still has time to run.
var scenarioTimeout = scaled(90 * time.Second)

// Scenarios returns every scenario, in DESIGN.md's order.
func Scenarios() []Scenario { return append([]Scenario(nil), table...) }

// Find returns the scenario called name.
func Find(name string) (Scenario, bool) {
	for _, s := range table {
		if s.Name == name {
			return s, true
		}
	}
	return Scenario{}, false
}

// Cost is what a scenario spent, for the one-line report after it.
type Cost struct {
	Conns int   // connections opened
	Sent  int64 // bytes written by clients
	Recv  int64 // bytes read by clients
}

func (c Cost) String() string {
	return fmt.Sprintf("%5d conns %10s sent %10s recv", c.Conns, sizeString(c.Sent), sizeString(c.Recv))
}

func sizeString(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// Result is one scenario's outcome.
type Result struct {
	Scenario string
	Failure  *Failure // nil when it passed
	Elapsed  time.Duration
	Cost     Cost
	Output   string // the tail of what the servers printed, for failures
}

// Options tune a run; the zero value is fine.
type Options struct {
	// ServerOutput receives every line the servers print after their ready
	// line, already prefixed; nil keeps only a tail for failure reports.
	ServerOutput io.Writer
	// Logf receives progress lines from scenarios; nil drops them.
	Logf func(format string, args ...any)
}

// Run runs one scenario against cmd, stops every server and closes every
// connection it opened, and returns the verdict.
func Run(ctx context.Context, s Scenario, cmd Command, opts Options) Result {
	ctx, cancel := context.WithTimeout(ctx, scenarioTimeout)
	defer cancel()
	e := newEnv(ctx, cmd, opts)
	// Ctrl-C or the timeout closes every client at once: a scenario blocked
	// reading returns now, not at its read deadline.
	stopClosing := context.AfterFunc(ctx, e.closeClients)
	defer stopClosing()
	start := time.Now()
	err := runGuarded(s, e)
	e.closeClients()
	f := AsFailure(err)
	if crashed := e.crashed(); crashed != nil && (f == nil || f.Kind != Exit) {
		f = crashed // a dead server explains every later symptom
	}
	if ctx.Err() != nil && (f == nil || f.Kind != Crash && f.Kind != Startup) {
		// Whatever the scenario saw after its clients were closed under it
		// says nothing about the server.
		got := "still running after "
		if errors.Is(ctx.Err(), context.Canceled) {
			got = "interrupted after "
		}
		f = Fail(Stall, "scenario", got+time.Since(start).Round(100*time.Millisecond).String(), "done", "")
	}
	if f == nil {
		f = e.checkLeaks()
	}
	e.stopServers()
	return Result{
		Scenario: s.Name,
		Failure:  f,
		Elapsed:  time.Since(start),
		Cost:     e.cost(),
		Output:   e.outputTail(),
	}
}

func runGuarded(s Scenario, e *Env) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("harness bug in scenario %s: %v", s.Name, r)
		}
	}()
	return s.Run(e)
}
