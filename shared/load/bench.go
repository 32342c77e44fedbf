package load

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Dial connects one benchmark client to a server running in mode ("echo"
// or "stamp") with the DESIGN's small message, 64 bytes, and closes it when
// the test or benchmark ends.
func Dial(tb testing.TB, addr, mode string) *Conn {
	tb.Helper()
	msg := make([]byte, 64)
	for i := range msg {
		msg[i] = 'a' + byte(i%26)
	}
	var c *Conn
	var err error
	if mode == "echo" {
		c, err = DialEcho(addr, msg)
	} else {
		c, err = DialStamp(addr, msg)
	}
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// RoundTrips times c's round trips for as long as the benchmark runs and
// reports msgs/s and latency percentiles.
func RoundTrips(b *testing.B, c *Conn) {
	b.Helper()
	var lat Latencies
	for b.Loop() {
		d, err := c.RoundTrip()
		if err != nil {
			b.Fatal(err)
		}
		lat.Add(d)
	}
	Report(b, &lat, b.Elapsed())
}

// Report reports lat's round trips, answered in elapsed wall time, as
// msgs/s and percentiles.
func Report(b *testing.B, lat *Latencies, elapsed time.Duration) {
	for unit, v := range lat.Summary(lat.Len(), elapsed) {
		b.ReportMetric(v, unit)
	}
	// Wall time per op is the inverse of msgs/s: don't print it twice.
	b.ReportMetric(0, "ns/op")
}

// Streamer keeps one echo connection busy: one goroutine writes 64 KiB
// chunks without pause, another reads the echo and counts it. Both end
// when the test's cleanup closes the connection.
type Streamer struct {
	echoed atomic.Int64
}

// Stream starts a Streamer against the echo server at addr.
func Stream(tb testing.TB, addr string) *Streamer {
	tb.Helper()
	c, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		tb.Fatal(err)
	}
	st := &Streamer{}
	var wg sync.WaitGroup
	wg.Go(func() {
		chunk := make([]byte, 64<<10)
		for {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	})
	wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			st.echoed.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	tb.Cleanup(func() {
		c.Close()
		wg.Wait()
	})
	return st
}

// Echoed is how many bytes have come back so far.
func (st *Streamer) Echoed() int64 { return st.echoed.Load() }

// MiBps is the echo rate over elapsed, for b.ReportMetric.
func (st *Streamer) MiBps(elapsed time.Duration) float64 {
	return float64(st.Echoed()) / (1 << 20) / elapsed.Seconds()
}
