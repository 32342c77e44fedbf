// Command compare runs servers under the same echo load, interleaved
// round by round (A B C A B C ...), each a fresh process per round, and
// reports per server the median msgs/s, the median p99, and the server's
// own CPU time per echoed message, with ratios to a baseline, as a
// Markdown table and optionally an SVG chart.
//
//	go run ./shared/peers/cmd/compare -baseline stdlib 04-epoll-et stdlib gnet c-epoll
//	go run ./shared/peers/cmd/compare -pin -rounds 5 -o results.md -svg results.svg \
//	    04-epoll-et '01-blocking -model thread' 'gnet -loops 1' stdlib
//
// Each argument is one server: a chapter directory (built with go build),
// a peer (stdlib, gnet: built from this module), c-epoll (a single-threaded
// level-triggered epoll echo server in C, built with cc; skipped with a
// message where there is no C compiler), or the path of any executable
// that follows DESIGN.md's contract. Words after the first are the
// server's flags; the whole argument is its label. Every server runs with
// -mode echo and -addr 127.0.0.1:0.
//
// Interleaving spreads whatever else the machine does over every server
// alike; the median of the rounds ignores one disturbed round. -pin puts
// each server on one CPU and the load generator on another
// (sched_setaffinity; the server through taskset), so neither steals the
// other's core: the figure of a single-threaded server, and of a server
// that cannot hide its cost behind a second core.
//
// The exit status is 0 when every round ran without error, 1 when a build,
// a start or a round failed, 2 on a usage error and 130 when interrupted.
package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"reactorlab/shared/harness"
	"reactorlab/shared/load"
)

const (
	exitOK          = 0
	exitFail        = 1
	exitUsage       = 2
	exitInterrupted = 130
)

//go:embed c/epoll_echo.c
var cSource []byte

// cName is the C server's name on the command line.
const cName = "c-epoll"

// peers are the servers of this module, by name.
var peers = map[string]string{
	"stdlib": "reactorlab/shared/peers/cmd/stdlib",
	"gnet":   "reactorlab/shared/peers/cmd/gnet",
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usageText = `usage: compare [flags] SERVER...

SERVER is a chapter directory (04-epoll-et), a peer (stdlib, gnet), c-epoll,
or an executable; quote it with its flags: '01-blocking -model thread'.

`

type options struct {
	load     load.Config
	warmup   time.Duration
	rounds   int
	pin      bool
	baseline string
	out      string
	svg      string
	servers  []spec
}

// spec is one server as given on the command line.
type spec struct {
	label string   // the argument as given
	what  string   // its first word: a directory, a peer, c-epoll or a path
	flags []string // the words after it
}

func parse(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fs.PrintDefaults()
	}
	var o options
	fs.IntVar(&o.load.Conns, "conns", 100, "connections per run")
	fs.IntVar(&o.load.Size, "size", 64, "bytes per message")
	fs.IntVar(&o.load.Depth, "depth", 1, "messages in flight per connection: 1 is ping-pong")
	fs.DurationVar(&o.load.Duration, "duration", 5*time.Second, "measured time per server per round")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured load before each measured run")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; each runs every server once, in the order given")
	fs.BoolVar(&o.pin, "pin", false, "server on one CPU, load generator on another")
	fs.StringVar(&o.baseline, "baseline", "", "label of the server the ratios are to (default: the first)")
	fs.StringVar(&o.out, "o", "", "write the Markdown table to this file instead of stdout")
	fs.StringVar(&o.svg, "svg", "", "write a chart of msgs/s and CPU per message to this SVG file")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case o.rounds < 1 || o.rounds > 100:
		return o, fmt.Errorf("-rounds %d: want 1 to 100", o.rounds)
	case o.warmup < 0 || o.warmup > time.Minute:
		return o, fmt.Errorf("-warmup %v: want 0 to 1m", o.warmup)
	case o.load.Duration == 0:
		return o, errors.New("-duration 0: each run needs a measured time")
	case fs.NArg() == 0:
		return o, errors.New("no servers: name at least one (e.g. 04-epoll-et stdlib)")
	}
	o.load.Addr = "127.0.0.1:1" // for Check only: each run has its own port
	if err := o.load.Check(); err != nil {
		return o, err
	}
	for _, a := range fs.Args() {
		words := strings.Fields(a)
		if len(words) == 0 {
			return o, fmt.Errorf("empty server argument %q", a)
		}
		label := strings.Join(words, " ")
		if slices.ContainsFunc(o.servers, func(s spec) bool { return s.label == label }) {
			return o, fmt.Errorf("server %q named twice", label)
		}
		o.servers = append(o.servers, spec{label: label, what: words[0], flags: words[1:]})
	}
	if o.baseline == "" {
		o.baseline = o.servers[0].label
	}
	if !slices.ContainsFunc(o.servers, func(s spec) bool { return s.label == o.baseline }) {
		return o, fmt.Errorf("-baseline %q is not one of the servers", o.baseline)
	}
	if o.pin {
		if _, err := pinCPUs(); err != nil {
			return o, err
		}
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "compare:", err)
		return exitUsage
	}
	dir, err := os.MkdirTemp("", "reactorlab-compare-")
	if err != nil {
		fmt.Fprintln(stderr, "compare:", err)
		return exitFail
	}
	defer os.RemoveAll(dir)

	// Build everything first: a build started after pinning would run on
	// the load generator's one CPU.
	var servers []*server
	var skippedNotes []string
	for i, sp := range o.servers {
		cmd, err := build(ctx, sp, filepath.Join(dir, fmt.Sprintf("server%d", i)))
		var skip skipped
		switch {
		case errors.As(err, &skip):
			fmt.Fprintf(stderr, "compare: %s: skipped: %s\n", sp.label, skip.why)
			skippedNotes = append(skippedNotes, fmt.Sprintf("`%s` (%s)", sp.label, skip.why))
			if sp.label == o.baseline {
				fmt.Fprintln(stderr, "compare: the baseline was skipped")
				return exitFail
			}
			continue
		case err != nil:
			fmt.Fprintf(stderr, "compare: %s: %v\n", sp.label, err)
			return exitFail
		}
		servers = append(servers, &server{spec: sp, cmd: cmd})
	}

	var cpus [2]int
	if o.pin {
		cpus, _ = pinCPUs()
		if err := pinSelf(cpus[1]); err != nil {
			fmt.Fprintln(stderr, "compare:", err)
			return exitFail
		}
		for _, s := range servers {
			s.cmd = harness.Command{Path: "taskset", Args: append([]string{"-c", fmt.Sprint(cpus[0]), s.cmd.Path}, s.cmd.Args...)}
		}
	}

	failed := false
	for round := 1; round <= o.rounds; round++ {
		for _, s := range servers {
			m, err := measure(ctx, s.cmd, o)
			if ctx.Err() != nil {
				fmt.Fprintln(stderr, "compare: interrupted")
				return exitInterrupted
			}
			if err != nil {
				fmt.Fprintf(stderr, "round %d/%d  %-24s  failed: %v\n", round, o.rounds, s.label, err)
				failed = true
				continue
			}
			s.runs = append(s.runs, m)
			fmt.Fprintf(stderr, "round %d/%d  %-24s  %s\n", round, o.rounds, s.label, m)
			if m.errors > 0 {
				fmt.Fprintf(stderr, "  %s\n", m.firstErrors)
				failed = true
			}
		}
	}

	c := conditions{load: o.load, warmup: o.warmup, rounds: o.rounds, pinned: o.pin, cpus: cpus, baseline: o.baseline, args: args, skipped: skippedNotes}
	rows := summarize(servers, o.baseline)
	table := markdown(c, rows)
	if o.out == "" {
		fmt.Fprint(stdout, table)
	} else if err := os.WriteFile(o.out, []byte(table), 0o644); err != nil {
		fmt.Fprintln(stderr, "compare:", err)
		return exitFail
	} else {
		fmt.Fprintf(stderr, "compare: wrote %s\n", o.out)
	}
	if o.svg != "" {
		if err := chart(o.svg, c, rows); err != nil {
			fmt.Fprintln(stderr, "compare:", err)
			return exitFail
		}
		fmt.Fprintf(stderr, "compare: wrote %s\n", o.svg)
	}
	if failed {
		return exitFail
	}
	return exitOK
}

// server is one server under comparison and what its rounds measured.
type server struct {
	spec
	cmd  harness.Command
	runs []measurement
}

// measurement is one round of one server.
type measurement struct {
	msgsPerSec  float64
	p99         time.Duration
	cpuPerMsg   time.Duration // the server's utime+stime over the measured run, per message
	errors      int64
	firstErrors string
}

func (m measurement) String() string {
	return fmt.Sprintf("%9.0f msgs/s  p99 %-9v  cpu %v/msg  errors %d",
		m.msgsPerSec, m.p99.Round(time.Microsecond), m.cpuPerMsg.Round(10*time.Nanosecond), m.errors)
}

// measure starts a fresh server, warms it up, runs the measured load, reads
// the CPU the server used during it, and stops the server.
func measure(ctx context.Context, cmd harness.Command, o options) (measurement, error) {
	s, err := harness.Start(ctx, cmd, nil, "-mode", "echo")
	if err != nil {
		return measurement{}, err
	}
	defer s.Stop()
	cfg := o.load
	cfg.Addr = s.Addr()
	if o.warmup > 0 {
		w := cfg
		w.Duration = o.warmup
		if _, err := load.Run(ctx, w); err != nil {
			return measurement{}, fmt.Errorf("warm-up: %w", err)
		}
	}
	cpu0, err := s.CPU()
	if err != nil {
		return measurement{}, err
	}
	res, err := load.Run(ctx, cfg)
	if err != nil {
		return measurement{}, err
	}
	cpu1, err := s.CPU()
	if err != nil {
		return measurement{}, fmt.Errorf("after the run: %w (server output: %s)", err, s.Output())
	}
	m := measurement{msgsPerSec: res.MsgsPerSec(), p99: res.P99, errors: res.Errors,
		firstErrors: strings.Join(res.FirstErrors, "; ")}
	if res.Msgs > 0 {
		m.cpuPerMsg = (cpu1 - cpu0) / time.Duration(res.Msgs)
	}
	return m, nil
}

// skipped is a server that cannot run on this machine (c-epoll with no C
// compiler): reported, not fatal.
type skipped struct{ why string }

func (s skipped) Error() string { return s.why }

// build turns a spec into a command, building it into bin if needed.
func build(ctx context.Context, sp spec, bin string) (harness.Command, error) {
	var cmd *exec.Cmd
	switch {
	case sp.what == cName:
		cc, err := exec.LookPath("cc")
		if err != nil {
			return harness.Command{}, skipped{why: "no C compiler (cc) on PATH"}
		}
		src := bin + ".c"
		if err := os.WriteFile(src, cSource, 0o644); err != nil {
			return harness.Command{}, err
		}
		cmd = exec.CommandContext(ctx, cc, "-O2", "-o", bin, src)
	case peers[sp.what] != "":
		cmd = exec.CommandContext(ctx, "go", "build", "-o", bin, peers[sp.what])
	case isDir(sp.what):
		cmd = exec.CommandContext(ctx, "go", "build", "-o", bin, "./"+filepath.Clean(sp.what))
	case isExecutable(sp.what):
		path, err := filepath.Abs(sp.what)
		return harness.Command{Path: path, Args: sp.flags}, err
	default:
		return harness.Command{}, fmt.Errorf("%q is not a directory, a peer (stdlib, gnet), %s or an executable", sp.what, cName)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return harness.Command{}, fmt.Errorf("build: %v\n%s", err, out)
	}
	return harness.Command{Path: bin, Args: sp.flags}, nil
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// pinCPUs picks the server's CPU and the load generator's: the first two
// this process may run on.
func pinCPUs() ([2]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return [2]int{}, os.NewSyscallError("sched_getaffinity", err)
	}
	var cpus []int
	for i := 0; i < 1024 && len(cpus) < 2; i++ {
		if set.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	if len(cpus) < 2 {
		return [2]int{}, fmt.Errorf("-pin needs two CPUs, this process may use %d", set.Count())
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return [2]int{}, errors.New("-pin needs taskset (util-linux) to start servers on their CPU")
	}
	return [2]int{cpus[0], cpus[1]}, nil
}

// pinSelf puts every thread of this process on cpu, and keeps the Go
// scheduler to one P: threads created later inherit the mask of the thread
// that creates them, and all of those are pinned now.
func pinSelf(cpu int) error {
	runtime.GOMAXPROCS(1)
	var set unix.CPUSet
	set.Set(cpu)
	// Twice: a thread created during the first pass, from a thread not
	// yet pinned, is caught by the second.
	for range 2 {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		for _, t := range tasks {
			var tid int
			fmt.Sscan(t.Name(), &tid)
			if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
				return os.NewSyscallError("sched_setaffinity", err)
			}
		}
	}
	return nil
}
