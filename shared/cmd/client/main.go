// Command client is a line client for the lab's servers, so that no one
// needs nc or telnet:
//
//	go run ./shared/cmd/client -addr 127.0.0.1:12345
//	printf 'a\nb\n' | go run ./shared/cmd/client -addr 127.0.0.1:12345
//
// It sends each line read from stdin and prints whatever the server sends
// the moment it arrives, so a stalled server shows as a reply that appears
// late. At the end of stdin it half-closes (the server reads EOF, and may
// still answer) and waits until the server closes. If the server closes
// first, it says so on stderr.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:12345", "server address")
	timeout := fs.Duration("timeout", 5*time.Second, "give up connecting after this long")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "client: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	conn, err := net.DialTimeout("tcp", *addr, *timeout)
	if err != nil {
		fmt.Fprintln(stderr, "client:", err)
		return 1
	}
	defer conn.Close()
	tcp := conn.(*net.TCPConn)

	// halfClosed tells the reader's EOF apart: after our own CloseWrite the
	// server closing is the expected end, before it the server hung up.
	var halfClosed atomic.Bool
	go send(tcp, stdin, &halfClosed)

	// Printing happens here, not in a goroutine, so nothing is written to
	// stdout once run has returned.
	_, err = io.Copy(stdout, conn)
	switch {
	case err != nil:
		fmt.Fprintln(stderr, "client: connection lost:", err)
		return 1
	case !halfClosed.Load():
		fmt.Fprintln(stderr, "connection closed by server")
	}
	return 0
}

// send writes stdin to the server a line at a time, a last line without
// '\n' included, then half-closes. It stops early if the server is gone;
// run's reader reports that.
func send(conn *net.TCPConn, stdin io.Reader, halfClosed *atomic.Bool) {
	r := bufio.NewReader(stdin)
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 {
			if _, werr := conn.Write(line); werr != nil {
				return
			}
		}
		if err != nil {
			// Stdin ended (or failed, which a user cannot fix either): tell
			// the server there is nothing more, and keep reading replies.
			halfClosed.Store(true)
			conn.CloseWrite()
			return
		}
	}
}
