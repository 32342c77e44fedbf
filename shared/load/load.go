// Package load is the client side of the lab's benchmarks: connections that
// time round trips, connections that stay open and silent, and latency
// percentiles. It measures servers from outside, through loopback, so a
// chapter, the standard library's server and any peer are measured alike.
//
// Run and Hold are the load generator (shared/cmd/load) and the engine of
// the compare command: many connections, ping-pong or pipelined, every
// echoed byte checked. Conn, Idle and Latencies serve the chapters'
// go test benchmarks.
package load

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"slices"
	"time"
)

// ioTimeout keeps a stalled server from hanging a benchmark forever.
const ioTimeout = 10 * time.Second

// Conn is one client that sends a message and waits for its answer.
type Conn struct {
	c    net.Conn
	r    *bufio.Reader
	msg  []byte
	echo bool
	buf  []byte
}

// DialEcho connects to a server in -mode echo; each round trip sends msg
// and reads len(msg) bytes back.
func DialEcho(addr string, msg []byte) (*Conn, error) {
	return dial(addr, msg, true)
}

// DialStamp connects to a server in -mode stamp; each round trip sends
// line+"\n" and reads one reply line.
func DialStamp(addr string, line []byte) (*Conn, error) {
	return dial(addr, append(bytes.Clone(line), '\n'), false)
}

func dial(addr string, msg []byte, echo bool) (*Conn, error) {
	c, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		return nil, err
	}
	return &Conn{c: c, r: bufio.NewReaderSize(c, 64<<10), msg: msg, echo: echo, buf: make([]byte, len(msg))}, nil
}

// RoundTrip sends the message once and waits for the whole answer.
func (c *Conn) RoundTrip() (time.Duration, error) {
	start := time.Now()
	c.c.SetDeadline(start.Add(ioTimeout))
	if _, err := c.c.Write(c.msg); err != nil {
		return 0, err
	}
	if c.echo {
		if _, err := io.ReadFull(c.r, c.buf); err != nil {
			return 0, err
		}
		if !bytes.Equal(c.buf, c.msg) {
			return 0, fmt.Errorf("echo returned different bytes")
		}
	} else if _, err := c.r.ReadSlice('\n'); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// Close closes the connection.
func (c *Conn) Close() error { return c.c.Close() }

// Idle holds connections that stay open and never send: the crowd an
// O(n) poller pays for on every wait.
type Idle struct{ conns []net.Conn }

// OpenIdle opens n silent connections to addr.
func OpenIdle(addr string, n int) (*Idle, error) {
	idle := &Idle{conns: make([]net.Conn, 0, n)}
	for range n {
		c, err := net.DialTimeout("tcp", addr, ioTimeout)
		if err != nil {
			idle.Close()
			return nil, fmt.Errorf("idle connection %d of %d: %w", len(idle.conns)+1, n, err)
		}
		idle.conns = append(idle.conns, c)
	}
	return idle, nil
}

// Close closes every idle connection.
func (i *Idle) Close() {
	for _, c := range i.conns {
		c.Close()
	}
	i.conns = nil
}

// Latencies collects round-trip times.
type Latencies struct{ d []time.Duration }

// Add records one round trip.
func (l *Latencies) Add(d time.Duration) { l.d = append(l.d, d) }

// Len is the number of round trips recorded.
func (l *Latencies) Len() int { return len(l.d) }

// Percentile returns the p-th percentile (0 < p <= 100), nearest rank.
func (l *Latencies) Percentile(p float64) time.Duration {
	if len(l.d) == 0 {
		return 0
	}
	s := slices.Clone(l.d)
	slices.Sort(s)
	rank := int(p/100*float64(len(s))+0.5) - 1
	return s[min(max(rank, 0), len(s)-1)]
}

// Metrics is what benchmarks report with b.ReportMetric, unit by unit.
type Metrics map[string]float64

// Summary turns n messages answered in elapsed wall time, with their
// latencies, into msgs/s and percentile metrics in microseconds.
func (l *Latencies) Summary(n int, elapsed time.Duration) Metrics {
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	return Metrics{
		"msgs/s": float64(n) / elapsed.Seconds(),
		"p50-µs": us(l.Percentile(50)),
		"p99-µs": us(l.Percentile(99)),
	}
}
