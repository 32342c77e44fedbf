//go:build linux

package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"reactorlab/shared/harness"
	"reactorlab/shared/load"
)

// BenchmarkRoundTrip is one client's round trip with nobody else connected,
// comparable with every other chapter's.
//
//	go test -run='^$' -bench=RoundTrip ./03-epoll-lt
func BenchmarkRoundTrip(b *testing.B) {
	server := harness.Build(b, ".")
	for _, mode := range []string{"echo", "stamp"} {
		b.Run(mode, func(b *testing.B) {
			s := harness.StartServer(b, server, "-mode", mode)
			load.RoundTrips(b, load.Dial(b, s.Addr(), mode))
		})
	}
}

// BenchmarkIdleCrowd is why epoll replaced poll: the round trip of one
// active client while N idle connections stay open. poll hands the kernel
// all N+2 fds on every call and the loop scans them all on return; epoll's
// interest list lives in the kernel and epoll_wait returns only the ready
// one. Chapter 02's poll server is built and measured in the same run.
//
//	go test -run='^$' -bench=IdleCrowd -benchtime=2000x ./03-epoll-lt
func BenchmarkIdleCrowd(b *testing.B) {
	servers := []struct {
		name string
		cmd  harness.Command
	}{
		{name: "02-poll", cmd: harness.Build(b, "../02-select-poll").With("-poller", "poll")},
		{name: "03-epoll", cmd: harness.Build(b, ".")},
	}
	for _, idle := range []int{10, 1000, 10000} {
		for _, srv := range servers {
			b.Run(fmt.Sprintf("idle=%d/%s", idle, srv.name), func(b *testing.B) {
				s := harness.StartServer(b, srv.cmd, "-mode", "echo")
				base, err := s.OpenFDs()
				if err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				crowd, err := load.OpenIdle(s.Addr(), idle)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(crowd.Close)
				// Connected is not accepted: wait until the server holds
				// every idle connection, and time it. poll accepts one per
				// wait and scans every fd on each, so taking in N clients
				// costs it O(N²); epoll, O(N).
				n, err := s.WaitFDs(context.Background(), crowdAcceptTimeout, func(n int) bool { return n >= base+idle })
				if err != nil || n < base+idle {
					b.Fatalf("server holds %d fds after %v, want %d: %v", n, crowdAcceptTimeout, base+idle, err)
				}
				accepted := time.Since(start)
				load.RoundTrips(b, load.Dial(b, s.Addr(), "echo"))
				b.ReportMetric(float64(accepted.Milliseconds()), "accept-crowd-ms")
			})
		}
	}
}

// crowdAcceptTimeout bounds the wait for the idle crowd to be accepted:
// 10,000 connections take poll's loop seconds (that is the point).
const crowdAcceptTimeout = 2 * time.Minute
