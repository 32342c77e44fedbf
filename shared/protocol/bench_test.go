package protocol

import (
	"bytes"
	"testing"
)

// benchReads are single reads as a server sees them. "aligned" ends on a
// line boundary; in "straddling" a line crosses from each read into the
// next, so the decoder keeps and slides a tail every time.
var benchReads = []struct {
	name string
	read []byte
}{
	{name: "aligned/64x64B", read: bytes.Repeat([]byte(repeatTo(63, "line")+"\n"), 64)},
	{name: "straddling/4KiB", read: bytes.Repeat([]byte(repeatTo(99, "line")+"\n"), 41)[:4096]},
}

// repeatTo is s repeated and cut to exactly n bytes.
func repeatTo(n int, s string) string {
	return string(bytes.Repeat([]byte(s), n/len(s)+1)[:n])
}

func BenchmarkSessionInput(b *testing.B) {
	for _, mode := range []Mode{Stamp, Echo} {
		for _, bc := range benchReads {
			b.Run(mode.String()+"/"+bc.name, func(b *testing.B) {
				s := NewSession(mode, DefaultMaxLine)
				var out []byte
				b.ReportAllocs()
				b.SetBytes(int64(len(bc.read)))
				for b.Loop() {
					var err error
					out, err = s.Input(out[:0], bc.read)
					if err != nil {
						b.Fatal(err)
					}
				}
				if mode == Stamp {
					b.ReportMetric(float64(bytes.Count(bc.read, []byte("\n"))), "lines/op")
				}
			})
		}
	}
}

func BenchmarkDecoder(b *testing.B) {
	for _, bc := range benchReads {
		b.Run(bc.name, func(b *testing.B) {
			d := NewDecoder(DefaultMaxLine)
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.read)))
			lines := 0
			for b.Loop() {
				d.Feed(bc.read)
				for {
					line, err := d.Next()
					if err != nil {
						b.Fatal(err)
					}
					if line == nil {
						break
					}
					lines++
				}
			}
			b.ReportMetric(float64(lines)/float64(b.N), "lines/op")
		})
	}
}

// TestInputDoesNotAllocate pins down the hot path: once the caller's output
// buffer and the decoder's buffer have grown, answering a read costs no
// allocation, with the real clock and local time zone in use.
func TestInputDoesNotAllocate(t *testing.T) {
	for _, mode := range []Mode{Stamp, Echo} {
		for _, bc := range benchReads {
			t.Run(mode.String()+"/"+bc.name, func(t *testing.T) {
				s := NewSession(mode, DefaultMaxLine)
				var out []byte
				var err error
				input := func() {
					out, err = s.Input(out[:0], bc.read)
				}
				input() // let the buffers grow to their working size
				allocs := testing.AllocsPerRun(100, input)
				if err != nil {
					t.Fatalf("Input: %v", err)
				}
				if allocs != 0 {
					t.Errorf("Input allocated %v times per call in steady state, want 0", allocs)
				}
			})
		}
	}
}
