package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"reactorlab/shared/protocol"
)

// testServer is a goroutine-per-connection server speaking the lab's
// protocol through protocol.Session, just enough to drive the client.
type testServer struct {
	ln   net.Listener
	wg   sync.WaitGroup
	mode protocol.Mode
	max  int
}

func startServer(t *testing.T, mode protocol.Mode, maxLine int) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &testServer{ln: ln, mode: mode, max: maxLine}
	s.wg.Add(1)
	go s.acceptLoop()
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *testServer) addr() string { return s.ln.Addr().String() }

func (s *testServer) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go s.serve(c)
	}
}

func (s *testServer) serve(c net.Conn) {
	defer s.wg.Done()
	defer c.Close()
	sess := protocol.NewSession(s.mode, s.max)
	buf := make([]byte, 4096)
	for {
		n, rerr := c.Read(buf)
		out, err := sess.Input(nil, buf[:n])
		if rerr == io.EOF {
			out = sess.EOF(out)
		}
		c.Write(out)
		if err != nil || rerr != nil {
			return
		}
	}
}

// replyLines parses stamp replies and returns the lines they answer.
func replyLines(t *testing.T, out string) []string {
	t.Helper()
	var got []string
	for _, r := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		_, line, err := protocol.ParseReply([]byte(r))
		if err != nil {
			t.Fatalf("output line %q: %v", r, err)
		}
		got = append(got, string(line))
	}
	return got
}

func TestPipedLinesAreAnswered(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stdin string
		want  []string
	}{
		{"terminated", "a\nb\n", []string{"a", "b"}},
		// The half-close answers a last line that has no '\n'.
		{"unterminated last line", "a\nb", []string{"a", "b"}},
		{"crlf", "a\r\nb\r\n", []string{"a", "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, protocol.Stamp, protocol.DefaultMaxLine)
			var stdout, stderr bytes.Buffer
			code := run([]string{"-addr", s.addr()}, strings.NewReader(tc.stdin), &stdout, &stderr)
			if code != 0 {
				t.Errorf("exit code %d, want 0; stderr: %s", code, stderr.String())
			}
			if diff := cmp.Diff(tc.want, replyLines(t, stdout.String())); diff != "" {
				t.Errorf("answered lines (-want +got):\n%s", diff)
			}
			// The server closing after our half-close is the normal end.
			if diff := cmp.Diff("", stderr.String()); diff != "" {
				t.Errorf("stderr (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEchoIsBinarySafe(t *testing.T) {
	s := startServer(t, protocol.Echo, protocol.DefaultMaxLine)
	in := "a\x00b\xff\nno newline at the end"
	var stdout, stderr bytes.Buffer
	code := run([]string{"-addr", s.addr()}, strings.NewReader(in), &stdout, &stderr)
	if code != 0 {
		t.Errorf("exit code %d, want 0; stderr: %s", code, stderr.String())
	}
	if diff := cmp.Diff(in, stdout.String()); diff != "" {
		t.Errorf("echoed bytes (-want +got):\n%s", diff)
	}
}

// A reply must be printed as it arrives, while stdin is still open: that is
// how a student sees a stalled server answer late.
func TestRepliesPrintBeforeStdinEnds(t *testing.T) {
	s := startServer(t, protocol.Stamp, protocol.DefaultMaxLine)
	stdinR, stdinW := io.Pipe()
	stdoutR, stdoutW := io.Pipe()
	var stderr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"-addr", s.addr()}, stdinR, stdoutW, &stderr)
		stdoutW.Close()
	}()
	replies := bufio.NewReader(stdoutR)
	var got []string
	for _, line := range []string{"first", "second"} {
		_, err := io.WriteString(stdinW, line+"\n")
		require.NoError(t, err)
		reply, err := replies.ReadString('\n')
		require.NoError(t, err, "reply to %q while stdin is open", line)
		got = append(got, replyLines(t, reply)...)
	}
	if diff := cmp.Diff([]string{"first", "second"}, got); diff != "" {
		t.Errorf("answered lines (-want +got):\n%s", diff)
	}
	stdinW.Close()
	rest, err := io.ReadAll(replies)
	require.NoError(t, err)
	if code := <-done; code != 0 {
		t.Errorf("exit code %d after stdin EOF, want 0", code)
	}
	if diff := cmp.Diff("", string(rest)+stderr.String()); diff != "" {
		t.Errorf("output after stdin EOF (-want +got):\n%s", diff)
	}
}

func TestServerClosesFirst(t *testing.T) {
	// -max-line 4: the server answers a longer line with an error line and
	// closes, while the client's stdin is still open.
	s := startServer(t, protocol.Stamp, 4)
	stdinR, stdinW := io.Pipe()
	defer stdinW.Close() // unblocks the client's stdin reader
	go io.WriteString(stdinW, "much too long\n")
	var stdout, stderr bytes.Buffer
	code := run([]string{"-addr", s.addr()}, stdinR, &stdout, &stderr)
	if code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if !strings.HasPrefix(stdout.String(), "error: ") {
		t.Errorf("stdout %q, want the server's error: line", stdout.String())
	}
	if diff := cmp.Diff("connection closed by server\n", stderr.String()); diff != "" {
		t.Errorf("stderr (-want +got):\n%s", diff)
	}
}

func TestNoServer(t *testing.T) {
	// A port that was free a moment ago: connect is refused at once.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	var stdout, stderr bytes.Buffer
	code := run([]string{"-addr", addr, "-timeout", "2s"}, strings.NewReader("a\n"), &stdout, &stderr)
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if !strings.Contains(stderr.String(), "connection refused") {
		t.Errorf("stderr %q, want it to say connection refused", stderr.String())
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{"-nosuchflag"}, {"extra"}, {"-timeout", "soon"}} {
		var stdout, stderr bytes.Buffer
		if code := run(args, strings.NewReader(""), &stdout, &stderr); code != 2 {
			t.Errorf("run(%q) = %d, want 2", args, code)
		}
	}
}
