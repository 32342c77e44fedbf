//go:build race

package harness

// raceEnabled: a test binary built with -race builds its servers with -race
// too, so data races inside the server fail the run.
const raceEnabled = true
