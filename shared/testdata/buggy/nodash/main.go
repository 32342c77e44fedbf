// Command nodash has THE bug of the seed's C++ example: its reply stamp is
// formatted as "[%Y-%m%d %H:%M:%S]", with no dash between month and day, so
// every reply reads [2024-0315 10:04:05] instead of [2024-03-15 10:04:05].
// A client that parses the date gets garbage, or March 1 of year 2024-03.
//
// The grader must fail it in `reply` with a hint that names the dash. The
// rest is ../../good/main.go, with the stamp written here instead of by
// protocol.Session so that the bug can live in this file.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"reactorlab/shared/protocol"
)

// grace is how long open connections are still served after a signal; the
// contract allows about 1 s and wants the process gone within 2 s.
const grace = time.Second

// flushTimeout bounds the last writes after the grace period, so a client
// that never reads cannot hold the exit past the contract's 2 s.
const flushTimeout = 500 * time.Millisecond

var trace = log.New(io.Discard, "server: ", log.Lmicroseconds)

type server struct {
	ln      net.Listener
	mode    protocol.Mode
	maxLine int

	mu      sync.Mutex
	conns   map[net.Conn]bool
	closing bool
	wg      sync.WaitGroup
}

func main() {
	addr := flag.String("addr", "127.0.0.1:12345", "listen address")
	modeFlag := flag.String("mode", "stamp", "stamp or echo")
	maxLine := flag.Int("max-line", protocol.DefaultMaxLine, "longest line accepted in stamp mode")
	verbose := flag.Bool("v", false, "trace to stderr")
	flag.Parse()
	mode, err := protocol.ParseMode(*modeFlag)
	if err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(2)
	}
	if *verbose {
		trace.SetOutput(os.Stderr)
	}
	trace.Printf("pid %d", os.Getpid())

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(1)
	}
	fmt.Printf("listening on %s\n", ln.Addr())

	s := &server{ln: ln, mode: mode, maxLine: *maxLine, conns: map[net.Conn]bool{}}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		trace.Printf("%v: stop accepting, %v grace", sig, grace)
		s.shutdown()
	}()
	s.acceptLoop()
	s.wg.Wait()
	trace.Printf("all connections closed, exit 0")
}

func (s *server) acceptLoop() {
	// Backoff after a failed accept (EMFILE under a low fd limit): retrying
	// at once would spin on the connection still waiting in the backlog.
	var backoff time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			trace.Printf("accept: %v; retry in %v", err, backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if !s.track(c) {
			c.Close()
			continue
		}
		trace.Printf("accept %v", c.RemoteAddr())
		go s.serve(c)
	}
}

// track registers c so shutdown can bound it; it refuses c once shutdown
// has begun, so no connection escapes the grace deadline.
func (s *server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[c] = true
	s.wg.Add(1)
	return true
}

func (s *server) release(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
	trace.Printf("close %v", c.RemoteAddr())
	s.wg.Done()
}

// shutdown stops accepting and lets every open connection run until the
// grace deadline: reads past it fail, the handler flushes what it owes and
// closes.
func (s *server) shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing = true
	s.ln.Close()
	end := time.Now().Add(grace)
	for c := range s.conns {
		c.SetReadDeadline(end)
		c.SetWriteDeadline(end.Add(flushTimeout))
	}
}

func (s *server) serve(c net.Conn) {
	defer s.release(c)
	dec := protocol.NewDecoder(s.maxLine)
	buf := make([]byte, 64<<10)
	var out []byte
	for {
		n, rerr := c.Read(buf)
		var err error
		out, err = s.answer(dec, out[:0], buf[:n])
		if rerr == io.EOF && s.mode == protocol.Stamp {
			// The client half-closed: answer a last line without '\n'.
			if line := dec.Final(); line != nil {
				out = seedReply(out, line)
			}
		}
		if len(out) > 0 {
			if _, werr := c.Write(out); werr != nil {
				return
			}
		}
		if err != nil {
			lingerClose(c)
			return
		}
		if rerr != nil {
			return // EOF, or the grace ran out
		}
	}
}

// answer is protocol.Session.Input with the seed's reply format.
func (s *server) answer(dec *protocol.Decoder, out, in []byte) ([]byte, error) {
	if s.mode == protocol.Echo {
		return append(out, in...), nil
	}
	dec.Feed(in)
	for {
		line, err := dec.Next()
		if err != nil {
			return protocol.AppendError(out, err), err
		}
		if line == nil {
			return out, nil
		}
		out = seedReply(out, line)
	}
}

// seedReply is the seed's reply, format string and all.
func seedReply(out, line []byte) []byte {
	out = time.Now().AppendFormat(out, "[2006-0102 15:04:05]") // BUG: no dash between month and day
	out = append(out, "server reply: "...)
	out = append(out, line...)
	return append(out, '\n')
}

// lingerClose delivers the error line before the close: closing with the
// client's unread bytes still queued makes the kernel send RST, which can
// overtake the line. So send FIN first and drain for a moment.
func lingerClose(c net.Conn) {
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(flushTimeout))
	io.Copy(io.Discard, c)
}
