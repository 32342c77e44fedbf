package harness

import (
	"fmt"
	"strconv"
	"sync/atomic"
	"time"
)

// The scenarios about what the server spends when it has nothing to do,
// and when the kernel refuses it another fd.

// idleClients is the contract's figure: enough connections that a loop
// which does work per connection per wakeup shows it.
const idleClients = 10

// idleWindow is the measurement: long enough for a 10 ms poll loop to make
// a hundred wakeups, short enough to keep the scenario quick.
const idleWindow = time.Second

// idleCPUMax is five clock ticks (USER_HZ is 100) in a second: what a
// server blocked in the kernel never reaches, and what a busy loop passes
// in its first 5% of the window.
const idleCPUMax = 50 * time.Millisecond

// idleQuiet passes between the last reply and the window. For about 100 ms
// after any activity Go's runtime backs its sysmon thread off from 20 µs
// sleeps to 10 ms ones, and then parks it: 5 to 50 context switches that
// say nothing about the server's own loop.
const idleQuiet = 250 * time.Millisecond

// idleWakeupsMax is the most context switches an idle server may make in
// the window. Measured over 1 s after idleQuiet, with 10 idle clients, on
// Linux with Go 1.26: a single-threaded epoll server blocked in
// epoll_wait(-1) makes 0 (Go with or without -race, and C); with a 10 ms
// timeout, the seed's, C makes 97 and Go about 450 (several runtime threads
// wake per timeout). The limit sits well between, with room for a runtime's
// own housekeeping.
const idleWakeupsMax = 40

func runIdle(e *Env) error {
	s, err := e.Start()
	if err != nil {
		return err
	}
	clients := make([]*Client, idleClients)
	for i := range clients {
		if clients[i], err = e.Dial(s); err != nil {
			return err
		}
		if err := clients[i].Send(idleLine(i)); err != nil {
			return Fail(Refused, fmt.Sprintf("client %d of %d sends a line", i+1, idleClients), err.Error(),
				"the server to read it", "")
		}
	}
	// Every client answered means every one is registered with the
	// server's poller (or has a thread of its own), so the window measures
	// idling with all of them. A server that answers only the first is
	// idle too, but with one client, not ten: that is not what idle checks.
	deadline := time.Now().Add(ioTimeout)
	for i, c := range clients {
		step := fmt.Sprintf("reply to idle client %d of %d", i+1, idleClients)
		if err := c.ExpectReply(step, trimNL(idleLine(i)), deadline); err != nil {
			return explain(err, fmt.Sprintf("idle client %d got no reply while the others stayed connected: "+
				"a server that serves one client at a time cannot idle with ten", i+1))
		}
	}
	// One client then makes the server's writes fall short: it sends
	// lines without reading until the server holds some of them unread,
	// then reads every reply. A server that arms EPOLLOUT for what a
	// write left over, and never disarms it, spins from then on; one that
	// never had to keep anything would not show it.
	if err := backlogged(e, s, clients[0]); err != nil {
		return err
	}
	e.Logf("idle: %d clients answered, one after a backlog; measuring %s", idleClients, idleWindow)
	if err := wait(e, idleQuiet); err != nil {
		return err
	}

	cpu0, err := s.CPU()
	if err != nil {
		return err
	}
	wake0, err := s.Wakeups()
	if err != nil {
		return err
	}
	if err := wait(e, idleWindow); err != nil {
		return err
	}
	cpu1, err := s.CPU()
	if err != nil {
		return err
	}
	wake1, err := s.Wakeups()
	if err != nil {
		return err
	}
	cpu, wakes := cpu1-cpu0, wake1-wake0
	e.Logf("idle: %s CPU, %d wakeups in %s", cpu, wakes, idleWindow)
	step := fmt.Sprintf("%s with %d clients connected and nothing to do", idleWindow, idleClients)
	got := fmt.Sprintf("%s of CPU and %d wakeups", cpu, wakes)
	want := fmt.Sprintf("at most %s of CPU and %d wakeups", idleCPUMax, idleWakeupsMax)
	busy := "the server burned CPU with nothing to do: a readiness it never consumes (EPOLLOUT left on with " +
		"nothing to send, a level-triggered fd not read to EAGAIN) wakes the loop again at once, forever; " +
		"or a timer, deadline or timeout wakes the loop to poll"
	switch {
	case cpu > idleWindow/2:
		// A loop that never blocks: the wakeups it shows are only
		// preemptions, so they say nothing about a timeout.
		return Fail(Spin, step, got, want, busy)
	case wakes > idleWakeupsMax:
		return Fail(Spin, step, got, want,
			fmt.Sprintf("the server woke %d times in 1 s with nothing to do: a timer, deadline or timeout wakes the "+
				"loop to poll (the seed's 10 ms epoll_wait timeout); while idle, block in epoll_wait/poll/select "+
				"with no timeout (-1); or a readiness it never consumes (EPOLLOUT left on with nothing to send) "+
				"wakes it at once, forever", wakes))
	case cpu > idleCPUMax:
		return Fail(Spin, step, got, want, busy)
	}
	return nil
}

// idleBacklogMax bounds the backlog's lines if the server never stops
// reading (it then queues without bound, which slow-reader judges).
const idleBacklogMax = 8192

// backlogged sends c's lines without reading until the server holds
// shutdownUnread bytes of them unread (its replies could not all be
// written: the socket was full), then reads every reply.
func backlogged(e *Env, s *Server, c *Client) error {
	var sent atomic.Int64
	stop := make(chan struct{})
	werr := make(chan error, 1)
	go func() {
		for i := range idleBacklogMax {
			select {
			case <-stop:
				werr <- nil
				return
			default:
			}
			sent.Add(1)
			if _, err := c.Write(append(shutdownLine(i), '\n'), scenarioTimeout); err != nil {
				werr <- err
				return
			}
		}
		werr <- nil
	}()
	unread, f := awaitUnread(e, s, c, werr)
	close(stop)
	e.Logf("idle: client 1 sent %d lines unread; the server held %s of them unread", sent.Load(), sizeString(int64(unread)))
	if f != nil {
		c.Close()
		<-werr
		f.Step = "idle client 1 sends lines without reading, until the server holds some unread"
		return f
	}
	deadline := time.Now().Add(halfCloseTimeout)
	finished := false
	for i := 0; ; i++ {
		if int64(i) >= sent.Load() {
			if finished {
				return nil
			}
			if err := <-werr; err != nil {
				return Fail(Refused, "idle client 1 sends lines without reading", err.Error(), "the server to read them", "")
			}
			finished = true
			if int64(i) >= sent.Load() {
				return nil
			}
		}
		step := fmt.Sprintf("idle client 1: reply %d of the lines it sent without reading", i+1)
		if err := c.ExpectReply(step, shutdownLine(i), deadline); err != nil {
			c.Close()
			if !finished {
				<-werr
			}
			return explain(err, "replies a write could not send at once were lost or never sent: keep what write() "+
				"did not take and send it when the socket is writable (EPOLLOUT)")
		}
	}
}

func idleLine(i int) []byte { return fmt.Appendf(nil, "idle client %d of %d\n", i+1, idleClients) }

func trimNL(line []byte) []byte { return line[:len(line)-1] }

// fdHeadroom is how many fds the lowered limit leaves the server beyond
// those it holds at rest.
const fdHeadroom = 8

// fdClients is twice fdHeadroom, so half of them cannot be accepted.
const fdClients = 2 * fdHeadroom

// fdSettle bounds the wait for the server to take all the fds it can.
var fdSettle = scaled(2 * time.Second)

// fdSteady is how long the fd count must stay put to count as settled:
// when a server takes fewer fds than the limit allows (one at a time), or
// has closed a client's fd and opened whatever it keeps.
var fdSteady = scaled(300 * time.Millisecond)

// steadyFor is a WaitFDs condition: the count has not changed for d.
func steadyFor(d time.Duration) func(int) bool {
	count, since := -1, time.Now()
	return func(n int) bool {
		if n != count {
			count, since = n, time.Now()
		}
		return time.Since(since) >= d
	}
}

// fdWindow and fdCPUMax: a server whose loop spins on EMFILE burns the
// whole window, one that waits burns nothing; a fifth is far from both.
const (
	fdWindow = 500 * time.Millisecond
	fdCPUMax = 100 * time.Millisecond
)

// fdRecover bounds how long the server may take to serve again once the
// fds are free.
var fdRecover = scaled(3 * time.Second)

func runFDLimit(e *Env) error {
	s, err := e.Start()
	if err != nil {
		return err
	}
	baseline, err := s.OpenFDs()
	if err != nil {
		return err
	}
	limit := baseline + fdHeadroom
	if _, err := s.SetFDLimit(uint64(limit)); err != nil {
		return err
	}
	clients := make([]*Client, fdClients)
	for i := range clients {
		if clients[i], err = e.Dial(s); err != nil {
			f := AsFailure(err)
			f.Step = fmt.Sprintf("connect %d of %d with the server's fd limit at %d", i+1, fdClients, limit)
			f.Hint = "connections the server cannot accept yet must wait in the listen backlog: keep listening"
			return f
		}
		// No reply is awaited: whether the server answers at its limit, or
		// accepts and closes to shed load, is its choice.
		if err := clients[i].Send(fmt.Appendf(nil, "at the limit %d\n", i+1)); err != nil {
			e.Logf("fd-limit: client %d: %v", i+1, err)
		}
	}

	// Wait for the server to take every fd it can, or to stop taking more.
	steady := steadyFor(fdSteady)
	n, err := s.WaitFDs(e.Ctx, fdSettle, func(n int) bool { return n >= limit || steady(n) })
	if err != nil {
		return err
	}
	e.Logf("fd-limit: %d fds open (baseline %d, limit %d); measuring CPU for %s", n, baseline, limit, fdWindow)
	// Only a server that took every fd it could has met EMFILE: one that
	// stopped short (one client at a time) proves nothing here.
	if n < limit-fdShort {
		return Fail(Stall, fmt.Sprintf("fds taken while %d clients waited to be accepted", fdClients),
			fmt.Sprintf("%d fds open (baseline %d)", n, baseline), fmt.Sprintf("about %d, the limit", limit),
			"the server stopped accepting before it ran out of fds, so accept never failed with EMFILE: "+
				"a server that serves one client at a time leaves the rest in the backlog")
	}

	cpu0, err := s.CPU()
	if err != nil {
		return err
	}
	if err := wait(e, fdWindow); err != nil {
		return err
	}
	cpu1, err := s.CPU()
	if err != nil {
		return err
	}
	e.Logf("fd-limit: %s CPU in %s", cpu1-cpu0, fdWindow)
	if cpu := cpu1 - cpu0; cpu > fdCPUMax {
		return Fail(Spin, fmt.Sprintf("%s with %d clients waiting past the fd limit (%d)", fdWindow, fdClients-fdHeadroom, limit),
			cpu.String()+" of CPU", "at most "+fdCPUMax.String(),
			"accept failed with EMFILE and the listener stayed readable, so the loop spun: on EMFILE stop watching "+
				"the listener until a connection closes (or keep a spare fd to accept-and-close)")
	}

	for _, c := range clients {
		c.Close()
	}
	if err := recoverAfterLimit(e, s, "a new client once the clients at the limit have closed"); err != nil {
		return err
	}
	return noneToClose(e, s)
}

// fdShort is how far below its limit a server may settle and still count
// as having reached it: one fd of slack for a server that keeps a spare fd
// to accept-and-close with.
const fdShort = 1

// noneToClose is the case a server that resumes accepting only when one of
// its own connections closes never recovers from: the limit is lowered to
// exactly the fds the server holds, a client connects and waits in the
// backlog, and the limit is raised again with nothing of the server's
// closing (as when another process held the fds, or the whole system ran
// out: ENFILE). Only a retry on a timer, or a spare fd, notices.
func noneToClose(e *Env, s *Server) error {
	if _, err := s.WaitFDs(e.Ctx, fdSettle, steadyFor(fdSteady)); err != nil {
		return err
	}
	next, err := s.lowestFreeFD()
	if err != nil {
		return err
	}
	old, err := s.SetFDLimit(uint64(next))
	if err != nil {
		return err
	}
	e.Logf("fd-limit: limit lowered to %d, the lowest free fd: no fd to spare", next)
	c, err := e.Dial(s)
	if err != nil {
		return err
	}
	if err := c.Send([]byte("accepted at last?\n")); err != nil {
		return Fail(Refused, "send a line with the server's fd limit at the fds it holds", err.Error(), "", "")
	}
	// Give the server time to try, and fail, to accept it: a window, not an
	// event, since EMFILE shows nowhere outside the server.
	if err := wait(e, fdWindow); err != nil {
		return err
	}
	if _, err := s.SetFDLimit(old); err != nil {
		return err
	}
	step := "a client that waited while the server had no fd to spare, once the limit is raised again"
	hint := "after EMFILE or ENFILE, with none of its own connections to close, the server never " +
		"accepted again: retry accept on a timer (backing off), or keep a spare fd to accept-and-close with, " +
		"rather than waiting for a close of its own"
	f := AsFailure(c.ExpectReply(step, []byte("accepted at last?"), time.Now().Add(fdRecover)))
	if f != nil && f.Kind == Refused {
		// Shed with the spare fd: fair, as long as the next one is served.
		f = AsFailure(recoverAfterLimit(e, s, step))
	}
	if f != nil && (f.Kind == Stall || f.Kind == Refused) {
		f.Hint = hint
	}
	if f != nil {
		return f
	}
	return nil
}

// recoverAfterLimit checks a new client is served once the fds are free.
// A server that sheds load may still accept-and-close a connection while it
// catches up, so a refused attempt is retried until the deadline.
func recoverAfterLimit(e *Env, s *Server, step string) error {
	hint := "once fds were freed the server never accepted again: after EMFILE, resume accepting when a connection closes"
	deadline := time.Now().Add(fdRecover)
	retry := time.NewTicker(50 * time.Millisecond) // paces retries; each attempt is itself bounded
	defer retry.Stop()
	msg := []byte("served again?")
	for attempt := 1; ; attempt++ {
		f := tryOnce(e, s, step, msg, deadline)
		if f == nil {
			return nil
		}
		if f.Kind != Refused || !time.Now().Before(deadline) {
			f.Got += " (attempt " + strconv.Itoa(attempt) + ")"
			if f.Kind == Stall || f.Kind == Refused {
				f.Hint = hint
			}
			return f
		}
		select {
		case <-retry.C:
		case <-e.Ctx.Done():
			return e.Ctx.Err()
		}
	}
}

// tryOnce connects, sends msg and expects its reply by the deadline.
func tryOnce(e *Env, s *Server, step string, msg []byte, deadline time.Time) *Failure {
	c, err := e.Dial(s)
	if err != nil {
		f := AsFailure(err)
		f.Step = step
		return f
	}
	defer c.Close()
	return AsFailure(c.Ask(step, msg, deadline))
}

// wait lets d pass, for a measurement window: what happens in the server
// meanwhile is what is measured, so there is no event to wait for instead.
func wait(e *Env, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-e.Ctx.Done():
		return e.Ctx.Err()
	}
}
