//go:build linux

// Command 02-select-poll serves every client from one thread that asks the
// kernel which sockets are ready, with select(2) or poll(2) (-poller).
// Where 01 gave each client a thread blocked in read, or served one client
// at a time, here one loop waits for all of them at once and reads only
// from the sockets the kernel says are ready.
//
// Neither call remembers anything between calls: every wait hands the
// kernel the whole set of fds again (a bitmap for select, an array for
// poll), the kernel checks each one, and the loop scans the whole set on
// return to find the few that are ready. That is O(open connections) per
// wait, however few of them are active, and select cannot even name an fd
// past 1023 (FD_SETSIZE). Chapter 03 keeps the set in the kernel with epoll
// and gets back only the ready fds. Writes still block, as in 01.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
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
	poller  string
}

// name prefixes every message and names the flag set.
const name = "02-select-poll"

// trace prints every accept, event, read, write and close when -v is given,
// for live demos. Calls on the hot path (per event, read and write) check
// tracing first: boxing their arguments allocates even when trace discards
// the result, and -v off must cost nothing.
var (
	trace   = log.New(io.Discard, "", log.Lmicroseconds)
	tracing bool
)

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
	srv, err := newServer(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
	// The contract's ready line: harness and grader wait for it.
	fmt.Printf("listening on %s\n", srv.addr)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		trace.Printf("signal %v: stop accepting, %v grace for open connections", sig, grace)
		srv.shutdown()
		// The loop can be stuck writing to a client that does not read
		// (this chapter's known limit, `slow-reader`), or, with select,
		// hear of the signal too late, asleep with its listener out of the
		// set after EMFILE (see waitSelect): do not let it hold the
		// process past the contract's 2 s, and do not call that a success
		// either.
		time.AfterFunc(hardStop, func() {
			fmt.Fprintf(os.Stderr, "%s: hard stop %v after the signal; connections abandoned: %d\n",
				name, hardStop, srv.live.Load())
			os.Exit(1)
		})
	}()

	if err := srv.serve(); err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
	if srv.refused > 0 {
		fmt.Fprintf(os.Stderr, "%s: refused %d connections whose fd was past FD_SETSIZE (%d)\n",
			name, srv.refused, fdSetSize)
	}
}

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:12345", "listen address; 127.0.0.1:0 picks a free port")
	mode := fs.String("mode", "stamp", "stamp (timestamped reply per line) or echo (raw bytes back)")
	maxLine := fs.Int("max-line", protocol.DefaultMaxLine, "longest line accepted in stamp mode, in bytes")
	verbose := fs.Bool("v", false, "trace every accept, readiness event, read, write and close to stderr")
	poller := fs.String("poller", "poll", "poll (an array of any fds) or select (a bitmap of fds 0 to 1023)")
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
	if *poller != "select" && *poller != "poll" {
		return config{}, fmt.Errorf("unknown -poller %q: want select or poll", *poller)
	}
	if *verbose {
		trace.SetOutput(os.Stderr)
		tracing = true
	}
	return config{addr: *addr, mode: m, maxLine: *maxLine, poller: *poller}, nil
}
