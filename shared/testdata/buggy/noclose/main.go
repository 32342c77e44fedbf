// Command noclose has THE bug of a server that never closes a connection:
// when a client hangs up (FIN or RST) or the server is done with it, the
// handler returns but the socket stays open. Every client leaks one fd, and
// a client that half-closed waits forever for the EOF that says "all your
// replies are here".
//
// (In Go a forgotten net.Conn is closed by the garbage collector at some
// unknown time; keeping it in the map, as a C server keeps the fd number,
// makes the leak as sure as it is in C.)
//
// The grader must fail it in `close` (kind leak) and in `half-close` (the
// EOF never comes). The rest is ../../good/main.go unchanged.
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
	// BUG: no c.Close(), and c stays in s.conns: its fd is open until exit.
	trace.Printf("done with %v", c.RemoteAddr())
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
	sess := protocol.NewSession(s.mode, s.maxLine)
	buf := make([]byte, 64<<10)
	var out []byte
	for {
		n, rerr := c.Read(buf)
		var err error
		out, err = sess.Input(out[:0], buf[:n])
		if rerr == io.EOF {
			// The client half-closed: answer a last line without '\n'.
			out = sess.EOF(out)
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

// lingerClose delivers the error line before the close: closing with the
// client's unread bytes still queued makes the kernel send RST, which can
// overtake the line. So send FIN first and drain for a moment.
func lingerClose(c net.Conn) {
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(flushTimeout))
	io.Copy(io.Discard, c)
}
