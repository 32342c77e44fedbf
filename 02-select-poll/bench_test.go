//go:build linux

package main

import (
	"bytes"
	"fmt"
	"testing"

	"reactorlab/shared/harness"
	"reactorlab/shared/load"
)

// benchMsg is one echo round trip's payload: small, so the figures are
// the server's per-wakeup cost, not the copying.
var benchMsg = bytes.Repeat([]byte("x"), 64)

// BenchmarkRoundTrip: one client, one 64-byte echo at a time.
func BenchmarkRoundTrip(b *testing.B) {
	for _, poller := range pollers {
		b.Run("poller="+poller, func(b *testing.B) {
			pingWithIdle(b, poller, 0)
		})
	}
}

// BenchmarkIdleConns: the same round trip while N other clients stay
// connected and silent. Every wait hands the kernel all N+2 fds and scans
// them all on return, so the round trip slows as N grows, though the idle
// clients never send a byte. select stops at 900: with about 1,020 fds it
// would start refusing clients (FD_SETSIZE).
func BenchmarkIdleConns(b *testing.B) {
	idle := map[string][]int{"select": {10, 900}, "poll": {10, 1000}}
	for _, poller := range pollers {
		for _, n := range idle[poller] {
			b.Run(fmt.Sprintf("poller=%s/idle=%d", poller, n), func(b *testing.B) {
				pingWithIdle(b, poller, n)
			})
		}
	}
}

// pingWithIdle starts the chapter's server, opens idle silent connections,
// then times round trips on one more, reporting msgs/s and percentiles.
func pingWithIdle(b *testing.B, poller string, idle int) {
	srv := harness.StartServer(b, harness.Build(b, ".").With("-poller", poller, "-mode", "echo"))
	if idle > 0 {
		crowd, err := load.OpenIdle(srv.Addr(), idle)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(crowd.Close)
	}
	c, err := load.DialEcho(srv.Addr(), benchMsg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	// The server accepts in connect order, so once this connection is
	// answered every idle one is in its table: the loop below measures
	// waits over all of them.
	if _, err := c.RoundTrip(); err != nil {
		b.Fatal(err)
	}

	var lat load.Latencies
	for b.Loop() {
		d, err := c.RoundTrip()
		if err != nil {
			b.Fatal(err)
		}
		lat.Add(d)
	}
	for unit, v := range lat.Summary(lat.Len(), b.Elapsed()) {
		b.ReportMetric(v, unit)
	}
}
