package harness

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"time"
)

// The echo-mode scenarios: bytes in, the same bytes out, whatever they are
// and however many, while the client writes and reads at the same time.

// echoSize is big enough to outgrow every socket buffer on the path, so a
// server must read and write in turn many times, and small enough to take
// milliseconds.
const echoSize = 1 << 20

// bulkSize is the contract's figure: far more than the kernel buffers on
// both sides (a few MiB on loopback), so a server that stops reading or
// writing early cannot hide it.
const bulkSize = 16 << 20

// bulkTimeout bounds the whole bulk transfer; a server built with -race
// echoes 16 MiB in a second or two, so 20 s only ever fails a stuck one.
var bulkTimeout = scaled(20 * time.Second)

// echoTimeout bounds the 1 MiB transfer of the echo scenario likewise.
var echoTimeout = scaled(10 * time.Second)

// stallAfter is how long a transfer may make no progress before it counts
// as stalled: the contract's reply time.
var stallAfter = scaled(2 * time.Second)

// streamChunk is each write's and read's size: large enough that 16 MiB
// takes a few hundred syscalls, small enough to keep two buffers cheap.
const streamChunk = 64 << 10

// streamSeed fixes the pseudo-random stream, so that a failure names the
// same offset and byte on every run.
var streamSeed = [32]byte{'r', 'e', 'a', 'c', 't', 'o', 'r', '-', 'l', 'a', 'b'}

func runEcho(e *Env) error {
	s, c, err := e.startClient("-mode", "echo")
	if err != nil {
		return err
	}
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	const step = "echo all 256 byte values"
	if err := c.Send(all); err != nil {
		return Fail(Refused, step, err.Error(), "the server to read 256 bytes", "")
	}
	got := make([]byte, len(all))
	n, err := readFull(c, got, time.Now().Add(ioTimeout))
	if i := firstDiff(got[:n], all); i >= 0 {
		return Fail(Wrong, step, fmt.Sprintf("byte 0x%02x at offset %d", got[i], i), fmt.Sprintf("0x%02x", all[i]),
			echoWrongHint(got[:n]))
	}
	if err != nil {
		f := readFailure(step, "all 256 bytes back", nil, err)
		f.Got = fmt.Sprintf("%d of 256 bytes back, then %s", n, f.Got)
		f.Hint = "in echo mode write back every byte as soon as it is read, '\\n', NUL and all: no line splitting, no text conversion"
		return f
	}
	return echoStream(e, s, c, "echo 1 MiB while reading it back", echoSize, echoTimeout)
}

func runBulk(e *Env) error {
	s, c, err := e.startClient("-mode", "echo")
	if err != nil {
		return err
	}
	return echoStream(e, s, c, "echo 16 MiB while reading it back", bulkSize, bulkTimeout)
}

// streamStallHint names the likely causes of an echo that stops while the
// client still writes and reads.
const streamStallHint = "under edge-triggered epoll read until EAGAIN: a read that stops early leaves bytes " +
	"no new edge will announce; echo each read's bytes at once, and keep what a write did not take " +
	"until the socket is writable again"

// echoStream writes total bytes of a seeded pseudo-random stream from one
// goroutine while this one reads the echo and compares it as it arrives
// against a second generator with the same seed, so nothing is kept twice.
// A server that echoes only once it has read everything, or that blocks on
// a full socket without reading, shows up as a stall; lost or reordered
// bytes show up as the first offset that differs.
//
// The reader starts only once the server holds bytes it has not read (it
// stopped reading because its echo could not all be written), or the
// writer has sent everything: a server that drops what a write did not
// take, and reads on, never stops reading, and its echo has holes.
func echoStream(e *Env, s *Server, c *Client, step string, total int, timeout time.Duration) error {
	start := time.Now()
	end := start.Add(timeout)
	size := sizeString(int64(total))
	werr := make(chan error, 1)
	go func() {
		src := rand.NewChaCha8(streamSeed)
		buf := make([]byte, streamChunk)
		for sent := 0; sent < total; {
			n := min(len(buf), total-sent)
			src.Read(buf[:n])
			// The deadline is the transfer's own: a write may wait as long
			// as the reader keeps making progress.
			if _, err := c.Write(buf[:n], time.Until(end)); err != nil {
				werr <- err
				return
			}
			sent += n
		}
		werr <- nil
	}()

	if _, f := awaitUnread(e, s, c, werr); f != nil {
		c.Close()
		<-werr
		f.Step = step
		return f
	}
	f := readStream(c, step, total, start, end)
	if f != nil {
		select {
		case err := <-werr:
			if err != nil && f.Kind == Stall {
				f.Got += " (the client's own write failed: " + err.Error() + ")"
			}
			if err == nil && f.Kind == Stall {
				lostEcho(s, c, f, size)
			}
		default:
			// Closing unblocks the writer, which must be gone before the
			// scenario returns.
			c.Close()
			<-werr
		}
		return f
	}
	if err := <-werr; err != nil {
		return Fail(Refused, step, "the client's write failed after all "+size+" came back: "+err.Error(),
			"the server to read everything", "")
	}
	return nil
}

// lostEcho turns a stall into what it really was when the client has sent
// everything and the server holds none of it unread: the server read every
// byte and echoed only part, so the rest was lost, not late.
func lostEcho(s *Server, c *Client, f *Failure, size string) {
	if n, err := s.unreadBy(c); err != nil || n > 0 {
		return
	}
	f.Kind = Wrong
	f.Got += ", though the server had read all " + size
	f.Hint = echoWrongHint(nil)
}

// readStream reads total bytes by end and compares them with the seeded
// stream; it returns nil when every byte came back intact.
func readStream(c *Client, step string, total int, start, end time.Time) *Failure {
	size := sizeString(int64(total))
	want := rand.NewChaCha8(streamSeed)
	got := make([]byte, streamChunk)
	exp := make([]byte, streamChunk)
	last := time.Now()
	for recv := 0; recv < total; {
		deadline := last.Add(stallAfter)
		if deadline.After(end) {
			deadline = end
		}
		n, err := c.Read(got[:min(len(got), total-recv)], deadline)
		if n > 0 {
			want.Read(exp[:n])
			if i := firstDiff(got[:n], exp[:n]); i >= 0 {
				return Fail(Wrong, step, fmt.Sprintf("byte 0x%02x at offset %d", got[i], recv+i),
					fmt.Sprintf("0x%02x, the byte sent at that offset", exp[i]), echoWrongHint(got[:n]))
			}
			recv += n
			last = time.Now()
		}
		if err == nil {
			continue
		}
		done := fmt.Sprintf("%s of %s", sizeString(int64(recv)), size)
		switch {
		case isTimeout(err) && !time.Now().Before(end):
			return Fail(Stall, step, fmt.Sprintf("%s echoed in %s", done, end.Sub(start)),
				size+" back", streamStallHint)
		case isTimeout(err):
			return Fail(Stall, step, fmt.Sprintf("echo stopped after %s: nothing for %s", done, stallAfter),
				size+" back", streamStallHint)
		}
		f := readFailure(step, size+" back", nil, err)
		f.Got = fmt.Sprintf("%s echoed, then %s", done, f.Got)
		return f
	}
	return nil
}

// echoWrongHint names the likely mistake behind corrupted echo bytes.
func echoWrongHint(got []byte) string {
	if bytes.HasPrefix(got, []byte("[")) && bytes.Contains(got, []byte("server reply: ")) {
		return "the server answered in stamp mode: honour -mode echo"
	}
	return "bytes were lost, repeated or reordered: when write() takes only part of a buffer " +
		"(or fails with EAGAIN), keep the rest and send it before anything read later; or two threads " +
		"served this connection at once: with a request queue, register each connection with " +
		"EPOLLONESHOT and re-arm it after each event"
}

// readFull reads len(p) bytes by the deadline and returns how many came.
func readFull(c *Client, p []byte, deadline time.Time) (int, error) {
	n := 0
	for n < len(p) {
		m, err := c.Read(p[n:], deadline)
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// firstDiff returns the first index where got differs from want, counting a
// short got as differing nowhere (the caller reports the shortfall), or -1.
func firstDiff(got, want []byte) int {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return i
		}
	}
	return -1
}
