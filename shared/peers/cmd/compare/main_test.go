package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
)

func TestSummarizeAndTable(t *testing.T) {
	ms := func(msgs float64, p99, cpu time.Duration) measurement {
		return measurement{msgsPerSec: msgs, p99: p99, cpuPerMsg: cpu}
	}
	servers := []*server{
		{spec: spec{label: "04-epoll-et"}, runs: []measurement{
			ms(100_000, 2*time.Millisecond, 5*time.Microsecond),
			ms(300_000, 1*time.Millisecond, 3*time.Microsecond),
			ms(120_000, 3*time.Millisecond, 4*time.Microsecond),
		}},
		{spec: spec{label: "stdlib"}, runs: []measurement{
			ms(50_000, 4*time.Millisecond, 8*time.Microsecond),
			ms(60_000, 2*time.Millisecond, 8*time.Microsecond),
		}},
		{spec: spec{label: "never ran"}},
	}
	rows := summarize(servers, "stdlib")
	c := conditions{rounds: 3, baseline: "stdlib", args: []string{"-baseline", "stdlib", "04-epoll-et", "gnet -loops 1"}}
	c.load.Conns, c.load.Size, c.load.Depth, c.load.Duration, c.warmup = 100, 64, 1, 5*time.Second, time.Second
	got := markdown(c, rows)

	// The machine line differs from machine to machine.
	got = regexp.MustCompile(`Machine: .*\. Command`).ReplaceAllString(got, "Machine: M. Command")
	want := "Echo load: 100 connections, 64 B messages, ping-pong; 3 interleaved round(s) of 5s per server (after 1s of warm-up), each a fresh process.\n" +
		"Not pinned: server and load generator share every CPU.\n" +
		"Medians over the rounds; ratios to `stdlib`. CPU/msg is the server's own user+system time per echoed message.\n" +
		"Machine: M. Command: `compare -baseline stdlib 04-epoll-et 'gnet -loops 1'`\n" +
		"\n" +
		"| server | msgs/s | × base | p99 | × base | CPU/msg | × base | errors |\n" +
		"|---|---:|---:|---:|---:|---:|---:|---:|\n" +
		"| `04-epoll-et` | 120,000 | 2.18× | 2.00 ms | 0.67× | 4.00 µs | 0.50× | 0 |\n" +
		"| `stdlib` (base) | 55,000 | 1.00× | 3.00 ms | 1.00× | 8.00 µs | 1.00× | 0 |\n"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("markdown (-want +got):\n%s", diff)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{name: "no servers", args: nil, want: "no servers"},
		{name: "twice", args: []string{"stdlib", " stdlib "}, want: `server "stdlib" named twice`},
		{name: "unknown baseline", args: []string{"-baseline", "gnet", "stdlib"}, want: `-baseline "gnet" is not one of the servers`},
		{name: "no rounds", args: []string{"-rounds", "0", "stdlib"}, want: "-rounds 0"},
		{name: "no time", args: []string{"-duration", "0", "stdlib"}, want: "-duration 0"},
		{name: "bad load", args: []string{"-conns", "0", "stdlib"}, want: "-conns 0"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, &stdout, &stderr)
			if code != exitUsage || !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("compare %q: exit %d, stderr %q; want exit %d and %q", tt.args, code, stderr.String(), exitUsage, tt.want)
			}
		})
	}
}

func TestUnknownServer(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"-rounds", "1", "-duration", "100ms", "no-such-dir"}, &stdout, &stderr)
	if code != exitFail || !strings.Contains(stderr.String(), `"no-such-dir" is not a directory, a peer`) {
		t.Errorf("exit %d, stderr %q; want %d and a message naming what a server can be", code, stderr.String(), exitFail)
	}
}

// TestTinyRun compares the stdlib peer with itself under another label
// (a flag it accepts: -v), two short rounds, and checks the table's shape
// and the chart file.
func TestTinyRun(t *testing.T) {
	if _, err := os.Stat("../stdlib"); err != nil {
		t.Fatalf("the stdlib peer is not where the test expects it: %v", err)
	}
	dir := t.TempDir()
	svg := filepath.Join(dir, "c.svg")
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{
		"-rounds", "2", "-duration", "200ms", "-warmup", "0", "-conns", "4", "-svg", svg,
		"stdlib", "stdlib -max-line 100",
	}, &stdout, &stderr)
	require.Equal(t, exitOK, code, "stderr:\n%s", stderr.String())
	if n := strings.Count(stderr.String(), "round "); n != 4 {
		t.Errorf("stderr has %d round lines, want 4 (2 servers × 2 rounds):\n%s", n, stderr.String())
	}
	rows := regexp.MustCompile("(?m)^\\| `([^`]+)`.*\\| 0 \\|$").FindAllStringSubmatch(stdout.String(), -1)
	var labels []string
	for _, r := range rows {
		labels = append(labels, r[1])
	}
	if diff := cmp.Diff([]string{"stdlib", "stdlib -max-line 100"}, labels); diff != "" {
		t.Errorf("table rows with no errors (-want +got):\n%s\ntable:\n%s", diff, stdout.String())
	}
	b, err := os.ReadFile(svg)
	require.NoError(t, err)
	if !bytes.Contains(b, []byte("<svg")) || !bytes.Contains(b, []byte("msgs/s")) {
		t.Errorf("%s is not the chart: %.200s", svg, b)
	}
}
