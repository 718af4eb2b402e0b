package batch

import (
	"math"
	"slices"
	"time"
)

// Metrics is a snapshot of a Batcher's counters. The counts satisfy
// Enrolls == Requests + Queued + Cancelled + CircuitOpen + Dropped, and
// Requests == BatchSize.Sum.
type Metrics struct {
	// Name is the batcher's (CA's) name.
	Name string
	// Enrolls counts Enroll calls.
	Enrolls int64
	// Requests counts requests handed to the Backend.
	Requests int64
	// Queued is the number of requests waiting in a batch not yet sent.
	Queued int64
	// Cancelled counts requests whose caller gave up before they were sent;
	// they never reached the Backend.
	Cancelled int64
	// Abandoned counts requests whose caller gave up after they were sent.
	Abandoned int64
	// CircuitOpen counts requests failed with ErrCircuitOpen without reaching
	// the Backend.
	CircuitOpen int64
	// Dropped counts requests failed with ErrClosed.
	Dropped int64
	// Succeeded and Failed count the Backend's answers, by whether they
	// carried an error.
	Succeeded, Failed int64
	// RateLimited counts answers classified ClassRateLimited plus rate limits
	// reported through NoteRateLimited.
	RateLimited int64
	// Batches counts batches handed to the Backend; BatchSize is the
	// histogram of their sizes.
	Batches   int64
	BatchSize Histogram
	// InFlight is the number of requests in the Backend now; MaxInFlight the
	// highest it has been.
	InFlight, MaxInFlight int64
	// Latency is the histogram, in seconds, of the time from Enroll to the
	// Backend's answer, for requests the Backend answered.
	Latency Histogram
	// Retries is the Backend's retry count, when it implements RetryCounter.
	Retries int64
	// ConnectionsOpened is the Backend's count of connections opened, when it
	// implements ConnCounter.
	ConnectionsOpened int64
	// Breaker is the circuit breaker's state; an open breaker whose OpenFor
	// has passed shows as half-open (the next request will be a probe).
	Breaker BreakerState
	// Rate is the current rate limit in requests per second (0: unlimited).
	Rate float64
}

// LatencyP50 returns the upper bound of the latency bucket holding the median.
func (m Metrics) LatencyP50() time.Duration { return seconds(m.Latency.Quantile(0.50)) }

// LatencyP95 returns the upper bound of the latency bucket holding the 95th
// percentile.
func (m Metrics) LatencyP95() time.Duration { return seconds(m.Latency.Quantile(0.95)) }

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// RetryCounter is implemented by a Backend that retries and counts its retries.
type RetryCounter interface{ Retries() int64 }

// ConnCounter is implemented by a Backend that counts the connections it
// opened to the CA (see CountingTransport).
type ConnCounter interface{ ConnectionsOpened() int64 }

// Histogram counts observations in fixed buckets. Counts[i] holds the values v
// with Bounds[i-1] < v <= Bounds[i]; the last element of Counts (one more than
// Bounds) holds the values above the last bound. A Histogram in a Metrics
// snapshot is a copy owned by the caller.
type Histogram struct {
	Bounds []float64
	Counts []int64
	// Count is the number of observations, Sum their total, Max the largest.
	Count int64
	Sum   float64
	Max   float64
}

var (
	// latencyBounds are the latency buckets, in seconds.
	latencyBounds = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
	// sizeBounds are the batch-size buckets.
	sizeBounds = []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}
)

func newHistogram(bounds []float64) Histogram {
	return Histogram{Bounds: bounds, Counts: make([]int64, len(bounds)+1)}
}

func (h *Histogram) observe(v float64) {
	i, _ := slices.BinarySearch(h.Bounds, v) // first bound >= v
	h.Counts[i]++
	h.Count++
	h.Sum += v
	h.Max = max(h.Max, v)
}

func (h Histogram) clone() Histogram {
	h.Counts = slices.Clone(h.Counts)
	return h
}

// Quantile returns the upper bound of the bucket that holds the q-quantile
// (0 < q <= 1), or Max when that is the overflow bucket or lower than the
// bound. It returns 0 for an empty histogram.
func (h Histogram) Quantile(q float64) float64 {
	if h.Count == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(h.Count)))
	rank = min(max(rank, 1), h.Count)
	var seen int64
	for i, c := range h.Counts {
		seen += c
		if seen >= rank {
			if i < len(h.Bounds) {
				return min(h.Bounds[i], h.Max)
			}
			break
		}
	}
	return h.Max
}
