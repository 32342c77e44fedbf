//go:build linux

package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
	xtrace "golang.org/x/exp/trace"
	"golang.org/x/sys/unix"

	"reactorlab/shared/harness"
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

// TestTrace: -trace FILE writes an execution trace that go tool trace can
// read, and in it the timeline the README tells readers to look for: each
// loop waiting, reading, writing and running tasks, the hand-offs from
// the acceptor (and, in -model queue, from the workers) to a loop, and
// the trace's end, written when SIGTERM ends the server.
func TestTrace(t *testing.T) {
	const conns, lines = 4, 5
	server := harness.Build(t, ".")
	tests := []struct {
		name string
		args []string
		want timeline
	}{
		{name: "loops", args: []string{"-model", "loops", "-loops", "2"}, want: timeline{
			goroutines: map[string]int{"acceptor": 1, "loop": 2},
			regions:    map[string][]string{"acceptor": {"accept"}, "loop": {"handoff", "read", "tasks", "wait", "write"}},
			handoffs:   map[string]int{"register acceptor→loop": conns, "begin grace other→loop": 2},
			exit:       "status 0",
		}},
		{name: "queue", args: []string{"-model", "queue", "-loops", "1"}, want: timeline{
			goroutines: map[string]int{"acceptor": 1, "loop": 1, "worker": 1},
			regions: map[string][]string{"acceptor": {"accept"}, "loop": {"handoff", "request", "tasks", "wait"},
				"worker": {"read", "write"}},
			handoffs: map[string]int{"register acceptor→loop": conns, "take back worker→loop": conns,
				"begin grace other→loop": 1},
			exit: "status 0",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := newTraceFile(t)
			s := harness.StartServer(t, server, append(tt.args, "-mode", "echo", "-trace", file)...)
			echoAndClose(t, s.Addr(), conns, lines)
			require.NoError(t, s.Signal(unix.SIGTERM))
			select {
			case <-s.Exited():
			case <-time.After(taskWait):
				t.Fatalf("still running %v after SIGTERM", taskWait)
			}
			require.NoError(t, s.ExitStatus(), "exit status after SIGTERM; stderr:\n%s", s.Output())
			if diff := cmp.Diff(tt.want, readTimeline(t, file), cmp.AllowUnexported(timeline{})); diff != "" {
				t.Errorf("timeline in the trace (-want +got):\n%s", diff)
			}
		})
	}
}

// newTraceFile is where a test's server writes its trace, in a folder
// removed when the test ends.
func newTraceFile(t *testing.T) string {
	return filepath.Join(t.TempDir(), "server.trace")
}

// echoAndClose makes conns connections to addr, one after the other, each
// echoing lines lines one at a time, then half-closing and reading until
// EOF: by then the server has closed it, and every hand-off it took has
// run.
func echoAndClose(t *testing.T, addr string, conns, lines int) {
	t.Helper()
	for i := range conns {
		c, err := net.DialTimeout("tcp", addr, taskWait)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(taskWait))
		r := bufio.NewReader(c)
		for j := range lines {
			line := fmt.Sprintf("connection %d, line %d\n", i, j)
			_, err := c.Write([]byte(line))
			require.NoError(t, err)
			if got, err := r.ReadString('\n'); got != line || err != nil {
				t.Fatalf("echo: got %q, %v; want %q", got, err, line)
			}
		}
		require.NoError(t, c.(*net.TCPConn).CloseWrite())
		if rest, err := io.ReadAll(r); len(rest) > 0 || err != nil {
			t.Fatalf("after the half-close: got %q, %v; want EOF", rest, err)
		}
	}
}

// timeline is what an execution trace says the server's goroutines did.
// A goroutine's role is read off its regions: a loop waits in epoll_wait,
// the acceptor in accept4, and a worker has regions but waits in neither;
// one without regions is "other" (main's, the signal goroutine). For each
// role: how many goroutines had it, and the regions they ran. Hand-offs
// are counted by what was handed over (the task's log), from which role
// to which ("none": not run when the trace stopped). untasked counts the
// regions outside any trace task, which go tool trace draws nowhere. exit
// is the last event's word on how the server ended ("status 0"), "" if
// it is missing.
type timeline struct {
	goroutines map[string]int
	regions    map[string][]string
	handoffs   map[string]int
	untasked   int
	exit       string
}

// readTimeline parses the execution trace in file.
func readTimeline(t *testing.T, file string) timeline {
	t.Helper()
	f, err := os.Open(file)
	require.NoError(t, err)
	defer f.Close()
	r, err := xtrace.NewReader(bufio.NewReader(f))
	require.NoError(t, err, "%s: not an execution trace", file)
	te := traceEvents{ran: map[xtrace.GoID]map[string]bool{}, handoffs: map[xtrace.TaskID]*handedOff{}}
	for {
		ev, err := r.ReadEvent()
		if err == io.EOF {
			return te.timeline()
		}
		require.NoError(t, err, "reading %s", file)
		te.add(ev)
	}
}

// traceEvents is what readTimeline gathers, event by event: the regions
// each goroutine ran, the hand-offs, the regions in no task, the exit.
type traceEvents struct {
	ran      map[xtrace.GoID]map[string]bool
	handoffs map[xtrace.TaskID]*handedOff
	untasked int
	exit     string
}

// handedOff is one hand-off task: what (its log's category), from the
// goroutine that began it to the one that ended it.
type handedOff struct {
	what     string
	from, to xtrace.GoID
}

func (te *traceEvents) add(ev xtrace.Event) {
	switch ev.Kind() {
	case xtrace.EventRegionBegin:
		if te.ran[ev.Goroutine()] == nil {
			te.ran[ev.Goroutine()] = map[string]bool{}
		}
		te.ran[ev.Goroutine()][ev.Region().Type] = true
		if ev.Region().Task == xtrace.BackgroundTask {
			te.untasked++
		}
	case xtrace.EventTaskBegin:
		if ev.Task().Type == "handoff" {
			te.handoffs[ev.Task().ID] = &handedOff{from: ev.Goroutine(), to: xtrace.NoGoroutine}
		}
	case xtrace.EventTaskEnd:
		if h := te.handoffs[ev.Task().ID]; h != nil {
			h.to = ev.Goroutine()
		}
	case xtrace.EventLog:
		if h := te.handoffs[ev.Log().Task]; h != nil {
			h.what = ev.Log().Category
		}
		if ev.Log().Category == "exit" {
			te.exit = ev.Log().Message
		}
	}
}

// role is g's role, read off its regions (see timeline).
func (te *traceEvents) role(g xtrace.GoID) string {
	switch {
	case g == xtrace.NoGoroutine:
		return "none"
	case te.ran[g]["wait"]:
		return "loop"
	case te.ran[g]["accept"]:
		return "acceptor"
	case len(te.ran[g]) > 0:
		return "worker"
	}
	return "other"
}

func (te *traceEvents) timeline() timeline {
	tl := timeline{goroutines: map[string]int{}, regions: map[string][]string{}, handoffs: map[string]int{},
		untasked: te.untasked, exit: te.exit}
	for g, names := range te.ran {
		r := te.role(g)
		tl.goroutines[r]++
		for name := range names {
			if !slices.Contains(tl.regions[r], name) {
				tl.regions[r] = append(tl.regions[r], name)
			}
		}
		slices.Sort(tl.regions[r])
	}
	for _, h := range te.handoffs {
		tl.handoffs[h.what+" "+te.role(h.from)+"→"+te.role(h.to)]++
	}
	return tl
}
