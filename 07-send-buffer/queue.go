//go:build linux

package main

import (
	"errors"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"reactorlab/shared/protocol"
)

// -model queue is the seed's Reactor in seven steps, with a send buffer:
// the loop only waits for readiness, and a pool of workers does the rest.
//
//  1. The loop registers each socket for reading (register: armRead).
//  2. It waits in epoll_wait (turn).
//  3. A socket is readable: the loop puts the event on the request queue
//     (request).
//  4. A worker takes it, reads, answers every complete line into c.out
//     and writes the replies at once (readStep). What the kernel does not
//     take stays in the send buffer, and the socket is registered for
//     writing too (release: EPOLL_CTL_MOD with c.wants(), EPOLLOUT in it).
//  5. The loop waits for writability (turn again).
//  6. The socket is writable: the loop queues that event too (request).
//  7. A worker takes it and writes what the send buffer holds (step),
//     then registers the socket for reading once more, without EPOLLOUT
//     if the buffer is empty (release), and the cycle is back at 2.
//
// The seed registers for writing after every request and writes only on
// step 7, even when the socket had room all along: two more trips through
// the loop per reply. Here steps 5 to 7 happen only for what the kernel
// did not take at once, and the worker never waits for room (06's waited
// in poll(2), holding a worker and every client behind it).
//
// EPOLLONESHOT on every registration is what the seed's example lacks:
// after one event the kernel reports nothing more for the socket until it
// is re-armed. Without it, bytes arriving while a worker still reads make
// a second event, a second worker reads the same socket, and replies on
// one connection come out of order (or a line is split between workers).
// With it, a connection has at most one request in flight, from the event
// until the worker re-arms it: one worker at a time, in request order.
const armRead = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

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
// the worker re-arms it; meanwhile only that worker touches it, and the
// loop, which may need to drain or close it (grace is over, a linger ran
// out), leaves a want instead, for the worker to hand back.
type hold struct {
	mu   sync.Mutex
	busy bool
	want want
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
// whichever goes further; or, flushing, to move on now that its send
// buffer is empty.
func (l *loop) takeBack(c *conn, w want, why string) {
	c.hold.mu.Lock()
	overdue := false
	if c.hold.want > w {
		w, why = c.hold.want, loopWhy[c.hold.want]
		overdue = w == wantClose
	}
	c.hold.busy, c.hold.want = false, wantNothing
	c.hold.mu.Unlock()
	switch {
	case overdue:
		l.lingerOver(c)
		return
	case w == wantClose:
		l.closeConn(c, why)
		return
	case w == wantDrain:
		l.drain(c, why) // may close c, if shutdown(2) fails
	case c.state == flushing && c.pending() == 0:
		l.flushed(c)
	}
	if c.state == closed {
		return
	}
	// Flushing or draining, c is still read from (and its input dropped)
	// until EOF.
	c.hold.mu.Lock()
	err := l.rearm(c, c.wants())
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
	return l.rewatch(c, events)
}

// wants is c's next registration: EPOLLONESHOT, with EPOLLIN (and
// EPOLLRDHUP) while c is to be read, and EPOLLOUT while its send buffer
// holds bytes. Paused, c is armed without EPOLLIN: the one-shot event that
// would read it is not asked for at all.
func (c *conn) wants() uint32 {
	events := uint32(unix.EPOLLONESHOT)
	if c.reading() {
		events |= unix.EPOLLIN | unix.EPOLLRDHUP
	}
	if c.pending() > 0 {
		events |= unix.EPOLLOUT
	}
	return events
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
		w.step(r.c, r.events)
	}
	trace.Printf("worker %d: done; %d requests", w.id, w.served)
}

// step serves one event on c: room to write sends what the send buffer
// holds (step 7); bytes to read are read and answered (step 4); both may
// come in one event. Then c is re-armed for what it waits for now, or
// handed back to the loop.
func (w *worker) step(c *conn, events uint32) {
	if events&unix.EPOLLERR != 0 {
		w.giveBack(c, wantClose, soError(c.fd))
		return
	}
	if events&unix.EPOLLOUT != 0 {
		if tracing {
			trace.Printf("worker %d: fd=%d writable, %d bytes buffered", w.id, c.fd, c.pending())
		}
		if err := c.flush(); err != nil {
			w.giveBack(c, wantClose, err.Error())
			return
		}
	}
	after, why := wantNothing, ""
	if events&^unix.EPOLLOUT != 0 {
		after, why = w.readStep(c)
	}
	w.release(c, after, why)
}

// readStep is step 4: read what the event announced, up to readBudget
// reads (a level-triggered re-arm reports what is left at once), answer
// every complete line into c.out, and write the replies at once when
// nothing waits before them, as send does in -model loops. It stops early
// when c passes high water (see pace). A flushing or draining c only has
// its input dropped. It returns what is to come after, for what reason.
func (w *worker) readStep(c *conn) (after want, why string) {
	defer region("read").end()
	for range readBudget {
		if !c.reading() {
			break
		}
		n, err := readFD(c.fd, w.buf)
		switch {
		case err == unix.EAGAIN:
			return wantNothing, ""
		case err != nil:
			return wantClose, os.NewSyscallError("read", err).Error()
		case n == 0 && c.state == open:
			// The client's FIN makes an unfinished last line a line; the
			// loop closes c once its replies are sent.
			c.eof = true
			behind := c.pending() > 0
			c.out = c.sess.EOF(c.out)
			if err := w.send(c, behind); err != nil {
				return wantClose, err.Error()
			}
			if c.pending() > 0 {
				return wantDrain, "EOF, replies owed"
			}
			return wantClose, "EOF"
		case n == 0 && c.state == flushing && c.pending() > 0:
			c.eof = true // closed once the buffer is empty (see flushed)
			return wantNothing, ""
		case n == 0:
			return wantClose, "EOF"
		}
		if tracing {
			trace.Printf("worker %d: read fd=%d n=%d", w.id, c.fd, n)
		}
		if c.state != open {
			continue
		}
		behind := c.pending() > 0
		var perr error
		c.out, perr = c.sess.Input(c.out, w.buf[:n])
		if err := w.send(c, behind); err != nil {
			return wantClose, err.Error()
		}
		if errors.Is(perr, protocol.ErrClosing) {
			return wantDrain, "line too long"
		}
	}
	return wantNothing, ""
}

// send writes c's new replies at once, unless they are behind bytes the
// kernel refused (see the loop's send), and paces c.
func (w *worker) send(c *conn, behind bool) error {
	if !behind {
		if err := c.flush(); err != nil {
			return err
		}
	}
	c.pace(w.l.cfg.highWater)
	return nil
}

// release ends the worker's turn with c: re-armed for what it waits for
// now (wants), unless there is work for the loop (the worker's after, the
// loop's own want, or a flushing c whose buffer is empty), which gets c
// back instead.
func (w *worker) release(c *conn, after want, why string) {
	c.pace(w.l.cfg.highWater) // room came (EPOLLOUT): c may read again
	flushed := c.state == flushing && c.pending() == 0
	if after == wantNothing && !flushed {
		events, buffered := c.wants(), c.pending()
		c.hold.mu.Lock()
		if c.hold.want == wantNothing {
			err := w.l.rearm(c, events)
			c.hold.busy = err != nil // a failed re-arm stays busy: the loop closes it
			c.hold.mu.Unlock()
			if err != nil {
				w.giveBack(c, wantClose, err.Error())
			} else if tracing {
				trace.Printf("worker %d: fd=%d done, %d bytes buffered: armed %s|EPOLLONESHOT",
					w.id, c.fd, buffered, eventString(events))
			}
			return
		}
		c.hold.mu.Unlock()
	}
	if flushed && after == wantNothing {
		why = "replies sent" // the loop shuts the write side (see takeBack)
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
