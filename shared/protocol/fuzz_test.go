package protocol

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fuzzMax is small so that random input crosses the line limit often.
const fuzzMax = 16

// FuzzDecoder checks that how a stream is cut into reads never changes what
// the decoder makes of it, and that both agree with a plain bytes.Split.
//
// cuts says where to cut stream: each byte is the length of the next read
// (0 is an empty read), and whatever the bytes leave over is the last read.
func FuzzDecoder(f *testing.F) {
	long := strings.Repeat("x", fuzzMax)
	f.Add([]byte(""), []byte(""))
	f.Add([]byte("\n"), []byte{0, 0, 1})
	f.Add([]byte("a\r\nb\r\n"), []byte{1, 1, 1, 1, 1, 1})
	f.Add([]byte("a\rb\r\r\n\r"), []byte{2, 3})
	f.Add([]byte("\x00\xff\n\xc3(\n"), []byte{1})
	f.Add([]byte(long+"\r\n"), []byte{fuzzMax + 1, 1}) // '\r' alone at the end of a read
	f.Add([]byte(long+"\r\r\n"), []byte{fuzzMax + 1, 1})
	f.Add([]byte(long+"y\n"+long+"\n"), []byte{5, 5, 5})
	f.Add([]byte("ok\n"+long+long+long), []byte{3, 7, 11})
	f.Add([]byte("last line\r"), []byte{4})

	f.Fuzz(func(t *testing.T, stream, cuts []byte) {
		var reads [][]byte
		rest := stream
		for _, c := range cuts {
			n := min(int(c), len(rest))
			reads = append(reads, rest[:n])
			rest = rest[n:]
		}
		reads = append(reads, rest)

		whole := decode(t, NewDecoder(fuzzMax), [][]byte{stream}, true)
		split := decode(t, NewDecoder(fuzzMax), reads, true)
		if diff := cmp.Diff(whole, split); diff != "" {
			t.Errorf("stream %q cut as %q: split reads disagree with one read (-whole +split):\n%s", stream, reads, diff)
		}
		if diff := cmp.Diff(referenceDecode(stream, fuzzMax), whole); diff != "" {
			t.Errorf("stream %q: decoder disagrees with the reference (-want +got):\n%s", stream, diff)
		}
	})
}

// referenceDecode is the protocol as the contract states it, with no care
// for memory: split the whole stream on '\n', drop one '\r' before it,
// answer a non-empty tail at EOF, stop at the first line over max.
// Its transcript has the same form as decode's.
func referenceDecode(stream []byte, max int) []string {
	parts := bytes.Split(stream, []byte("\n"))
	tail := parts[len(parts)-1]
	var got []string
	for _, p := range parts[:len(parts)-1] {
		line := bytes.TrimSuffix(p, []byte("\r"))
		if len(line) > max {
			return append(got, "error: "+(&LineTooLongError{Max: max}).Error())
		}
		got = append(got, fmt.Sprintf("next %q", line))
	}
	if len(tail) == 0 {
		return got
	}
	line := bytes.TrimSuffix(tail, []byte("\r"))
	if len(line) > max {
		return append(got, "error: "+(&LineTooLongError{Max: max}).Error())
	}
	return append(got, fmt.Sprintf("final %q", line))
}
