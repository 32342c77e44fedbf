package main

import (
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"reactorlab/shared/harness"
)

// The two classic bugs of edge-triggered epoll, each put into the fixture's
// otherwise correct ET engine (../../testdata/fixture/et.go). Chapter 04 is
// where a student meets them, so the grader's stage 4 must catch each one
// and say what it is: an edge is one notice, so whatever the handler leaves
// behind (bytes in a socket, connections in the backlog) is never announced
// again.
func TestETBuggyServersFailWithTheRightHint(t *testing.T) {
	for _, tc := range []struct {
		bug      string
		scenario string
		hints    []string // phrases the hint must contain
	}{
		// One read per edge: the rest of the 16 MiB stays in the socket.
		{"et-nodrain", "bulk", []string{"read until EAGAIN"}},
		// One accept per edge: a burst of connects is one edge.
		{"et-acceptonce", "many", []string{"accept until EAGAIN", "one accept per readiness event"}},
	} {
		t.Run(tc.bug+"/"+tc.scenario, func(t *testing.T) {
			needScenarios(t, tc.scenario)
			r := gradeOne(t, fixture(t, tc.bug), tc.scenario)
			if r.Passed {
				t.Fatalf("-bug %s passed %s; its bug should fail it", tc.bug, tc.scenario)
			}
			if r.Kind != string(harness.Stall) {
				t.Errorf("kind %q, want %q (bytes or connections left waiting)\nstep: %s\ngot: %s",
					r.Kind, harness.Stall, r.Step, r.Got)
			}
			for _, h := range tc.hints {
				if !strings.Contains(r.Hint, h) {
					t.Errorf("hint %q does not name the mistake: want %q in it", r.Hint, h)
				}
			}
		})
	}
}

// Each ET bug is its one bug and not the other's: the no-drain server
// accepts until EAGAIN, so it serves `many`; the accept-once server reads
// until EAGAIN, so it streams `bulk`; and the ET engine with no bug serves
// both. Without this, an ET engine broken in some other way could fail for
// the wrong reason and still pass the test above.
func TestETFixturesHaveOneBugEach(t *testing.T) {
	for _, tc := range []struct {
		bug      string // "" is the ET engine with no bug
		scenario string
	}{
		{"et-nodrain", "many"},
		{"et-acceptonce", "bulk"},
		{"", "many"},
		{"", "bulk"},
	} {
		name := tc.bug
		if name == "" {
			name = "et"
		}
		t.Run(name+"/"+tc.scenario, func(t *testing.T) {
			needScenarios(t, tc.scenario)
			cmd := fixture(t, tc.bug)
			if tc.bug == "" {
				cmd = cmd.With("-engine", "et")
			}
			r := gradeOne(t, cmd, tc.scenario)
			if !r.Passed {
				t.Errorf("%v failed %s [%s]: %s: got %s\nhint: %s\nserver output:\n%s",
					argv(cmd)[1:], tc.scenario, r.Kind, r.Step, r.Got, r.Hint, r.Output)
			}
		})
	}
}

// gradeOne runs the grader on one scenario, at the stage that first
// requires it, and returns that scenario's result, checking the exit code
// agrees with it.
func gradeOne(t *testing.T, cmd harness.Command, scenario string) result {
	t.Helper()
	s, ok := harness.Find(scenario)
	require.True(t, ok, "scenario %q is not in the harness", scenario)
	code, rep, stderr := gradeJSON(t, against(cmd, "-stage", strconv.Itoa(s.Stage), "-run", "^"+scenario+"$")...)
	require.Len(t, rep.Scenarios, 1, "log:\n%s", stderr)
	r := rep.Scenarios[0]
	require.Equal(t, scenario, r.Name, "log:\n%s", stderr)
	want := exitPass
	if !r.Passed {
		want = exitFail
	}
	if code != want {
		t.Errorf("exit code %d, want %d (%s passed=%v)\nlog:\n%s", code, want, scenario, r.Passed, stderr)
	}
	return r
}
