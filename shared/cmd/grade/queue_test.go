package main

import (
	"strings"
	"testing"

	"reactorlab/shared/harness"
)

// noneshotRuns is how many runs of pipeline the noneshot test allows. Two
// workers serving one connection at once show only when they take its lock
// in the opposite order to their reads, which is a race; pipeline is sized
// so that one run catches it (20 runs of 20 under -race on a loaded 2-core
// machine), because an instructor grades each student once. The test
// allows a second and third run only so that CI does not fail on the rare
// miss; the log says on which run it failed, and a first-run pass is what
// to watch for.
const noneshotRuns = 3

// The mistake of a request queue without EPOLLONESHOT: a connection reports
// again while a worker still serves it, a second worker serves it too, and
// its replies come out of order. pipeline must say so and name the flag.
// The fixture's workers keep each connection's state behind a mutex, as Go
// needs them to, so the server has no data race (-race stays quiet) and
// the stream is only reordered, never torn.
func TestNoOneshotFailsPipeline(t *testing.T) {
	needScenarios(t, "pipeline")
	cmd := fixture(t, "noneshot")
	for run := 1; run <= noneshotRuns; run++ {
		r := gradeOne(t, cmd, "pipeline")
		if r.Passed {
			continue
		}
		t.Logf("run %d of at most %d failed pipeline: %s: got %s", run, noneshotRuns, r.Step, r.Got)
		if r.Kind != string(harness.Wrong) {
			t.Errorf("kind %q, want %q (replies out of order)\nstep: %s\ngot: %s", r.Kind, harness.Wrong, r.Step, r.Got)
		}
		if !strings.Contains(r.Hint, "EPOLLONESHOT") {
			t.Errorf("hint %q does not name EPOLLONESHOT", r.Hint)
		}
		return
	}
	t.Errorf("-bug noneshot passed pipeline %d runs in a row; its bug should fail it", noneshotRuns)
}
