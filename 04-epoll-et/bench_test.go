//go:build linux

package main

import (
	"testing"

	"reactorlab/shared/harness"
	"reactorlab/shared/load"
)

// BenchmarkRoundTrip is one client's round trip with nobody else connected,
// comparable with every other chapter's.
//
//	go test -run='^$' -bench=RoundTrip ./04-epoll-et
func BenchmarkRoundTrip(b *testing.B) {
	server := harness.Build(b, ".")
	for _, mode := range []string{"echo", "stamp"} {
		b.Run(mode, func(b *testing.B) {
			s := harness.StartServer(b, server, "-mode", mode)
			load.RoundTrips(b, load.Dial(b, s.Addr(), mode))
		})
	}
}

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
			st := load.Stream(b, s.Addr())
			load.RoundTrips(b, load.Dial(b, s.Addr(), "echo"))
			b.ReportMetric(st.MiBps(b.Elapsed()), "bulk-MiB/s")
		})
	}
}
