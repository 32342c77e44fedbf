//go:build linux

package main

import (
	"errors"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"reactorlab/shared/protocol"
)

// -model queue is the seed's Reactor in seven steps, as it describes it:
// the loop only waits for readiness, and a pool of workers does the rest.
//
//  1. The loop registers each socket for reading (register: armRead).
//  2. It waits in epoll_wait (turn).
//  3. A socket is readable: the loop puts the event on the request queue
//     (request).
//  4. A worker takes it, reads, answers every complete line into c.out,
//     and registers the socket for writing (readStep, then writeNext:
//     EPOLL_CTL_MOD with armWrite).
//  5. The loop waits for writability (turn again).
//  6. The socket is writable: the loop queues that event too (request).
//  7. A worker takes it and writes the replies (writeStep), then registers
//     the socket for reading once more (release: armRead), and the cycle
//     is back at 2.
//
// EPOLLONESHOT on every registration is what the seed's example lacks:
// after one event the kernel reports nothing more for the socket until it
// is re-armed. Without it, bytes arriving while a worker still reads make
// a second event, a second worker reads the same socket, and replies on
// one connection come out of order (or a line is split between workers).
// With it, a connection has at most one request in flight, from the event
// until the worker re-arms it: one worker at a time, in request order.
const (
	armRead  = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT
	armWrite = unix.EPOLLOUT | unix.EPOLLONESHOT
)

// request is an event on the request queue: steps 3 and 6.
type request struct {
	c      *conn
	events uint32
}

// want is work on a connection that only the loop may do (it touches the
// loop's table and lists): drain it or close it.
type want int

const (
	wantNothing want = iota
	wantDrain
	wantClose
)

// loopWhy is why the loop itself wants a connection drained or closed
// (endGrace, expire), for the trace.
var loopWhy = [...]string{wantDrain: "grace over", wantClose: "linger over"}

// hold is a connection's state between the loop and the workers, in
// -model queue. A connection is busy from the event the loop queues until
// the worker re-arms it for reading; meanwhile only that worker touches
// it, and the loop, which may need to drain or close it (grace is over, a
// linger ran out), leaves a want instead, for the worker to hand back.
type hold struct {
	mu   sync.Mutex
	busy bool
	want want

	// The worker's, while busy: the next event is the write of c.out
	// (step 7), and after it comes what, for what reason.
	writing bool
	after   want
	why     string
}

// startWorkers makes l a -model queue loop with n workers; call it before
// the loop starts.
func (l *loop) startWorkers(n int) {
	// A connection has at most one request queued (EPOLLONESHOT), so the
	// queue never holds more than there are connections. A full queue
	// blocks the loop until a worker is free: the pool's backpressure.
	l.requests = make(chan request, maxEvents)
	for id := range n {
		w := &worker{id: id, l: l, buf: make([]byte, readSize)}
		l.workers.Go(w.work)
	}
}

// stopWorkers ends the workers once the loop has returned: by then no
// connection is left, so none is busy.
func (l *loop) stopWorkers() {
	if l.requests == nil {
		return
	}
	close(l.requests)
	l.workers.Wait()
}

// request is steps 3 and 6, on the loop: c is busy from here on.
func (l *loop) request(c *conn, events uint32) {
	defer region("request").end()
	c.hold.mu.Lock()
	c.hold.busy = true
	c.hold.mu.Unlock()
	if tracing {
		trace.Printf("loop %d: request fd=%d %s", l.id, c.fd, eventString(events))
	}
	l.requests <- request{c: c, events: events}
}

// held reports whether a worker holds c, in which case the loop's w is
// left for the worker to hand back; -model loops holds nothing.
func (l *loop) held(c *conn, w want) bool {
	if l.requests == nil {
		return false
	}
	c.hold.mu.Lock()
	defer c.hold.mu.Unlock()
	if !c.hold.busy {
		return false // armed: only the loop hands out events, and it is here
	}
	c.hold.want = max(c.hold.want, w)
	return true
}

// takeBack runs on the loop, as a task from a worker: c is the loop's
// again, to drain or close, the worker's w or the loop's own want,
// whichever goes further.
func (l *loop) takeBack(c *conn, w want, why string) {
	c.hold.mu.Lock()
	if c.hold.want > w {
		w, why = c.hold.want, loopWhy[c.hold.want]
	}
	c.hold.busy, c.hold.want = false, wantNothing
	c.hold.mu.Unlock()
	switch w {
	case wantClose:
		l.closeConn(c, why)
		return
	case wantDrain:
		l.drain(c, why) // may close c, if shutdown(2) fails
	}
	if c.state == closed {
		return
	}
	// Draining, c is still read from (and its input dropped) until EOF.
	c.hold.mu.Lock()
	err := l.rearm(c, armRead)
	c.hold.mu.Unlock()
	if err != nil {
		l.closeConn(c, err.Error())
	}
}

// rearm is EPOLL_CTL_MOD with EPOLLONESHOT: the next event for c, once.
// Callers hold c.hold.mu, which the loop takes before queueing c's next
// request: besides keeping the loop from closing c meanwhile, that orders
// everything done to c before the re-arm before whatever the next worker
// does, as far as Go's memory model (and -race) can see. The kernel's own
// ordering of MOD before the event is invisible to both.
func (l *loop) rearm(c *conn, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(c.fd)}
	return os.NewSyscallError("epoll_ctl", unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, c.fd, &ev))
}

// worker is one of the pool, with a read buffer of its own.
type worker struct {
	id     int
	l      *loop
	buf    []byte
	served int
}

// work takes requests until the queue is closed.
func (w *worker) work() {
	for r := range w.l.requests {
		w.served++
		if r.c.hold.writing {
			w.writeStep(r.c)
		} else {
			w.readStep(r.c, r.events)
		}
	}
	trace.Printf("worker %d: done; %d requests", w.id, w.served)
}

// readStep is step 4: read what the event announced, up to readBudget
// reads (a level-triggered re-arm reports what is left at once), answer
// every complete line into c.out, and have it written. A draining c only
// has its input dropped.
func (w *worker) readStep(c *conn, events uint32) {
	defer region("read").end()
	if events&unix.EPOLLERR != 0 {
		w.giveBack(c, wantClose, soError(c.fd))
		return
	}
	c.out = c.out[:0]
reads:
	for range readBudget {
		n, err := readFD(c.fd, w.buf)
		switch {
		case err == unix.EAGAIN:
			break reads
		case err != nil:
			w.giveBack(c, wantClose, os.NewSyscallError("read", err).Error())
			return
		case n == 0 && c.state != open:
			w.giveBack(c, wantClose, "EOF")
			return
		case n == 0:
			// The client's FIN makes an unfinished last line a line.
			c.out = c.sess.EOF(c.out)
			w.writeNext(c, wantClose, "EOF")
			return
		}
		if tracing {
			trace.Printf("worker %d: read fd=%d n=%d", w.id, c.fd, n)
		}
		if c.state != open {
			continue
		}
		var perr error
		c.out, perr = c.sess.Input(c.out, w.buf[:n])
		if errors.Is(perr, protocol.ErrClosing) {
			w.writeNext(c, wantDrain, "line too long")
			return
		}
	}
	w.writeNext(c, wantNothing, "")
}

// writeNext ends step 4: register c for writing (EPOLL_CTL_MOD, armWrite)
// and leave the write to the worker that gets the event, and after it,
// after. Nothing to write skips the round trip through the loop.
func (w *worker) writeNext(c *conn, after want, why string) {
	if len(c.out) == 0 {
		w.release(c, after, why)
		return
	}
	c.hold.after, c.hold.why = after, why
	c.hold.mu.Lock()
	c.hold.writing = true
	err := w.l.rearm(c, armWrite)
	c.hold.mu.Unlock()
	if err != nil {
		w.giveBack(c, wantClose, err.Error())
		return
	}
	if tracing {
		trace.Printf("worker %d: fd=%d has %d bytes to write: armed EPOLLOUT|EPOLLONESHOT", w.id, c.fd, len(c.out))
	}
}

// writeStep is step 7: write the replies (waiting in poll(2) while the
// socket is full, which holds this worker), then what was to come after.
func (w *worker) writeStep(c *conn) {
	c.hold.writing = false
	if err := writeAll(c.fd, c.out); err != nil {
		w.giveBack(c, wantClose, err.Error())
		return
	}
	w.release(c, c.hold.after, c.hold.why)
}

// release ends the worker's turn with c: back to step 1, re-armed for
// reading, unless there is work for the loop (the worker's after, or the
// loop's own want), which gets c back instead.
func (w *worker) release(c *conn, after want, why string) {
	if after == wantNothing {
		c.hold.mu.Lock()
		if c.hold.want == wantNothing {
			err := w.l.rearm(c, armRead)
			c.hold.busy = err != nil // a failed re-arm stays busy: the loop closes it
			c.hold.mu.Unlock()
			if err != nil {
				w.giveBack(c, wantClose, err.Error())
			} else if tracing {
				trace.Printf("worker %d: fd=%d done: armed EPOLLIN|EPOLLONESHOT", w.id, c.fd)
			}
			return
		}
		c.hold.mu.Unlock()
	}
	w.giveBack(c, after, why)
}

// giveBack hands c, still busy and disarmed, to the loop through its task
// queue: draining and closing touch the loop's table and lists.
func (w *worker) giveBack(c *conn, after want, why string) {
	if tracing {
		trace.Printf("worker %d: fd=%d back to the loop (%s)", w.id, c.fd, why)
	}
	w.l.queueInLoop(handoff("take back", c.fd, func() { w.l.takeBack(c, after, why) }))
}
