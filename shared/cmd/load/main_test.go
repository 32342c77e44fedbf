package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
)

// echoServer echoes every connection accepted on 127.0.0.1:0 until the
// test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					c.Write(buf[:n])
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func runLoad(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errw bytes.Buffer
	code = run(context.Background(), args, &out, &errw, false)
	return code, out.String(), errw.String()
}

func TestUsageErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{name: "off this machine", args: []string{"-addr", "10.1.2.3:80", "-count", "1"}, want: "refused"},
		{name: "public address", args: []string{"-addr", "8.8.8.8:53"}, want: "only targets this machine"},
		{name: "a name", args: []string{"-addr", "example.com:80"}, want: "refused"},
		{name: "no port", args: []string{"-addr", "127.0.0.1"}, want: "missing port"},
		{name: "zero conns", args: []string{"-conns", "0"}, want: "-conns 0: want 1 to"},
		{name: "negative depth", args: []string{"-depth", "-1"}, want: "-depth -1"},
		{name: "zero size", args: []string{"-size", "0"}, want: "-size 0"},
		{name: "a day", args: []string{"-duration", "24h"}, want: "-duration 24h0m0s: want 0 to 1h0m0s"},
		{name: "endless", args: []string{"-duration", "0"}, want: "-duration or -count"},
		{name: "idle with conns", args: []string{"-idle", "10", "-conns", "5"}, want: "takes no -conns"},
		{name: "idle zero", args: []string{"-idle", "0"}, want: "-idle 0"},
		{name: "stray argument", args: []string{"127.0.0.1:80"}, want: "flags only"},
		{name: "unknown flag", args: []string{"-rate", "5"}, want: "flag provided but not defined"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runLoad(t, tt.args...)
			if code != exitUsage || stdout != "" || !strings.Contains(stderr, tt.want) {
				t.Errorf("load %s: exit %d, stdout %q, stderr %q; want exit %d, no stdout, stderr containing %q",
					strings.Join(tt.args, " "), code, stdout, stderr, exitUsage, tt.want)
			}
		})
	}
}

func TestJSONRun(t *testing.T) {
	addr := echoServer(t)
	code, stdout, stderr := runLoad(t, "-addr", addr, "-conns", "3", "-depth", "4", "-size", "32", "-count", "600", "-json")
	require.Equal(t, exitOK, code, "stderr: %s", stderr)
	var got jsonReport
	require.NoError(t, json.Unmarshal([]byte(stdout), &got), "stdout: %s", stdout)
	want := jsonReport{Addr: addr, Mode: "pipelined", Conns: 3, Depth: 4, Size: 32, Msgs: 600}
	// What depends on the machine is checked for sense, then cleared.
	if got.Seconds <= 0 || got.MsgsPerSec <= 0 || got.MBPerSec <= 0 || got.P50us <= 0 || got.P99us < got.P50us || got.P999us < got.P99us {
		t.Errorf("measured fields make no sense: %+v", got)
	}
	got.Seconds, got.MsgsPerSec, got.MBPerSec, got.P50us, got.P99us, got.P999us = 0, 0, 0, 0, 0, 0
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("-json report (-want +got):\n%s", diff)
	}
}

func TestSummary(t *testing.T) {
	addr := echoServer(t)
	code, stdout, stderr := runLoad(t, "-addr", addr, "-conns", "2", "-count", "100")
	require.Equal(t, exitOK, code, "stderr: %s", stderr)
	for _, want := range []string{addr + ": 2 conns, 64 B messages, ping-pong", "msgs/s", "MB/s", "p50", "p99", "p99.9", "errors   0"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout)
		}
	}
}

func TestIdle(t *testing.T) {
	addr := echoServer(t)
	code, stdout, stderr := runLoad(t, "-addr", addr, "-idle", "5", "-duration", "50ms")
	require.Equal(t, exitOK, code, "stderr: %s", stderr)
	if !strings.HasPrefix(stdout, "holding 5 connections (each echoed once") || !strings.Contains(stdout, "idle, one echo each") {
		t.Errorf("idle output:\n%s\nwant the holding line, then the summary", stdout)
	}
}

func TestFormats(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{dur(850 * time.Nanosecond), "850ns"},
		{dur(87_400 * time.Nanosecond), "87.4µs"},
		{dur(612 * time.Microsecond), "612µs"},
		{dur(1_843 * time.Microsecond), "1.84ms"},
		{dur(2500 * time.Millisecond), "2.50s"},
		{thousands(0), "0"},
		{thousands(999), "999"},
		{thousands(152_340), "152,340"},
		{thousands(-1_234_567), "-1,234,567"},
		{clock(65 * time.Second), "1:05"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}
