package main

import (
	"errors"
	"io"
	"net"

	"reactorlab/shared/protocol"
)

// LAB(answer): answer each line the client sends with the protocol's reply
// answer serves one client: every complete line gets its reply, in order,
// until the client closes or sends a line that is too long.
//
// The session keeps an unfinished line between reads, so a line may come
// in any number of pieces; at EOF a last line without '\n' is a line too.
func answer(c net.Conn, cfg config) {
	sess := protocol.NewSession(cfg.mode, cfg.maxLine)
	buf := make([]byte, 64<<10)
	var out []byte
	for {
		n, err := c.Read(buf)
		if n > 0 {
			var perr error
			out, perr = sess.Input(out[:0], buf[:n])
			if _, werr := c.Write(out); werr != nil || errors.Is(perr, protocol.ErrClosing) {
				return
			}
		}
		if errors.Is(err, io.EOF) {
			c.Write(sess.EOF(out[:0]))
			return
		}
		if err != nil {
			return
		}
	}
}

// END LAB
