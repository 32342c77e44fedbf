//go:build linux

package main

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"reactorlab/shared/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// expectations is this chapter's column of the capability matrix, one per
// model. A limit names the failure that proves it; the README's matrix is
// checked against this table by TestMatrix.
var expectations = map[string]harness.Expectations{
	"serial": {
		"reply":   harness.Passes(),
		"framing": harness.Passes(),
		"echo":    harness.Passes(),
		"concurrent": harness.Limited(harness.Stall, "client 3 of 3",
			"the second client waits in the listen backlog until the first disconnects"),
		"many": harness.Limited(harness.Stall, "one line on each of 1,100",
			"one connection is served; 1,099 wait in the backlog"),
		"bulk": harness.Passes(),
		"slow-reader": harness.Limited(harness.Stall, "another client, while one floods",
			"the server is busy with the client that never reads, so nobody else is served"),
		"close":      harness.Passes(),
		"half-close": harness.Passes(),
		"long-line":  harness.Passes(),
		"linger": harness.Limited(harness.Refused, "lines sent before one over -max-line",
			"closes with the client's input unread after the error line: RST throws away replies not yet sent"),
		"idle": harness.Limited(harness.Stall, "reply to idle client 2 of 10",
			"the server reads client 1 and nobody else, so only one of ten idle clients is ever registered"),
		"shutdown": harness.Passes(),
		"unfinished": harness.Limited(harness.Wrong, "the end of the stream after SIGTERM",
			"answers the unfinished rest of the input at shutdown as if the client had half-closed"),
		"fd-limit": harness.Limited(harness.Stall, "fds taken while",
			"one client at a time never takes the fds its limit allows, so accept never meets EMFILE"),
	},
	"thread": {
		"reply":       harness.Passes(),
		"framing":     harness.Passes(),
		"echo":        harness.Passes(),
		"concurrent":  harness.Passes(),
		"many":        harness.Passes(),
		"bulk":        harness.Passes(),
		"slow-reader": harness.Passes(),
		"close":       harness.Passes(),
		"half-close":  harness.Passes(),
		"long-line":   harness.Passes(),
		"linger": harness.Limited(harness.Refused, "lines sent before one over -max-line",
			"closes with the client's input unread after the error line: RST throws away replies not yet sent"),
		"idle":     harness.Passes(),
		"shutdown": harness.Passes(),
		"unfinished": harness.Limited(harness.Wrong, "the end of the stream after SIGTERM",
			"answers the unfinished rest of the input at shutdown as if the client had half-closed"),
		"fd-limit": harness.Passes(),
	},
}

var models = []string{"serial", "thread"}

func TestScenarios(t *testing.T) {
	server := harness.Build(t, ".")
	for _, model := range models {
		t.Run(model, func(t *testing.T) {
			harness.Check(t, server.With("-model", model), expectations[model])
		})
	}
}

// TestMatrix keeps the README's capability matrix true: each model's column
// must say what expectations declares, and what TestScenarios proves.
func TestMatrix(t *testing.T) {
	for _, model := range models {
		harness.CheckMatrix(t, "../README.md", "01 "+model, expectations[model])
	}
}

// TestREADMENamesLimits: the chapter README's "what breaks" section names
// every scenario this chapter declares a limit, so a student who reads it
// knows what the tests prove.
func TestREADMENamesLimits(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for model, exp := range expectations {
		for name, e := range exp {
			if e.Outcome == harness.Limit && !strings.Contains(string(b), "`"+name+"`") {
				t.Errorf("README.md does not name `%s`, a limit of -model %s (%s)", name, model, e.Why)
			}
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
			want: config{addr: "127.0.0.1:12345", maxLine: 65536, model: "serial"}},
		{name: "thread echo", args: []string{"-model", "thread", "-mode", "echo", "-addr", "127.0.0.1:0"},
			want: config{addr: "127.0.0.1:0", mode: 1, maxLine: 65536, model: "thread"}},
		{name: "unknown model", args: []string{"-model", "fork"}, wantErr: `unknown -model "fork"`},
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

func TestParseAddr(t *testing.T) {
	tests := []struct {
		addr    string
		want    string
		wantErr bool
	}{
		{addr: "127.0.0.1:12345", want: "127.0.0.1:12345"},
		{addr: "localhost:0", want: "127.0.0.1:0"},
		{addr: "0.0.0.0:80", want: "0.0.0.0:80"},
		{addr: "[::1]:80", wantErr: true},
		{addr: "12345", wantErr: true},
		{addr: "127.0.0.1:99999", wantErr: true},
	}
	for _, tt := range tests {
		sa, err := parseAddr(tt.addr)
		if tt.wantErr {
			if err == nil {
				t.Errorf("parseAddr(%q) = %v, want an error", tt.addr, sockaddrString(sa))
			}
			continue
		}
		if err != nil {
			t.Errorf("parseAddr(%q): %v", tt.addr, err)
			continue
		}
		if got := sockaddrString(sa); got != tt.want {
			t.Errorf("parseAddr(%q) = %s, want %s", tt.addr, got, tt.want)
		}
	}
}

// TestListenTwice: the seed sets SO_REUSEPORT, so a second server started
// on the same port binds without complaint and silently takes half of the
// connections. With SO_REUSEADDR alone, the second bind must fail.
func TestListenTwice(t *testing.T) {
	fd, addr, err := listenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatalf("first listenTCP: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	fd2, _, err := listenTCP(addr)
	if err == nil {
		unix.Close(fd2)
		t.Fatalf("second listenTCP(%s) succeeded, want EADDRINUSE", addr)
	}
	if !errors.Is(err, unix.EADDRINUSE) {
		t.Errorf("second listenTCP(%s) error = %v, want EADDRINUSE", addr, err)
	}
}

// TestStage: what the grader's stage requires is what this chapter passes
// (TestScenarios proves each pass), so `grade -stage N` passes against it.
// Serial is the stage-1 server; thread passes everything up to stage 4.
func TestStage(t *testing.T) {
	for model, stage := range map[string]int{"serial": 1, "thread": 4} {
		scenarios, err := harness.Stage(stage)
		require.NoError(t, err)
		for _, s := range scenarios {
			if got := expectations[model][s.Name].Outcome; got != harness.Pass {
				t.Errorf("-model %s, stage %d scenario %s: declared %q, want %q", model, stage, s.Name, got, harness.Pass)
			}
		}
	}
}
