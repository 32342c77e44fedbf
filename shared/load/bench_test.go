package load

import (
	"io"
	"net"
	"testing"
	"time"
)

// echoServer echoes every connection accepted on 127.0.0.1:0 until the
// test ends (server is run_test.go's).
func echoServer(t *testing.T) string {
	t.Helper()
	return server(t, func(c net.Conn) { io.Copy(c, c) })
}

func TestRoundTripsReports(t *testing.T) {
	addr := echoServer(t)
	res := testing.Benchmark(func(b *testing.B) {
		RoundTrips(b, Dial(b, addr, "echo"))
	})
	if res.N == 0 {
		t.Fatal("RoundTrips ran no round trips")
	}
	for _, unit := range []string{"msgs/s", "p50-µs", "p99-µs"} {
		if res.Extra[unit] <= 0 {
			t.Errorf("metric %s = %v, want > 0 (all: %v)", unit, res.Extra[unit], res.Extra)
		}
	}
}

func TestStreamCounts(t *testing.T) {
	st := Stream(t, echoServer(t))
	deadline := time.Now().Add(5 * time.Second)
	for st.Echoed() < 1<<20 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling a counter, bounded by deadline
	}
	if got := st.Echoed(); got < 1<<20 {
		t.Fatalf("echoed %d bytes in 5s, want at least 1 MiB", got)
	}
}
