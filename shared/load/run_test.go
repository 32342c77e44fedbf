package load

import (
	"context"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
)

func TestHistogramPercentileWithinABucket(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var exact Latencies
	var h Histogram
	for range 10_000 {
		// Log-uniform from 10 ns to 10 s: every bucket width is exercised.
		d := time.Duration(10 * math.Pow(10, rng.Float64()*9))
		exact.Add(d)
		h.Record(d)
	}
	s := h.Snapshot()
	for _, p := range []float64{0.1, 1, 50, 90, 99, 99.9, 100} {
		want, got := exact.Percentile(p), s.Percentile(p)
		if diff := float64(got-want) / float64(want); diff > 1.0/64 || diff < -1.0/64 {
			t.Errorf("Percentile(%v) = %v, want %v within 1/64 (off by %.2f%%)", p, got, want, 100*diff)
		}
	}
}

func TestHistogramBuckets(t *testing.T) {
	for _, tt := range []struct {
		name string
		v    uint64
		want uint64 // bucketValue(bucketOf(v))
	}{
		{name: "zero", v: 0, want: 0},
		{name: "exact below 128", v: 127, want: 127},
		{name: "first shared bucket", v: 128, want: 129},
		{name: "its other value", v: 129, want: 129},
		{name: "a microsecond", v: 1000, want: 1004},                // bucket 1000..1007
		{name: "a millisecond", v: 1_000_000, want: 999_424 + 4096}, // bucket 999,424 + 8,192
		{name: "past the top", v: 1 << 50, want: histMax - (1<<33)/2 + 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := bucketValue(bucketOf(tt.v)); got != tt.want {
				t.Errorf("bucketValue(bucketOf(%d)) = %d, want %d", tt.v, got, tt.want)
			}
		})
	}
	// Buckets are contiguous and ordered: each value's bucket is its
	// predecessor's or the next one.
	prev := 0
	for v := uint64(1); v < 1<<20; v++ {
		b := bucketOf(v)
		if b != prev && b != prev+1 {
			t.Fatalf("bucketOf(%d) = %d after bucketOf(%d) = %d: a gap", v, b, v-1, prev)
		}
		prev = b
	}
	if got := bucketOf(histMax); got != histBuckets-1 {
		t.Errorf("bucketOf(histMax) = %d, want the last bucket %d", got, histBuckets-1)
	}
}

func TestSnapshotSub(t *testing.T) {
	var h Histogram
	for range 90 {
		h.Record(time.Millisecond)
	}
	before := h.Snapshot()
	for range 10 {
		h.Record(time.Second)
	}
	win := h.Snapshot().Sub(before)
	if win.Count() != 10 || win.Percentile(50) < 990*time.Millisecond {
		t.Errorf("window: %d counted, p50 %v; want 10, about 1s", win.Count(), win.Percentile(50))
	}
	if (&Snapshot{}).Percentile(50) != 0 {
		t.Error("an empty snapshot's percentile is not 0")
	}
}

func TestConfigCheck(t *testing.T) {
	ok := Config{Addr: "127.0.0.1:1", Conns: 1, Depth: 1, Size: 64, Duration: time.Second}
	for _, tt := range []struct {
		name string
		edit func(*Config)
		want string // substring of the error; "" for none
	}{
		{name: "ok", edit: func(*Config) {}},
		{name: "no conns", edit: func(c *Config) { c.Conns = 0 }, want: "-conns 0"},
		{name: "too many conns", edit: func(c *Config) { c.Conns = MaxConns + 1 }, want: "-conns"},
		{name: "no depth", edit: func(c *Config) { c.Depth = 0 }, want: "-depth 0"},
		{name: "empty message", edit: func(c *Config) { c.Size = 0 }, want: "-size 0"},
		{name: "huge message", edit: func(c *Config) { c.Size = MaxSize + 1 }, want: "-size"},
		{name: "endless", edit: func(c *Config) { c.Duration = 0 }, want: "-duration or -count"},
		{name: "too long", edit: func(c *Config) { c.Duration = MaxDuration + 1 }, want: "-duration"},
		{name: "negative count", edit: func(c *Config) { c.Count = -1 }, want: "-count -1"},
		{name: "idle needs no duration", edit: func(c *Config) { c.Idle, c.Duration, c.Depth = true, 0, 0 }},
		{name: "idle takes no count", edit: func(c *Config) { c.Idle, c.Count = true, 5 }, want: "-count"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.edit(&c)
			err := c.Check()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Check() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Check() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestLoopback(t *testing.T) {
	for _, tt := range []struct {
		addr string
		want string // the resolved address, or "refused" or "bad"
	}{
		{addr: "127.0.0.1:8080", want: "127.0.0.1:8080"},
		{addr: "127.1.2.3:8080", want: "127.1.2.3:8080"},
		{addr: "[::1]:8080", want: "[::1]:8080"},
		{addr: "[::ffff:127.0.0.1]:8080", want: "127.0.0.1:8080"},
		{addr: "10.0.0.1:8080", want: "refused"},
		{addr: "192.168.1.10:8080", want: "refused"},
		{addr: "8.8.8.8:53", want: "refused"},
		{addr: "0.0.0.0:8080", want: "refused"},
		{addr: "example.com:80", want: "refused"},
		{addr: "127.0.0.1", want: "bad"},
		{addr: "127.0.0.1:0", want: "bad"},
	} {
		t.Run(tt.addr, func(t *testing.T) {
			ap, err := Loopback(context.Background(), tt.addr)
			got := ap.String()
			switch {
			case err != nil && strings.Contains(err.Error(), "refused"):
				got = "refused"
			case err != nil:
				got = "bad"
			}
			if got != tt.want {
				t.Errorf("Loopback(%q) = %v, %v; want %s", tt.addr, ap, err, tt.want)
			}
		})
	}
	t.Run("localhost", func(t *testing.T) {
		ap, err := Loopback(context.Background(), "localhost:8080")
		if err != nil || !ap.Addr().IsLoopback() {
			t.Errorf("Loopback(localhost:8080) = %v, %v; want a loopback address", ap, err)
		}
	})
}

func TestRunCountsEveryMessage(t *testing.T) {
	addr := echoServer(t)
	for _, tt := range []struct {
		name               string
		conns, depth, size int
		count              int64
	}{
		{name: "ping-pong", conns: 4, depth: 1, size: 64, count: 2000},
		{name: "pipelined", conns: 3, depth: 16, size: 100, count: 3001},
		{name: "split writer and reader", conns: 2, depth: 4, size: 40 << 10, count: 50},
		{name: "messages larger than the read buffer", conns: 1, depth: 1, size: 200 << 10, count: 5},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Run(context.Background(), Config{Addr: addr, Conns: tt.conns, Depth: tt.depth, Size: tt.size, Count: tt.count})
			require.NoError(t, err)
			got := struct {
				Msgs, Errors int64
				Interrupted  bool
			}{res.Msgs, res.Errors, res.Interrupted}
			want := struct {
				Msgs, Errors int64
				Interrupted  bool
			}{tt.count, 0, false}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Run (-want +got):\n%s\nerrors: %v", diff, res.FirstErrors)
			}
			if res.P50 <= 0 || res.P50 > res.P99 || res.P99 > res.P999 {
				t.Errorf("percentiles p50 %v, p99 %v, p99.9 %v: want 0 < p50 <= p99 <= p99.9", res.P50, res.P99, res.P999)
			}
		})
	}
}

func TestRunStopsAtDuration(t *testing.T) {
	addr := echoServer(t)
	var ticks int
	res, err := Run(context.Background(), Config{Addr: addr, Conns: 2, Depth: 1, Size: 8, Duration: 1200 * time.Millisecond,
		Tick: func(Status) { ticks++ }})
	require.NoError(t, err)
	if res.Elapsed < time.Second || res.Elapsed > 5*time.Second || res.Msgs == 0 || res.Errors != 0 {
		t.Errorf("Run for 1.2s: elapsed %v, %d msgs, %d errors %v; want about 1.2s, some msgs, no errors",
			res.Elapsed, res.Msgs, res.Errors, res.FirstErrors)
	}
	if ticks < 1 || ticks > 2 {
		t.Errorf("Tick called %d times in a run of 1.2s, want once a second", ticks)
	}
}

// corruptingServer echoes, but changes the byte at offset bad of each
// connection's stream.
func corruptingServer(t *testing.T, bad int) string {
	t.Helper()
	return server(t, func(c net.Conn) {
		buf := make([]byte, 4096)
		for off := 0; ; {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if bad >= off && bad < off+n {
				buf[bad-off] ^= 0xff
			}
			off += n
			c.Write(buf[:n])
		}
	})
}

// server runs serve on each connection accepted on 127.0.0.1:0 until the
// test ends.
func server(t *testing.T, serve func(net.Conn)) string {
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
				serve(c)
			}()
		}
	}()
	return ln.Addr().String()
}

func TestRunCatchesBadEchoes(t *testing.T) {
	for _, tt := range []struct {
		name  string
		serve func(net.Conn)
		want  string
	}{
		{name: "one byte changed", serve: nil, want: "echo of message 3: byte 5 of 16"},
		{name: "a message repeated", serve: func(c net.Conn) {
			first := make([]byte, 16)
			if _, err := io.ReadFull(c, first); err != nil {
				return
			}
			c.Write(first)
			buf := make([]byte, 16)
			for {
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				c.Write(first) // the first message again, in place of each next one
			}
		}, want: "echo of message 2: byte"},
		{name: "closed early", serve: func(c net.Conn) {
			buf := make([]byte, 16)
			c.Read(buf)
			c.Write(buf[:10])
		}, want: "echo of message 1: after 10 of 16 bytes: EOF"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			addr := corruptingServer(t, 2*16+4)
			if tt.serve != nil {
				addr = server(t, tt.serve)
			}
			res, err := Run(context.Background(), Config{Addr: addr, Conns: 1, Depth: 1, Size: 16, Count: 10})
			require.NoError(t, err)
			if res.Errors != 1 || len(res.FirstErrors) != 1 || !strings.Contains(res.FirstErrors[0], tt.want) {
				t.Errorf("Run: %d errors %q, want 1 containing %q", res.Errors, res.FirstErrors, tt.want)
			}
		})
	}
}

func TestRunInterrupted(t *testing.T) {
	addr := echoServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	res, err := Run(ctx, Config{Addr: addr, Conns: 3, Depth: 2, Size: 64, Duration: time.Minute})
	require.NoError(t, err)
	if !res.Interrupted || res.Errors != 0 || res.Elapsed > 5*time.Second {
		t.Errorf("interrupted run: interrupted %v, %d errors %v, elapsed %v; want true, 0, well under a minute",
			res.Interrupted, res.Errors, res.FirstErrors, res.Elapsed)
	}
}

func TestRunRefusesOffMachine(t *testing.T) {
	_, err := Run(context.Background(), Config{Addr: "192.0.2.1:80", Conns: 1, Depth: 1, Size: 1, Count: 1})
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("Run against 192.0.2.1:80: %v, want a refusal", err)
	}
}

func TestHold(t *testing.T) {
	addr := echoServer(t)
	var readyConns int
	res, err := Hold(context.Background(), Config{Addr: addr, Conns: 20, Size: 64, Duration: 100 * time.Millisecond},
		func(r Result) { readyConns = int(r.Msgs) })
	require.NoError(t, err)
	if readyConns != 20 || res.Msgs != 20 || res.Errors != 0 {
		t.Errorf("Hold 20: ready after %d echoes, %d msgs, %d errors %v; want 20, 20, 0", readyConns, res.Msgs, res.Errors, res.FirstErrors)
	}
}

func TestHoldCountsDroppedConnections(t *testing.T) {
	addr := server(t, func(c net.Conn) {
		buf := make([]byte, 8)
		c.Read(buf)
		c.Write(buf) // one echo, then close
	})
	res, err := Hold(context.Background(), Config{Addr: addr, Conns: 3, Size: 8, Duration: 200 * time.Millisecond}, nil)
	require.NoError(t, err)
	if res.Errors != 3 {
		t.Errorf("Hold against a server that closes after one echo: %d errors %v, want 3", res.Errors, res.FirstErrors)
	}
}
