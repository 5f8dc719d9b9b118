package bench

import (
	"math"
	"slices"
	"time"
)

// Summary condenses repeated measurements of one figure.
type Summary struct {
	Samples int     `json:"samples"`
	Median  float64 `json:"median"`
	P99     float64 `json:"p99"`
	Min     float64 `json:"min"`
	Max     float64 `json:"max"`
}

// Summarize computes the median, the nearest-rank 99th percentile (which is
// the maximum when there are fewer than 100 samples), min and max. It does
// not modify xs. An empty input gives a zero Summary.
func Summarize(xs []float64) Summary {
	if len(xs) == 0 {
		return Summary{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	rank := int(math.Ceil(0.99 * float64(n)))
	return Summary{Samples: n, Median: med, P99: s[rank-1], Min: s[0], Max: s[n-1]}
}

// Millis converts durations to float milliseconds, the unit of every latency
// figure.
func Millis(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d) / float64(time.Millisecond)
	}
	return out
}
