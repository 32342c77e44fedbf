// Command 00-fixture is the handout tool's test chapter: a line server
// that keeps enough of the lab's contract for the reply scenario, with a
// LAB region of each shape the tool handles. It uses package net, as no
// chapter does, to stay short.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"reactorlab/shared/protocol"
)

const name = "00-fixture"

type config struct {
	addr    string
	mode    protocol.Mode
	maxLine int
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(2)
	}
	if err := serve(cfg); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:12345", "listen address")
	mode := fs.String("mode", "stamp", "stamp or echo")
	maxLine := fs.Int("max-line", protocol.DefaultMaxLine, "longest line accepted")
	fs.Bool("v", false, "ignored")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	m, err := protocol.ParseMode(*mode)
	if err != nil {
		return config{}, err
	}
	if *maxLine < 1 {
		return config{}, errors.New("-max-line must be at least 1")
	}
	return config{addr: *addr, mode: m, maxLine: *maxLine}, nil
}

// serve accepts until SIGTERM, then gives open connections a moment.
func serve(cfg config) error {
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return err
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-stop
		ln.Close()
	}()
	var wg sync.WaitGroup
	for {
		c, err := ln.Accept()
		if err != nil {
			break
		}
		wg.Go(func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(time.Minute))
			answer(c, cfg)
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
	}
	return nil
}
