package load

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Hold opens cfg.Conns connections, echoes one message of cfg.Size bytes on
// each (checked like Run's), calls ready with what that took, and then
// holds every connection open and silent until ctx ends or cfg.Duration
// (at most MaxDuration) passes: the crowd for a memory or scaling demo,
// each connection known to be accepted and served once. cfg.Tick, if set,
// is called once a second while it holds. Connections the server dropped
// while held count as errors in the Result.
func Hold(ctx context.Context, cfg Config, ready func(Result)) (Result, error) {
	cfg.Idle = true
	conns, err := connect(ctx, cfg)
	if err != nil {
		return Result{}, err
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	r := &run{cfg: cfg, pattern: pattern(cfg.Size + patternPeriod)}
	start := time.Now()
	if err := r.echoOnce(ctx, conns); err != nil {
		return Result{}, err
	}
	res := r.result(time.Since(start))
	if ready != nil {
		ready(res)
	}

	held := time.Now()
	r.active.Store(int64(len(conns)))
	stopTicks := r.ticks(held)
	limit := cfg.Duration
	if limit == 0 {
		limit = MaxDuration // a forgotten crowd still goes home
	}
	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case <-ctx.Done():
	case <-timer.C:
	}
	stopTicks()
	for i, c := range conns {
		if err := stillOpen(c); err != nil {
			r.fail(i, err)
		}
	}
	res = r.result(time.Since(held))
	res.Interrupted = ctx.Err() != nil
	return res, nil
}

// echoOnce sends one message on every connection, dialParallel at a time,
// and checks its echo. Any failure ends the hold: a crowd with holes in it
// is not the crowd asked for.
func (r *run) echoOnce(ctx context.Context, conns []*net.TCPConn) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, len(conns))
	for range min(len(conns), dialParallel) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(conns) && ctx.Err() == nil; i = int(next.Add(1) - 1) {
				errs[i] = r.echo(i, conns[i])
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("connection %d of %d: %w", i+1, len(conns), err)
		}
	}
	return nil
}

func (r *run) echo(i int, c *net.TCPConn) error {
	msg := r.message(i, 0)
	start := time.Now()
	c.SetDeadline(start.Add(ioTimeout))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	// A reader sized to the message, dropped after: 10,000 held
	// connections must not keep 64 KiB each.
	if err := verify(bufio.NewReaderSize(c, min(len(msg), readBuffer)), msg); err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	r.hist.Record(time.Since(start))
	r.msgs.Add(1)
	return nil
}

// stillOpen tells a held connection from one the server closed or reset,
// by peeking without waiting: a read that would block is a connection
// still open. (A read deadline in the past would not do: Go returns the
// timeout without asking the kernel.)
func stillOpen(c *net.TCPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var b [1]byte
	var n int
	var perr error
	err = rc.Read(func(fd uintptr) bool {
		n, _, perr = unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return true // never wait for readiness
	})
	switch {
	case err != nil:
		return err
	case perr == unix.EAGAIN:
		return nil
	case perr != nil:
		return fmt.Errorf("dropped while held: %w", os.NewSyscallError("recvfrom", perr))
	case n == 0:
		return errors.New("closed by the server while held")
	}
	return errors.New("unexpected bytes while held")
}

// result is the Result of what r has measured so far, over elapsed.
func (r *run) result(elapsed time.Duration) Result {
	s := r.hist.Snapshot()
	r.mu.Lock()
	defer r.mu.Unlock()
	return Result{
		Conns: r.cfg.Conns, Depth: r.cfg.Depth, Size: r.cfg.Size,
		Msgs:        r.msgs.Load(),
		Elapsed:     elapsed,
		P50:         s.Percentile(50),
		P99:         s.Percentile(99),
		P999:        s.Percentile(99.9),
		Errors:      r.errors,
		FirstErrors: r.firstErrors,
	}
}
