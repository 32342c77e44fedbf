// Command load is the lab's load generator: echo traffic against a server
// in -mode echo, over N connections, ping-pong or pipelined, every echoed
// byte checked, on loopback only.
//
//	go run ./shared/cmd/load -addr 127.0.0.1:12345 -conns 100 -size 64 -duration 10s
//	go run ./shared/cmd/load -conns 50 -depth 16 -count 1000000 -json
//	go run ./shared/cmd/load -idle 10000 -size 64       # hold 10,000 connections
//
// On a terminal it prints one status line a second (connections, msgs/s,
// p50, p99, errors), then a summary: msgs/s, MB/s, p50, p99, p99.9 and
// errors. -json prints one JSON object instead. -idle N opens N
// connections, echoes one message on each, prints "holding N connections"
// and holds them until Ctrl-C or -duration.
//
// The exit status is 0 after a clean run, 1 when a connection failed or the
// run could not start, 2 on a usage error, 130 when Ctrl-C cut a timed run
// short (its summary is still printed; for -idle, Ctrl-C is the normal end
// and exits 0).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"reactorlab/shared/load"
)

const (
	exitOK          = 0
	exitFail        = 1
	exitUsage       = 2
	exitInterrupted = 130 // what a shell reports for a job ended by SIGINT
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, isTerminal(os.Stdout))
	stop()
	os.Exit(code)
}

// isTerminal reports whether f is a terminal: the live status line
// rewrites itself with \r, which only a terminal shows as one line.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

const usageText = `usage: load [flags]              echo load: -conns, -depth, -size, -duration or -count
       load -idle N [flags]     hold N connections, each echoed once, until Ctrl-C or -duration

Against a server in -mode echo on this machine (127.0.0.0/8, ::1, localhost).

`

// options are the parsed flags.
type options struct {
	cfg    load.Config
	idle   bool
	asJSON bool
}

func parse(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fs.PrintDefaults()
	}
	var o options
	fs.StringVar(&o.cfg.Addr, "addr", "127.0.0.1:12345", "server address, on loopback")
	fs.IntVar(&o.cfg.Conns, "conns", 50, "connections, all opened before the clock starts")
	fs.IntVar(&o.cfg.Depth, "depth", 1, "messages in flight per connection: 1 is ping-pong, K > 1 pipelines")
	fs.IntVar(&o.cfg.Size, "size", 64, "bytes per message")
	fs.DurationVar(&o.cfg.Duration, "duration", 10*time.Second, "how long to send (with -idle: how long to hold; default until Ctrl-C)")
	fs.Int64Var(&o.cfg.Count, "count", 0, "stop after this many messages in all (0: only -duration stops)")
	idle := fs.Int("idle", 0, "hold this many connections, each echoed once, instead of sending load")
	fs.BoolVar(&o.asJSON, "json", false, "print one JSON object instead of the summary")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q (flags only)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["count"] && !set["duration"] {
		o.cfg.Duration = 0 // a fixed count runs to its end
	}
	if set["idle"] {
		if set["conns"] || set["depth"] || set["count"] {
			return o, errors.New("-idle N sets the number of connections and sends one message on each: " +
				"it takes no -conns, -depth or -count")
		}
		if *idle < 1 || *idle > load.MaxConns {
			return o, fmt.Errorf("-idle %d: want 1 to %d connections", *idle, load.MaxConns)
		}
		o.idle, o.cfg.Idle, o.cfg.Conns = true, true, *idle
		if !set["duration"] {
			o.cfg.Duration = 0 // until Ctrl-C
		}
	}
	if err := o.cfg.Check(); err != nil {
		return o, err
	}
	// Refused here, as a usage error, before anything is dialled.
	_, err := load.Loopback(context.Background(), o.cfg.Addr)
	return o, err
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, terminal bool) int {
	o, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "load:", err)
		return exitUsage
	}
	live := terminal && !o.asJSON
	if live {
		o.cfg.Tick = func(s load.Status) { fmt.Fprint(stdout, "\r\x1b[K"+statusLine(s, o.idle)) }
	}

	var res load.Result
	if o.idle {
		res, err = load.Hold(ctx, o.cfg, func(r load.Result) {
			w := stdout
			if o.asJSON {
				w = stderr // stdout carries the JSON document alone
			}
			fmt.Fprintf(w, "holding %d connections (each echoed once: p50 %s, p99 %s); Ctrl-C to stop\n",
				r.Conns, dur(r.P50), dur(r.P99))
		})
	} else {
		res, err = load.Run(ctx, o.cfg)
	}
	if live {
		fmt.Fprint(stdout, "\r\x1b[K")
	}
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(stderr, "load: interrupted before the run started")
			return exitInterrupted
		}
		fmt.Fprintln(stderr, "load:", err)
		return exitFail
	}

	if o.asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(report(o, res))
	} else {
		summary(stdout, o, res)
	}
	switch {
	case res.Errors > 0:
		return exitFail
	case res.Interrupted && !o.idle:
		return exitInterrupted
	}
	return exitOK
}

// statusLine is the live line, wide-spaced to read from the back of a room.
func statusLine(s load.Status, idle bool) string {
	if idle {
		return fmt.Sprintf("%5s   %s conns held   %s errors", clock(s.Elapsed), thousands(int64(s.Conns)), thousands(s.Errors))
	}
	return fmt.Sprintf("%5s   %s conns   %s msgs/s   p50 %s   p99 %s   %s errors",
		clock(s.Elapsed), thousands(int64(s.Conns)), thousands(int64(s.Rate)), dur(s.P50), dur(s.P99), thousands(s.Errors))
}

func summary(w io.Writer, o options, r load.Result) {
	shape := "ping-pong"
	switch {
	case o.idle:
		shape = "idle, one echo each"
	case r.Depth > 1:
		shape = fmt.Sprintf("pipelined, depth %d", r.Depth)
	}
	fmt.Fprintf(w, "%s: %s conns, %s B messages, %s, %.1f s", o.cfg.Addr, thousands(int64(r.Conns)), thousands(int64(r.Size)), shape, r.Elapsed.Seconds())
	if r.Interrupted && !o.idle {
		fmt.Fprint(w, " (interrupted)")
	}
	fmt.Fprintln(w)
	if !o.idle {
		fmt.Fprintf(w, "  msgs/s   %s\n", thousands(int64(r.MsgsPerSec()+0.5)))
		fmt.Fprintf(w, "  MB/s     %.1f\n", r.MBPerSec())
	}
	fmt.Fprintf(w, "  msgs     %s\n", thousands(r.Msgs))
	fmt.Fprintf(w, "  p50      %s\n", dur(r.P50))
	fmt.Fprintf(w, "  p99      %s\n", dur(r.P99))
	fmt.Fprintf(w, "  p99.9    %s\n", dur(r.P999))
	fmt.Fprintf(w, "  errors   %s\n", thousands(r.Errors))
	for _, e := range r.FirstErrors {
		fmt.Fprintf(w, "    %s\n", e)
	}
}

// jsonReport is the -json document; latencies in microseconds.
type jsonReport struct {
	Addr        string   `json:"addr"`
	Mode        string   `json:"mode"` // "ping-pong", "pipelined" or "idle"
	Conns       int      `json:"conns"`
	Depth       int      `json:"depth"`
	Size        int      `json:"size"`
	Seconds     float64  `json:"seconds"`
	Msgs        int64    `json:"msgs"`
	MsgsPerSec  float64  `json:"msgs_per_s"`
	MBPerSec    float64  `json:"mb_per_s"`
	P50us       float64  `json:"p50_us"`
	P99us       float64  `json:"p99_us"`
	P999us      float64  `json:"p999_us"`
	Errors      int64    `json:"errors"`
	FirstErrors []string `json:"first_errors,omitempty"`
	Interrupted bool     `json:"interrupted"`
}

func report(o options, r load.Result) jsonReport {
	mode := "ping-pong"
	switch {
	case o.idle:
		mode = "idle"
	case r.Depth > 1:
		mode = "pipelined"
	}
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	return jsonReport{
		Addr: o.cfg.Addr, Mode: mode, Conns: r.Conns, Depth: r.Depth, Size: r.Size,
		Seconds: r.Elapsed.Seconds(), Msgs: r.Msgs, MsgsPerSec: r.MsgsPerSec(), MBPerSec: r.MBPerSec(),
		P50us: us(r.P50), P99us: us(r.P99), P999us: us(r.P999),
		Errors: r.Errors, FirstErrors: r.FirstErrors, Interrupted: r.Interrupted,
	}
}

// dur prints a latency with three significant figures: 87.4µs, 1.84ms.
func dur(d time.Duration) string {
	switch {
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d.Nanoseconds())
	case d < time.Millisecond:
		return sig3(float64(d)/1e3) + "µs"
	case d < time.Second:
		return sig3(float64(d)/1e6) + "ms"
	}
	return sig3(d.Seconds()) + "s"
}

func sig3(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// clock prints elapsed time as m:ss.
func clock(d time.Duration) string {
	s := int(d.Round(time.Second).Seconds())
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}

// thousands prints n with commas: 152,340.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
