package main

import (
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"reactorlab/shared/load"
)

// conditions are what every figure of a comparison shares, printed above
// its table so that the table never travels without them.
type conditions struct {
	load     load.Config
	warmup   time.Duration
	rounds   int
	pinned   bool
	cpus     [2]int // server's, load generator's; when pinned
	baseline string
	args     []string // compare's own arguments, to rerun it
	skipped  []string // servers that could not run here, and why
}

// row is one server's medians and their ratios to the baseline's.
type row struct {
	label     string
	baseline  bool
	rounds    int // rounds that ran
	msgs      float64
	msgsRange [2]float64 // lowest and highest round, for the chart
	p99       time.Duration
	cpu       time.Duration // per message
	errors    int64
	// Ratios to the baseline: msgs/s (higher is better), p99 and CPU per
	// message (lower is better). 0 when either side has no figure.
	msgsRatio, p99Ratio, cpuRatio float64
}

// summarize takes each server's medians over its rounds; servers with no
// round that ran are left out.
func summarize(servers []*server, baseline string) []row {
	var rows []row
	for _, s := range servers {
		if len(s.runs) == 0 {
			continue
		}
		r := row{label: s.label, baseline: s.label == baseline, rounds: len(s.runs)}
		var msgs, p99, cpu []float64
		for _, m := range s.runs {
			msgs = append(msgs, m.msgsPerSec)
			p99 = append(p99, float64(m.p99))
			cpu = append(cpu, float64(m.cpuPerMsg))
			r.errors += m.errors
		}
		r.msgs = median(msgs)
		r.msgsRange = [2]float64{slices.Min(msgs), slices.Max(msgs)}
		r.p99 = time.Duration(median(p99))
		r.cpu = time.Duration(median(cpu))
		rows = append(rows, r)
	}
	i := slices.IndexFunc(rows, func(r row) bool { return r.baseline })
	if i < 0 {
		return rows
	}
	base := rows[i]
	for j := range rows {
		rows[j].msgsRatio = ratio(rows[j].msgs, base.msgs)
		rows[j].p99Ratio = ratio(float64(rows[j].p99), float64(base.p99))
		rows[j].cpuRatio = ratio(float64(rows[j].cpu), float64(base.cpu))
	}
	return rows
}

// median of values, which it sorts; the mean of the middle two for an even
// count.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

func ratio(a, b float64) float64 {
	if a == 0 || b == 0 {
		return 0
	}
	return a / b
}

// markdown renders the conditions and the table.
func markdown(c conditions, rows []row) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Echo load: %s connections, %s B messages, %s; %d interleaved round(s) of %v per server (after %v of warm-up), each a fresh process.\n",
		thousands(int64(c.load.Conns)), thousands(int64(c.load.Size)), shape(c.load.Depth), c.rounds, c.load.Duration, c.warmup)
	if c.pinned {
		fmt.Fprintf(&b, "Pinned: server on CPU %d, load generator on CPU %d.\n", c.cpus[0], c.cpus[1])
	} else {
		b.WriteString("Not pinned: server and load generator share every CPU.\n")
	}
	fmt.Fprintf(&b, "Medians over the rounds; ratios to `%s`. CPU/msg is the server's own user+system time per echoed message.\n", c.baseline)
	if len(c.skipped) > 0 {
		fmt.Fprintf(&b, "Skipped: %s.\n", strings.Join(c.skipped, ", "))
	}
	fmt.Fprintf(&b, "Machine: %d CPUs, %s, %s. Command: `compare %s`\n\n", runtime.NumCPU(), kernel(), runtime.Version(), strings.Join(quoteArgs(c.args), " "))

	b.WriteString("| server | msgs/s | × base | p99 | × base | CPU/msg | × base | errors |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		label := "`" + r.label + "`"
		if r.baseline {
			label += " (base)"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %d |\n", label,
			thousands(int64(r.msgs+0.5)), times(r.msgsRatio), latency(r.p99), times(r.p99Ratio),
			latency(r.cpu), times(r.cpuRatio), r.errors)
	}
	return b.String()
}

func shape(depth int) string {
	if depth == 1 {
		return "ping-pong"
	}
	return fmt.Sprintf("pipelined, depth %d", depth)
}

// times prints a ratio as "1.21×", or "-" when there is none.
func times(r float64) string {
	if r == 0 {
		return "-"
	}
	return strconv.FormatFloat(r, 'f', 2, 64) + "×"
}

// latency prints a duration with three significant figures and a space
// before its unit: "87.4 µs", "1.84 ms".
func latency(d time.Duration) string {
	switch {
	case d < time.Microsecond:
		return fmt.Sprintf("%d ns", d.Nanoseconds())
	case d < time.Millisecond:
		return sig3(float64(d)/1e3) + " µs"
	case d < time.Second:
		return sig3(float64(d)/1e6) + " ms"
	}
	return sig3(d.Seconds()) + " s"
}

func sig3(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// thousands prints a count with commas: 152,340.
func thousands(n int64) string {
	s := strconv.FormatInt(max(n, 0), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// quoteArgs quotes the arguments that hold spaces, as a shell needs them.
func quoteArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " \t'\"") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out[i] = a
	}
	return out
}

func kernel() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "Linux"
	}
	return "Linux " + unix.ByteSliceToString(u.Release[:])
}
