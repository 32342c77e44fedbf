//go:build linux

package main

import (
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"reactorlab/shared/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// expectations is this chapter's column of the capability matrix. A limit
// names the failure that proves it; TestMatrix holds the README to it.
var expectations = harness.Expectations{
	"reply":      harness.Passes(),
	"framing":    harness.Passes(),
	"echo":       harness.Passes(),
	"concurrent": harness.Passes(),
	"many":       harness.Passes(),
	"bulk":       harness.Passes(),
	"slow-reader": harness.Limited(harness.Stall, "another client, while one floods",
		"the loop blocks in write() to the client that never reads, and every other client waits"),
	"close":      harness.Passes(),
	"half-close": harness.Passes(),
	"long-line":  harness.Passes(),
	"linger": harness.Limited(harness.Refused, "lines sent before one over -max-line",
		"closes with the client's input unread after the error line: RST throws away replies not yet sent"),
	"idle":     harness.Passes(),
	"shutdown": harness.Passes(),
	"unfinished": harness.Limited(harness.Wrong, "the end of the stream after SIGTERM",
		"answers the unfinished rest of the input at shutdown as if the client had half-closed"),
	"fd-limit": harness.Limited(harness.Stall, "no fd to spare",
		"after EMFILE it accepts again only when a connection of its own closes: never, with none to close"),
}

func TestScenarios(t *testing.T) {
	harness.Check(t, harness.Build(t, "."), expectations)
}

// TestMatrix keeps the README's capability matrix true to expectations,
// which TestScenarios proves.
func TestMatrix(t *testing.T) {
	harness.CheckMatrix(t, "../README.md", "03 epoll-lt", expectations)
}

// TestREADMENamesLimits: the chapter README's "what breaks" section names
// every scenario this chapter declares a limit.
func TestREADMENamesLimits(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for name, e := range expectations {
		if e.Outcome == harness.Limit && !strings.Contains(string(b), "`"+name+"`") {
			t.Errorf("README.md does not name `%s`, a limit of this chapter (%s)", name, e.Why)
		}
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    config
		wantErr string
	}{
		{name: "defaults", args: nil,
			want: config{addr: "127.0.0.1:12345", maxLine: 65536}},
		{name: "echo", args: []string{"-mode", "echo", "-addr", "127.0.0.1:0"},
			want: config{addr: "127.0.0.1:0", mode: 1, maxLine: 65536}},
		{name: "unknown mode", args: []string{"-mode", "upper"}, wantErr: `unknown mode "upper"`},
		{name: "zero max-line", args: []string{"-max-line", "0"}, wantErr: "-max-line 0"},
		{name: "stray argument", args: []string{"12345"}, wantErr: `unexpected argument "12345"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFlags(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseFlags(%q) error = %v, want one containing %q", tt.args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseFlags(%q): %v", tt.args, err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(config{})); diff != "" {
				t.Errorf("parseFlags(%q) (-want +got):\n%s", tt.args, diff)
			}
		})
	}
}

func TestEventString(t *testing.T) {
	tests := []struct {
		events uint32
		want   string
	}{
		{events: 0x1, want: "EPOLLIN"},
		{events: 0x1 | 0x2000, want: "EPOLLIN|EPOLLRDHUP"},
		{events: 0x8 | 0x10, want: "EPOLLERR|EPOLLHUP"},
		{events: 0, want: ""},
	}
	for _, tt := range tests {
		if got := eventString(tt.events); got != tt.want {
			t.Errorf("eventString(%#x) = %q, want %q", tt.events, got, tt.want)
		}
	}
}

// TestStage: what the grader's stage requires is what this chapter passes
// (TestScenarios proves each pass), so `grade -stage 3` passes against it.
func TestStage(t *testing.T) {
	scenarios, err := harness.Stage(3)
	require.NoError(t, err)
	for _, s := range scenarios {
		if got := expectations[s.Name].Outcome; got != harness.Pass {
			t.Errorf("stage 3 scenario %s: declared %q, want %q", s.Name, got, harness.Pass)
		}
	}
}
