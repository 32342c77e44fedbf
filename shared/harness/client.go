package harness

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"reactorlab/shared/protocol"
)

// ioTimeout bounds every single read or write a client makes unless the
// scenario says otherwise: the contract's 2 s for a reply, plus room for a
// server built with -race on a busy 2-core machine.
var ioTimeout = scaled(3 * time.Second)

// Client is one connection from the harness to a server. Every read and
// write has a deadline, and every byte is counted for the scenario's cost.
type Client struct {
	conn   *net.TCPConn
	r      *bufio.Reader
	env    *Env
	dialed time.Time // no reply on this connection can be stamped earlier
}

// stampSlack allows for a server whose clock reading is a little off the
// harness's, or that rounds instead of truncating to the second.
const stampSlack = time.Second

// Write sends p, failing if the server does not take it within timeout;
// like net.Conn.Write it returns how much was taken.
func (c *Client) Write(p []byte, timeout time.Duration) (int, error) {
	c.conn.SetWriteDeadline(time.Now().Add(timeout))
	n, err := c.conn.Write(p)
	c.env.sent.Add(int64(n))
	return n, err
}

// Send writes p with the default deadline.
func (c *Client) Send(p []byte) error {
	_, err := c.Write(p, ioTimeout)
	return err
}

// Read reads into p by the deadline, like net.Conn.Read.
func (c *Client) Read(p []byte, deadline time.Time) (int, error) {
	if c.r != nil && c.r.Buffered() > 0 {
		n, err := c.r.Read(p)
		return n, err
	}
	c.conn.SetReadDeadline(deadline)
	n, err := c.conn.Read(p)
	c.env.recv.Add(int64(n))
	return n, err
}

// ReadLine reads one '\n'-terminated line by the deadline and returns it
// without the '\n'.
func (c *Client) ReadLine(deadline time.Time) ([]byte, error) {
	if c.r == nil {
		c.r = bufio.NewReaderSize(countingReader{c}, 64<<10)
	}
	c.conn.SetReadDeadline(deadline)
	line, err := c.r.ReadBytes('\n')
	if err != nil {
		return line, err
	}
	return line[:len(line)-1], nil
}

// countingReader feeds the bufio.Reader from the connection and counts.
type countingReader struct{ c *Client }

func (r countingReader) Read(p []byte) (int, error) {
	n, err := r.c.conn.Read(p)
	r.c.env.recv.Add(int64(n))
	return n, err
}

// ExpectReply reads one line and checks it is the stamp reply to want, with
// a time within the contract's 2 s. step names the check in a failure.
func (c *Client) ExpectReply(step string, want []byte, deadline time.Time) error {
	got, err := c.ReadLine(deadline)
	if err != nil {
		return readFailure(step, fmt.Sprintf("reply to %.40q", want), got, err)
	}
	return c.checkReply(step, got, want)
}

// checkReply checks that got, a line read on c, is the stamp reply to want,
// with a time within the contract's 2 s.
func (c *Client) checkReply(step string, got, want []byte) error {
	t, echoed, err := protocol.ParseReply(got)
	if err != nil {
		return Fail(Wrong, step, fmt.Sprintf("%.80q", got), "[YYYY-MM-DD HH:MM:SS]server reply: LINE", err.Error())
	}
	if !bytes.Equal(echoed, want) {
		return Fail(Wrong, step, fmt.Sprintf("reply to %.60q", echoed), fmt.Sprintf("reply to %.60q", want),
			"the reply must carry the line exactly as sent, without its \\n or \\r\\n, in request order")
	}
	// The stamp is judged against when it could have been made: after the
	// connection opened and before the reply was read. How long the reply
	// then waited in the socket (1,100 of them in many) is the harness's
	// business, not the server's.
	earliest := c.dialed.Truncate(time.Second).Add(-stampSlack)
	now := time.Now()
	if t.Before(earliest) || t.After(now.Add(stampSlack)) {
		return Fail(Wrong, step, "stamp "+t.Format(time.DateTime),
			"local time between "+earliest.Format(time.DateTime)+" and "+now.Format(time.DateTime),
			"stamp the reply with the server's local time when the line is answered")
	}
	return nil
}

// Ask sends line and a '\n', and expects the stamp reply to line by the
// deadline; the failure, a *Failure, is named step.
func (c *Client) Ask(step string, line []byte, deadline time.Time) error {
	if err := c.Send(append(append([]byte(nil), line...), '\n')); err != nil {
		return Fail(Refused, step, err.Error(), "the server to read the line", "")
	}
	return c.ExpectReply(step, line, deadline)
}

// ExpectEOF checks that the server closes the connection by the deadline
// with no further bytes. A reset counts as closed here: whether it cost
// replies is for the scenario to check, by reading them first. Once the
// end is seen the client closes too, as any client would: a server that
// lingers after its last reply, discarding input until the client's EOF,
// may then close at once.
func (c *Client) ExpectEOF(step string, deadline time.Time) error {
	var buf [512]byte
	n, err := c.Read(buf[:], deadline)
	switch {
	case n > 0:
		return Fail(Wrong, step, fmt.Sprintf("%d more bytes %.60q", n, buf[:n]), "end of stream", "")
	case errors.Is(err, io.EOF) || isReset(err):
		c.Close()
		return nil
	case isTimeout(err):
		return Fail(Stall, step, "connection still open", "the server to close it", "")
	}
	return Fail(Wrong, step, err.Error(), "end of stream", "")
}

// echoOnce sends msg to a server in echo mode and expects it back by the
// deadline.
func (c *Client) echoOnce(step string, msg []byte, deadline time.Time) error {
	if err := c.Send(msg); err != nil {
		return Fail(Refused, step, err.Error(), "the server to read the message", "")
	}
	got := make([]byte, len(msg))
	n, err := readFull(c, got, deadline)
	if err != nil {
		return readFailure(step, fmt.Sprintf("%q echoed", msg), got[:n], err)
	}
	if !bytes.Equal(got, msg) {
		return Fail(Wrong, step, fmt.Sprintf("%q", got), fmt.Sprintf("%q", msg), echoWrongHint(got))
	}
	return nil
}

// CloseWrite half-closes: the server reads EOF but may still write.
func (c *Client) CloseWrite() error { return c.conn.CloseWrite() }

// Reset closes with SO_LINGER 0, so the server sees RST instead of FIN.
func (c *Client) Reset() error {
	c.conn.SetLinger(0)
	return c.conn.Close()
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// readFailure classifies a failed read: no bytes by the deadline is a
// stall, EOF or RST is a refusal.
func readFailure(step, want string, got []byte, err error) *Failure {
	switch {
	case isTimeout(err):
		g := "nothing"
		if len(got) > 0 {
			g = fmt.Sprintf("%.60q and no \\n", got)
		}
		return Fail(Stall, step, g+" within the deadline", want, "")
	case errors.Is(err, io.EOF), isReset(err):
		return Fail(Refused, step, "connection closed by the server ("+closeWord(err)+")", want, "")
	}
	return Fail(Wrong, step, err.Error(), want, "")
}

func closeWord(err error) string {
	if isReset(err) {
		return "RST"
	}
	return "FIN"
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
