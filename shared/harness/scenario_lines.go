package harness

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	"reactorlab/shared/protocol"
)

// The stamp-mode scenarios about lines: how they are cut from the stream,
// what happens at the stream's end, and what happens to a line too long.

// batchLines is how many lines go in one write: enough that any server
// reading a few KiB at a time gets many lines per read.
const batchLines = 100

func runFraming(e *Env) error {
	_, c, err := e.startClient()
	if err != nil {
		return err
	}

	// TCP_NODELAY (Go's default) makes each write its own segment, so the
	// server really sees the line in pieces.
	step := "one line sent 1 byte per write"
	line := []byte("sent one byte at a time")
	for _, b := range append(line, '\n') {
		if err := c.Send([]byte{b}); err != nil {
			return Fail(Refused, step, err.Error(), "the server to read every byte", "")
		}
	}
	if err := c.ExpectReply(step, line, time.Now().Add(ioTimeout)); err != nil {
		return explain(err, "a read returns whatever has arrived, maybe part of a line: keep the bytes of an "+
			"unfinished line and answer only once its '\\n' has come")
	}

	var batch []byte
	for i := 1; i <= batchLines; i++ {
		batch = fmt.Appendf(batch, "line %d of %d\n", i, batchLines)
	}
	if err := c.Send(batch); err != nil {
		return Fail(Refused, fmt.Sprintf("send %d lines in one write", batchLines), err.Error(), "the server to read them", "")
	}
	deadline := time.Now().Add(ioTimeout)
	for i := 1; i <= batchLines; i++ {
		step := fmt.Sprintf("reply %d of %d lines sent in one write", i, batchLines)
		want := fmt.Appendf(nil, "line %d of %d", i, batchLines)
		if err := c.ExpectReply(step, want, deadline); err != nil {
			return explain(err, "one read may return many lines: answer every complete line in the buffer, "+
				"in order, and keep the unfinished rest for the next read")
		}
	}

	singles := []struct {
		step, send, want, hint string
	}{
		{"CRLF line", "crlf line\r\n", "crlf line",
			"a '\\r' right before the '\\n' is part of the line ending (telnet and Windows send CRLF): drop it"},
		{"line with NUL bytes and invalid UTF-8", "nul\x00byte \xff\xfe\n", "nul\x00byte \xff\xfe",
			"pass the line's bytes through verbatim: no C string functions that stop at NUL, no text decoding"},
		{"empty line", "\n", "",
			"an empty line is a line: answer it with an empty L (`[...]server reply: ` then '\\n')"},
	}
	for _, t := range singles {
		if err := c.Send([]byte(t.send)); err != nil {
			return Fail(Refused, t.step, err.Error(), "the server to read the line", "")
		}
		if err := c.ExpectReply(t.step, []byte(t.want), time.Now().Add(ioTimeout)); err != nil {
			return explain(err, t.hint)
		}
	}
	return nil
}

// explain gives a failure from ExpectReply the step's own hint when the
// reply was missing or carried the wrong line; a malformed reply keeps the
// format hint ExpectReply chose.
func explain(err error, hint string) error {
	if err == nil {
		return nil
	}
	f := AsFailure(err)
	if f.Kind == Stall || f.Kind == Refused || strings.HasPrefix(f.Want, "reply to") {
		f.Hint = hint
	}
	return f
}

// halfCloseLines is the contract's figure: more replies than fit one write,
// so a server that stops at EOF leaves some visibly unsent.
const halfCloseLines = 1000

// halfCloseTimeout bounds all 1,000 replies and the close after them.
var halfCloseTimeout = scaled(5 * time.Second)

func runHalfClose(e *Env) error {
	_, c, err := e.startClient()
	if err != nil {
		return err
	}
	lines := make([][]byte, halfCloseLines)
	var payload []byte
	for i := range lines {
		lines[i] = fmt.Appendf(nil, "line %d of %d", i+1, halfCloseLines)
		payload = append(payload, lines[i]...)
		if i < len(lines)-1 {
			payload = append(payload, '\n') // the last line ends at EOF instead
		}
	}
	step := fmt.Sprintf("send %d lines, the last without '\\n', then shutdown(SHUT_WR)", halfCloseLines)
	if err := c.Send(payload); err != nil {
		return Fail(Refused, step, err.Error(), "the server to read them", "")
	}
	if err := c.CloseWrite(); err != nil {
		return Fail(Refused, step, err.Error(), "a half-closed connection", "")
	}

	deadline := time.Now().Add(halfCloseTimeout)
	last := len(lines) - 1
	for i, line := range lines {
		step := fmt.Sprintf("reply %d of %d after the client's FIN", i+1, len(lines))
		err := c.ExpectReply(step, line, deadline)
		if err == nil {
			continue
		}
		f := AsFailure(err)
		if f.Kind == Wrong {
			return f
		}
		f.Got = fmt.Sprintf("%d of %d replies, then %s", i, len(lines), f.Got)
		switch {
		case i == last:
			f.Hint = "the last line had no '\\n' before EOF: answer it like any other line"
		case f.Kind == Refused:
			f.Hint = "replies owed were dropped at EOF: on read()==0, send every reply still owed, then close"
		default:
			f.Hint = "replies stopped part-way: read()==0 means no more input, not no more output, so keep sending " +
				"what is owed; under edge-triggered epoll, read until EAGAIN (or until read returns 0): bytes and " +
				"a FIN left unread get no new edge"
		}
		return f
	}
	return expectClosed(c, "close after the last reply", deadline,
		"after the client's FIN and all replies are sent, close the connection", "nothing is owed after the last reply")
}

// longLineMax is the -max-line the scenario sets: small, so lines over it
// are cheap to send.
const longLineMax = 1024

func runLongLine(e *Env) error {
	s, err := e.Start("-max-line", fmt.Sprint(longLineMax))
	if err != nil {
		return err
	}
	// Connect in the order a server taking one client at a time would
	// serve them, so that it can pass too; a concurrent server has all
	// three open at once, and a must stay unharmed by the others' errors.
	long, err := e.Dial(s)
	if err != nil {
		return err
	}
	endless, err := e.Dial(s)
	if err != nil {
		return err
	}
	a, err := e.Dial(s)
	if err != nil {
		return err
	}
	// About twice the limit: over it whatever a server counts (with or
	// without the '\n'), and within one read of any sensible buffer.
	longLine := append([]byte("ok\n"), bytes.Repeat([]byte("x"), 2000)...)
	longLine = append(longLine, '\n')
	noNewline := bytes.Repeat([]byte("y"), 5000)
	for _, w := range []struct {
		c    *Client
		step string
		p    []byte
	}{
		{long, "send a short line then one of 2000 bytes", longLine},
		{endless, "send 5000 bytes with no '\\n'", noNewline},
		{a, "neighbour sends a line", []byte("before\n")},
	} {
		if err := w.c.Send(w.p); err != nil {
			return Fail(Refused, w.step, err.Error(), "the server to read it", "")
		}
	}

	if err := long.ExpectReply("reply to the line before the long one", []byte("ok"), time.Now().Add(ioTimeout)); err != nil {
		return explain(err, "lines before the long one are answered as usual, in order")
	}
	if err := expectErrorLine(long, "error line for a 2000-byte line (-max-line 1024)",
		"a line over -max-line gets one line starting `error: ` saying why, then the connection is closed"); err != nil {
		return err
	}
	if err := expectClosed(long, "close after the error line", time.Now().Add(ioTimeout), closeAfterError, noMoreAfterError); err != nil {
		return err
	}
	if err := expectErrorLine(endless, "error line for 5000 bytes with no '\\n' (-max-line 1024)",
		"the limit must apply before the '\\n' arrives: once an unfinished line is over -max-line, "+
			"send the error line and close, or a client can make the server buffer without bound"); err != nil {
		return err
	}
	if err := expectClosed(endless, "close after the error line for the line with no '\\n'", time.Now().Add(ioTimeout),
		closeAfterError, noMoreAfterError); err != nil {
		return err
	}

	neighbour := "a connection open next to the failing ones must be served as before: " +
		"close only the connection whose line was too long"
	if err := a.ExpectReply("neighbour's reply to \"before\"", []byte("before"), time.Now().Add(ioTimeout)); err != nil {
		return explain(err, neighbour)
	}
	if err := a.Ask("neighbour's reply to \"after\", sent once the others were closed", []byte("after"), time.Now().Add(ioTimeout)); err != nil {
		return explain(err, neighbour)
	}
	return atTheLimit(a)
}

// atTheLimit sends a line of exactly -max-line bytes, which is within the
// limit and must be answered like any other.
func atTheLimit(c *Client) error {
	step := fmt.Sprintf("a line of exactly -max-line (%d) bytes", longLineMax)
	line := bytes.Repeat([]byte("z"), longLineMax)
	if err := c.Send(append(bytes.Clone(line), '\n')); err != nil {
		return Fail(Refused, step, err.Error(), "the server to read it", "")
	}
	got, err := c.ReadLine(time.Now().Add(ioTimeout))
	if err == nil && bytes.HasPrefix(got, []byte("error: ")) {
		return Fail(Wrong, step, fmt.Sprintf("%.60q", got), fmt.Sprintf("the reply to the %d-byte line", longLineMax),
			"-max-line is the longest line accepted: a line of exactly that many bytes (not counting \\n or \\r\\n) "+
				"is fine, only a longer one is refused (an off-by-one at the limit?)")
	}
	if err != nil {
		return readFailure(step, "a reply", got, err)
	}
	if _, echoed, err := protocol.ParseReply(got); err != nil || !bytes.Equal(echoed, line) {
		return Fail(Wrong, step, fmt.Sprintf("%.60q", got), fmt.Sprintf("the reply to the %d-byte line", longLineMax), "")
	}
	return nil
}

// expectErrorLine reads one line that must start with "error: ".
func expectErrorLine(c *Client, step, hint string) error {
	const want = "a line starting `error: `"
	got, err := c.ReadLine(time.Now().Add(ioTimeout))
	if err != nil {
		f := readFailure(step, want, got, err)
		f.Hint = hint
		return f
	}
	if bytes.HasPrefix(got, []byte("error: ")) {
		return nil
	}
	if _, echoed, err := protocol.ParseReply(got); err == nil {
		hint = fmt.Sprintf("a line of %d bytes was answered as a normal line: check each line's length against -max-line (%d here)",
			len(echoed), longLineMax)
	}
	return Fail(Wrong, step, fmt.Sprintf("%.60q", got), want, hint)
}

// The hints for a connection not closed after its error line.
const (
	closeAfterError  = "close the connection once the error line has been delivered"
	noMoreAfterError = "send nothing after the error line: the stream has lost its framing, so close"
)

// expectClosed checks that the server closes c by the deadline, with a hint
// for each way it may not: keep the connection open (stall), or send more.
func expectClosed(c *Client, step string, deadline time.Time, stall, more string) error {
	err := c.ExpectEOF(step, deadline)
	if err == nil {
		return nil
	}
	f := AsFailure(err)
	f.Hint = more
	if f.Kind == Stall {
		f.Hint = stall
	}
	return f
}

// lingerLines and lingerLineSize make the replies owed before the error
// line far more than a client's receive buffer holds while it does not
// read (about 128 KiB on loopback), so that when the server closes, most
// of them still wait in its own send buffer.
const (
	lingerLines    = 1000
	lingerLineSize = 500
)

// lingerJunk is each write of what the client goes on sending after the
// line that is too long: the server must read and discard it.
const lingerJunk = 4 << 10

// runLinger is the data loss the seed's "send, then close" invites.
// A client pipelines many lines and then one over -max-line, and goes on
// sending while it reads the replies. A server that answers, sends the
// error line and closes at once closes a socket with unread input: the
// kernel then sends RST instead of FIN and throws away every reply still in
// the send buffer. The replies owed must all arrive, then the error line,
// then the end of the stream.
func runLinger(e *Env) error {
	s, c, err := e.startClient("-max-line", fmt.Sprint(longLineMax))
	if err != nil {
		return err
	}
	var burst []byte
	lines := make([][]byte, lingerLines)
	for i := range lines {
		lines[i] = fmt.Appendf(nil, "owed %d ", i+1)
		lines[i] = append(lines[i], bytes.Repeat([]byte("."), lingerLineSize-len(lines[i]))...)
		burst = append(append(burst, lines[i]...), '\n')
	}
	burst = append(burst, bytes.Repeat([]byte("x"), 2*longLineMax)...)
	burst = append(burst, '\n')

	sent := make(chan error, 1) // the burst is written, or could not be
	stop := make(chan struct{}) // the reader is done: stop sending junk
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := c.Write(burst, scenarioTimeout)
		sent <- err
		junk := bytes.Repeat([]byte("j"), lingerJunk)
		for err == nil {
			select {
			case <-stop:
				return
			default:
			}
			_, err = c.Write(junk, ioTimeout)
		}
	}()
	defer func() { close(stop); c.Close(); <-done }()

	// The reader starts only once the line that is too long has gone, or
	// the server has stopped reading (it waits for room for its replies):
	// until then the replies pile up unread, as behind a slow reader.
	if _, f := awaitUnread(e, s, c, sent); f != nil {
		f.Step = fmt.Sprintf("send %d lines and one over -max-line %d", lingerLines, longLineMax)
		return f
	}
	hint := "replies owed before the error line were lost: closing a socket that still has unread input " +
		"makes the kernel send RST and discard everything not yet sent; after the last reply, " +
		"shutdown(SHUT_WR), read and discard until the client's EOF (or a linger deadline), then close"
	deadline := time.Now().Add(halfCloseTimeout)
	for i, line := range lines {
		step := fmt.Sprintf("reply %d of %d lines sent before one over -max-line, the client still sending", i+1, lingerLines)
		if err := c.ExpectReply(step, line, deadline); err != nil {
			f := AsFailure(explain(err, hint))
			f.Got = fmt.Sprintf("%d of %d replies, then %s", i, lingerLines, f.Got)
			return f
		}
	}
	if err := expectErrorLine(c, "error line after the owed replies", hint); err != nil {
		return err
	}
	return expectClosed(c, "close after the error line, the client still sending", deadline, closeAfterError, noMoreAfterError)
}
