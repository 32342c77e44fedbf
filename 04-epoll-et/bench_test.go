//go:build linux

package main

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"reactorlab/shared/harness"
	"reactorlab/shared/load"
)

// BenchmarkNeighbourOfBulk is what readBudget is for: one client's 64-byte
// round trip while another streams echo traffic as fast as the server takes
// it. Level-triggered 03 reads once per event, so the streamer and the
// neighbour take turns by construction; edge-triggered 04 drains, and only
// the budget stops the streamer from keeping the loop. bulk-MiB/s is the
// other side of the trade: what the streamer got meanwhile. Chapter 03's
// server is built and measured in the same run.
//
//	go test -run='^$' -bench=NeighbourOfBulk -benchtime=2000x ./04-epoll-et
func BenchmarkNeighbourOfBulk(b *testing.B) {
	servers := []struct {
		name string
		cmd  harness.Command
	}{
		{name: "03-epoll-lt", cmd: harness.Build(b, "../03-epoll-lt")},
		{name: "04-epoll-et", cmd: harness.Build(b, ".")},
	}
	for _, srv := range servers {
		b.Run(srv.name, func(b *testing.B) {
			s := harness.StartServer(b, srv.cmd, "-mode", "echo")
			st := stream(b, s.Addr())
			c := dial(b, s.Addr(), "echo")
			roundTrips(b, c)
			b.ReportMetric(float64(st.echoed.Load())/(1<<20)/b.Elapsed().Seconds(), "bulk-MiB/s")
		})
	}
}

// BenchmarkRoundTrip is one client's round trip with nobody else connected,
// comparable with 01's and 03's.
//
//	go test -run='^$' -bench=RoundTrip ./04-epoll-et
func BenchmarkRoundTrip(b *testing.B) {
	server := harness.Build(b, ".")
	for _, mode := range []string{"echo", "stamp"} {
		b.Run(mode, func(b *testing.B) {
			s := harness.StartServer(b, server, "-mode", mode)
			c := dial(b, s.Addr(), mode)
			roundTrips(b, c)
		})
	}
}

// BenchmarkCrowd is 100 clients each making one 64-byte echo round trip
// per iteration, all at once: one loop serving many ready fds per wait.
//
//	go test -run='^$' -bench=Crowd -benchtime=2000x ./04-epoll-et
func BenchmarkCrowd(b *testing.B) {
	const clients = 100
	s := harness.StartServer(b, harness.Build(b, "."), "-mode", "echo")
	cs := make([]*load.Conn, clients)
	for i := range cs {
		cs[i] = dial(b, s.Addr(), "echo")
	}
	// One slice per client, merged after the loop: no lock while timed.
	lat := make([][]time.Duration, clients)
	errs := make([]error, clients)
	var wg sync.WaitGroup
	start := time.Now()
	for b.Loop() {
		for i, c := range cs {
			wg.Go(func() {
				var d time.Duration
				d, errs[i] = c.RoundTrip()
				lat[i] = append(lat[i], d)
			})
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	elapsed := time.Since(start)
	var all load.Latencies
	for _, ds := range lat {
		for _, d := range ds {
			all.Add(d)
		}
	}
	report(b, &all, elapsed)
}

// BenchmarkBulk is one client echoing 4 KiB messages back to back.
//
//	go test -run='^$' -bench=Bulk -benchtime=2000x ./04-epoll-et
func BenchmarkBulk(b *testing.B) {
	const size = 4 << 10
	s := harness.StartServer(b, harness.Build(b, "."), "-mode", "echo")
	c, err := load.DialEcho(s.Addr(), make([]byte, size))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	n := 0
	start := time.Now()
	for b.Loop() {
		if _, err := c.RoundTrip(); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(n*size)/(1<<20)/time.Since(start).Seconds(), "MiB/s")
	b.ReportMetric(0, "ns/op")
}

func dial(b *testing.B, addr, mode string) *load.Conn {
	b.Helper()
	msg := make([]byte, 64) // the DESIGN's small-message size
	for i := range msg {
		msg[i] = 'a' + byte(i%26)
	}
	var c *load.Conn
	var err error
	if mode == "echo" {
		c, err = load.DialEcho(addr, msg)
	} else {
		c, err = load.DialStamp(addr, msg)
	}
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// roundTrips times c's round trips for as long as the benchmark runs and
// reports msgs/s and latency percentiles.
func roundTrips(b *testing.B, c *load.Conn) {
	var lat load.Latencies
	for b.Loop() {
		d, err := c.RoundTrip()
		if err != nil {
			b.Fatal(err)
		}
		lat.Add(d)
	}
	report(b, &lat, b.Elapsed())
}

func report(b *testing.B, lat *load.Latencies, elapsed time.Duration) {
	for unit, v := range lat.Summary(lat.Len(), elapsed) {
		b.ReportMetric(v, unit)
	}
	b.ReportMetric(0, "ns/op") // wall time per op is msgs/s's inverse: don't print it twice
}

// streamer keeps one echo connection busy: one goroutine writes 64 KiB
// chunks without pause, another reads the echo and counts it. Both end
// when the benchmark's cleanup closes the connection.
type streamer struct {
	echoed atomic.Int64
}

func stream(b *testing.B, addr string) *streamer {
	b.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	st := &streamer{}
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
	b.Cleanup(func() {
		c.Close()
		wg.Wait()
	})
	return st
}
