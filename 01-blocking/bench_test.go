//go:build linux

package main

import (
	"testing"
	"time"

	"reactorlab/shared/harness"
	"reactorlab/shared/load"
)

// BenchmarkRoundTrip measures one client's request-reply round trip over
// loopback, per model: the floor every later chapter is compared with.
//
//	go test -run='^$' -bench=RoundTrip ./01-blocking
func BenchmarkRoundTrip(b *testing.B) {
	server := harness.Build(b, ".")
	for _, model := range models {
		for _, mode := range []string{"echo", "stamp"} {
			b.Run(model+"/"+mode, func(b *testing.B) {
				s := harness.StartServer(b, server, "-model", model, "-mode", mode)
				c := dial(b, s.Addr(), mode)
				roundTrips(b, c)
			})
		}
	}
}

// BenchmarkThreadsConcurrent has 100 clients ping-pong at once against the
// thread model: 100 OS threads, each blocked in read until its turn.
//
//	go test -run='^$' -bench=ThreadsConcurrent ./01-blocking
func BenchmarkThreadsConcurrent(b *testing.B) {
	const clients = 100
	s := harness.StartServer(b, harness.Build(b, "."), "-model", "thread", "-mode", "echo")
	conns := make([]*load.Conn, clients)
	for i := range conns {
		conns[i] = dial(b, s.Addr(), "echo")
	}
	var lat load.Latencies
	start := time.Now()
	for b.Loop() {
		// One round trip per client per iteration, all in flight at once.
		done := make(chan time.Duration, clients)
		for _, c := range conns {
			go func() {
				d, err := c.RoundTrip()
				if err != nil {
					d = -1
				}
				done <- d
			}()
		}
		for range clients {
			d := <-done
			if d < 0 {
				b.Fatal("round trip failed")
			}
			lat.Add(d)
		}
	}
	report(b, &lat, time.Since(start))
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
