package harness

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The scenarios about endings: of connections, however a client leaves,
// and of the server itself.

// closeRounds repeats each way of leaving: one leaked fd per round is then
// 20 fds, which no runtime's own fd churn can hide.
const closeRounds = 20

// closeSettle is how long the server may take to notice the last client
// left and close its fd.
var closeSettle = scaled(3 * time.Second)

// pollEvery is how often a scenario re-reads /proc while it waits for the
// server to reach a state: fine enough to add no noticeable delay.
const pollEvery = 10 * time.Millisecond

func runClose(e *Env) error {
	s, c, err := e.startClient()
	if err != nil {
		return err
	}
	// The baseline is taken after one client has come and gone, so that an
	// fd a server opens on its first connection and keeps is not a leak.
	if err := c.Ask("a first client, before the fd baseline", []byte("first"), time.Now().Add(ioTimeout)); err != nil {
		return err
	}
	c.Close()
	baseline, err := s.WaitFDs(e.Ctx, closeSettle, steadyFor(fdSteady))
	if err != nil {
		return err
	}
	// Each way of leaving, as the server sees it: FIN after a reply, RST
	// after a reply, FIN with nothing ever sent, and RST with a reply owed
	// (so the server's write or next read fails with EPIPE or ECONNRESET).
	leave := []struct {
		name  string
		send  bool
		reply bool
		reset bool
	}{
		{name: "FIN after a reply", send: true, reply: true, reset: false},
		{name: "RST after a reply", send: true, reply: true, reset: true},
		{name: "connect, then close with nothing sent", send: false, reply: false, reset: false},
		{name: "RST before the reply", send: true, reply: false, reset: true},
	}
	for round := 1; round <= closeRounds; round++ {
		for _, l := range leave {
			step := fmt.Sprintf("round %d of %d: %s", round, closeRounds, l.name)
			c, err := e.Dial(s)
			if err != nil {
				f := AsFailure(err)
				f.Step = step
				return f
			}
			line := fmt.Appendf(nil, "round %d", round)
			switch {
			case l.reply:
				if err := c.Ask(step, line, time.Now().Add(ioTimeout)); err != nil {
					return explain(err, "a client that left earlier must not change how the next one is served: "+
						"when a connection ends, forget all of its state; or, under edge-triggered epoll, one accept "+
						"per event left this connection in the backlog: accept until EAGAIN")
				}
			case l.send:
				if err := c.Send(append(line, '\n')); err != nil {
					return Fail(Refused, step, err.Error(), "the server to read the line", "")
				}
			}
			if l.reset {
				c.Reset()
			} else {
				c.Close()
			}
		}
	}

	step := fmt.Sprintf("open fds once %d clients have left", closeRounds*len(leave))
	n, err := s.WaitFDs(e.Ctx, closeSettle, func(n int) bool { return n <= baseline })
	if err != nil {
		return err
	}
	if n > baseline {
		return Fail(Leak, step, fmt.Sprintf("%d fds open %s later", n, closeSettle),
			fmt.Sprintf("<= %d, as once the first client had left", baseline),
			"close the fd when read returns 0 (FIN) or an error such as ECONNRESET, and when EPOLLHUP/EPOLLERR arrive")
	}

	c, err = e.Dial(s)
	if err != nil {
		return err
	}
	if err := c.Ask("a new client after all that", []byte("still there?"), time.Now().Add(ioTimeout)); err != nil {
		return explain(err, "an error on one connection (EPIPE, ECONNRESET) ends that connection only: "+
			"the server must go on accepting and serving")
	}
	return nil
}

// shutdownLineSize is each owed line's length with its '\n': long enough
// that a couple of thousand fill the kernel buffers both ways.
const shutdownLineSize = 1 << 10

// shutdownLines is how many lines the client sends, the same number on
// every run, loaded machine or not: 2 MiB, more than the kernel buffers
// between a client that does not read and a server blocked writing to it
// take before the server must stop reading.
const shutdownLines = 2048

// shutdownUnread is how much the server must hold unread from the client
// when the signal comes: replies to those lines cannot be in any kernel
// buffer yet, so a server that exits at once on SIGTERM cannot have sent
// them.
const shutdownUnread = 64 << 10

// shutdownBudget is the contract's: owed replies delivered, every fd
// closed and the process gone within 2 s of the signal.
var shutdownBudget = scaled(2 * time.Second)

func runShutdown(e *Env) error {
	s, c, err := e.startClient()
	if err != nil {
		return err
	}
	// One reply first, so the connection is surely accepted and belongs to
	// the connections the grace period is for.
	if err := c.Ask("reply to the first line", []byte("first"), time.Now().Add(ioTimeout)); err != nil {
		return err
	}
	// Then lines without reading, so that at the signal replies are owed
	// by the server itself.
	var flood []byte
	for i := range shutdownLines {
		flood = append(append(flood, shutdownLine(i)...), '\n')
	}
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(flood, shutdownBudget+scenarioTimeout)
		werr <- err
	}()
	unread, f := awaitUnread(e, s, c, werr)
	if f != nil {
		c.Close()
		<-werr
		return f
	}
	e.Logf("shutdown: %d lines sent; the server holds %s of them unread at SIGTERM", shutdownLines, sizeString(int64(unread)))

	e.expectExit(s)
	signalled := time.Now()
	if err := s.Signal(syscall.SIGTERM); err != nil {
		return Fail(Exit, "send SIGTERM", err.Error(), "a running server", "")
	}
	deadline := signalled.Add(shutdownBudget)
	f = readOwed(c, s, shutdownLines, deadline)
	if f != nil {
		c.Close() // unblocks the writer, which must be gone before the scenario returns
	}
	if err := <-werr; err != nil && f == nil {
		f = Fail(Refused, "send the lines the server had not read at SIGTERM", err.Error(), "the server to read them",
			"during the grace period keep reading open connections")
	}
	if f != nil {
		return f
	}
	return exitWithin(s, deadline)
}

// unreadWait bounds awaitUnread's wait.
var unreadWait = scaled(2 * time.Second)

// awaitUnread waits until the server holds shutdownUnread bytes of c's
// unread, or the whole flood has been written (a server that reads
// everything it is sent at once), and returns what it holds. The server's
// receive queue is a state, not an event, so it is read again every
// pollEvery.
func awaitUnread(e *Env, s *Server, c *Client, werr chan error) (int, *Failure) {
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	deadline := time.NewTimer(unreadWait)
	defer deadline.Stop()
	for {
		n, err := s.unreadBy(c)
		if err != nil {
			return 0, AsFailure(err)
		}
		if n >= shutdownUnread {
			return n, nil
		}
		select {
		case err := <-werr:
			werr <- err // readOwed's caller waits for it too
			if err != nil {
				return 0, Fail(Refused, "send lines without reading the replies", err.Error(), "the server to read them", "")
			}
			return n, nil
		case <-tick.C:
		case <-deadline.C:
			// The server has stopped reading with less unread than
			// shutdownUnread (its receive buffer is that small), or reads
			// slowly: either way it is time to read, and the reader's own
			// checks judge what comes.
			e.Logf("the server holds %s unread after %s, and the client's write is still blocked: reading now",
				sizeString(int64(n)), unreadWait)
			return n, nil
		case <-e.Ctx.Done():
			return 0, AsFailure(e.Ctx.Err())
		}
	}
}

// shutdownLine is the i-th owed line, without its '\n': numbered, so a
// reply shows which it answers, and padded to shutdownLineSize.
func shutdownLine(i int) []byte {
	line := fmt.Appendf(nil, "owed %d ", i+1)
	return append(line, bytes.Repeat([]byte("."), shutdownLineSize-1-len(line))...)
}

// runUnfinished: at SIGTERM the client has sent a whole line and half of
// another. Only the client's own half-close makes an unterminated last line
// a line; a shutdown does not, so the half gets no reply, and the whole one
// does.
func runUnfinished(e *Env) error {
	s, c, err := e.startClient()
	if err != nil {
		return err
	}
	if err := c.Send([]byte("whole line\nhalf-a-li")); err != nil {
		return Fail(Refused, "send a line and half of another", err.Error(), "the server to read them", "")
	}
	if err := c.ExpectReply("reply to the whole line", []byte("whole line"), time.Now().Add(ioTimeout)); err != nil {
		return err
	}
	e.expectExit(s)
	if err := s.Signal(syscall.SIGTERM); err != nil {
		return Fail(Exit, "send SIGTERM", err.Error(), "a running server", "")
	}
	deadline := time.Now().Add(shutdownBudget)
	if err := expectClosed(c, "the end of the stream after SIGTERM, with half a line unanswered", deadline,
		"after the grace period close every connection, so clients see the end",
		"a line without '\n' is a line only when the client half-closes (read returns 0 for its FIN); "+
			"at shutdown the unfinished rest gets no reply: drop it, flush what is owed and close"); err != nil {
		return err
	}
	return exitWithin(s, deadline)
}

// readOwed reads the replies to the owed lines, in order, then the end of
// the stream, by the deadline.
func readOwed(c *Client, s *Server, lines int, deadline time.Time) *Failure {
	for i := range lines {
		step := fmt.Sprintf("reply %d of %d lines sent without reading, SIGTERM in between", i+1, lines)
		if err := c.ExpectReply(step, shutdownLine(i), deadline); err != nil {
			return lostOwed(err, s, deadline, i, lines)
		}
	}
	return AsFailure(expectClosed(c, "close after the owed replies", deadline, closeAfterShutdown, ""))
}

// closeAfterShutdown is the hint for a connection still open when the
// server should be gone.
const closeAfterShutdown = "after the grace period close every connection, so clients see the end: " +
	"the server must be gone within 2 s of SIGTERM"

// lostOwed explains err, the failure to read a reply owed since before
// SIGTERM, when answered of the owed replies had come.
func lostOwed(err error, s *Server, deadline time.Time, answered, owed int) *Failure {
	f := AsFailure(explain(err, "replies owed before the signal were lost: on SIGTERM stop accepting, but keep "+
		"reading and answering open connections for a grace period, flush, then close"))
	if f.Kind == Refused {
		// The server may end the connection; what is wrong is that it
		// did so early. Dying of the signal explains that best.
		if died(s, deadline) {
			return exitStatusFailure(s)
		}
		f.Kind = Wrong
	}
	f.Got = fmt.Sprintf("%d of %d replies, then %s", answered, owed, f.Got)
	return f
}

// died reports whether s exited by the deadline with a status other
// than 0.
func died(s *Server, deadline time.Time) bool {
	return exited(s, deadline) && s.ExitStatus() != nil
}

// exitWithin checks that s, signalled, exits with status 0 by the
// deadline.
func exitWithin(s *Server, deadline time.Time) error {
	if !exited(s, deadline) {
		return Fail(Exit, "exit after SIGTERM", fmt.Sprintf("still running %s after SIGTERM", shutdownBudget),
			"exit status 0", "the server must exit within 2 s of SIGTERM (a thread blocked in accept() is not "+
				"woken by close() on Linux: shutdown(fd, SHUT_RD) the listener, or wake the loop)")
	}
	if s.ExitStatus() != nil {
		return exitStatusFailure(s)
	}
	return nil
}

// exited waits until deadline for s to exit and reports whether it did.
func exited(s *Server, deadline time.Time) bool {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-s.Exited():
		return true
	case <-timer.C:
		return false
	}
}

// exitStatusFailure explains the non-zero exit status of a server that has
// exited.
func exitStatusFailure(s *Server) *Failure {
	hint := "after a graceful shutdown, exit with status 0"
	if _, ok := deathSignal(s.ExitStatus()); ok {
		hint = "the server died of a signal: catch SIGTERM and SIGINT (signal.Notify, sigaction or a " +
			"signalfd) and shut down gracefully"
	}
	return Fail(Exit, "exit after SIGTERM", exitString(s.ExitStatus()), "exit status 0", hint)
}

// loadClients is how many clients pipeline at once in shutdown-load:
// enough that the grace period ends many connections at once, caught in
// every state (reading, writing, with input unread).
const loadClients = 32

// loadWindow is how many lines each client may have sent and not yet had
// answered: deep enough that at any moment most connections have input the
// server has not read, shallow enough that what is owed at the signal takes
// a correct server milliseconds of its second of grace.
const loadWindow = 16

// loadWarm is how many replies every client must have had before SIGTERM:
// a window's worth twice over, so the load is under way on every one.
const loadWarm = 2 * loadWindow

// loadWarmWait bounds the wait for every client's first loadWarm replies.
var loadWarmWait = 2 * ioTimeout

// runShutdownLoad: SIGTERM in the middle of load. Every client pipelines
// and reads, and keeps doing both after the signal until the server ends
// its stream, so that at the end of the grace period the server closes
// connections whose clients are still sending: only a server that shuts its
// write side and drains before it closes (DESIGN.md, "Closing") ends them
// with EOF rather than RST. The server then exits, so no fresh client
// follows, and Run's leak check has nothing left to measure.
func runShutdownLoad(e *Env) error {
	s, err := e.Start()
	if err != nil {
		return err
	}
	var l shutdownLoad
	for n := range loadClients {
		c, err := e.Dial(s)
		if err != nil {
			l.abort()
			return err
		}
		l.clients = append(l.clients, newLoadClient(c, n))
	}
	for _, lc := range l.clients {
		l.wg.Go(lc.write)
		l.wg.Go(func() { lc.read(s, &l.stopAt) })
	}
	if f := l.warmUp(e); f != nil {
		l.abort()
		return f
	}
	return l.terminate(e, s)
}

// shutdownLoad is the clients of one run of shutdown-load.
type shutdownLoad struct {
	clients []*loadClient
	wg      sync.WaitGroup // every client's reader and writer
	// stopAt is the readers' last deadline, in Unix nanoseconds, once
	// SIGTERM is sent: the server must be gone by then.
	stopAt atomic.Int64
}

// warmUp waits until every client has had loadWarm replies, client by
// client in connect order, so that a server serving one client at a time
// fails at the same client on every run.
func (l *shutdownLoad) warmUp(e *Env) *Failure {
	timer := time.NewTimer(loadWarmWait)
	defer timer.Stop()
	for _, lc := range l.clients {
		select {
		case <-lc.warm:
		case <-lc.done:
			return lc.fail
		case <-timer.C:
			return Fail(Stall, lc.step(int(lc.replies.Load()), -1),
				fmt.Sprintf("%d replies in %s", lc.replies.Load(), loadWarmWait), fmt.Sprintf("%d", loadWarm),
				"a client pipelining beside others was answered slowly or not at all")
		case <-e.Ctx.Done():
			return AsFailure(e.Ctx.Err())
		}
	}
	return nil
}

// terminate sends SIGTERM with every client still pipelining, and judges
// what each then reads and how the server exits.
func (l *shutdownLoad) terminate(e *Env, s *Server) error {
	owed := 0
	for _, lc := range l.clients {
		// Taken before the signal: every line counted was wholly written
		// before it. Lines written in between are owed too, uncounted.
		lc.owed.Store(lc.sent.Load())
		owed += int(lc.owed.Load())
	}
	e.expectExit(s)
	signalled := time.Now()
	deadline := signalled.Add(shutdownBudget)
	l.stopAt.Store(deadline.UnixNano())
	if err := s.Signal(syscall.SIGTERM); err != nil {
		l.abort()
		return Fail(Exit, "send SIGTERM", err.Error(), "a running server", "")
	}
	l.wg.Wait()
	replies := 0
	for _, lc := range l.clients {
		replies += int(lc.replies.Load())
	}
	e.Logf("shutdown-load: %d clients had sent %d lines at SIGTERM; %d replies in all", loadClients, owed, replies)
	for _, lc := range l.clients {
		if lc.fail != nil {
			return lc.fail
		}
	}
	return exitWithin(s, deadline)
}

// abort ends every client and waits for their goroutines.
func (l *shutdownLoad) abort() {
	for _, lc := range l.clients {
		lc.c.Close()
	}
	l.wg.Wait()
}

// loadClient is one client of shutdown-load: a writer that pipelines its
// lines, never more than loadWindow ahead of the replies, and a reader that
// checks every reply, in order, until the end of the stream.
type loadClient struct {
	c       *Client
	n       int           // from 0, in connect order
	room    chan struct{} // a token for each line the writer may send
	sent    atomic.Int64  // lines wholly written
	owed    atomic.Int64  // lines wholly written before SIGTERM; -1 until it is sent
	replies atomic.Int64  // replies read and found right
	warm    chan struct{} // closed at the loadWarm-th reply
	done    chan struct{} // closed when the reader has ended
	fail    *Failure      // why the reader ended, nil for a right end; set before done is closed
}

func newLoadClient(c *Client, n int) *loadClient {
	lc := &loadClient{c: c, n: n, room: make(chan struct{}, loadWindow),
		warm: make(chan struct{}), done: make(chan struct{})}
	lc.owed.Store(-1)
	for range loadWindow {
		lc.room <- struct{}{}
	}
	return lc
}

// line is the i-th line of client lc, without its '\n': a reply that went
// to the wrong client, or out of order, names the line it answers.
func (lc *loadClient) line(i int) []byte {
	return fmt.Appendf(nil, "client %d of %d line %d", lc.n+1, loadClients, i+1)
}

// step names the check of reply i, given the lines owed since SIGTERM (-1
// before it).
func (lc *loadClient) step(i int, owed int64) string {
	if owed < 0 {
		return fmt.Sprintf("client %d of %d: reply %d, before SIGTERM", lc.n+1, loadClients, i+1)
	}
	return fmt.Sprintf("client %d of %d: reply %d, SIGTERM after its line %d", lc.n+1, loadClients, i+1, owed)
}

// write sends lines, as many at a time as there is room for, until the
// reader ends (and closes the connection).
func (lc *loadClient) write() {
	for i := 0; ; {
		select {
		case <-lc.room:
		case <-lc.done:
			return
		}
		n := 1 + takeAll(lc.room)
		var batch []byte
		for j := i; j < i+n; j++ {
			batch = append(append(batch, lc.line(j)...), '\n')
		}
		if _, err := lc.c.Write(batch, ioTimeout); err != nil {
			return // the reader judges the stream
		}
		i += n
		lc.sent.Store(int64(i))
	}
}

// takeAll takes every token waiting in ch and returns how many.
func takeAll(ch chan struct{}) int {
	for n := 0; ; n++ {
		select {
		case <-ch:
		default:
			return n
		}
	}
}

// read checks every reply, in order, until the end of the stream, which
// must come after every line owed since SIGTERM is answered, and be EOF.
// stopAt is the last deadline once SIGTERM is sent.
func (lc *loadClient) read(s *Server, stopAt *atomic.Int64) {
	defer close(lc.done)
	// Closed once the stream has ended, as a client would: a server that
	// lingers until its client's EOF may close then. It stops the writer.
	defer lc.c.Close()
	for i := 0; ; i++ {
		deadline := time.Now().Add(ioTimeout)
		if at := stopAt.Load(); at != 0 {
			deadline = earliest(deadline, time.Unix(0, at))
		}
		got, err := lc.c.ReadLine(deadline)
		if err != nil {
			lc.fail = lc.end(s, i, got, err, deadline)
			return
		}
		if err := lc.c.checkReply(lc.step(i, lc.owed.Load()), got, lc.line(i)); err != nil {
			lc.fail = AsFailure(explain(err, "a reply went to the wrong client, or out of order: keep each "+
				"connection's input, output and state its own, whatever the load"))
			return
		}
		lc.replies.Add(1)
		if i+1 == loadWarm {
			close(lc.warm)
		}
		select {
		case lc.room <- struct{}{}:
		default:
		}
	}
}

// end judges the end of lc's stream after i right replies: read failed
// with err, having read got of a next line.
func (lc *loadClient) end(s *Server, i int, got []byte, err error, deadline time.Time) *Failure {
	owed := lc.owed.Load()
	step := lc.step(i, owed)
	f := readFailure(step, fmt.Sprintf("reply to %.40q", lc.line(i)), got, err)
	switch {
	case owed < 0:
		return AsFailure(explain(f, "a client pipelining beside others was stalled or cut off before SIGTERM: "+
			"serve every connection at once, and each until its client leaves"))
	case int64(i) < owed:
		return lostOwed(f, s, deadline, i, int(owed))
	case f.Kind == Stall:
		return Fail(Stall, fmt.Sprintf("client %d of %d: the end of the stream after SIGTERM", lc.n+1, loadClients),
			fmt.Sprintf("%d replies, then the connection still open", i), "EOF", closeAfterShutdown)
	case len(got) > 0:
		f.Hint = "a reply was cut short at the end of the stream: flush every reply whole before closing"
		f.Kind = Wrong
		return f
	case isReset(err) && died(s, deadline):
		return exitStatusFailure(s)
	case isReset(err):
		return Fail(Refused, fmt.Sprintf("client %d of %d: the end of the stream after SIGTERM, the client still sending",
			lc.n+1, loadClients), fmt.Sprintf("RST after %d replies", i), "EOF (FIN) after the last reply", rstAtGraceEnd)
	case errors.Is(err, io.EOF):
		return lc.sendAfterEOF(i)
	}
	return f
}

// rstAtGraceEnd is the hint for a server that closed, rather than drained,
// a connection whose client was still sending.
const rstAtGraceEnd = "at the end of the grace period the server closed connections whose clients were still " +
	"sending: closing a socket with input unread, or receiving input after the close, makes the kernel send " +
	"RST, which discards every reply not yet delivered. Flush what is owed, shutdown(SHUT_WR), read and discard " +
	"until the client's EOF (or the shutdown's deadline), then close"

// lateWrites is how many lines a client sends after the server's EOF: on
// loopback the RST a closed socket answers the first with is back before
// the write returns, so the next ones fail, and 32 clients make a miss
// all but impossible.
const lateWrites = 3

// sendAfterEOF goes on sending, as a client that has not yet read the
// server's EOF would, after i replies and the EOF. A server that drains
// reads and drops the lines until the client closes; one that closed
// without draining answers them with RST, the same RST that, with input
// unread at its close, would have cost replies.
func (lc *loadClient) sendAfterEOF(i int) *Failure {
	for j := range lateWrites {
		_, err := lc.c.Write(append(lc.line(i+j), '\n'), ioTimeout)
		if err == nil {
			continue
		}
		step := fmt.Sprintf("client %d of %d: lines sent after the server's EOF, SIGTERM in the middle of the load",
			lc.n+1, loadClients)
		if isReset(err) {
			return Fail(Refused, step, fmt.Sprintf("RST at line %d of %d sent after the EOF", j+1, lateWrites),
				"the server to read and drop them until the client closes", rstAtGraceEnd)
		}
		return Fail(Wrong, step, err.Error(), "the server to read and drop them until the client closes", "")
	}
	return nil
}
