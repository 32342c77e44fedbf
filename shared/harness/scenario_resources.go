package harness

import (
	"fmt"
	"strconv"
	"sync"
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
	// Room for the pingers, connected first, and for fdHeadroom more.
	limit := baseline + fdPingers + fdHeadroom
	if _, err := s.SetFDLimit(uint64(limit)); err != nil {
		return err
	}
	pp, err := startPingers(e, s)
	if err != nil {
		return err
	}
	defer pp.abort()
	clients, err := dialPastLimit(e, s, limit)
	if err != nil {
		return err
	}
	if err := reachLimit(e, s, baseline, limit); err != nil {
		return err
	}
	// The pingers' rounds are counted from here, and mostly made during
	// the CPU window: time at the limit is what a server's accept backoff
	// grows with, and what it then takes to notice the fds free.
	marks := pp.mark()
	if err := noSpin(e, s, limit); err != nil {
		return err
	}
	if err := pp.rounds(e, marks); err != nil {
		return err
	}
	for _, c := range clients {
		c.Close()
	}
	if err := recoverAfterLimit(e, s, "a new client once the clients at the limit have closed"); err != nil {
		return err
	}
	if err := pp.end(); err != nil {
		return err
	}
	return noneToClose(e, s)
}

// dialPastLimit connects fdClients clients, each sending a line, to a
// server with room for half of them.
func dialPastLimit(e *Env, s *Server, limit int) ([]*Client, error) {
	clients := make([]*Client, fdClients)
	for i := range clients {
		var err error
		if clients[i], err = e.Dial(s); err != nil {
			f := AsFailure(err)
			f.Step = fmt.Sprintf("connect %d of %d with the server's fd limit at %d", i+1, fdClients, limit)
			f.Hint = "connections the server cannot accept yet must wait in the listen backlog: keep listening"
			return nil, f
		}
		// No reply is awaited: whether the server answers at its limit, or
		// accepts and closes to shed load, is its choice.
		if err := clients[i].Send(fmt.Appendf(nil, "at the limit %d\n", i+1)); err != nil {
			e.Logf("fd-limit: client %d: %v", i+1, err)
		}
	}
	return clients, nil
}

// reachLimit waits for the server to take every fd it can, and checks
// that it reached its limit.
func reachLimit(e *Env, s *Server, baseline, limit int) error {
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
	return nil
}

// noSpin checks the server burns no CPU at its fd limit.
func noSpin(e *Env, s *Server, limit int) error {
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
	return nil
}

// fdPingers keep a ping-pong going through fd-limit on connections the
// server accepted before it ran out: being out of fds is no reason to stop
// serving the connections it has.
const fdPingers = 8

// fdPingEvery paces each pinger: steady traffic rather than load, so that
// the CPU window still measures what the server does about the clients it
// cannot accept (8 exchanges every 50 ms cost a server built with -race a
// few ms of CPU in the window, against a budget of 100).
const fdPingEvery = 50 * time.Millisecond

// fdPingRounds is how many exchanges each pinger must make with the
// server at its limit: a few of the ten the CPU window gives time for.
const fdPingRounds = 3

// pingHint is the hint for a pinger left unanswered.
const pingHint = "a client the server had accepted went unserved while the server was out of fds: on EMFILE " +
	"stop watching the listener (or back off on a timer) and go on serving the connections already open; " +
	"never wait in the loop for an fd to come free (sleep and retry accept)"

// pinger is one client of fd-limit that asks a line, gets its reply, and
// asks again every fdPingEvery.
type pinger struct {
	c        *Client
	n        int           // from 0, in connect order
	count    atomic.Int64  // exchanges made
	answered chan struct{} // a token after each exchange, at most one waiting
	done     chan struct{} // closed when the pinger has stopped
	err      error         // why it stopped, if not asked to; set before done is closed
}

// pingers is fd-limit's pingers, and the channel that stops them.
type pingers struct {
	all  []*pinger
	quit chan struct{}
	once sync.Once
}

// startPingers connects fdPingers clients, before any client that will
// find the server out of fds, and starts each one's ping-pong.
func startPingers(e *Env, s *Server) (*pingers, error) {
	pp := &pingers{quit: make(chan struct{})}
	for n := range fdPingers {
		c, err := e.Dial(s)
		if err != nil {
			pp.abort()
			return nil, err
		}
		p := &pinger{c: c, n: n, answered: make(chan struct{}, 1), done: make(chan struct{})}
		pp.all = append(pp.all, p)
		go p.run(pp.quit)
	}
	return pp, nil
}

// run is one pinger's ping-pong, until quit or a failure.
func (p *pinger) run(quit <-chan struct{}) {
	defer close(p.done)
	tick := time.NewTicker(fdPingEvery) // paces the exchanges; each is bounded by its own deadline
	defer tick.Stop()
	for i := 1; ; i++ {
		step := fmt.Sprintf("ping-pong client %d of %d: exchange %d, through the server's fd limit", p.n+1, fdPingers, i)
		msg := fmt.Appendf(nil, "ping %d from client %d", i, p.n+1)
		if err := p.c.Ask(step, msg, time.Now().Add(ioTimeout)); err != nil {
			p.err = explain(err, pingHint)
			return
		}
		p.count.Add(1)
		select {
		case p.answered <- struct{}{}:
		default:
		}
		select {
		case <-quit:
			return
		case <-tick.C:
		}
	}
}

// mark is what each pinger's count must reach fdPingRounds exchanges
// from now.
func (pp *pingers) mark() []int64 {
	want := make([]int64, len(pp.all))
	for i, p := range pp.all {
		want[i] = p.count.Load() + fdPingRounds
	}
	return want
}

// rounds waits until every pinger's count has reached its mark; each
// exchange is bounded by its own deadline.
func (pp *pingers) rounds(e *Env, want []int64) error {
	for i, p := range pp.all {
		for p.count.Load() < want[i] {
			select {
			case <-p.answered:
			case <-p.done:
				return p.err
			case <-e.Ctx.Done():
				return e.Ctx.Err()
			}
		}
	}
	e.Logf("fd-limit: %d ping-pong clients made %d exchanges each at the limit", fdPingers, fdPingRounds)
	return nil
}

// end stops the pingers once their exchange in flight is done, and
// returns the first failure, in connect order.
func (pp *pingers) end() error {
	pp.once.Do(func() { close(pp.quit) })
	for _, p := range pp.all {
		<-p.done
	}
	for _, p := range pp.all {
		if p.err != nil {
			return p.err
		}
	}
	return nil
}

// abort stops the pingers at once, whatever they were waiting for.
func (pp *pingers) abort() {
	pp.once.Do(func() { close(pp.quit) })
	for _, p := range pp.all {
		p.c.Close()
		<-p.done
	}
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
