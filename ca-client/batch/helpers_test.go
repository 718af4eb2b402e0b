package batch

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// caError is a backend error that DefaultClassify understands.
type caError struct {
	msg         string
	unavailable bool
	rateLimited bool
}

func (e *caError) Error() string          { return e.msg }
func (e *caError) Unavailable() bool      { return e.unavailable }
func (e *caError) RateLimited() bool      { return e.rateLimited }
func errUnavailable() error               { return &caError{msg: "ca unavailable", unavailable: true} }
func errRateLimited() error               { return &caError{msg: "ca rate limited", rateLimited: true} }
func errRejected() error                  { return &caError{msg: "ca rejected request"} }
func serialOf(c *x509.Certificate) string { return c.Subject.SerialNumber }

// fakeBackend is a Backend that issues a fake certificate carrying the
// request's Serial, records what it saw and can be held at a gate.
type fakeBackend struct {
	clk Clock

	mu      sync.Mutex
	batches [][]string  // serials per batch, in call order
	times   []time.Time // clock time of each request
	cur     int         // requests inside EnrollBatch now
	max     int         // highest cur
	ctxDone int         // batches that returned because ctx ended
	fail    func(Request) error
	delay   time.Duration // real time spent per batch
	gate    chan struct{} // when set, each batch waits for a receive or ctx
	entered chan struct{} // when set, signalled when a batch enters
}

func (f *fakeBackend) EnrollBatch(ctx context.Context, reqs []Request) []Response {
	f.mu.Lock()
	serials := make([]string, len(reqs))
	for i, r := range reqs {
		serials[i] = r.Serial
		if f.clk != nil {
			f.times = append(f.times, f.clk.Now())
		}
	}
	f.batches = append(f.batches, serials)
	f.cur += len(reqs)
	f.max = max(f.max, f.cur)
	gate, entered, delay, fail := f.gate, f.entered, f.delay, f.fail
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.cur -= len(reqs)
		f.mu.Unlock()
	}()

	if entered != nil {
		entered <- struct{}{}
	}
	resps := make([]Response, len(reqs))
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			f.mu.Lock()
			f.ctxDone++
			f.mu.Unlock()
			for i := range resps {
				resps[i].Err = ctx.Err()
			}
			return resps
		}
	}
	if delay > 0 {
		time.Sleep(delay)
	}
	for i, r := range reqs {
		if fail != nil {
			if err := fail(r); err != nil {
				resps[i].Err = err
				continue
			}
		}
		resps[i] = Response{Leaf: &x509.Certificate{Subject: pkix.Name{SerialNumber: r.Serial}}}
	}
	return resps
}

func (f *fakeBackend) setFail(fn func(Request) error) {
	f.mu.Lock()
	f.fail = fn
	f.mu.Unlock()
}

// seen returns every serial the backend received.
func (f *fakeBackend) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Concat(f.batches...)
}

// sizes returns the batch sizes, sorted.
func (f *fakeBackend) sizes() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := make([]int, len(f.batches))
	for i, b := range f.batches {
		s[i] = len(b)
	}
	slices.Sort(s)
	return s
}

func (f *fakeBackend) calls() int { return len(f.seen()) }

// checkGoroutines fails the test if goroutines started during it are still
// running once it and its cleanups are done. Call it first in a test.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutine leak: %d before, %d after\n%s", before, n, buf)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// newTestBatcher starts a Batcher and closes it when the test ends.
func newTestBatcher(t *testing.T, backend Backend, cfg Config) *Batcher {
	t.Helper()
	b := New(t.Name(), backend, cfg)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// result is the outcome of one Enroll call made in the background.
type result struct {
	serial string
	resp   Response
	err    error
	took   time.Duration
}

// enrollAsync calls Enroll in a goroutine and returns a channel with the result.
func enrollAsync(ctx context.Context, b *Batcher, serial string) <-chan result {
	ch := make(chan result, 1)
	go func() {
		start := time.Now()
		resp, err := b.Enroll(ctx, Request{CSR: []byte("csr-" + serial), Serial: serial})
		ch <- result{serial: serial, resp: resp, err: err, took: time.Since(start)}
	}()
	return ch
}

// await returns the result from ch, failing the test after a generous
// deadline.
func await(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("Enroll did not return")
		return result{}
	}
}

// checkOK fails the test unless r is a success for its own serial.
func checkOK(t *testing.T, r result) {
	t.Helper()
	if r.err != nil {
		t.Fatalf("Enroll(%s): %v", r.serial, r.err)
	}
	if r.resp.Leaf == nil || serialOf(r.resp.Leaf) != r.serial {
		t.Fatalf("Enroll(%s): got certificate for %q", r.serial, serialOf(r.resp.Leaf))
	}
}

// checkCounts asserts the invariants between the metrics counters.
func checkCounts(t *testing.T, m Metrics) {
	t.Helper()
	if got := m.Requests + m.Queued + m.Cancelled + m.CircuitOpen + m.Dropped; got != m.Enrolls {
		t.Errorf("Requests+Queued+Cancelled+CircuitOpen+Dropped = %d, Enrolls = %d (%+v)", got, m.Enrolls, m)
	}
}

// observed is a pair of Prometheus histograms a test hands to a Batcher.
type observed struct{ latency, size prometheus.Histogram }

func newObserved() observed {
	return observed{
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "latency_seconds", Buckets: prometheus.DefBuckets}),
		size:    prometheus.NewHistogram(prometheus.HistogramOpts{Name: "batch_size", Buckets: prometheus.ExponentialBuckets(1, 2, 9)}),
	}
}

// with returns cfg observing into o.
func (o observed) with(cfg Config) Config {
	cfg.Latency, cfg.BatchSize = o.latency, o.size
	return cfg
}

// histogram reads h through the library's own data model.
func histogram(t *testing.T, h prometheus.Histogram) *dto.Histogram {
	t.Helper()
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram()
}

// check asserts what the observers saw agrees with m: one size per batch, their sum the
// requests, none above maxBatch, and one latency per answered request whose caller waited.
func (o observed) check(t *testing.T, m Metrics, maxBatch int) {
	t.Helper()
	size := histogram(t, o.size)
	if int64(size.GetSampleSum()) != m.Requests || int64(size.GetSampleCount()) != m.Batches {
		t.Errorf("batch sizes: sum %v over %d batches; Requests = %d, Batches = %d",
			size.GetSampleSum(), size.GetSampleCount(), m.Requests, m.Batches)
	}
	for _, b := range size.GetBucket() {
		if b.GetUpperBound() < float64(maxBatch) {
			continue
		}
		if b.GetCumulativeCount() != size.GetSampleCount() {
			t.Errorf("%d of %d batches larger than MaxBatch %d", size.GetSampleCount()-b.GetCumulativeCount(), size.GetSampleCount(), maxBatch)
		}
		break
	}
	if got, want := int64(histogram(t, o.latency).GetSampleCount()), m.Requests-m.Abandoned; got != want {
		t.Errorf("latency observations %d, want Requests-Abandoned = %d", got, want)
	}
}
