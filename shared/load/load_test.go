package load

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestPercentile(t *testing.T) {
	var l Latencies
	for i := 1; i <= 100; i++ {
		l.Add(time.Duration(i) * time.Millisecond)
	}
	for _, tt := range []struct {
		p    float64
		want time.Duration
	}{
		{p: 50, want: 50 * time.Millisecond},
		{p: 99, want: 99 * time.Millisecond},
		{p: 100, want: 100 * time.Millisecond},
		{p: 0.1, want: 1 * time.Millisecond},
	} {
		if got := l.Percentile(tt.p); got != tt.want {
			t.Errorf("Percentile(%v) = %v, want %v", tt.p, got, tt.want)
		}
	}
}

// TestRoundTripEcho runs a round trip against an in-test echo server.
func TestRoundTripEcho(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 1024)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			c.Write(buf[:n])
		}
	}()
	c, err := DialEcho(ln.Addr().String(), []byte("0123456789abcdef"))
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	for range 10 {
		if _, err := c.RoundTrip(); err != nil {
			t.Fatalf("RoundTrip: %v", err)
		}
	}
}
