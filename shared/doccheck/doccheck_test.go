package doccheck

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestMain lets the test binary be the server a page's command starts, in
// TestPageRunsAgainstItsServer: DOCCHECK_FAKE_SERVER=1 makes it a line
// server that keeps the contract's ready line and -addr flag.
func TestMain(m *testing.M) {
	if os.Getenv("DOCCHECK_FAKE_SERVER") == "1" {
		fakeServer(os.Args[1:])
		return
	}
	os.Exit(m.Run())
}

// fakeServer answers each line with "got: LINE" until SIGTERM.
func fakeServer(args []string) {
	addr := "127.0.0.1:12345"
	for i, a := range args {
		if a == "-addr" && i+1 < len(args) {
			addr = args[i+1]
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					fmt.Fprintf(c, "got: %s\n", sc.Text())
				}
			}()
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	os.Exit(0)
}

func TestExtract(t *testing.T) {
	page := strings.Join([]string{
		"# a page",
		"",
		"```sh",
		"go run ./04-epoll-et    # Ctrl-C to stop",
		"# a comment line",
		"",
		`go test -run X \`,
		"  ./03-epoll-lt",
		"```",
		"",
		"```console",
		"$ echo hello | go run ./shared/cmd/client",
		"[2026-11-29 18:02:39]server reply: hello",
		"$ go run ./shared/cmd/client",
		"hello, reactor",
		"[2026-11-25 22:10:31]server reply: hello, reactor",
		"",
		"```",
		"",
		"```",
		"$ not a shell block",
		"```",
		"",
		"1. In a list:",
		"   ```sh",
		"   git diff --no-index 01-blocking 02-select-poll",
		"   ```",
		"",
		"````console",
		"$ cat <<'EOF'",
		"```",
		"$ inside the longer fence",
		"````",
	}, "\n")
	want := []Cmd{
		{File: "p.md", Line: 4, Block: 0, Text: "go run ./04-epoll-et    # Ctrl-C to stop"},
		{File: "p.md", Line: 7, Block: 0, Text: "go test -run X  ./03-epoll-lt"},
		{File: "p.md", Line: 12, Block: 1, Text: "echo hello | go run ./shared/cmd/client",
			Output: []string{"[2026-11-29 18:02:39]server reply: hello"}},
		{File: "p.md", Line: 14, Block: 1, Text: "go run ./shared/cmd/client",
			Output: []string{"hello, reactor", "[2026-11-25 22:10:31]server reply: hello, reactor"}},
		{File: "p.md", Line: 26, Block: 3, Text: "git diff --no-index 01-blocking 02-select-poll"},
		{File: "p.md", Line: 30, Block: 4, Text: "cat <<'EOF'", Output: []string{"```"}},
		{File: "p.md", Line: 32, Block: 4, Text: "inside the longer fence"},
	}
	if diff := cmp.Diff(want, Extract("p.md", page)); diff != "" {
		t.Errorf("Extract (-want +got):\n%s", diff)
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		text string
		kind Kind
		fast bool
		exit int
	}{
		{text: "go run ./04-epoll-et                      # the latest chapter; Ctrl-C to stop", kind: Server},
		{text: "go run ./01-blocking -model thread &", kind: Server},
		{text: "go run ./shared/peers/cmd/stdlib -mode echo          # in another terminal", kind: Server},
		{text: "go test -race reactorlab/...              # every test of every chapter", kind: Skip},
		{text: "go run ./shared/cmd/grade -stage 2 -- ./my-server       # a binary", kind: Skip},
		{text: "go tool trace /tmp/05.trace                              # opens the viewer in a browser", kind: Skip},
		{text: "go run ./shared/cmd/grade -list                         # stages and scenarios", kind: Run, fast: true},
		{text: "git diff --no-index 03-epoll-lt 04-epoll-et", kind: Run, fast: true, exit: 1},
		{text: "go run ./shared/cmd/load -addr 192.168.1.20:12345", kind: Run, exit: 1},
		{text: "echo hello | go run ./shared/cmd/client", kind: Run},
		{text: "go test -run='^$' -bench=. -benchtime=2000x ./04-epoll-et", kind: Run},
	}
	for _, tt := range tests {
		p := Classify(Cmd{Text: tt.text})
		if p.Kind != tt.kind || p.Fast != tt.fast || p.Exit != tt.exit {
			t.Errorf("Classify(%q) = %s fast=%v exit %d, want %s fast=%v exit %d",
				tt.text, p.Kind, p.Fast, p.Exit, tt.kind, tt.fast, tt.exit)
		}
		if (p.Kind == Skip || p.Exit != 0) && p.Why == "" {
			t.Errorf("Classify(%q): %s with exit %d, and no reason", tt.text, p.Kind, p.Exit)
		}
	}
}

func TestBare(t *testing.T) {
	tests := map[string]string{
		"go run ./04-epoll-et   # Ctrl-C to stop":              "go run ./04-epoll-et",
		"go run ./01-blocking -model thread &":                 "go run ./01-blocking -model thread",
		"printf 'a # not a comment\\n' | x   # but this is":    "printf 'a # not a comment\\n' | x",
		`echo "# quoted" \# escaped`:                           `echo "# quoted" \# escaped`,
		"grep Threads /proc/$(pgrep -n 01-blocking)/status":    "grep Threads /proc/$(pgrep -n 01-blocking)/status",
		"go build -o /tmp/a ./a && go build -o /tmp/b ./b":     "go build -o /tmp/a ./a && go build -o /tmp/b ./b",
		"for i in $(seq 50); do exec {fd}<>/dev/tcp/x/1; done": "for i in $(seq 50); do exec {fd}<>/dev/tcp/x/1; done",
	}
	for in, want := range tests {
		if got := Bare(in); got != want {
			t.Errorf("Bare(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestServerCommand(t *testing.T) {
	tests := map[string]string{
		"go run ./04-epoll-et                      # Ctrl-C to stop":      "go run ./04-epoll-et -addr 127.0.0.1:0",
		"go run ./05-wakeup-fd -v -addr 127.0.0.1:0         # terminal 1": "go run ./05-wakeup-fd -v -addr 127.0.0.1:0",
		"go run ./01-blocking -addr=localhost:8080 -v":                    "go run ./01-blocking -addr 127.0.0.1:0 -v",
		"go run ./01-blocking -model thread &":                            "go run ./01-blocking -model thread -addr 127.0.0.1:0",
	}
	for in, want := range tests {
		if got := ServerCommand(in); got != want {
			t.Errorf("ServerCommand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAgainst(t *testing.T) {
	const addr = "127.0.0.1:40123"
	tests := []struct {
		in    string
		want  string
		needs bool
	}{
		{in: "echo hello | go run ./shared/cmd/client",
			want: "echo hello | go run ./shared/cmd/client -addr 127.0.0.1:40123", needs: true},
		{in: "(echo 'hello, loop'; sleep 1) | go run ./shared/cmd/client -addr 127.0.0.1:44669   # terminal 2",
			want: "(echo 'hello, loop'; sleep 1) | go run ./shared/cmd/client -addr 127.0.0.1:40123", needs: true},
		{in: "go run ./shared/cmd/load -conns 50 -depth 16 -count 1000000 -json",
			want: "go run ./shared/cmd/load -addr 127.0.0.1:40123 -conns 50 -depth 16 -count 1000000 -json", needs: true},
		{in: "for i in $(seq 50); do exec {fd}<>/dev/tcp/127.0.0.1/12345; done",
			want: "for i in $(seq 50); do exec {fd}<>/dev/tcp/127.0.0.1/40123; done", needs: true},
		{in: "grep Threads /proc/$(pgrep -n 01-blocking)/status",
			want: "grep Threads /proc/$(pgrep -n 01-blocking)/status", needs: true},
		{in: "go run ./shared/cmd/load -addr 192.168.1.20:12345",
			want: "go run ./shared/cmd/load -addr 192.168.1.20:12345", needs: false},
		{in: "go test -run='^$' -bench=. ./04-epoll-et",
			want: "go test -run='^$' -bench=. ./04-epoll-et", needs: false},
	}
	for _, tt := range tests {
		if got := NeedsServer(tt.in); got != tt.needs {
			t.Errorf("NeedsServer(%q) = %v, want %v", tt.in, got, tt.needs)
		}
		if got := Against(tt.in, addr); got != tt.want {
			t.Errorf("Against(%q) =\n  %q\nwant\n  %q", tt.in, got, tt.want)
		}
	}
}

func TestTyped(t *testing.T) {
	out := []string{"hello, reactor", "[2026-11-25 22:10:31]server reply: hello, reactor"}
	typed, printed := Typed("go run ./shared/cmd/client", out)
	if diff := cmp.Diff([]string{"hello, reactor"}, typed); diff != "" {
		t.Errorf("typed (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(out[1:], printed); diff != "" {
		t.Errorf("printed (-want +got):\n%s", diff)
	}
	// Piped input: every line is the client's output.
	typed, printed = Typed("echo hello | go run ./shared/cmd/client", out)
	if typed != nil || len(printed) != 2 {
		t.Errorf("piped: typed %q, printed %q; want nothing typed", typed, printed)
	}
}

func TestShape(t *testing.T) {
	tests := []struct {
		page, got string
		match     bool
	}{
		{page: "[2026-11-29 18:02:39]server reply: hello", got: "[2027-01-02 03:04:05]server reply: hello", match: true},
		{page: "[2026-11-29 18:02:39]server reply: hello", got: "[2027-01-02 03:04:05]server reply: hellO", match: false},
		{page: "listening on 127.0.0.1:12345", got: "listening on 127.0.0.1:39811", match: true},
		{page: "Threads:\t57", got: "Threads:\t9", match: true},
		{page: "holding 10000 connections (each echoed once: p50 473µs, p99 3.36ms); Ctrl-C to stop",
			got: "holding 10000 connections (each echoed once: p50 1.2ms, p99 12ms); Ctrl-C to stop", match: true},
		{page: "BenchmarkRoundTrip/echo-2        100000     39876 msgs/s    18.96 p50-µs",
			got: "BenchmarkRoundTrip/echo-2   100000   1234 msgs/s   7.5 p50-µs", match: true},
		{page: "BenchmarkRoundTrip/echo-2  100000  39876 msgs/s", got: "BenchmarkRoundTrip/stamp-2  100000  39876 msgs/s", match: false},
		{page: "error: line longer than 8 bytes", got: "error: line longer than 8 bytes", match: true},
	}
	for _, tt := range tests {
		re := regexp.MustCompile(Shape(tt.page))
		if got := re.MatchString(tt.got); got != tt.match {
			t.Errorf("Shape(%q) = %q matches %q: %v, want %v", tt.page, re, tt.got, got, tt.match)
		}
	}
	for _, empty := range []string{"", "...", "   "} {
		if s := Shape(empty); s != "" {
			t.Errorf("Shape(%q) = %q, want nothing to check", empty, s)
		}
	}
}

func TestFirstLine(t *testing.T) {
	out := "go: downloading github.com/x/y v1.0.0\ngoos: linux\ngoarch: amd64\npkg: reactorlab/04-epoll-et\n" +
		"cpu: AMD EPYC\nBenchmarkRoundTrip/echo-2 2000 36933 msgs/s\nPASS\n"
	if got, want := FirstLine(out), "BenchmarkRoundTrip/echo-2 2000 36933 msgs/s"; got != want {
		t.Errorf("FirstLine = %q, want %q", got, want)
	}
	if got, want := FirstLine("\r\x1b[K0:01 status\r\x1b[K127.0.0.1:1: 100 conns\n"), "127.0.0.1:1: 100 conns"; got != want {
		t.Errorf("FirstLine over a redrawn status line = %q, want %q", got, want)
	}
}

// TestPageRunsAgainstItsServer: a page's server starts on a free port
// whatever address the page prints, the page's next commands reach it
// there, a command's first line is held to the page's, and the server is
// stopped at the end.
func TestPageRunsAgainstItsServer(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCCHECK_FAKE_SERVER", "1")
	p := &Page{Root: t.TempDir(), All: true}
	defer p.Close()
	start := p.Do(Plan{Cmd: Cmd{Text: exe + " -addr 127.0.0.1:12345", Output: []string{"listening on 127.0.0.1:12345"}},
		Kind: Server, Timeout: 30 * time.Second})
	if start.Status != OK {
		t.Fatalf("server: %s %s", start.Status, start.Detail)
	}
	if start.Ran != exe+" -addr 127.0.0.1:0" {
		t.Errorf("server ran as %q, want it on 127.0.0.1:0", start.Ran)
	}
	talk := "exec 3<>/dev/tcp/127.0.0.1/12345; printf 'hi\\n' >&3; head -n 1 <&3"
	tests := []struct {
		name   string
		plan   Plan
		status Status
	}{
		{name: "right shape", status: OK,
			plan: Plan{Cmd: Cmd{Text: talk, Output: []string{"got: hi"}}, Kind: Run, Timeout: 10 * time.Second}},
		{name: "wrong shape", status: Failed,
			plan: Plan{Cmd: Cmd{Text: talk, Output: []string{"got: bye"}}, Kind: Run, Timeout: 10 * time.Second}},
		{name: "wrong exit", status: Failed,
			plan: Plan{Cmd: Cmd{Text: "exit 3"}, Kind: Run, Timeout: 10 * time.Second}},
		{name: "the exit the page says", status: OK,
			plan: Plan{Cmd: Cmd{Text: "exit 3"}, Kind: Run, Exit: 3, Why: "test", Timeout: 10 * time.Second}},
		{name: "timeout", status: Failed,
			plan: Plan{Cmd: Cmd{Text: "sleep 30"}, Kind: Run, Timeout: 200 * time.Millisecond}},
		{name: "allow-list", status: Skipped,
			plan: Plan{Cmd: Cmd{Text: "top -H"}, Kind: Skip, Why: "interactive"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := p.Do(tt.plan)
			if res.Status != tt.status {
				t.Errorf("%q: %s (%s), want %s", tt.plan.Text, res.Status, res.Detail, tt.status)
			}
		})
	}
	pid := p.srv.cmd.Process.Pid
	p.Close()
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("server pid %d still runs after Close", pid)
	}
}

// TestNoServerOnThePage: a client command with no server before it on
// the page fails, and never reaches whatever listens on the default port.
func TestNoServerOnThePage(t *testing.T) {
	p := &Page{Root: t.TempDir(), All: true}
	res := p.Do(Classify(Cmd{Text: "echo hello | go run ./shared/cmd/client"}))
	if res.Status != Failed || !strings.Contains(res.Detail, "no command before it") {
		t.Errorf("got %s (%s), want a failure naming the missing server", res.Status, res.Detail)
	}
}
