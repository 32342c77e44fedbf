// Package protocol is the service every chapter serves, as pure functions
// over bytes: no sockets, no syscalls. Chapters differ in how bytes reach a
// Session and how its output reaches the client; what the bytes mean is the
// same everywhere, so a diff between two chapters shows only the I/O.
//
// In stamp mode the stream is split on '\n' (a trailing '\r' is dropped) and
// each line L is answered with "[YYYY-MM-DD HH:MM:SS]server reply: L\n" in
// local time. In echo mode every byte is sent back as it came.
package protocol

import (
	"bytes"
	"errors"
	"fmt"
	"time"
)

// DefaultMaxLine is the -max-line default: long enough for any line a person
// types or a test sends, short enough that a client cannot make a server
// hold an unbounded line in memory.
const DefaultMaxLine = 64 << 10

// stampLayout is the reply prefix. The seed's C++ example wrote month and day
// with no dash between them (seedLayout); stampLayout is the corrected form.
const (
	stampLayout = "[2006-01-02 15:04:05]"
	seedLayout  = "[2006-0102 15:04:05]"
)

const replyMarker = "server reply: "

// Mode selects what a Session does with the bytes it is given.
type Mode int

const (
	Stamp Mode = iota // timestamped reply per line (the seed's service)
	Echo              // raw bytes back, binary-safe
)

// ParseMode reads a -mode flag value.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "stamp":
		return Stamp, nil
	case "echo":
		return Echo, nil
	}
	return 0, fmt.Errorf("unknown mode %q: want stamp or echo", s)
}

func (m Mode) String() string {
	if m == Echo {
		return "echo"
	}
	return "stamp"
}

// LineTooLongError reports a line longer than the decoder's limit.
type LineTooLongError struct {
	Max int
}

func (e *LineTooLongError) Error() string {
	return fmt.Sprintf("line longer than %d bytes", e.Max)
}

// Decoder splits a byte stream into lines. Feed it whatever a read returned,
// then call Next until it yields nothing. Lines returned by Next alias the
// decoder's buffer and are valid until the next Feed.
//
// The buffer never holds more than one unfinished line (at most Max+1 bytes)
// plus one read's worth of input, whatever the client sends.
type Decoder struct {
	max  int
	buf  []byte // unconsumed input: buf[off:] has not been returned yet
	off  int
	scan int   // buf[off:scan] is known to hold no '\n'
	err  error // sticky: after a too-long line the stream has lost framing
}

// NewDecoder returns a decoder that rejects lines longer than max bytes
// (not counting the '\n' and an optional '\r' before it).
func NewDecoder(max int) *Decoder {
	return &Decoder{max: max}
}

// Feed appends p to the input. It keeps no reference to p. Once the decoder
// has failed, Feed discards p.
func (d *Decoder) Feed(p []byte) {
	if d.err != nil {
		// Framing is lost and nothing more will be returned: keeping the
		// input would let a client that goes on sending grow the buffer
		// while its connection waits to be closed.
		return
	}
	if d.off > 0 {
		// Slide the unfinished tail to the front so the buffer stops growing
		// once it has reached one line plus one read.
		n := copy(d.buf, d.buf[d.off:])
		d.buf = d.buf[:n]
		d.scan -= d.off
		d.off = 0
	}
	d.buf = append(d.buf, p...)
	if d.scan == len(d.buf)-len(p) && bytes.IndexByte(p, '\n') < 0 {
		// Everything buffered is one unfinished line, so it can be judged
		// now: a caller that feeds several reads before calling Next must
		// not be able to buffer a line of any length.
		d.scan = len(d.buf)
		if d.pendingTooLong() {
			d.fail()
		}
	}
}

// Next returns the next complete line without its "\n" or "\r\n".
// It returns (nil, nil) when more input is needed, and a *LineTooLongError
// once the unfinished line can no longer fit the limit; that error is sticky.
func (d *Decoder) Next() ([]byte, error) {
	if d.err != nil {
		return nil, d.err
	}
	if i := bytes.IndexByte(d.buf[d.scan:], '\n'); i >= 0 {
		end := d.scan + i
		line := dropCR(d.buf[d.off:end])
		d.off, d.scan = end+1, end+1
		if len(line) > d.max {
			return nil, d.fail()
		}
		return line, nil
	}
	d.scan = len(d.buf)
	if d.pendingTooLong() {
		return nil, d.fail()
	}
	return nil, nil
}

// fail makes the decoder's error sticky and releases its buffer, which can
// hold nothing more of use.
func (d *Decoder) fail() error {
	d.err = &LineTooLongError{Max: d.max}
	d.buf, d.off, d.scan = nil, 0, 0
	return d.err
}

// pendingTooLong reports whether the unfinished line is already over the
// limit. Max+1 bytes ending in '\r' may still be a legal line plus "\r\n".
func (d *Decoder) pendingTooLong() bool {
	rest := d.buf[d.off:]
	if len(rest) <= d.max {
		return false
	}
	return len(rest) > d.max+1 || rest[len(rest)-1] != '\r'
}

// Final returns the last line of a stream that ended without '\n', or nil.
// Call it once the peer has half-closed and Next has yielded nothing.
func (d *Decoder) Final() []byte {
	if d.err != nil || d.off == len(d.buf) {
		return nil
	}
	line := dropCR(d.buf[d.off:])
	d.off, d.scan = len(d.buf), len(d.buf)
	return line
}

func dropCR(line []byte) []byte {
	if n := len(line); n > 0 && line[n-1] == '\r' {
		return line[:n-1]
	}
	return line
}

// AppendReply appends the stamp-mode reply for line to dst.
func AppendReply(dst []byte, now time.Time, line []byte) []byte {
	return appendStamped(now.AppendFormat(dst, stampLayout), nil, line)
}

// appendStamped appends the reply for line after a stamp already formatted.
func appendStamped(dst, stamp, line []byte) []byte {
	dst = append(dst, stamp...)
	dst = append(dst, replyMarker...)
	dst = append(dst, line...)
	return append(dst, '\n')
}

// AppendError appends the line a server sends before closing a connection
// whose input it cannot serve.
func AppendError(dst []byte, err error) []byte {
	dst = append(dst, "error: "...)
	dst = append(dst, err.Error()...)
	return append(dst, '\n')
}

// ParseReply checks one reply line (without its '\n') and returns the time
// and the echoed line. Its errors say what is wrong, for graders' hints.
func ParseReply(reply []byte) (time.Time, []byte, error) {
	n := len(stampLayout)
	if len(reply) < n || reply[0] != '[' || reply[n-1] != ']' {
		if isSeedStamp(reply) {
			// The seed's stamp is one byte short, so it fails the shape
			// check; name its mistake rather than just the shape.
			return time.Time{}, nil, fmt.Errorf("stamp %q is not [YYYY-MM-DD HH:MM:SS]: the dash between month and day is missing", reply[:len(seedLayout)])
		}
		return time.Time{}, nil, fmt.Errorf("reply %.40q does not start with a [YYYY-MM-DD HH:MM:SS] stamp", reply)
	}
	t, err := time.ParseInLocation(stampLayout, string(reply[:n]), time.Local)
	if err != nil {
		return time.Time{}, nil, fmt.Errorf("stamp %q is not [YYYY-MM-DD HH:MM:SS] (is the dash between month and day missing?)", reply[:n])
	}
	rest, ok := bytes.CutPrefix(reply[n:], []byte(replyMarker))
	if !ok {
		return time.Time{}, nil, fmt.Errorf("reply %.60q: want %q right after the stamp", reply, replyMarker)
	}
	return t, rest, nil
}

// isSeedStamp reports whether reply starts with the seed's dashless stamp.
func isSeedStamp(reply []byte) bool {
	if len(reply) < len(seedLayout) {
		return false
	}
	_, err := time.Parse(seedLayout, string(reply[:len(seedLayout)]))
	return err == nil
}

// ErrClosing is not an error of the client's: Input returns it with the
// output owed so far when the connection must be closed once that output is
// delivered.
var ErrClosing = errors.New("close after output")

// Session is one connection's protocol state.
type Session struct {
	mode    Mode
	dec     *Decoder
	now     func() time.Time
	errSent bool // the "error:" line is owed once, however often Input is called

	// stamp holds the formatted time of the batch Input is answering:
	// formatting costs several times what the rest of a reply does.
	stamp [len(stampLayout) + 8]byte
}

// NewSession returns the state for one new connection.
func NewSession(mode Mode, maxLine int) *Session {
	return &Session{mode: mode, dec: NewDecoder(maxLine), now: time.Now}
}

// Input appends to out everything owed to the client for in, the bytes one
// read returned. When it returns ErrClosing, out ends with an "error:" line
// and the connection must be closed once out has been delivered.
func (s *Session) Input(out, in []byte) ([]byte, error) {
	if s.mode == Echo {
		return append(out, in...), nil
	}
	s.dec.Feed(in)
	var stamp []byte
	for {
		line, err := s.dec.Next()
		if err != nil {
			if !s.errSent {
				s.errSent = true
				out = AppendError(out, err)
			}
			return out, ErrClosing
		}
		if line == nil {
			return out, nil
		}
		if stamp == nil {
			// One clock read per batch, not per line.
			stamp = s.now().AppendFormat(s.stamp[:0], stampLayout)
		}
		out = appendStamped(out, stamp, line)
	}
}

// EOF appends what is still owed once the client has half-closed: the reply
// to a last line that had no '\n'.
func (s *Session) EOF(out []byte) []byte {
	if s.mode == Echo {
		return out
	}
	if line := s.dec.Final(); line != nil {
		return AppendReply(out, s.now(), line)
	}
	return out
}
