// Command grade runs the scenarios of a stage against any server command
// that follows the contract in DESIGN.md, whatever language it is written
// in, and says what passed, what failed and what to look at:
//
//	go run ./shared/cmd/grade -stage 2 -- ./my-server
//	go run ./shared/cmd/grade -stage 1 -run half-close -- go run ./01-blocking
//	go run ./shared/cmd/grade -stage 4 -json -- ./my-server > result.json
//	go run ./shared/cmd/grade -list
//
// Stages are cumulative: stage N runs every scenario of stages 1 to N. The
// last line of the step log is "N passed, N failed". The exit status is 0
// when every scenario passed, 1 when one failed, 2 on a usage error and 130
// when interrupted (the server it started is stopped first).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"reactorlab/shared/harness"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const (
	exitPass        = 0
	exitFail        = 1
	exitUsage       = 2
	exitInterrupted = 130 // what a shell reports for a job ended by SIGINT
)

const usageText = `usage: grade -stage N [-json] [-run REGEX] -- SERVER_CMD [ARGS...]
       grade -list

Runs the scenarios of stage N (cumulative: stages 1 to N) against the server
that SERVER_CMD starts. The grader appends -addr 127.0.0.1:0 and scenario
flags (-mode, -max-line) to ARGS, and waits for the ready line
"listening on HOST:PORT" on the server's stdout.

`

// result is one scenario's line in the -json report.
type result struct {
	Name    string  `json:"name"`
	Passed  bool    `json:"passed"`
	Kind    string  `json:"kind,omitempty"`
	Step    string  `json:"step,omitempty"`
	Got     string  `json:"got,omitempty"`
	Want    string  `json:"want,omitempty"`
	Hint    string  `json:"hint,omitempty"`
	Seconds float64 `json:"seconds"`
	Output  string  `json:"output,omitempty"` // the server's last lines, on failure
}

// report is the -json document, one per run, for gradebooks.
type report struct {
	Stage     int      `json:"stage"`
	Command   []string `json:"command"`
	Passed    int      `json:"passed"`
	Failed    int      `json:"failed"`
	Scenarios []result `json:"scenarios"`
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("grade", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fs.PrintDefaults()
	}
	stage := fs.Int("stage", 0, "stage to grade, 1 to "+strconv.Itoa(harness.MaxStage))
	asJSON := fs.Bool("json", false, "print one JSON object instead of the step log (the log goes to stderr)")
	runPattern := fs.String("run", "", "run only the stage's scenarios whose name matches this regexp")
	list := fs.Bool("list", false, "list the stages and their scenarios, then exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitPass
		}
		return exitUsage
	}
	if *list {
		printList(stdout)
		return exitPass
	}

	if *stage == 0 {
		return usageError(stderr, fmt.Sprintf("-stage N is required, N from 1 to %d (see -list)", harness.MaxStage))
	}
	scenarios, err := harness.Stage(*stage)
	if err != nil {
		return usageError(stderr, fmt.Sprintf("-stage %d: want 1 to %d", *stage, harness.MaxStage))
	}
	if *runPattern != "" {
		re, err := regexp.Compile(*runPattern)
		if err != nil {
			return usageError(stderr, fmt.Sprintf("-run: %v", err))
		}
		var kept []harness.Scenario
		for _, s := range scenarios {
			if re.MatchString(s.Name) {
				kept = append(kept, s)
			}
		}
		if len(kept) == 0 {
			return usageError(stderr, fmt.Sprintf("-run %q matches no scenario of stage %d (see -list)", *runPattern, *stage))
		}
		scenarios = kept
	}
	if fs.NArg() == 0 {
		return usageError(stderr, "no server command after the flags (e.g. -- ./my-server)")
	}
	cmd, err := resolve(fs.Args())
	if err != nil {
		return usageError(stderr, err.Error())
	}

	// Ctrl-C must not leave a server behind: the servers run in their own
	// process group, out of reach of the terminal's SIGINT, and only
	// harness.Run stops them. So the signal cancels the context, the
	// running scenario winds down, and Run stops what it started.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// In -json mode stdout carries the document alone; the step log, still
	// useful to whoever watches, goes to stderr.
	logw := stdout
	if *asJSON {
		logw = stderr
	}
	log := &lockedWriter{w: logw}
	defer log.close() // the harness may still forward a late server line
	stopNotice := context.AfterFunc(ctx, func() {
		fmt.Fprintln(log, "[grade] interrupted: stopping the server")
	})
	defer stopNotice()

	rep := report{Stage: *stage, Command: append([]string{cmd.Path}, cmd.Args...)}
	fmt.Fprintf(log, "[grade] stage %d (%d %s) against: %s\n",
		*stage, len(scenarios), plural(len(scenarios), "scenario"), quoteCommand(rep.Command))
	var hung string // the scenario in which the server never got ready
	for _, s := range scenarios {
		if ctx.Err() != nil {
			break
		}
		fmt.Fprintf(log, "[grade] --- %s: %s\n", s.Name, s.What)
		var res result
		if hung != "" {
			res = notRun(s.Name, hung)
		} else {
			r := harness.Run(ctx, s, cmd, harness.Options{
				ServerOutput: log,
				Logf: func(format string, args ...any) {
					fmt.Fprintf(log, "[grade]     %s\n", fmt.Sprintf(format, args...))
				},
			})
			res = toResult(r)
			if r.Failure != nil && r.Failure.Kind == harness.Startup && r.Elapsed > slowStartup && ctx.Err() == nil {
				hung = s.Name
			}
		}
		rep.Scenarios = append(rep.Scenarios, res)
		if res.Passed {
			rep.Passed++
		} else {
			rep.Failed++
		}
		printResult(log, res)
	}
	interrupted := ctx.Err() != nil
	if interrupted {
		fmt.Fprintf(log, "[grade] interrupted after %d of %d %s\n",
			len(rep.Scenarios), len(scenarios), plural(len(scenarios), "scenario"))
	}

	fmt.Fprintf(log, "\n%d passed, %d failed\n", rep.Passed, rep.Failed)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintln(stderr, "grade:", err)
			return exitFail
		}
	}
	switch {
	case interrupted:
		return exitInterrupted
	case rep.Failed > 0:
		return exitFail
	}
	return exitPass
}

func usageError(stderr io.Writer, msg string) int {
	fmt.Fprintf(stderr, "grade: %s\n", msg)
	fmt.Fprintf(stderr, "usage: grade -stage N [-json] [-run REGEX] -- SERVER_CMD [ARGS...]  (or grade -h)\n")
	return exitUsage
}

// resolve turns the command line after "--" into a harness.Command. A bare
// name is looked up in PATH now, so that a typo is one clear error instead
// of the same startup failure in every scenario.
func resolve(argv []string) (harness.Command, error) {
	path := argv[0]
	if !strings.Contains(path, "/") {
		p, err := exec.LookPath(path)
		if err != nil {
			if _, serr := os.Stat(path); serr == nil {
				return harness.Command{}, fmt.Errorf("%q is not in PATH; for the file in this folder say ./%s", path, path)
			}
			return harness.Command{}, fmt.Errorf("server command %q: %v", path, err)
		}
		path = p
	} else if info, err := os.Stat(path); err != nil {
		return harness.Command{}, fmt.Errorf("server command: %v", err)
	} else if info.IsDir() {
		return harness.Command{}, fmt.Errorf("server command %s is a directory; for a Go package say -- go run %s", path, path)
	} else if info.Mode()&0o111 == 0 {
		return harness.Command{}, fmt.Errorf("server command %s is not executable (chmod +x?)", path)
	}
	return harness.Command{Path: path, Args: argv[1:]}, nil
}

// slowStartup is how long a failed start may take before the grader stops
// trying: a server that never prints its ready line costs the harness's
// whole ready timeout, and would cost it again in every scenario.
const slowStartup = 10 * time.Second

// notRun is the verdict for a scenario skipped because the server never got
// ready in an earlier one. It counts as failed: nothing was shown to work.
func notRun(name, hung string) result {
	return result{
		Name: name,
		Kind: string(harness.Startup),
		Step: "not run",
		Got:  "no ready line in scenario " + hung,
		Want: "listening on HOST:PORT",
		Hint: "the server never got ready in " + hung + ", so the later scenarios were not tried; fix the start first",
	}
}

func toResult(r harness.Result) result {
	res := result{
		Name:    r.Scenario,
		Passed:  r.Failure == nil,
		Seconds: math.Round(r.Elapsed.Seconds()*1000) / 1000,
	}
	if f := r.Failure; f != nil {
		res.Kind = string(f.Kind)
		res.Step = f.Step
		res.Got = f.Got
		res.Want = f.Want
		res.Hint = f.Hint
		res.Output = r.Output
	}
	return res
}

func printResult(w io.Writer, r result) {
	if r.Passed {
		fmt.Fprintf(w, "[grade] ✓ %s (%.1fs)\n", r.Name, r.Seconds)
		return
	}
	fmt.Fprintf(w, "[grade] ✗ %s (%.1fs) [%s]\n", r.Name, r.Seconds, r.Kind)
	for _, f := range []struct{ label, text string }{
		{"step", r.Step}, {"got", r.Got}, {"want", r.Want}, {"hint", r.Hint},
	} {
		if f.text == "" {
			continue
		}
		// A hint may carry the server's last lines: keep them indented
		// under it so the eye can skip the whole block.
		lines := strings.Split(strings.TrimRight(f.text, "\n"), "\n")
		fmt.Fprintf(w, "          %-5s %s\n", f.label+":", lines[0])
		for _, l := range lines[1:] {
			fmt.Fprintf(w, "                %s\n", l)
		}
	}
}

// printList shows what each stage adds; stages are cumulative, so stage N
// runs its own scenarios and every earlier stage's.
func printList(w io.Writer) {
	var prev map[string]bool
	for n := 1; n <= harness.MaxStage; n++ {
		all, _ := harness.Stage(n)
		cur := map[string]bool{}
		var added []harness.Scenario
		for _, s := range all {
			cur[s.Name] = true
			if !prev[s.Name] {
				added = append(added, s)
			}
		}
		prev = cur
		fmt.Fprintf(w, "stage %d (%d %s in all):", n, len(all), plural(len(all), "scenario"))
		if len(added) == 0 {
			fmt.Fprintf(w, " nothing new, the same as stage %d\n", n-1)
			continue
		}
		fmt.Fprintln(w)
		for _, s := range added {
			fmt.Fprintf(w, "  %-12s %s\n", s.Name, s.What)
		}
	}
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

func quoteCommand(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$") {
			a = strconv.Quote(a)
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

// lockedWriter serialises the grader's lines and the servers' forwarded
// lines, which arrive from the harness's own goroutines. Once closed it
// drops writes: the harness does not wait for its output copiers, and a
// caller must be free to read what it handed to run once run returns.
type lockedWriter struct {
	mu     sync.Mutex
	w      io.Writer
	closed bool
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return len(p), nil
	}
	return l.w.Write(p)
}

func (l *lockedWriter) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
}
