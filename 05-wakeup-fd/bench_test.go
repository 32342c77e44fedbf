//go:build linux

package main

import (
	"testing"
	"time"

	"reactorlab/shared/harness"
	"reactorlab/shared/load"
)

// BenchmarkRoundTrip is one client's round trip with nobody else connected,
// comparable with every other chapter's.
//
//	go test -run='^$' -bench=RoundTrip ./05-wakeup-fd
func BenchmarkRoundTrip(b *testing.B) {
	server := harness.Build(b, ".")
	for _, mode := range []string{"echo", "stamp"} {
		b.Run(mode, func(b *testing.B) {
			s := harness.StartServer(b, server, "-mode", mode)
			load.RoundTrips(b, load.Dial(b, s.Addr(), mode))
		})
	}
}

// BenchmarkWake is the latency of one wake: a task queued for a loop asleep
// in epoll_wait, timed from queueInLoop to the moment the task starts on
// the loop. Each iteration waits for its task, so the loop is back asleep
// before the next: every one is a full wake (write, epoll_wait returns,
// drain, take). µs/wake is the mean, and p99-µs/wake the tail.
//
//	go test -run='^$' -bench=Wake -benchtime=20000x ./05-wakeup-fd
func BenchmarkWake(b *testing.B) {
	for _, kind := range wakeupKinds {
		b.Run(kind, func(b *testing.B) {
			l := newTestLoop(b, kind)
			startLoop(b, l)
			ran := make(chan time.Duration, 1)
			var lat load.Latencies
			var total time.Duration
			for b.Loop() {
				posted := time.Now()
				l.queueInLoop(func() { ran <- time.Since(posted) })
				d := <-ran
				lat.Add(d)
				total += d
			}
			b.ReportMetric(float64(total.Nanoseconds())/float64(lat.Len())/1e3, "µs/wake")
			b.ReportMetric(float64(lat.Percentile(99).Nanoseconds())/1e3, "p99-µs/wake")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkTasks is task throughput: one goroutine queues tasks as fast as
// it can while the loop runs them, then waits for the last. Tasks queued
// while the loop is busy share a wake, so a fast producer pays for a wake
// only now and then: wakes/task says how often.
//
//	go test -run='^$' -bench=Tasks -benchtime=200000x ./05-wakeup-fd
func BenchmarkTasks(b *testing.B) {
	for _, kind := range wakeupKinds {
		b.Run(kind, func(b *testing.B) {
			l := newTestLoop(b, kind)
			w := hook(l)
			startLoop(b, l)
			task := func() {}
			start := time.Now()
			for b.Loop() {
				l.queueInLoop(task)
			}
			done := make(chan struct{})
			l.queueInLoop(func() { close(done) })
			<-done // the throughput is of tasks run, not only queued
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "tasks/s")
			b.ReportMetric(float64(w.wakes.Load())/float64(b.N), "wakes/task")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkWakeDrain is what a wake costs in system calls alone, with no
// thread to wake: one wake and one drain on the same goroutine. eventfd is
// a write and a read; a pipe or a socket pair a write and two reads, the
// second to see EAGAIN.
//
//	go test -run='^$' -bench=WakeDrain ./05-wakeup-fd
func BenchmarkWakeDrain(b *testing.B) {
	for _, kind := range wakeupKinds {
		b.Run(kind, func(b *testing.B) {
			w, err := newWaker(kind)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(w.close)
			for b.Loop() {
				if err := w.wake(); err != nil {
					b.Fatal(err)
				}
				if n, err := w.drain(); n != 1 || err != nil {
					b.Fatalf("drain after one wake = %d, %v; want 1, nil", n, err)
				}
			}
		})
	}
}
