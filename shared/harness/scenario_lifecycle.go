package harness

import (
	"bytes"
	"fmt"
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
