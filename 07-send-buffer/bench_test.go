//go:build linux

package main

import (
	"bufio"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"reactorlab/shared/harness"
	"reactorlab/shared/load"
	"reactorlab/shared/protocol"
)

// BenchmarkRoundTrip is one client's round trip with nobody else connected,
// comparable with every other chapter's.
//
//	go test -run='^$' -bench=RoundTrip ./07-send-buffer
func BenchmarkRoundTrip(b *testing.B) {
	server := harness.Build(b, ".")
	for _, mode := range []string{"echo", "stamp"} {
		b.Run(mode, func(b *testing.B) {
			s := harness.StartServer(b, server, "-mode", mode)
			load.RoundTrips(b, load.Dial(b, s.Addr(), mode))
		})
	}
}

// BenchmarkEcho is 100 echo clients at once, each sending 64 bytes and
// waiting for them back, b.N round trips in all, in each model, with
// -loops as many as the machine has CPUs. The server runs in this process
// so that allocs/op counts its allocations: the clients make none per
// message, so any there are the server's, and there must be none.
//
//	go test -run='^$' -bench=Echo -benchtime=200000x ./07-send-buffer
func BenchmarkEcho(b *testing.B) {
	const conns = 100
	for _, model := range models {
		b.Run(model, func(b *testing.B) {
			s := runServer(b, config{mode: protocol.Echo, maxLine: protocol.DefaultMaxLine, model: model,
				loops: runtime.NumCPU()})
			clients := make([]*load.Conn, conns)
			for i := range clients {
				clients[i] = load.Dial(b, s.addr, "echo")
			}
			b.ReportAllocs()
			lat, elapsed := crowd(b, clients, b.N)
			load.Report(b, lat, elapsed)
		})
	}
}

// BenchmarkCrowd is BenchmarkEcho's crowd against 06 and 07 built as
// servers of their own, both models each, in the same run: what the send
// buffer costs where no client is slow, in msgs/s and in the server's CPU
// time per message (user and system, from /proc).
//
//	go test -run='^$' -bench=Crowd -benchtime=100000x ./07-send-buffer
func BenchmarkCrowd(b *testing.B) {
	const conns = 100
	loops := fmt.Sprint(runtime.NumCPU())
	for _, ch := range []struct{ name, dir string }{{"06", "../06-reactor-pool"}, {"07", "."}} {
		for _, model := range models {
			b.Run(ch.name+"/"+model, func(b *testing.B) {
				s := harness.StartServer(b, harness.Build(b, ch.dir), "-mode", "echo", "-model", model, "-loops", loops)
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
	for i := range each {
		each[i] = make([]time.Duration, 0, 2*n/len(clients)+1)
	}
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

// BenchmarkSlowNeighbour is one client's round trips while another client
// floods the server and never reads, 06 against 07, each with one loop,
// in the same run. Each round trip may take the contract's second. 06's
// loop waits in poll() for the flooder, so its neighbour's first round
// trip never comes back, and the benchmark stops there: stalled 1,
// msgs/s 0. 07 has paused the flooder and serves the neighbour as if it
// were alone.
//
//	go test -run='^$' -bench=SlowNeighbour -benchtime=20000x ./07-send-buffer
func BenchmarkSlowNeighbour(b *testing.B) {
	for _, ch := range []struct{ name, dir string }{{"06", "../06-reactor-pool"}, {"07", "."}} {
		b.Run(ch.name, func(b *testing.B) {
			s := harness.StartServer(b, harness.Build(b, ch.dir), "-loops", "1")
			flood, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { flood.Close() })
			floodUntilStuck(b, flood.(*net.TCPConn))

			c, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { c.Close() })
			r := bufio.NewReader(c)
			line := []byte("are you still there?\n")
			var lat load.Latencies
			stalled := 0
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				c.SetDeadline(start.Add(time.Second))
				if _, err := c.Write(line); err != nil {
					b.Fatal(err)
				}
				if _, err := r.ReadSlice('\n'); err != nil {
					stalled++
					break
				}
				lat.Add(time.Since(start))
			}
			elapsed := b.Elapsed()
			b.StopTimer()
			load.Report(b, &lat, elapsed)
			b.ReportMetric(float64(stalled), "stalled")
		})
	}
}
