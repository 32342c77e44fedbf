//go:build linux

package main

import (
	"os"
	"runtime"
	rtrace "runtime/trace"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// loop is one event loop: an epoll fd and the connections in it, served
// by one goroutine locked to one OS thread, plus a task queue through
// which any other goroutine hands it work. Only the loop goroutine touches
// the epoll set and the connections; everything else reaches them by
// queueing a task.
type loop struct {
	id    int // which of the server's loops, for -v
	cfg   config
	epfd  int
	waker waker

	running chan struct{} // closed once run holds its OS thread (see start)

	// tid is the loop's OS thread while run runs, and 0 before and after:
	// runInLoop's answer to "am I the loop?", asked as muduo asks it.
	tid atomic.Int32

	// mu guards the task queue, which every goroutine may add to and the
	// loop empties. wakePending is set from the first task of a batch
	// until the loop takes the batch: the wake for it is on its way, and
	// later tasks ride along without writing to the wakeup fd again (see
	// queueInLoop and runTasks for why one mutex covers both). closed is
	// set once the fds are closed: a task queued after that is dropped.
	mu          sync.Mutex
	tasks       []func()
	wakePending bool
	closed      bool

	// spare is the task list run last time, kept for the next batch, so
	// that a wake allocates nothing. The loop's alone, like what follows.
	spare []func()

	// conns turns the fd in an epoll event back into the connection's
	// state. live counts the server's open connections, for main's hard
	// stop, which cannot ask the loop.
	conns map[int]*conn
	live  *atomic.Int64

	// lingering holds the draining connections in the order they began
	// to drain. Each deadline is lingerTimeout after its start, or stopBy
	// if sooner, so that order is also deadline order: the first is the
	// next to expire. One that closed early stays until its deadline,
	// marked closed.
	lingering []*conn

	// revisit holds connections whose read budget ran out before EAGAIN:
	// bytes wait in their sockets that no new edge will announce. The loop
	// serves them after each round of events, and does not sleep in
	// epoll_wait while the list is not empty.
	revisit []*conn

	deadline time.Time // end of grace, once the loop has begun it; zero once over
	stopBy   time.Time // once grace has begun: every connection is closed by then

	// served and events count, over the loop's life, the connections it
	// registered and the events on them it dispatched: how the trace and
	// the tests see the loops share the work.
	served, events int

	// requests is the request queue of -model queue, which the loop fills
	// and the workers (see queue.go) empty; nil in -model loops.
	requests chan request
	workers  sync.WaitGroup
}

// newLoop makes a loop with its epoll fd and its wakeup fd (cfg.wakeup),
// the only fd it watches until connections come.
func newLoop(id int, cfg config, live *atomic.Int64) (*loop, error) {
	// EPOLL_CLOEXEC is the only flag epoll_create1 takes. The seed passes
	// 1, which the kernel rejects with EINVAL: its server never started.
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	w, err := newWaker(cfg.wakeup)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	l := &loop{id: id, cfg: cfg, epfd: epfd, waker: w, conns: map[int]*conn{}, live: live,
		running: make(chan struct{})}
	// Level-triggered: a wake that drain has not consumed yet wakes the
	// next epoll_wait again, so the loop cannot sleep on a task. A wake
	// queued before run ever waits is no exception (the seed's condition
	// variable, signalled before anyone waits on it, loses that signal).
	if err := l.watch(w.fd(), unix.EPOLLIN); err != nil {
		w.close()
		unix.Close(epfd)
		return nil, err
	}
	return l, nil
}

// run is the loop. It returns once the loop has begun grace (see
// beginGrace) and every connection is closed.
func (l *loop) run() error {
	// Locked, the goroutine is the only one its thread ever runs, so the
	// thread's id names the loop. It also keeps the loop where -v, top -H
	// and perf show it: one thread, busy or asleep in epoll_wait.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	l.tid.Store(int32(unix.Gettid()))
	defer l.tid.Store(0)
	close(l.running)
	events := make([]unix.EpollEvent, maxEvents)
	buf := make([]byte, readSize)
	for !l.done() {
		if err := l.turn(events, buf); err != nil {
			return err
		}
	}
	trace.Printf("loop %d: done; %d conns, %d events in all", l.id, l.served, l.events)
	return nil
}

// start runs the loop on a goroutine of its own, which sends what run
// returns to exited, and returns once that goroutine holds its OS thread:
// a server's threads are all there by the time it says it listens, and
// what watches it from outside (the harness counts threads) sees no more
// appear later.
func (l *loop) start(exited chan<- error) {
	go func() { exited <- l.run() }()
	<-l.running
}

// inLoop reports whether the caller is the loop goroutine.
func (l *loop) inLoop() bool {
	return int32(unix.Gettid()) == l.tid.Load()
}

// runInLoop runs task on the loop goroutine: now, when called there, else
// as soon as the loop wakes for it.
func (l *loop) runInLoop(task func()) {
	if l.inLoop() {
		task()
		return
	}
	l.queueInLoop(task)
}

// LAB(queue): queue the task and wake the loop, once per batch of tasks
// queueInLoop queues task for the loop's next turn, even when called on
// the loop itself (a task that must not run in the middle of the caller's
// work), and wakes the loop if no wake is on its way already. A hundred
// tasks queued while the loop is busy cost one write to the wakeup fd.
//
// The write happens under mu, like the flag it goes with: close takes mu
// too, so a wake never reaches an fd number that close has given back
// (and the kernel may have handed to a new client). Only the first task
// of a batch writes, so others rarely wait for it.
func (l *loop) queueInLoop(task func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		trace.Printf("task for a loop that has stopped: dropped")
		return
	}
	l.tasks = append(l.tasks, task)
	if l.wakePending {
		return
	}
	l.wakePending = true
	if err := l.waker.wake(); err != nil {
		trace.Printf("%v", err)
	}
}

// END LAB

// LAB(run-tasks): drain the wakeup fd, take the batch and clear wakePending in one critical section, run the tasks
// runTasks runs on the loop when its wakeup fd is readable: it drains the
// fd, takes every task queued so far and runs them.
//
// The order is what makes a wake impossible to lose. Drain first; then,
// in one critical section, take the whole list and clear wakePending;
// then run the tasks, outside the lock (a task may queue another). A task
// queued before that critical section is in the list taken. One queued
// after it finds the flag clear, so it writes to the fd, which the drain
// before can no longer consume: the next epoll_wait returns at once.
//
// The classic bug clears the flag anywhere else. Cleared after the tasks
// run, or outside the lock: a task queued meanwhile saw the flag still
// set, wrote nothing, and missed the list; the loop sleeps with it in the
// queue. Drained after the clear: the drain eats the wake of a task
// queued in between, which the list no longer holds, and the flag stays
// set, so no one ever writes again. Go's runtime wakes its own netpoller
// in the same order (netpollBreak: read the eventfd, then clear the flag).
func (l *loop) runTasks() {
	if _, err := l.waker.drain(); err != nil {
		trace.Printf("%v", err)
	}
	l.mu.Lock()
	tasks := l.tasks
	l.tasks = l.spare[:0]
	l.wakePending = false
	l.mu.Unlock()
	if tracing {
		trace.Printf("run %d tasks", len(tasks))
	}
	for i, task := range tasks {
		task()
		tasks[i] = nil // let the task's closure go
	}
	l.spare = tasks
}

// END LAB

// close closes the loop's fds once run has returned and no goroutine will
// queue a task that matters; a late one is dropped, not written to a
// closed fd (see queueInLoop).
func (l *loop) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	l.waker.close()
	unix.Close(l.epfd)
}

// span is one region of a goroutine's timeline in the execution trace
// (-trace), or nothing with -trace off.
type span struct{ r *rtrace.Region }

// region starts a region of the calling goroutine's timeline, in the
// trace task "server" (see traced); end it on the same goroutine. Its
// name is one of these, the same in every event loop chapter, which go
// tool trace lists under "User-defined regions" and draws on each
// goroutine's row of the server task's goroutine view:
//
//	wait     a loop in epoll_wait, asleep until an fd or a task wakes it
//	tasks    a loop running the tasks queued for it (its wakeup fd woke it)
//	handoff  one of those tasks, queued by another goroutine (see handoff)
//	read     a connection's readable event: its reads and the answers
//	write    replies being written, inside read when answered at once
//	request  -model queue: the loop putting an event on the request queue
//	         (it waits there while the queue is full)
//	accept   the acceptor in accept4, until a client comes
//
// With -trace off a region is a branch and a zero value: the hot path
// still allocates nothing (TestHandleAllocs).
func region(name string) span {
	if !rtracing {
		return span{}
	}
	return span{rtrace.StartRegion(traced.ctx, name)}
}

func (s span) end() {
	if s.r != nil {
		s.r.End()
	}
}

// handoff returns task, which the calling goroutine is about to queue for
// a loop, wrapped in a trace task of its own, a child of "server": it
// begins here and ends once the loop has run it, in a region named
// handoff. go tool trace draws each as a bar from the goroutine that
// queued it to the loop's, and times them, queueing and wakeup included,
// on its "User-defined tasks" page. A task per hand-off, not one per loop:
// a loop's regions have a row of their own already; what the rows cannot
// show is which goroutine handed which loop what, and how long it waited.
// what and fd (-1: no connection) go in the task's log. With -trace off
// handoff is task itself, nothing allocated.
func handoff(what string, fd int, task func()) func() {
	if !rtracing {
		return task
	}
	ctx, t := rtrace.NewTask(traced.ctx, "handoff")
	msg := ""
	if fd >= 0 {
		msg = "fd=" + strconv.Itoa(fd)
	}
	rtrace.Log(ctx, what, msg)
	return func() {
		r := rtrace.StartRegion(ctx, "handoff")
		task()
		r.End()
		t.End()
	}
}
