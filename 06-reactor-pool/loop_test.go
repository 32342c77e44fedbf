//go:build linux

package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"reactorlab/shared/protocol"
)

// taskWait bounds every wait for a task to run. Generous: the point is
// that the task runs at all; a lost wake would leave it queued forever.
const taskWait = 5 * time.Second

// newTestLoop is a loop with the given wakeup fd and no server around it,
// not yet running; its fds are closed when the test ends.
func newTestLoop(t testing.TB, kind string) *loop {
	t.Helper()
	cfg := config{mode: protocol.Echo, maxLine: protocol.DefaultMaxLine, wakeup: kind, model: "loops", loops: 1}
	l, err := newLoop(0, cfg, new(atomic.Int64))
	require.NoError(t, err)
	t.Cleanup(l.close)
	return l
}

// startLoop runs l on a goroutine of its own until the test ends, and
// then stops it: with no connection, beginGrace ends it at once.
func startLoop(t testing.TB, l *loop) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- l.run() }()
	t.Cleanup(func() {
		l.queueInLoop(l.beginGrace)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(taskWait):
			t.Errorf("loop still running %v after it was told to stop", taskWait)
		}
	})
}

// await waits for ch to be closed, at most taskWait.
func await(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(taskWait):
		t.Fatalf("%s: still waiting after %v", what, taskWait)
	}
}

// TestTasksRunOnce: 100,000 tasks from 8 goroutines at once, each run
// exactly once, and on the loop goroutine.
func TestTasksRunOnce(t *testing.T) {
	const producers, perProducer = 8, 100_000 / 8
	for _, kind := range wakeupKinds {
		t.Run(kind, func(t *testing.T) {
			l := newTestLoop(t, kind)
			startLoop(t, l)
			runs := make([]int, producers*perProducer) // the loop's alone until done
			offLoop := 0
			var wg sync.WaitGroup
			for p := range producers {
				wg.Go(func() {
					for i := range perProducer {
						id := p*perProducer + i
						l.queueInLoop(func() {
							runs[id]++
							if !l.inLoop() {
								offLoop++
							}
						})
					}
				})
			}
			wg.Wait()
			// The queue is FIFO: once this one runs, every task before it has.
			done := make(chan struct{})
			l.queueInLoop(func() { close(done) })
			await(t, done, "the task queued after 100,000 others")

			var wrong []string
			for id, n := range runs {
				if n != 1 && len(wrong) < 5 {
					wrong = append(wrong, fmt.Sprintf("task %d ran %d times", id, n))
				}
			}
			if len(wrong) > 0 {
				t.Errorf("want every task run exactly once; %s", strings.Join(wrong, ", "))
			}
			if offLoop != 0 {
				t.Errorf("%d tasks ran off the loop's goroutine, want 0", offLoop)
			}
		})
	}
}

// TestTaskWakesSleepingLoop: a loop with nothing to do sleeps in
// epoll_wait with no timeout at all, and a task must wake it.
func TestTaskWakesSleepingLoop(t *testing.T) {
	for _, kind := range wakeupKinds {
		t.Run(kind, func(t *testing.T) {
			l := newTestLoop(t, kind)
			startLoop(t, l)
			first := make(chan int, 1)
			l.queueInLoop(func() { first <- l.timeout() })
			select {
			case got := <-first:
				if got != -1 {
					t.Fatalf("timeout() of an idle loop = %d, want -1 (sleep until something happens)", got)
				}
			case <-time.After(taskWait):
				t.Fatalf("a task queued to a loop that has just started: still waiting after %v", taskWait)
			}
			waitAsleep(t, int(l.tid.Load()))

			ran := make(chan struct{})
			l.queueInLoop(func() { close(ran) })
			await(t, ran, "a task queued while the loop sleeps in epoll_wait(-1)")
		})
	}
}

// waitAsleep waits until the thread tid sleeps in the kernel (state S in
// /proc), which for a loop with nothing to do means in epoll_wait.
func waitAsleep(t *testing.T, tid int) {
	t.Helper()
	path := fmt.Sprintf("/proc/self/task/%d/stat", tid)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.After(taskWait)
	for {
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		// The state follows the command name, which ends with ')'.
		if f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:])); len(f) > 0 && f[0] == "S" {
			return
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("loop thread %d not asleep after %v: %s", tid, taskWait, b)
		}
	}
}

// TestTaskBeforeRun is the seed's lost signal: its accept thread waits on
// a condition variable with no predicate, so a signal sent before it
// waits is lost. A task queued before the loop first waits must run.
func TestTaskBeforeRun(t *testing.T) {
	for _, kind := range wakeupKinds {
		t.Run(kind, func(t *testing.T) {
			l := newTestLoop(t, kind)
			ran := make(chan struct{})
			l.queueInLoop(func() { close(ran) })
			startLoop(t, l)
			await(t, ran, "a task queued before the loop ran")
		})
	}
}

// hookWaker wraps a loop's waker to count its writes, and to act on the
// loop goroutine just before and just after it drains the fd.
type hookWaker struct {
	waker
	wakes       atomic.Int64
	drained     atomic.Int64 // what the last drain found
	beforeDrain func()
	afterDrain  func()
}

func (w *hookWaker) wake() error {
	w.wakes.Add(1)
	return w.waker.wake()
}

func (w *hookWaker) drain() (int, error) {
	if w.beforeDrain != nil {
		w.beforeDrain()
	}
	n, err := w.waker.drain()
	w.drained.Store(int64(n))
	if w.afterDrain != nil {
		w.afterDrain()
	}
	return n, err
}

// hook gives l a hookWaker; call it before l runs.
func hook(l *loop) *hookWaker {
	w := &hookWaker{waker: l.waker}
	l.waker = w
	return w
}

// TestWakeRacingClear: a task queued around the moment the loop clears
// wakePending is not lost. Each round, while the loop is at one moment of
// runTasks, another goroutine queues a task, and the loop waits until it
// has; the task must then run. Before the take (before the drain, or
// between drain and take) the task must be in the list taken; after it,
// the task must write a wake that no drain has eaten. Each of the classic
// bugs loses the task of the first round at one of these moments:
// draining after the clear before the drain, clearing after the tasks
// run after the take.
func TestWakeRacingClear(t *testing.T) {
	const rounds = 1000
	moments := []struct {
		name string
		set  func(w *hookWaker, at func())
	}{
		{name: "before drain", set: func(w *hookWaker, at func()) { w.beforeDrain = at }},
		{name: "between drain and take", set: func(w *hookWaker, at func()) { w.afterDrain = at }},
		{name: "after take", set: nil}, // from inside a task
	}
	for _, kind := range wakeupKinds {
		for _, m := range moments {
			t.Run(kind+"/"+m.name, func(t *testing.T) {
				l := newTestLoop(t, kind)
				w := hook(l)
				ran := make(chan struct{}, 1)
				racer := func() { ran <- struct{}{} }
				var racing atomic.Bool
				if m.set != nil {
					m.set(w, func() {
						if racing.Swap(false) {
							queueFrom(l, racer)
						}
					})
				}
				startLoop(t, l)
				for i := range rounds {
					if m.set != nil {
						racing.Store(true)
						l.queueInLoop(func() {})
					} else {
						l.queueInLoop(func() { queueFrom(l, racer) })
					}
					awaitRun(t, ran, i)
				}
			})
		}
	}
}

// queueFrom queues task from a goroutine other than the caller's, and
// returns once it is queued.
func queueFrom(l *loop, task func()) {
	queued := make(chan struct{})
	go func() {
		l.queueInLoop(task)
		close(queued)
	}()
	<-queued
}

func awaitRun(t *testing.T, ran <-chan struct{}, round int) {
	t.Helper()
	select {
	case <-ran:
	case <-time.After(taskWait):
		t.Fatalf("round %d: the racing task never ran (%v): its wake was lost", round, taskWait)
	}
}

// TestWakesCoalesce: tasks queued while the loop is busy share one wake.
// The loop is held inside a task; 100 tasks from 4 goroutines meanwhile
// must write to the wakeup fd once, and the next drain finds that one
// wake (for eventfd, the counter is 1).
func TestWakesCoalesce(t *testing.T) {
	const producers, perProducer = 4, 25
	for _, kind := range wakeupKinds {
		t.Run(kind, func(t *testing.T) {
			l := newTestLoop(t, kind)
			w := hook(l)
			startLoop(t, l)
			busy, release := make(chan struct{}), make(chan struct{})
			l.queueInLoop(func() {
				close(busy)
				<-release
			})
			await(t, busy, "the task that holds the loop")
			before := w.wakes.Load()

			var ran atomic.Int64
			var wg sync.WaitGroup
			for range producers {
				wg.Go(func() {
					for range perProducer {
						l.queueInLoop(func() { ran.Add(1) })
					}
				})
			}
			wg.Wait()
			wakes := w.wakes.Load() - before
			close(release)
			done := make(chan struct{})
			l.queueInLoop(func() { close(done) })
			await(t, done, "the tasks queued while the loop was busy")

			if wakes != 1 {
				t.Errorf("%d tasks queued while the loop was busy wrote %d wakes, want 1", producers*perProducer, wakes)
			}
			if got := w.drained.Load(); got != 1 {
				t.Errorf("the drain after them found %d wakes, want 1", got)
			}
			if got := ran.Load(); got != producers*perProducer {
				t.Errorf("%d tasks ran, want %d", got, producers*perProducer)
			}
		})
	}
}

// TestWakers: each mechanism on its own. Three wakes with no drain between
// them: eventfd's counter adds them up (the kernel coalesces), a pipe or
// a socket pair holds three bytes. A drain leaves the fd unreadable. A
// wake on a stream already full of wakes is no error: one is pending.
func TestWakers(t *testing.T) {
	for _, kind := range wakeupKinds {
		t.Run(kind, func(t *testing.T) {
			w, err := newWaker(kind)
			require.NoError(t, err)
			t.Cleanup(w.close)
			for range 3 {
				require.NoError(t, w.wake())
			}
			require.True(t, readable(t, w.fd()), "the wakeup fd is not readable after 3 wakes")
			if n, err := w.drain(); n != 3 || err != nil {
				t.Errorf("drain after 3 wakes = %d, %v; want 3, nil", n, err)
			}
			if readable(t, w.fd()) {
				t.Errorf("the wakeup fd is still readable after a drain: the loop would wake for nothing")
			}
			if n, err := w.drain(); n != 0 || err != nil {
				t.Errorf("drain with no wake = %d, %v; want 0, nil", n, err)
			}
			if kind == "eventfd" {
				return
			}
			for i := range 100_000 { // more than a pipe or socket buffer holds
				if err := w.wake(); err != nil {
					t.Fatalf("wake %d on a full %s: %v, want nil", i+1, kind, err)
				}
			}
		})
	}
}

// readable polls fd without waiting.
func readable(t *testing.T, fd int) bool {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	require.NoError(t, err)
	return n == 1
}

// TestRunInLoop: on the loop, runInLoop runs the task at once, inside the
// caller; anywhere else it queues it.
func TestRunInLoop(t *testing.T) {
	l := newTestLoop(t, "eventfd")
	startLoop(t, l)
	var order []string // the loop's alone
	done := make(chan struct{})
	l.queueInLoop(func() {
		l.runInLoop(func() { order = append(order, "run in loop") })
		l.queueInLoop(func() {
			order = append(order, "queued in loop")
			close(done)
		})
		order = append(order, "caller")
	})
	await(t, done, "the tasks")
	want := []string{"run in loop", "caller", "queued in loop"}
	if strings.Join(order, ", ") != strings.Join(want, ", ") {
		t.Errorf("order = %q, want %q", order, want)
	}
	if l.inLoop() {
		t.Errorf("inLoop() on the test goroutine = true, want false")
	}
}

// TestNoGoroutineLeak: once the server has shut down, the loops, the
// workers and the acceptor are gone, and so is every goroutine they
// started.
func TestNoGoroutineLeak(t *testing.T) {
	for _, model := range []string{"loops", "queue"} {
		t.Run(model, func(t *testing.T) {
			before := runtime.NumGoroutine()
			s, err := newServer(config{addr: "127.0.0.1:0", mode: protocol.Stamp, maxLine: protocol.DefaultMaxLine,
				wakeup: "eventfd", model: model, loops: 3})
			require.NoError(t, err)
			served := make(chan error, 1)
			go func() { served <- s.serve() }()
			for range 6 { // two connections for each loop or worker
				c := dialServer(t, s)
				_, err = c.Write([]byte("hello\n"))
				require.NoError(t, err)
				c.SetReadDeadline(time.Now().Add(taskWait))
				_, err = c.Read(make([]byte, 64))
				require.NoError(t, err)
			}

			s.shutdown()
			select {
			case err := <-served:
				require.NoError(t, err)
			case <-time.After(taskWait):
				t.Fatalf("serve still running %v after shutdown", taskWait)
			}
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			deadline := time.After(taskWait)
			for runtime.NumGoroutine() > before {
				select {
				case <-tick.C:
				case <-deadline:
					t.Fatalf("%d goroutines %v after shutdown, want %d as before the server", runtime.NumGoroutine(), taskWait, before)
				}
			}
		})
	}
}
