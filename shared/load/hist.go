package load

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram counts durations in log-linear buckets, as HdrHistogram does:
// exact below 64 ns, then 64 buckets per power of two, so a percentile is
// off by less than 1/64 (1.6%) of its value. It takes constant memory
// however long a run lasts (a slice of every round trip at 100,000 msgs/s
// grows by 48 MB a minute), and Record is one atomic add, so connections
// share it and the live status reads it while they run.
type Histogram struct {
	counts [histBuckets]atomic.Uint64
}

// subBits is log2 of the buckets per power of two: 64 buckets keep the
// relative error under 1/64.
const subBits = 6

// histMax is the longest duration with a bucket of its own (about 18
// minutes); longer ones count in the last bucket.
const histMax = 1<<40 - 1

// histBuckets covers 0 to histMax: values below 2^(subBits+1) are their own
// bucket, then each power of two up to 2^40 has 1<<subBits.
const histBuckets = (40-subBits)<<subBits + 1<<subBits

// bucketOf maps a value in nanoseconds to its bucket: the top subBits+1
// significant bits of v, shifted into place.
func bucketOf(v uint64) int {
	v = min(v, histMax)
	if v < 1<<(subBits+1) {
		return int(v)
	}
	shift := bits.Len64(v) - (subBits + 1)
	return shift<<subBits + int(v>>shift)
}

// bucketValue is the middle of bucket i, the value a percentile reports.
func bucketValue(i int) uint64 {
	if i < 1<<(subBits+1) {
		return uint64(i)
	}
	shift := i>>subBits - 1
	low := uint64(i-shift<<subBits) << shift
	return low + (uint64(1)<<shift)/2
}

// Record counts one duration; negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	h.counts[bucketOf(uint64(max(d, 0)))].Add(1)
}

// Snapshot is a copy of a Histogram's counts at one moment: what a
// percentile is computed from, and what an interval is the difference of.
type Snapshot struct {
	counts [histBuckets]uint64
	n      uint64
}

// Snapshot copies the counts. Records that race with it land in this
// snapshot or the next one, never in neither.
func (h *Histogram) Snapshot() *Snapshot {
	s := &Snapshot{}
	for i := range h.counts {
		c := h.counts[i].Load()
		s.counts[i] = c
		s.n += c
	}
	return s
}

// Sub returns what was recorded between prev and s: the live status's
// one-second window.
func (s *Snapshot) Sub(prev *Snapshot) *Snapshot {
	d := &Snapshot{}
	for i := range s.counts {
		d.counts[i] = s.counts[i] - prev.counts[i]
		d.n += d.counts[i]
	}
	return d
}

// Count is the number of durations recorded.
func (s *Snapshot) Count() uint64 { return s.n }

// Percentile returns the p-th percentile (0 < p <= 100) by nearest rank,
// the same definition as Latencies.Percentile, to within a bucket; 0 when
// nothing was recorded.
func (s *Snapshot) Percentile(p float64) time.Duration {
	if s.n == 0 {
		return 0
	}
	rank := uint64(p/100*float64(s.n) + 0.5)
	rank = min(max(rank, 1), s.n)
	var seen uint64
	for i, c := range s.counts {
		if seen += c; seen >= rank {
			return time.Duration(bucketValue(i))
		}
	}
	return histMax // unreachable: the counts add up to n
}
