package load

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Bounds on a run, so that a typo cannot start a load that outlives the
// session or exhausts the machine. Each is far above any figure the lab
// quotes.
const (
	MaxConns    = 25_000    // under the 28,232 ephemeral ports Linux gives one destination by default
	MaxDepth    = 4096      // messages in flight per connection
	MaxSize     = 16 << 20  // bytes per message
	MaxDuration = time.Hour // a forgotten run still ends
	MaxCount    = 10_000_000_000
)

// dialParallel is how many connects are in flight at once while a run
// opens its connections: enough to open 10,000 in a second or two, few
// enough not to overflow a server's listen backlog.
const dialParallel = 32

// readBuffer is each connection's read buffer. Echoed messages are checked
// in place, a buffer at a time, so a 16 MiB message needs no 16 MiB copy.
const readBuffer = 64 << 10

// serialWindow is the most a connection may have in flight and still run on
// one goroutine (write the window, then read one, write one). Beyond it
// the client could block writing while the server blocks writing the echo
// back (both sides' buffers full, neither reading): such windows get a
// writer and a reader goroutine instead. Loopback's socket buffers take
// 64 KiB each way.
const serialWindow = 64 << 10

// deadlineEvery is how often a connection pushes its I/O deadline forward:
// per message would add a timer update to every round trip.
const deadlineEvery = time.Second

// patternPeriod is how many different messages a connection cycles
// through: a prime, so that a message lost, repeated or answered out of
// order shows as a mismatch, not as the next message.
const patternPeriod = 251

// Config is one run of the load generator.
type Config struct {
	Addr     string        // host:port on loopback; see Loopback
	Conns    int           // connections, all open before the clock starts
	Depth    int           // messages in flight per connection: 1 is ping-pong
	Size     int           // bytes per message
	Duration time.Duration // stop sending after this long (0: only Count stops it)
	Count    int64         // stop after this many messages in all (0: only Duration stops it)
	// Idle makes the run Hold's: one message each, then silence until
	// Duration (0: until the context ends). Depth and Count do not apply.
	Idle bool
	// Tick, if set, is called about once a second from a goroutine of its
	// own with what the last second did.
	Tick func(Status)
}

// Status is one tick of the live status: the whole run so far, and rates
// and latencies over the last interval.
type Status struct {
	Elapsed  time.Duration
	Conns    int     // connections still running
	Msgs     int64   // echoed and verified so far
	Rate     float64 // msgs/s over the last interval
	P50, P99 time.Duration
	Errors   int64
}

// Result is what a run measured.
type Result struct {
	Conns, Depth, Size int
	Msgs               int64         // messages echoed back and verified
	Elapsed            time.Duration // from the first message sent to the last echo read
	P50, P99, P999     time.Duration // round trip: write of a message to the read of its last byte
	Errors             int64         // connections that failed: refused, reset, stalled, or echoed wrong bytes
	FirstErrors        []string      // the first few, for the summary
	Interrupted        bool          // the context ended the run early
}

// MsgsPerSec is the echo rate over the whole run.
func (r Result) MsgsPerSec() float64 { return rate(float64(r.Msgs), r.Elapsed) }

// MBPerSec is the payload echoed per second, each way, in 10^6 bytes.
func (r Result) MBPerSec() float64 { return rate(float64(r.Msgs)*float64(r.Size)/1e6, r.Elapsed) }

func rate(n float64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return n / d.Seconds()
}

// maxErrorsKept bounds Result.FirstErrors: 10,000 connections reset at once
// say the same thing 10,000 times.
const maxErrorsKept = 5

// Check reports the first setting out of bounds, in the words of the
// command's flags.
func (c Config) Check() error {
	switch {
	case c.Conns < 1 || c.Conns > MaxConns:
		return fmt.Errorf("-conns %d: want 1 to %d", c.Conns, MaxConns)
	case c.Idle && c.Count != 0:
		return errors.New("-count means nothing with -idle: each idle connection echoes one message")
	case !c.Idle && (c.Depth < 1 || c.Depth > MaxDepth):
		return fmt.Errorf("-depth %d: want 1 to %d", c.Depth, MaxDepth)
	case c.Size < 1 || c.Size > MaxSize:
		return fmt.Errorf("-size %d: want 1 to %d bytes", c.Size, MaxSize)
	case c.Duration < 0 || c.Duration > MaxDuration:
		return fmt.Errorf("-duration %v: want 0 to %v", c.Duration, MaxDuration)
	case c.Count < 0 || c.Count > MaxCount:
		return fmt.Errorf("-count %d: want 0 to %d", c.Count, int64(MaxCount))
	case !c.Idle && c.Duration == 0 && c.Count == 0:
		return errors.New("a run needs -duration or -count (or both)")
	}
	return nil
}

// run is the state a run's connections share.
type run struct {
	cfg     Config
	pattern []byte // message k of connection i is pattern[(k+i)%patternPeriod:][:Size]
	hist    Histogram
	msgs    atomic.Int64
	budget  atomic.Int64 // messages still to send when Count is set
	stopped atomic.Bool  // no more messages are sent; those in flight are awaited
	active  atomic.Int64

	mu          sync.Mutex
	errors      int64
	firstErrors []string
}

// Run opens cfg.Conns connections, sends cfg.Depth messages of cfg.Size
// bytes on each and keeps that many in flight, checks that every byte comes
// back in order, and stops at cfg.Duration or cfg.Count, whichever comes
// first, or when ctx ends (then Result.Interrupted is set). It returns an
// error only when the run could not start: a bad Config, an address off
// this machine, or a connection that could not be opened.
func Run(ctx context.Context, cfg Config) (Result, error) {
	conns, err := connect(ctx, cfg)
	if err != nil {
		return Result{}, err
	}
	r := &run{cfg: cfg, pattern: pattern(cfg.Size + patternPeriod)}
	r.budget.Store(cfg.Count)
	r.active.Store(int64(len(conns)))

	// Ctrl-C closes every connection, so reads blocked on a server return
	// now, not at their deadline.
	interrupted := context.AfterFunc(ctx, func() {
		r.stopped.Store(true)
		for _, c := range conns {
			c.Close()
		}
	})
	defer interrupted()

	start := time.Now()
	// A run by count alone still ends: a server slow enough to make
	// it last an hour is not being measured any more.
	limit := cfg.Duration
	if limit == 0 {
		limit = MaxDuration
	}
	stopAt := time.AfterFunc(limit, func() { r.stopped.Store(true) })
	defer stopAt.Stop()
	stopTicks := r.ticks(start)

	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() {
			defer r.active.Add(-1)
			defer c.Close()
			if err := r.conn(i, c); err != nil && ctx.Err() == nil {
				r.fail(i, err)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopTicks()

	res := r.result(elapsed)
	res.Interrupted = ctx.Err() != nil
	return res, nil
}

// ticks calls cfg.Tick once a second, if set, until the returned stop is
// called; stop returns once the last Tick has returned, so nothing prints
// after the summary.
func (r *run) ticks(start time.Time) (stop func()) {
	if r.cfg.Tick == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { r.tick(start, done) })
	return func() {
		close(done)
		wg.Wait()
	}
}

// tick reports the last second to cfg.Tick until done is closed.
func (r *run) tick(start time.Time, done <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	prev, prevMsgs, prevAt := r.hist.Snapshot(), int64(0), start
	for {
		select {
		case <-done:
			return
		case now := <-t.C:
			s := r.hist.Snapshot()
			win := s.Sub(prev)
			msgs := r.msgs.Load()
			r.mu.Lock()
			errs := r.errors
			r.mu.Unlock()
			r.cfg.Tick(Status{
				Elapsed: now.Sub(start),
				Conns:   int(r.active.Load()),
				Msgs:    msgs,
				Rate:    rate(float64(msgs-prevMsgs), now.Sub(prevAt)),
				P50:     win.Percentile(50),
				P99:     win.Percentile(99),
				Errors:  errs,
			})
			prev, prevMsgs, prevAt = s, msgs, now
		}
	}
}

// claim takes one message from the run's budget; false means stop sending.
func (r *run) claim() bool {
	if r.stopped.Load() {
		return false
	}
	if r.cfg.Count > 0 && r.budget.Add(-1) < 0 {
		r.stopped.Store(true)
		return false
	}
	return true
}

func (r *run) fail(i int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors++
	if len(r.firstErrors) < maxErrorsKept {
		r.firstErrors = append(r.firstErrors, fmt.Sprintf("connection %d: %v", i+1, err))
	}
}

// message is the k-th message of connection i.
func (r *run) message(i int, k uint64) []byte {
	off := (k + uint64(i)) % patternPeriod
	return r.pattern[off : off+uint64(r.cfg.Size)]
}

// conn runs one connection until the run stops and every message it sent
// has come back.
func (r *run) conn(i int, c *net.TCPConn) error {
	if r.cfg.Depth*r.cfg.Size <= serialWindow {
		return r.serial(i, c)
	}
	return r.split(i, c)
}

// serial writes up to Depth messages, then reads one and writes one, on a
// single goroutine: the cheapest client, so the server is what is measured.
func (r *run) serial(i int, c *net.TCPConn) error {
	br := bufio.NewReaderSize(c, readBuffer)
	sentAt := make([]time.Time, r.cfg.Depth)
	var sent, recvd uint64
	var pushed time.Time
	for {
		now := time.Now()
		if now.Sub(pushed) > deadlineEvery {
			c.SetDeadline(now.Add(ioTimeout))
			pushed = now
		}
		for sent-recvd < uint64(r.cfg.Depth) && r.claim() {
			sentAt[sent%uint64(r.cfg.Depth)] = time.Now()
			if _, err := c.Write(r.message(i, sent)); err != nil {
				return fmt.Errorf("write message %d: %w", sent+1, err)
			}
			sent++
		}
		if recvd == sent {
			return nil
		}
		if err := verify(br, r.message(i, recvd)); err != nil {
			return fmt.Errorf("echo of message %d: %w", recvd+1, err)
		}
		r.hist.Record(time.Since(sentAt[recvd%uint64(r.cfg.Depth)]))
		r.msgs.Add(1)
		recvd++
	}
}

// split runs a writer and a reader goroutine on one connection, for
// windows too large to write before reading (see serialWindow).
func (r *run) split(i int, c *net.TCPConn) error {
	slots := make(chan struct{}, r.cfg.Depth)   // a slot per message in flight
	sentAt := make(chan time.Time, r.cfg.Depth) // send times, in order
	done := make(chan struct{})
	werr := make(chan error, 1)
	go func() {
		defer close(sentAt)
		for k := uint64(0); r.claim(); k++ {
			select {
			case slots <- struct{}{}:
			case <-done:
				werr <- nil
				return
			}
			c.SetWriteDeadline(time.Now().Add(ioTimeout))
			sentAt <- time.Now()
			if _, err := c.Write(r.message(i, k)); err != nil {
				werr <- fmt.Errorf("write message %d: %w", k+1, err)
				return
			}
		}
		werr <- nil
	}()
	err := r.readAll(i, c, sentAt, slots)
	if err != nil {
		close(done)
		c.Close() // unblocks a writer stuck in Write
	}
	return errors.Join(err, <-werr)
}

func (r *run) readAll(i int, c *net.TCPConn, sentAt <-chan time.Time, slots <-chan struct{}) error {
	br := bufio.NewReaderSize(c, readBuffer)
	for k := uint64(0); ; k++ {
		t, ok := <-sentAt
		if !ok {
			return nil
		}
		c.SetReadDeadline(time.Now().Add(ioTimeout))
		if err := verify(br, r.message(i, k)); err != nil {
			return fmt.Errorf("echo of message %d: %w", k+1, err)
		}
		r.hist.Record(time.Since(t))
		r.msgs.Add(1)
		<-slots
	}
}

// verify reads len(want) bytes from br and compares them with want, a
// buffer at a time.
func verify(br *bufio.Reader, want []byte) error {
	for off := 0; off < len(want); {
		n := min(len(want)-off, br.Size())
		got, err := br.Peek(n)
		if err != nil {
			return fmt.Errorf("after %d of %d bytes: %w", off+len(got), len(want), err)
		}
		if !bytes.Equal(got, want[off:off+n]) {
			j := mismatch(got, want[off:off+n])
			return fmt.Errorf("byte %d of %d is %#02x, want %#02x", off+j+1, len(want), got[j], want[off+j])
		}
		br.Discard(n)
		off += n
	}
	return nil
}

func mismatch(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return len(a)
}

// pattern returns n pseudo-random bytes, the same on every run, so that a
// message's bytes differ from its neighbours' at almost every position.
func pattern(n int) []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// connect checks cfg and opens its connections: how Run and Hold begin.
func connect(ctx context.Context, cfg Config) ([]*net.TCPConn, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	ap, err := Loopback(ctx, cfg.Addr)
	if err != nil {
		return nil, err
	}
	return dialAll(ctx, ap, cfg.Conns)
}

// dialAll opens n connections to ap, dialParallel at a time, and closes
// them all if any fails.
func dialAll(ctx context.Context, ap netip.AddrPort, n int) ([]*net.TCPConn, error) {
	conns := make([]*net.TCPConn, n)
	errs := make([]error, n)
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for range min(n, dialParallel) {
		wg.Go(func() {
			d := net.Dialer{Timeout: ioTimeout}
			for i := int(next.Add(1) - 1); i < n && ctx.Err() == nil; i = int(next.Add(1) - 1) {
				c, err := d.DialContext(ctx, "tcp", ap.String())
				if err != nil {
					errs[i] = err
					return
				}
				conns[i] = c.(*net.TCPConn)
			}
		})
	}
	wg.Wait()
	err := ctx.Err()
	for i, e := range errs {
		if e != nil {
			err = fmt.Errorf("open connection %d of %d: %w", i+1, n, e)
			break
		}
	}
	if err != nil {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		return nil, err
	}
	return conns, nil
}
