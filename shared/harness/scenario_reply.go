package harness

import (
	"fmt"
	"time"
)

// The reference scenarios: every other scenario follows their shape. A
// scenario starts its own server, returns a *Failure with concrete got and
// want values and a hint a student can act on, and leaves cleanup to Run.

func runReply(e *Env) error {
	_, c, err := e.startClient()
	if err != nil {
		return err
	}
	if err := c.Ask("reply to one line", []byte("hello, reactor"), time.Now().Add(ioTimeout)); err != nil {
		f := AsFailure(err)
		if f.Hint == "" {
			f.Hint = "read the line up to \\n and answer `[YYYY-MM-DD HH:MM:SS]server reply: LINE\\n`"
		}
		return f
	}
	return nil
}

// concurrentClients is the contract's figure: enough to show that a client
// connected last is not queued behind the first, few enough to be instant.
const concurrentClients = 3

func runConcurrent(e *Env) error {
	s, err := e.Start()
	if err != nil {
		return err
	}
	// Connect everyone first: a connect succeeds from the listen backlog
	// alone, so "connected" proves nothing about being served.
	clients := make([]*Client, concurrentClients)
	for i := range clients {
		if clients[i], err = e.Dial(s); err != nil {
			return err
		}
	}
	// Then send from the last connected to the first, each answered while
	// the earlier ones stay open and silent.
	for i := len(clients) - 1; i >= 0; i-- {
		line := []byte(fmt.Sprintf("client %d of %d", i+1, len(clients)))
		step := fmt.Sprintf("client %d of %d (connected %s, sent %s)", i+1, len(clients),
			ordinal(i+1), ordinal(len(clients)-i))
		if err := clients[i].Ask(step, line, time.Now().Add(ioTimeout)); err != nil {
			f := AsFailure(err)
			if f.Kind == Stall {
				f.Hint = "a client got no reply while an earlier client stayed connected: " +
					"is the server handling one client at a time (blocked reading the first)?"
			}
			return f
		}
	}
	return nil
}

func ordinal(n int) string {
	switch n {
	case 1:
		return "1st"
	case 2:
		return "2nd"
	case 3:
		return "3rd"
	}
	return fmt.Sprintf("%dth", n)
}
