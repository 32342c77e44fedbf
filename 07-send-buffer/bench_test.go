//go:build linux

package main

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"reactorlab/shared/harness"
	"reactorlab/shared/load"
)

// BenchmarkRoundTrip is one client's round trip with nobody else connected,
// comparable with every other chapter's.
//
//	go test -run='^$' -bench=RoundTrip ./06-reactor-pool
func BenchmarkRoundTrip(b *testing.B) {
	server := harness.Build(b, ".")
	for _, mode := range []string{"echo", "stamp"} {
		b.Run(mode, func(b *testing.B) {
			s := harness.StartServer(b, server, "-mode", mode)
			load.RoundTrips(b, load.Dial(b, s.Addr(), mode))
		})
	}
}

// BenchmarkModels is the two models under the same crowd: 100 or 1,000
// echo clients at once, each sending 64 bytes and waiting for them back,
// b.N round trips in all, with -loops as many as the machine has CPUs.
// cpu-µs/msg is the server's CPU time (user and system, from /proc) per
// round trip: what the queue's hand-offs cost, where msgs/s on a machine
// the clients share may not show it.
//
//	go test -run='^$' -bench=Models -benchtime=20000x ./06-reactor-pool
func BenchmarkModels(b *testing.B) {
	server := harness.Build(b, ".")
	loops := fmt.Sprint(runtime.NumCPU())
	for _, conns := range []int{100, 1000} {
		for _, model := range models {
			b.Run(fmt.Sprintf("%s/conns=%d", model, conns), func(b *testing.B) {
				s := harness.StartServer(b, server, "-mode", "echo", "-model", model, "-loops", loops)
				clients := make([]*load.Conn, conns)
				for i := range clients {
					clients[i] = load.Dial(b, s.Addr(), "echo")
				}
				cpu0, err := s.CPU()
				if err != nil {
					b.Fatal(err)
				}
				lat, elapsed := crowd(b, clients, b.N)
				cpu1, err := s.CPU()
				if err != nil {
					b.Fatal(err)
				}
				load.Report(b, lat, elapsed)
				b.ReportMetric(float64((cpu1-cpu0).Microseconds())/float64(lat.Len()), "cpu-µs/msg")
			})
		}
	}
}

// crowd has every client do round trips at once, n in all, and returns
// their latencies and the wall time they took.
func crowd(b *testing.B, clients []*load.Conn, n int) (*load.Latencies, time.Duration) {
	var left atomic.Int64
	left.Store(int64(n))
	each := make([][]time.Duration, len(clients))
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for i, c := range clients {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				d, err := c.RoundTrip()
				if err != nil {
					b.Error(err)
					return
				}
				each[i] = append(each[i], d)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	var lat load.Latencies
	for _, ds := range each {
		for _, d := range ds {
			lat.Add(d)
		}
	}
	return &lat, elapsed
}
