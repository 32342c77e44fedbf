package harness

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"time"

	"reactorlab/shared/protocol"
)

// The scenario about input no well-behaved client sends: any byte value,
// '\r' in the middle of a line, empty lines, a line exactly at the limit,
// megabytes with no newline. What each must produce is the protocol
// package's own answer; and a client sending garbage next door must not
// change a byte of a well-behaved neighbour's stream.

// hostileLines is how many random lines the stamp-mode client sends, cut
// into writes of random length.
const hostileLines = 300

// hostileFlood is the stream with no newline at all: megabytes, far over
// any -max-line, so a server that buffers until '\n' shows it.
const hostileFlood = 4 << 20

func runHostile(e *Env) error {
	s, err := e.Start("-max-line", fmt.Sprint(longLineMax))
	if err != nil {
		return err
	}
	// One connection after another, so that a server taking one client at
	// a time can pass too; long-line checks neighbours side by side.
	garbage, err := e.Dial(s)
	if err != nil {
		return err
	}
	stream, want := hostileStream()
	cut := rand.New(rand.NewPCG(7, 11))
	deadline := time.Now().Add(halfCloseTimeout)
	next := 0 // the next expected reply
	for p := stream; len(p) > 0; {
		n := min(len(p), 1+cut.IntN(2*longLineMax))
		if err := garbage.Send(p[:n]); err != nil {
			return Fail(Refused, "send random bytes as lines", err.Error(), "the server to read them", "")
		}
		p = p[n:]
		// Read what is owed for the lines complete so far, so that no
		// buffer fills while the test writes.
		for ; next < len(want) && want[next].end <= len(stream)-len(p); next++ {
			if err := expectHostileReply(garbage, next, want[next].line, deadline); err != nil {
				return err
			}
		}
	}
	garbage.Close()

	if err := floodNoNewline(e, s); err != nil {
		return err
	}
	c, err := e.Dial(s)
	if err != nil {
		return err
	}
	return explain(c.Ask("a well-behaved client after the random bytes and the flood", []byte("plain line"),
		time.Now().Add(ioTimeout)), "after a client sent garbage, and another megabytes with no newline, the "+
		"next must be served as usual: each connection's state is its own")
}

// floodNoNewline sends megabytes with no '\n': the server must refuse the
// line once it is over -max-line, and close, without buffering it all.
func floodNoNewline(e *Env, s *Server) error {
	flood, err := e.Dial(s)
	if err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		chunk := bytes.Repeat([]byte("y"), streamChunk)
		for sent := 0; sent < hostileFlood; sent += len(chunk) {
			// The server may close once it has said why: a failed write
			// here is its right, not a failure.
			if _, err := flood.Write(chunk, ioTimeout); err != nil {
				return
			}
		}
	}()
	defer func() { flood.Close(); <-done }()
	if err := expectErrorLine(flood, fmt.Sprintf("error line for %s with no '\\n' (-max-line %d)", sizeString(hostileFlood), longLineMax),
		"a stream with no newline must meet the limit as it grows: once the unfinished line is over -max-line, "+
			"send the error line and close, or a client can make the server buffer without bound"); err != nil {
		return err
	}
	return expectClosed(flood, "close after the error line for a stream with no '\\n'", time.Now().Add(ioTimeout),
		closeAfterError, noMoreAfterError)
}

// hostileLine is one expected reply: the line, and where in the stream
// its '\n' ends.
type hostileLine struct {
	line []byte
	end  int
}

// hostileStream returns a seeded stream of lines made of any byte but
// '\n' (NUL, 0xff, invalid UTF-8, '\r' anywhere, empty lines, CRLF endings,
// lines of exactly -max-line), and the replies the protocol owes for it.
func hostileStream() ([]byte, []hostileLine) {
	r := rand.New(rand.NewPCG(3, 5))
	var stream []byte
	for i := range hostileLines {
		n := r.IntN(200)
		switch i % 50 {
		case 0:
			n = 0 // an empty line
		case 1:
			n = longLineMax // exactly at the limit
		}
		for range n {
			b := byte(r.IntN(256))
			if b == '\n' {
				b = 0
			}
			stream = append(stream, b)
		}
		if r.IntN(4) == 0 {
			stream = append(stream, '\r') // a CRLF line: the '\r' is dropped
		}
		stream = append(stream, '\n')
	}
	d := protocol.NewDecoder(longLineMax)
	d.Feed(stream)
	var want []hostileLine
	off := 0
	for {
		line, err := d.Next()
		if err != nil || line == nil {
			break
		}
		off += bytes.IndexByte(stream[off:], '\n') + 1
		want = append(want, hostileLine{line: bytes.Clone(line), end: off})
	}
	return stream, want
}

func expectHostileReply(c *Client, i int, line []byte, deadline time.Time) error {
	step := fmt.Sprintf("reply %d of %d random lines (any byte but '\\n', %d bytes)", i+1, hostileLines, len(line))
	return explain(c.ExpectReply(step, line, deadline), "every byte but the '\\n' and a '\\r' right before it is "+
		"part of the line: NUL, 0xff, a lone '\\r'; pass them through verbatim, and treat a line of exactly "+
		"-max-line bytes like any other")
}
