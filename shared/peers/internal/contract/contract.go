// Package contract is what the peers (cmd/stdlib, cmd/gnet) share of the
// process every chapter is (DESIGN.md): the flags, the ready line, the
// shutdown on SIGINT or SIGTERM with its timings, the accept loop's backoff
// and the exit status. The chapters repeat this code on purpose, each
// folder a snapshot; the peers are not lessons, so they keep one copy, and
// each main.go holds only its engine.
package contract

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"reactorlab/shared/protocol"
)

// The contract's shutdown, timed as in the chapters: Grace for reading and
// answering, then every connection flushes and drains until DrainStop, and
// the process is gone at HardStop, before the contract's 2 s.
const (
	Grace     = 1 * time.Second
	DrainStop = 1600 * time.Millisecond
	HardStop  = 1800 * time.Millisecond
)

// LingerTimeout is how long a draining connection waits for its client to
// close after the server's FIN: long enough for a client that reads to take
// the replies in flight and see EOF.
const LingerTimeout = 2 * time.Second

// Accept backs off after a failure (EMFILE under a low fd limit): the
// connection it could not take keeps the listener ready, so an immediate
// retry would spin. The timer also notices fds freed elsewhere.
const (
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = time.Second
)

// Trace is the peer's -v log; NewFlags names it after the peer.
var Trace = log.New(io.Discard, "", log.Lmicroseconds)

// Config is what the contract's flags ask of a peer.
type Config struct {
	Addr    string
	Mode    protocol.Mode
	MaxLine int
}

// Flags are the contract's flags; a peer adds its own to FlagSet before
// Parse.
type Flags struct {
	*flag.FlagSet
	addr, mode *string
	maxLine    *int
	verbose    *bool
}

// NewFlags defines the contract's flags for the peer called name; verbose
// is -v's usage, which says what that peer traces.
func NewFlags(name, verbose string) *Flags {
	Trace.SetPrefix(name + ": ")
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	return &Flags{
		FlagSet: fs,
		addr:    fs.String("addr", "127.0.0.1:12345", "listen address; 127.0.0.1:0 picks a free port"),
		mode:    fs.String("mode", "stamp", "stamp (timestamped reply per line) or echo (raw bytes back)"),
		maxLine: fs.Int("max-line", protocol.DefaultMaxLine, "longest line accepted in stamp mode, in bytes"),
		verbose: fs.Bool("v", false, verbose),
	}
}

// Parse parses args and checks the contract's flags; -v turns Trace on.
func (f *Flags) Parse(args []string) (Config, error) {
	if err := f.FlagSet.Parse(args); err != nil {
		return Config{}, err
	}
	if f.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q", f.Arg(0))
	}
	m, err := protocol.ParseMode(*f.mode)
	if err != nil {
		return Config{}, err
	}
	if *f.maxLine < 1 {
		return Config{}, fmt.Errorf("-max-line %d: want at least 1", *f.maxLine)
	}
	if *f.verbose {
		Trace.SetOutput(os.Stderr)
	}
	return Config{Addr: *f.addr, Mode: m, MaxLine: *f.maxLine}, nil
}

// ExitIfBadFlags ends the process when parsing the flags failed: status 0
// for -h (the flag package has printed the usage), 2 for anything else.
func ExitIfBadFlags(name string, err error) {
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(2)
	}
}

// ExitIf ends the process with status 1 when the server could not start.
func ExitIf(name string, err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}

// An Engine is one peer's way of serving connections.
type Engine interface {
	// Take serves a connection the accept loop accepted, without
	// blocking the loop.
	Take(c net.Conn)
	// Shutdown runs once, on the signal at now: it closes the listener,
	// which ends the accept loop, and starts the grace.
	Shutdown(now time.Time)
	// Wait returns once every connection is closed, or at hardStop, with
	// the number of connections abandoned with replies owed.
	Wait(hardStop time.Time) int
}

// Run is the contract's process around e: the ready line, the accept loop
// on ln until SIGINT or SIGTERM, then e's shutdown, and the exit status:
// 1, with a line on stderr, when replies were abandoned; else Run returns
// and main ends with 0.
func Run(name string, ln net.Listener, e Engine) {
	fmt.Printf("listening on %s\n", ln.Addr())

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	stopped := make(chan time.Time, 1)
	go func() {
		sig := <-sigs
		now := time.Now()
		Trace.Printf("signal %v: stop accepting, %v grace for open connections", sig, Grace)
		e.Shutdown(now)
		stopped <- now
	}()

	acceptLoop(ln, e)
	signalled := <-stopped
	if n := e.Wait(signalled.Add(HardStop)); n > 0 {
		fmt.Fprintf(os.Stderr, "%s: stopped %v after the signal; connections abandoned with replies owed: %d\n",
			name, HardStop, n)
		os.Exit(1)
	}
	Trace.Printf("every connection closed: exit 0")
}

// acceptLoop hands every connection to e until the listener is closed.
func acceptLoop(ln net.Listener, e Engine) {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		switch {
		case err == nil:
			backoff = 0
		case errors.Is(err, net.ErrClosed):
			return
		default:
			backoff = min(max(2*backoff, minAcceptBackoff), maxAcceptBackoff)
			Trace.Printf("accept: %v; retry in %v", err, backoff)
			time.Sleep(backoff) // this goroutine has nothing else to do
			continue
		}
		e.Take(c)
	}
}
