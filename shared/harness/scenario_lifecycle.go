package harness

import (
	"fmt"
	"syscall"
	"time"
)

// The scenarios about endings: of connections, however a client leaves,
// and of the server itself.

func init() {
	register(Scenario{
		Name: "close",
		What: "FIN, RST and connect-then-vanish clients leave no fd behind; serving goes on",
		Run:  runClose,
	})
	register(Scenario{
		Name: "shutdown",
		What: "SIGTERM: exit 0 within 2 s, owed replies delivered first",
		Run:  runShutdown,
	})
}

// closeRounds repeats each way of leaving: one leaked fd per round is then
// 20 fds, which no runtime's own fd churn can hide.
const closeRounds = 20

// closeSettle is how long the server may take to notice the last client
// left and close its fd.
const closeSettle = 3 * time.Second

// pollEvery is how often a scenario re-reads /proc while it waits for the
// server to reach a state: fine enough to add no noticeable delay.
const pollEvery = 10 * time.Millisecond

func runClose(e *Env) error {
	s, err := e.Start()
	if err != nil {
		return err
	}
	baseline, err := s.OpenFDs()
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
		{"FIN after a reply", true, true, false},
		{"RST after a reply", true, true, true},
		{"connect, then close with nothing sent", false, false, false},
		{"RST before the reply", true, false, true},
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
			if l.send {
				if err := c.Send(append(line, '\n')); err != nil {
					return Fail(Refused, step, err.Error(), "the server to read the line", "")
				}
			}
			if l.reply {
				if err := c.ExpectReply(step, line, time.Now().Add(ioTimeout)); err != nil {
					return explain(err, "a client that left earlier must not change how the next one is served: "+
						"when a connection ends forget all of its state, and keep accepting (under edge-triggered "+
						"epoll, until EAGAIN)")
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
			fmt.Sprintf("<= %d, as right after start", baseline),
			"close the fd when read returns 0 (FIN) or an error such as ECONNRESET, and when EPOLLHUP/EPOLLERR arrive")
	}

	c, err := e.Dial(s)
	if err != nil {
		return err
	}
	const fresh = "a new client after all that"
	if err := c.Send([]byte("still there?\n")); err != nil {
		return Fail(Refused, fresh, err.Error(), "the server to read the line", "")
	}
	if err := c.ExpectReply(fresh, []byte("still there?"), time.Now().Add(ioTimeout)); err != nil {
		return explain(err, "an error on one connection (EPIPE, ECONNRESET) ends that connection only: "+
			"the server must go on accepting and serving")
	}
	return nil
}

// shutdownLines are sent just before SIGTERM: about 10 KiB of replies
// owed at once, so a server that drops what is unread or unsent at the
// signal visibly loses some.
const shutdownLines = 200

// shutdownBudget is the contract's: owed replies delivered, every fd
// closed and the process gone within 2 s of the signal.
const shutdownBudget = 2 * time.Second

func runShutdown(e *Env) error {
	s, err := e.Start()
	if err != nil {
		return err
	}
	c, err := e.Dial(s)
	if err != nil {
		return err
	}
	// One reply first, so the connection is surely accepted and belongs to
	// the connections the grace period is for.
	if err := c.Send([]byte("first\n")); err != nil {
		return Fail(Refused, "send a first line", err.Error(), "the server to read it", "")
	}
	if err := c.ExpectReply("reply to the first line", []byte("first"), time.Now().Add(ioTimeout)); err != nil {
		return err
	}
	lines := make([][]byte, shutdownLines)
	var batch []byte
	for i := range lines {
		lines[i] = fmt.Appendf(nil, "owed %d of %d", i+1, shutdownLines)
		batch = append(append(batch, lines[i]...), '\n')
	}
	if err := c.Send(batch); err != nil {
		return Fail(Refused, fmt.Sprintf("send %d lines", shutdownLines), err.Error(), "the server to read them", "")
	}

	e.expectExit(s)
	signalled := time.Now()
	if err := s.Signal(syscall.SIGTERM); err != nil {
		return Fail(Exit, "send SIGTERM", err.Error(), "a running server", "")
	}
	deadline := signalled.Add(shutdownBudget)

	lost := "replies owed before the signal were lost: on SIGTERM stop accepting, but keep reading and " +
		"answering open connections for a grace period, flush, then close"
	for i, line := range lines {
		step := fmt.Sprintf("reply %d of %d lines sent just before SIGTERM", i+1, shutdownLines)
		err := c.ExpectReply(step, line, deadline)
		if err == nil {
			continue
		}
		f := AsFailure(explain(err, lost))
		if f.Kind == Refused {
			// The server may end the connection; what is wrong is that it
			// did so early. Dying of the signal explains that best.
			if exited(s, deadline) && s.ExitStatus() != nil {
				return exitStatusFailure(s)
			}
			f.Kind = Wrong
		}
		f.Got = fmt.Sprintf("%d of %d replies, then %s", i, shutdownLines, f.Got)
		return f
	}
	if err := c.ExpectEOF("close after the owed replies", deadline); err != nil {
		f := AsFailure(err)
		if f.Kind == Stall {
			f.Hint = "after the grace period close every connection, so clients see the end: " +
				"the server must be gone within 2 s of SIGTERM"
		}
		return f
	}
	if !exited(s, deadline) {
		return Fail(Exit, "exit after SIGTERM", fmt.Sprintf("still running %s after SIGTERM", shutdownBudget),
			"exit status 0", "the server must exit within 2 s of SIGTERM (a thread blocked in accept() is not "+
				"woken by close() on Linux: shutdown(fd, SHUT_RD) the listener)")
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
