//go:build linux

package main

import (
	"fmt"
	"testing"

	"reactorlab/shared/harness"
	"reactorlab/shared/load"
)

// BenchmarkRoundTrip is one client's round trip with nobody else connected,
// comparable with every other chapter's, per poller.
//
//	go test -run='^$' -bench=RoundTrip ./02-select-poll
func BenchmarkRoundTrip(b *testing.B) {
	server := harness.Build(b, ".")
	for _, poller := range pollers {
		for _, mode := range []string{"echo", "stamp"} {
			b.Run(poller+"/"+mode, func(b *testing.B) {
				s := harness.StartServer(b, server, "-poller", poller, "-mode", mode)
				load.RoundTrips(b, load.Dial(b, s.Addr(), mode))
			})
		}
	}
}

// BenchmarkIdleConns: the echo round trip while N other clients stay
// connected and silent. Every wait hands the kernel all N+2 fds and scans
// them all on return, so the round trip slows as N grows, though the idle
// clients never send a byte. select stops at 900: with about 1,020 fds it
// would start refusing clients (FD_SETSIZE).
//
//	go test -run='^$' -bench=IdleConns -benchtime=2000x ./02-select-poll
func BenchmarkIdleConns(b *testing.B) {
	server := harness.Build(b, ".")
	idle := map[string][]int{"select": {10, 900}, "poll": {10, 1000}}
	for _, poller := range pollers {
		for _, n := range idle[poller] {
			b.Run(fmt.Sprintf("%s/idle=%d", poller, n), func(b *testing.B) {
				s := harness.StartServer(b, server, "-poller", poller, "-mode", "echo")
				crowd, err := load.OpenIdle(s.Addr(), n)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(crowd.Close)
				c := load.Dial(b, s.Addr(), "echo")
				// The server accepts in connect order, so once this
				// connection is answered every idle one is in its table:
				// the timed round trips below pay for all of them.
				if _, err := c.RoundTrip(); err != nil {
					b.Fatal(err)
				}
				load.RoundTrips(b, c)
			})
		}
	}
}
