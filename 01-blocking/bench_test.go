//go:build linux

package main

import (
	"testing"
	"time"

	"reactorlab/shared/harness"
	"reactorlab/shared/load"
)

// BenchmarkRoundTrip is one client's round trip with nobody else connected,
// comparable with every other chapter's, per model: the floor every later
// chapter is compared with.
//
//	go test -run='^$' -bench=RoundTrip ./01-blocking
func BenchmarkRoundTrip(b *testing.B) {
	server := harness.Build(b, ".")
	for _, model := range models {
		for _, mode := range []string{"echo", "stamp"} {
			b.Run(model+"/"+mode, func(b *testing.B) {
				s := harness.StartServer(b, server, "-model", model, "-mode", mode)
				load.RoundTrips(b, load.Dial(b, s.Addr(), mode))
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
		conns[i] = load.Dial(b, s.Addr(), "echo")
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
	load.Report(b, &lat, time.Since(start))
}
