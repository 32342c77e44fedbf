package doccheck

import (
	"regexp"
	"strings"
	"time"
)

// Kind is what the checker does with a command.
type Kind string

const (
	Run    Kind = "run"    // finishes by itself: run it, check its exit status and first line
	Server Kind = "server" // starts a server: start it on a free port, run the page's next commands against it, stop it
	Skip   Kind = "skip"   // cannot run here: on the allow-list, with its reason
)

// Plan is a command with what the checker does with it.
type Plan struct {
	Cmd
	Kind    Kind
	Fast    bool          // run by default, not only with REACTORLAB_DOCS=all
	Exit    int           // the exit status the page implies
	Why     string        // why it is skipped, or why its exit status is not 0
	Timeout time.Duration // for Run: how long it may take; for Server: until its ready line
}

// rule sorts the commands whose text (comment and trailing & removed)
// matches re. The first rule that matches wins; a command no rule matches
// is a Run, not fast, with the default timeout.
type rule struct {
	re      *regexp.Regexp
	kind    Kind
	fast    bool
	exit    int
	timeout time.Duration
	why     string
}

const (
	defaultTimeout = 3 * time.Minute
	// slowTimeout is for the grader's full stages, the benchmarks, the
	// fuzzing and compare: each finishes by itself, in one to a few minutes
	// on a busy 2-core machine.
	slowTimeout = 15 * time.Minute
	// readyTimeout: `go run` compiles before the server listens.
	readyTimeout = 2 * time.Minute
)

// rules is the whole classification. The Skip rules are the allow-list:
// keep it short, each with the reason the command cannot run here.
// TestRulesAllUsed fails when a rule no longer matches any page's command.
var rules = []rule{
	// The allow-list.
	{re: regexp.MustCompile(`^go test -race reactorlab/\.\.\.$`), kind: Skip,
		why: "every test of the workspace, this one included; .ci/run runs it as its last step"},
	{re: regexp.MustCompile(`-- \./my-server(\s|$)`), kind: Skip,
		why: "./my-server stands for a student's server; the grader's own tests grade real ones"},
	{re: regexp.MustCompile(`^go tool trace `), kind: Skip,
		why: "opens the trace viewer in a browser and serves it until Ctrl-C, for a person to look at; " +
			"TestTrace in 05, 06 and 07 parses such a trace instead"},

	// Servers: started on 127.0.0.1:0, stopped after the page's next commands ran against them.
	{re: regexp.MustCompile(`^go run \./0[1-9]-[\w-]+(\s|$)`), kind: Server, timeout: readyTimeout},
	{re: regexp.MustCompile(`^go run \./shared/peers/cmd/(stdlib|gnet)(\s|$)`), kind: Server, timeout: readyTimeout},

	// Fast: run by default, in every `go test`.
	{re: regexp.MustCompile(`^git diff --no-index \S+ \S+$`), kind: Run, fast: true, exit: 1, timeout: time.Minute,
		why: "git diff --no-index exits 1 when the folders differ, and neighbouring chapters always do"},
	{re: regexp.MustCompile(`^go run \./shared/cmd/grade -list$`), kind: Run, fast: true, timeout: 2 * time.Minute},

	// Exit statuses the page shows.
	{re: regexp.MustCompile(`^go run \./shared/cmd/load .*-addr 192\.168\.`), kind: Run, exit: 1, timeout: 2 * time.Minute,
		why: "the page shows the load generator refusing an address off this machine: its usage error, exit 2, " +
			"which go run reports as exit 1 (go run exits 1 whenever the program fails)"},
	{re: regexp.MustCompile(`^cd /tmp/lab\w+ && go test `), kind: Run, exit: 1, timeout: 5 * time.Minute,
		why: "a fresh starter fails its tests: the student's code is not written yet, as the page shows"},
	{re: regexp.MustCompile(`^shared/classroom/grade-all\.sh -stage 2 .*01-blocking`), kind: Run, exit: 1, timeout: slowTimeout,
		why: "01's serial model fails stage 2's concurrent, idle and shutdown-load, as the page shows, and grade-all.sh says so with exit 1"},

	// Slow, but each finishes by itself.
	{re: regexp.MustCompile(`-bench=`), kind: Run, timeout: slowTimeout},
	{re: regexp.MustCompile(`-fuzz=`), kind: Run, timeout: slowTimeout},
	{re: regexp.MustCompile(`shared/cmd/grade -stage `), kind: Run, timeout: slowTimeout},
	{re: regexp.MustCompile(`shared/peers/cmd/compare `), kind: Run, timeout: slowTimeout},
	// The probes; the strace ones attach to the server (ptrace), which
	// some containers refuse: then they fail here, and say why.
	{re: regexp.MustCompile(`^shared/scripts/[\w-]+\.sh `), kind: Run, timeout: slowTimeout},
}

// Classify sorts one command.
func Classify(c Cmd) Plan {
	text := Bare(c.Text)
	for _, r := range rules {
		if r.re.MatchString(text) {
			t := r.timeout
			if t == 0 && r.kind == Run {
				t = defaultTimeout
			}
			return Plan{Cmd: c, Kind: r.kind, Fast: r.fast, Exit: r.exit, Why: r.why, Timeout: t}
		}
	}
	return Plan{Cmd: c, Kind: Run, Timeout: defaultTimeout}
}

// Bare is a command without its trailing comment and without a trailing
// "&" (a page's way of saying "in the background", which the checker does
// itself for servers).
func Bare(text string) string {
	t := strings.TrimSpace(stripComment(text))
	if strings.HasSuffix(t, "&") && !strings.HasSuffix(t, "&&") {
		t = strings.TrimSpace(strings.TrimSuffix(t, "&"))
	}
	return t
}

// stripComment cuts a shell comment: a # at the start of a word, outside
// quotes.
func stripComment(s string) string {
	var quote byte
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case quote != 0:
			if c == '\\' && quote == '"' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '\\':
			i++
		case c == '\'' || c == '"':
			quote = c
		case c == '#' && (i == 0 || s[i-1] == ' ' || s[i-1] == '\t'):
			return s[:i]
		}
	}
	return s
}

var (
	addrFlag     = regexp.MustCompile(`(^|\s)-addr(=|\s+)\S+`)
	loopbackAddr = regexp.MustCompile(`\b(127\.0\.0\.1|localhost):[0-9]+\b`)
	devTCP       = regexp.MustCompile(`/dev/tcp/127\.0\.0\.1/[0-9]+\b`)
	// labClient is a run of the lab's client or load generator, which
	// default to the server's default address.
	labClient = regexp.MustCompile(`go run \./shared/cmd/(client|load)\b`)
	offHost   = regexp.MustCompile(`-addr(=|\s+)(\d+\.\d+\.\d+\.\d+|\[[0-9a-f:]+\]):`)
)

// ServerCommand is a server's command with its address set to
// 127.0.0.1:0: pages print the default 127.0.0.1:12345, which another
// server (or another run of this test) may hold.
func ServerCommand(text string) string {
	t := Bare(text)
	if addrFlag.MatchString(t) {
		return addrFlag.ReplaceAllString(t, "${1}-addr 127.0.0.1:0")
	}
	return t + " -addr 127.0.0.1:0"
}

// NeedsServer reports whether a command talks to the page's server: the
// lab's client or load generator at a loopback address (theirs by
// default), a bash /dev/tcp connection, or pgrep for the server's process.
func NeedsServer(text string) bool {
	t := Bare(text)
	switch {
	case labClient.MatchString(t):
		return !offHost.MatchString(t) || loopbackAddr.MatchString(t)
	case devTCP.MatchString(t), strings.Contains(t, "pgrep "):
		return true
	}
	return false
}

// Against points a command at the server listening on addr
// ("127.0.0.1:PORT"): every loopback address the page printed becomes
// addr, and the lab's client and load generator, which default to
// 127.0.0.1:12345, get -addr addr when the page gave them none.
func Against(text, addr string) string {
	t := Bare(text)
	_, port, _ := strings.Cut(addr, ":")
	t = loopbackAddr.ReplaceAllLiteralString(t, addr)
	t = devTCP.ReplaceAllLiteralString(t, "/dev/tcp/127.0.0.1/"+port)
	return labClient.ReplaceAllStringFunc(t, func(m string) string {
		if addrFlag.MatchString(t) {
			return m
		}
		return m + " -addr " + addr
	})
}

// replyShape is the first line of a server's answer: a stamped reply or
// an error line.
var replyShape = regexp.MustCompile(`^(\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\]|error: )`)

// Typed splits a console transcript of the interactive client (nothing
// piped into it) into what the person typed (the lines before the first
// reply) and what the client printed.
func Typed(text string, output []string) (typed, printed []string) {
	t := Bare(text)
	i := strings.Index(t, "shared/cmd/client")
	if i < 0 || strings.Contains(t[:i], "|") {
		return nil, output
	}
	for k, l := range output {
		if replyShape.MatchString(l) {
			return output[:k], output[k:]
		}
	}
	return nil, output
}

// token is what Shape wildcards: a number (with a duration unit glued to
// it: 473µs and 3.36ms are the same shape), or a run of blanks.
var token = regexp.MustCompile(`\d[\d.,]*(?:ns|µs|us|ms|s|m|h)?\b|[ \t]+`)

// Shape turns a line of a page's transcript into a regexp that matches
// the line's shape: timestamps, ports and every other number wildcarded,
// blanks matching any run of blanks. Empty for "..." and blank lines,
// which show nothing to check.
func Shape(line string) string {
	line = strings.TrimSpace(line)
	if line == "" || line == "..." {
		return ""
	}
	var b strings.Builder
	b.WriteString(`^\s*`)
	last := 0
	for _, m := range token.FindAllStringIndex(line, -1) {
		b.WriteString(regexp.QuoteMeta(line[last:m[0]]))
		if line[m[0]] == ' ' || line[m[0]] == '\t' {
			b.WriteString(`\s+`)
		} else {
			b.WriteString(`\d[\d.,]*(?:ns|µs|us|ms|s|m|h)?`)
		}
		last = m[1]
	}
	b.WriteString(regexp.QuoteMeta(line[last:]))
	b.WriteString(`\s*$`)
	return b.String()
}

// noise is output that pages leave out of their transcripts: go test's
// header above benchmark lines, and the go command's downloads.
var noise = regexp.MustCompile(`^(goos|goarch|pkg|cpu): |^go: downloading |^\s*$`)

// csi is a terminal control sequence, such as the load generator's
// "erase the line" before it redraws its status line.
var csi = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]`)

// FirstLine is the first line of output that a transcript would show.
func FirstLine(out string) string {
	for _, l := range strings.Split(out, "\n") {
		l = csi.ReplaceAllString(strings.TrimRight(l, "\r"), "")
		// A terminal status line redrawn with \r: what stays is its last form.
		if i := strings.LastIndex(l, "\r"); i >= 0 {
			l = l[i+1:]
		}
		if !noise.MatchString(l) {
			return l
		}
	}
	return ""
}
