package harness

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

// ScaleEnv names the one knob for a slow or busy machine: every deadline a
// scenario sets (a reply's, a transfer's, a dial's, the ready line's) is
// multiplied by it. Measurement windows and the CPU and wakeup budgets
// measured in them are not deadlines and do not stretch: a server that
// spins spins on any machine. The base figures already leave room for a
// server built with -race on a 2-core machine running other work.
const ScaleEnv = "REACTORLAB_TIME_SCALE"

// timeScale is ScaleEnv's value, 1 when unset.
var timeScale = readScale(os.Getenv(ScaleEnv))

func readScale(v string) float64 {
	if v == "" {
		return 1
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 1 || f > 100 {
		fmt.Fprintf(os.Stderr, "harness: %s=%q: want a number from 1 to 100; using 1\n", ScaleEnv, v)
		return 1
	}
	return f
}

// scaled stretches a deadline by timeScale.
func scaled(d time.Duration) time.Duration {
	return time.Duration(float64(d) * timeScale)
}
