package protocol_test

import (
	"fmt"
	"time"

	"reactorlab/shared/protocol"
)

func ExampleDecoder() {
	d := protocol.NewDecoder(protocol.DefaultMaxLine)
	// What three reads and a half-close might deliver.
	for _, read := range []string{"hel", "lo\r\nwor", "ld\n\nlast"} {
		d.Feed([]byte(read))
		for {
			line, err := d.Next()
			if err != nil {
				fmt.Println(err)
				return
			}
			if line == nil {
				break // wait for the next read
			}
			fmt.Printf("%q\n", line)
		}
	}
	if line := d.Final(); line != nil {
		fmt.Printf("%q at EOF\n", line)
	}
	// Output:
	// "hello"
	// "world"
	// ""
	// "last" at EOF
}

func ExampleSession() {
	// A server's read loop reuses one output buffer for every read.
	var out []byte

	s := protocol.NewSession(protocol.Echo, protocol.DefaultMaxLine)
	out, err := s.Input(out[:0], []byte("any\x00bytes\r\n"))
	fmt.Printf("%q %v\n", out, err)

	s = protocol.NewSession(protocol.Stamp, 8)
	out, err = s.Input(out[:0], []byte("far longer than eight bytes"))
	fmt.Printf("%q %v\n", out, err)
	// Output:
	// "any\x00bytes\r\n" <nil>
	// "error: line longer than 8 bytes\n" close after output
}

func ExampleAppendReply() {
	at := time.Date(2026, 11, 25, 9, 5, 7, 0, time.Local)
	fmt.Printf("%q\n", protocol.AppendReply(nil, at, []byte("hello")))
	// Output:
	// "[2026-11-25 09:05:07]server reply: hello\n"
}

func ExampleParseReply() {
	at, line, err := protocol.ParseReply([]byte("[2026-11-25 09:05:07]server reply: hello"))
	fmt.Println(at.Format(time.DateTime), fmt.Sprintf("%q", line), err)

	// The seed's C++ example wrote its stamp without the month-day dash.
	_, _, err = protocol.ParseReply([]byte("[2026-1125 09:05:07]server reply: hello"))
	fmt.Println(err)
	// Output:
	// 2026-11-25 09:05:07 "hello" <nil>
	// stamp "[2026-1125 09:05:07]" is not [YYYY-MM-DD HH:MM:SS]: the dash between month and day is missing
}
