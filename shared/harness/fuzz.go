package harness

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"reactorlab/shared/protocol"
)

// fuzzMaxLine is the -max-line of the server under fuzzing: small, so that
// random inputs cross it often.
const fuzzMaxLine = 64

// fuzzConns is how many connections carry each input at once, each cut
// differently: a server that mixes up two connections' state shows it.
const fuzzConns = 3

// FuzzServer fuzzes a running server in stamp mode: each input is sent on
// fuzzConns connections at once, cut at random points with random pauses,
// then half-closed; every reply is checked against what protocol.Decoder
// makes of the same bytes (the lines, the error line when one is too long,
// the last line without '\n', then the end of the stream). One server
// serves every input. The seed corpus runs with go test; fuzz longer with
//
//	go test -run='^$' -fuzz=FuzzServer -fuzztime=5m -fuzzminimizetime=100x ./07-send-buffer
//
// Each input costs network round trips, so Go's default of 60 s spent
// shrinking every new input would stall fuzzing for a minute at a time.
func FuzzServer(f *testing.F, cmd Command) {
	for _, seed := range []string{
		"hello\n", "a\nb\r\nc", "\n\n\n", "no newline at all",
		"nul\x00byte\xff\xfe\n", "lone\rcr\n",
		string(bytes.Repeat([]byte("x"), fuzzMaxLine)) + "\n",
		string(bytes.Repeat([]byte("y"), fuzzMaxLine+1)) + "\nafter\n",
		"ok\n" + string(bytes.Repeat([]byte("z"), 3*fuzzMaxLine)),
	} {
		f.Add([]byte(seed), uint64(len(seed)))
	}
	s := StartServer(f, cmd, "-max-line", fmt.Sprint(fuzzMaxLine))
	f.Fuzz(func(t *testing.T, data []byte, cuts uint64) {
		want, closing := fuzzWant(data)
		var wg sync.WaitGroup
		errs := make([]error, fuzzConns)
		for i := range fuzzConns {
			wg.Go(func() { errs[i] = fuzzOne(s.Addr(), data, cuts+uint64(i), want, closing) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("connection %d of %d, input %q: %v", i+1, fuzzConns, data, err)
			}
		}
	})
}

// fuzzWant is what the protocol owes for data followed by the client's
// half-close: the lines' replies in order, and whether an error line ends
// them.
func fuzzWant(data []byte) (lines [][]byte, closing bool) {
	d := protocol.NewDecoder(fuzzMaxLine)
	d.Feed(data)
	for {
		line, err := d.Next()
		if err != nil {
			return lines, true
		}
		if line == nil {
			break
		}
		lines = append(lines, bytes.Clone(line))
	}
	if last := d.Final(); last != nil {
		lines = append(lines, bytes.Clone(last))
	}
	return lines, false
}

// fuzzOne sends data cut by the seed, half-closes, and checks the replies.
func fuzzOne(addr string, data []byte, seed uint64, want [][]byte, closing bool) error {
	c, err := net.DialTimeout("tcp", addr, dialTimeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	r := rand.New(rand.NewPCG(seed, uint64(len(data))))
	werr := make(chan error, 1)
	go func() {
		for p := data; len(p) > 0; {
			n := min(len(p), 1+r.IntN(16))
			if _, err := c.Write(p[:n]); err != nil {
				werr <- err
				return
			}
			p = p[n:]
			if r.IntN(8) == 0 {
				time.Sleep(time.Duration(r.IntN(200)) * time.Microsecond) // a pause in the stream, not a wait
			}
		}
		werr <- c.(*net.TCPConn).CloseWrite()
	}()
	all, rerr := io.ReadAll(c)
	if err := <-werr; err != nil && !closing {
		return fmt.Errorf("write: %v", err)
	}
	if rerr != nil && !(closing && isReset(rerr)) {
		return fmt.Errorf("read after %d bytes: %v", len(all), rerr)
	}
	return checkFuzzReplies(all, want, closing)
}

func checkFuzzReplies(all []byte, want [][]byte, closing bool) error {
	replies := bytes.SplitAfter(all, []byte("\n"))
	if n := len(replies); n > 0 && len(replies[n-1]) == 0 {
		replies = replies[:n-1]
	}
	for i, w := range want {
		if i >= len(replies) {
			return fmt.Errorf("%d replies, want %d", len(replies), len(want))
		}
		_, got, err := protocol.ParseReply(bytes.TrimSuffix(replies[i], []byte("\n")))
		if err != nil || !bytes.Equal(got, w) {
			return fmt.Errorf("reply %d: got %q, want the reply to %q", i+1, replies[i], w)
		}
	}
	extra := replies[len(want):]
	switch {
	case closing && (len(extra) != 1 || !bytes.HasPrefix(extra[0], []byte("error: "))):
		return fmt.Errorf("after %d replies: got %q, want one error: line, then the end", len(want), extra)
	case !closing && len(extra) > 0:
		return fmt.Errorf("after %d replies: %q more", len(want), extra)
	}
	return nil
}
