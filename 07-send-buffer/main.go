//go:build linux

// Command 07-send-buffer is 06's server, in both its models, with a send
// buffer per connection: a reply is written at once when nothing is
// waiting before it, and what the kernel does not take is kept, in order,
// until EPOLLOUT says there is room. No write ever waits, so a client that
// does not read stalls no one. Its buffer is bounded: past -high-water the
// server stops reading that client until it has taken most of its
// replies. And the server closes a connection only once the replies it
// owes are sent: open, flushing, draining, closed.
//
// As in 06, -model loops deals each connection to one of -loops loops,
// which owns it for its whole life, and -model queue is the seed's 7-step
// Reactor: one loop waits, -loops workers read, answer and write.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"runtime"
	rtrace "runtime/trace"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"reactorlab/shared/protocol"
)

// config is what the flags say; the contract keeps them the same in every
// chapter.
type config struct {
	addr    string
	mode    protocol.Mode
	maxLine int
	wakeup  string
	traceTo string // -trace: where to write the execution trace; "" for none
	model   string
	loops   int

	highWater   int
	idleTimeout time.Duration
}

// name prefixes every message and names the flag set.
const name = "07-send-buffer"

// defaultHighWater is -high-water's default: what a connection's send
// buffer may hold before the server stops reading it. A turn's read budget
// in echo mode (readBudget reads of readSize, 1 MiB) fits, so a client
// that sends a burst and reads is never paused; and a thousand clients
// that never read cost at most a few GiB, not all the memory there is.
const defaultHighWater = readBudget * readSize

// trace prints every accept, event, read, write and close when -v is given,
// for live demos. Calls on the hot path (per event, read and write) check
// tracing first: boxing their arguments allocates even when trace discards
// the result, and -v off must cost nothing.
var (
	trace   = log.New(io.Discard, "", log.Lmicroseconds)
	tracing bool
)

// rtracing is -trace's guard, as tracing is -v's: set once, before the
// loops start, while an execution trace (runtime/trace, imported as
// rtrace: trace is -v's) is being written. Off, each region of the loops'
// timeline (see region in loop.go) costs one branch.
var rtracing bool

// traced is -trace's execution trace: its file, and the trace task
// "server", which spans the run and holds every region and hand-off, for
// go tool trace (Go 1.26) draws regions only in a task's timeline: its
// "User-defined tasks", server, then the task's goroutine view.
var traced struct {
	ctx  context.Context
	task *rtrace.Task
	file *os.File
	stop sync.Once
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0) // -h: the flag package has printed the usage
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(2)
	}
	initRuntimePoller()
	if err := startTrace(cfg.traceTo); err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
	srv, err := newServer(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		exit(1)
	}
	// The contract's ready line: harness and grader wait for it.
	fmt.Printf("listening on %s\n", srv.addr)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		trace.Printf("signal %v: stop accepting, %v grace for open connections", sig, grace)
		srv.shutdown()
		// No loop waits for a client in this chapter: by drainStop each
		// has closed its last connection, and serve returns. Should one
		// not, a bug, do not let it hold the process past the contract's
		// 2 s, and do not call that a success either.
		time.AfterFunc(hardStop, func() {
			fmt.Fprintf(os.Stderr, "%s: hard stop %v after the signal; connections abandoned: %d\n",
				name, hardStop, srv.live.Load())
			exit(1)
		})
	}()

	if err := srv.serve(); err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		exit(1)
	}
	// A client that did not read had replies left in its send buffer
	// when shutdown's time ran out: exit 0 would say none was lost.
	if n := srv.abandoned(); n > 0 {
		fmt.Fprintf(os.Stderr, "%s: replies unsent %v after the signal; connections abandoned: %d\n",
			name, drainStop, n)
		exit(1)
	}
	exit(0)
}

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:12345", "listen address; 127.0.0.1:0 picks a free port")
	mode := fs.String("mode", "stamp", "stamp (timestamped reply per line) or echo (raw bytes back)")
	maxLine := fs.Int("max-line", protocol.DefaultMaxLine, "longest line accepted in stamp mode, in bytes")
	verbose := fs.Bool("v", false, "trace every accept, readiness event, read, write and close to stderr")
	wakeup := fs.String("wakeup", "eventfd", "how other goroutines wake the loop: "+strings.Join(wakeupKinds, ", "))
	traceTo := fs.String("trace", "", "write a Go execution trace to `FILE`, with a region for each loop's waits, events and hand-offs (go tool trace FILE)")
	model := fs.String("model", "loops", "loops (each connection owned by one of -loops loops) or queue (one loop, -loops workers: the 7-step Reactor)")
	loops := fs.Int("loops", runtime.NumCPU(), "how many event loops (-model loops) or workers (-model queue)")
	highWater := fs.Int("high-water", defaultHighWater, "stop reading a client whose unsent replies pass this many bytes, until they fall to a quarter")
	idleTimeout := fs.Duration("idle-timeout", 0, "close a connection with no traffic for this long (0: never)")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	m, err := protocol.ParseMode(*mode)
	if err != nil {
		return config{}, err
	}
	if *maxLine < 1 {
		return config{}, fmt.Errorf("-max-line %d: want at least 1", *maxLine)
	}
	if !slices.Contains(wakeupKinds, *wakeup) {
		return config{}, fmt.Errorf("unknown -wakeup %q: want %s", *wakeup, strings.Join(wakeupKinds, ", "))
	}
	if *model != "loops" && *model != "queue" {
		return config{}, fmt.Errorf("unknown -model %q: want loops or queue", *model)
	}
	if *loops < 1 {
		return config{}, fmt.Errorf("-loops %d: want at least 1", *loops)
	}
	if *highWater < 1 {
		return config{}, fmt.Errorf("-high-water %d: want at least 1", *highWater)
	}
	if *idleTimeout < 0 {
		return config{}, fmt.Errorf("-idle-timeout %v: want 0 (never) or more", *idleTimeout)
	}
	if *verbose {
		trace.SetOutput(os.Stderr)
		tracing = true
	}
	return config{addr: *addr, mode: m, maxLine: *maxLine, wakeup: *wakeup, traceTo: *traceTo, model: *model, loops: *loops,
		highWater: *highWater, idleTimeout: *idleTimeout}, nil
}

// startTrace starts the execution trace into path (-trace), or nothing for
// "". Before the server starts: the loops' goroutines are in it from their
// first region.
func startTrace(path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("-trace: %w", err)
	}
	if err := rtrace.Start(f); err != nil {
		f.Close()
		return fmt.Errorf("-trace %s: %w", path, err)
	}
	traced.ctx, traced.task = rtrace.NewTask(context.Background(), "server")
	traced.file, rtracing = f, true
	return nil
}

// exit is os.Exit for every exit once the trace may have started. It
// stops the trace first, once (main and the hard stop's timer may race
// here), with a last event that says how the server ended: the runtime
// writes a trace's last part only when it stops, and os.Exit runs no
// deferred call, so without this the file would end up to a second
// before the exit, and a short run's would be empty.
func exit(code int) {
	traced.stop.Do(func() {
		if traced.file == nil {
			return
		}
		rtrace.Log(traced.ctx, "exit", fmt.Sprintf("status %d", code))
		traced.task.End()
		rtrace.Stop()
		if err := traced.file.Close(); err != nil {
			fmt.Fprintln(os.Stderr, name+": -trace:", err)
		}
	})
	os.Exit(code)
}
