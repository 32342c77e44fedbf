//go:build linux

package main

import (
	"errors"

	"golang.org/x/sys/unix"

	"reactorlab/shared/protocol"
)

// readSize is one read's worth. Every connection owns a buffer of this
// size while it is served, so 1,000 clients cost 16 MiB in buffers alone;
// event-loop chapters share one buffer per loop instead.
const readSize = 16 << 10

// handle serves one client until it half-closes, errs or is shut down, then
// closes its fd. Every call here blocks: read waits for the client to send,
// write waits until the kernel has taken the whole reply.
func (s *server) handle(fd int) {
	s.track(fd)
	sess := protocol.NewSession(s.cfg.mode, s.cfg.maxLine)
	in := make([]byte, readSize)
	var out []byte
	why := serveConn(fd, sess, in, out)
	s.untrack(fd)
	trace.Printf("close fd=%d (%s)", fd, why)
	unix.Close(fd)
}

// serveConn is the read-answer loop; it returns why the connection ends.
func serveConn(fd int, sess *protocol.Session, in, out []byte) string {
	for {
		n, err := readFD(fd, in)
		switch {
		case err != nil:
			return err.Error() // ECONNRESET: the client is gone, owed or not
		case n == 0:
			// The client half-closed: answer a last line that had no '\n',
			// then close, which is how the client learns it has everything.
			trace.Printf("read fd=%d EOF", fd)
			if err := writeAll(fd, sess.EOF(out[:0])); err != nil {
				return err.Error()
			}
			return "EOF"
		}
		trace.Printf("read fd=%d n=%d", fd, n)
		var perr error
		out, perr = sess.Input(out[:0], in[:n])
		if err := writeAll(fd, out); err != nil {
			return err.Error()
		}
		if errors.Is(perr, protocol.ErrClosing) {
			return "line too long"
		}
	}
}
