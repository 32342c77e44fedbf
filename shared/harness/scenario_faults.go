package harness

import (
	"bytes"
	"fmt"
	"sync"
	"time"
)

// The scenario about clients that break the conversation in the worst
// places: a reset in the middle of a large reply, a client that vanishes
// while the server is writing to it, and a storm of connections that close
// before a word. Each costs the server an error to handle (EPIPE,
// ECONNRESET, an accept for nobody), never a crash or a stalled loop; after
// each, a fresh client is served, and Run's leak check holds the server to
// the fds and threads it started with.

// faultReply is how much the client asks echoed before it resets: more
// than the kernel buffers hold, so the server is surely mid-write.
const faultReply = 8 << 20

// stormConns and stormBatch: thousands of connect-then-close clients, a
// batch at a time so the client side stays within its own fd limit.
const (
	stormConns = 2000
	stormBatch = 100
)

func runFaults(e *Env) error {
	echo, err := e.Start("-mode", "echo")
	if err != nil {
		return err
	}
	if err := resetMidReply(e, echo); err != nil {
		return err
	}
	if err := servedAfter(e, echo, "a reset in the middle of a large reply", true); err != nil {
		return err
	}
	stamp, err := e.Start()
	if err != nil {
		return err
	}
	if err := vanishWhileWritten(e, stamp); err != nil {
		return err
	}
	if err := servedAfter(e, stamp, "a client that vanished while the server wrote to it", false); err != nil {
		return err
	}
	if err := storm(e, stamp); err != nil {
		return err
	}
	return servedAfter(e, stamp, fmt.Sprintf("%d clients that connected and closed at once", stormConns), false)
}

// resetMidReply writes faultReply bytes to an echo server, reads a little
// of the echo, and resets: the server's next write fails with ECONNRESET
// or EPIPE while it still owes megabytes.
func resetMidReply(e *Env, s *Server) error {
	c, err := e.Dial(s)
	if err != nil {
		return err
	}
	go func() {
		chunk := bytes.Repeat([]byte("r"), streamChunk)
		for sent := 0; sent < faultReply; sent += len(chunk) {
			if _, err := c.Write(chunk, ioTimeout); err != nil {
				return // the reset below ends this
			}
		}
	}()
	got := make([]byte, streamChunk)
	if _, err := readFull(c, got, time.Now().Add(ioTimeout)); err != nil {
		return readFailure("read the start of a large echo", "64 KiB back", nil, err)
	}
	return c.Reset()
}

// vanishWhileWritten floods lines without reading and closes with the
// replies unread: the kernel resets the connection, and the server learns
// it from a write.
func vanishWhileWritten(e *Env, s *Server) error {
	c, err := e.Dial(s)
	if err != nil {
		return err
	}
	line := append(bytes.Repeat([]byte("v"), floodLine-1), '\n')
	for sent := 0; sent < 2*shutdownLines*shutdownLineSize; sent += len(line) {
		if _, err := c.Write(line, floodStall); err != nil {
			break // the server stopped reading: its replies are stuck, as wanted
		}
	}
	return c.Close()
}

// storm opens and closes stormConns connections, stormBatch at a time,
// without a byte sent.
func storm(e *Env, s *Server) error {
	for done := 0; done < stormConns; done += stormBatch {
		var wg sync.WaitGroup
		errs := make([]error, stormBatch)
		for i := range stormBatch {
			wg.Go(func() {
				c, err := e.Dial(s)
				if err != nil {
					errs[i] = err
					return
				}
				c.Close()
			})
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				f := AsFailure(err)
				f.Step = fmt.Sprintf("connect and close at once, %d clients in all", stormConns)
				f.Hint = "keep accepting while clients come and go: a connection that closed before its accept " +
					"(ECONNABORTED) or before its first read is the client's choice, not the server's failure"
				return f
			}
		}
	}
	return nil
}

// servedAfter checks a fresh client is served as usual after a fault.
func servedAfter(e *Env, s *Server, fault string, echo bool) error {
	c, err := e.Dial(s)
	if err != nil {
		f := AsFailure(err)
		f.Step = "a new client after " + fault
		return f
	}
	// Closed after, so that a server taking one client at a time moves on.
	defer c.Close()
	step := "a new client after " + fault
	msg := []byte("still serving?")
	deadline := time.Now().Add(ioTimeout)
	if echo {
		err = c.echoOnce(step, msg, deadline)
	} else {
		err = c.Ask(step, msg, deadline)
	}
	return explain(err, "an error on one connection (EPIPE, ECONNRESET) ends that connection only: close it "+
		"and go on serving the others; under SIGPIPE's default action a write to a reset socket kills the "+
		"process, so ignore SIGPIPE or write with MSG_NOSIGNAL")
}
