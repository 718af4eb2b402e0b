package batch

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// fakeSingle is a SingleEnroller that records its concurrency.
type fakeSingle struct {
	delay time.Duration
	gate  chan struct{} // when set, each call waits for it or ctx

	mu     sync.Mutex
	n, cur int
	max    int
}

func (f *fakeSingle) Enroll(ctx context.Context, csr []byte) (*x509.Certificate, []*x509.Certificate, error) {
	f.mu.Lock()
	f.n++
	f.cur++
	f.max = max(f.max, f.cur)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.cur--
		f.mu.Unlock()
	}()
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
	if f.delay > 0 {
		time.Sleep(f.delay)
	}
	if string(csr) == "bad" {
		return nil, nil, errRejected()
	}
	return &x509.Certificate{Subject: pkix.Name{SerialNumber: string(csr)}}, []*x509.Certificate{{}}, nil
}

func (f *fakeSingle) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

func (f *fakeSingle) maxConcurrent() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.max
}

// countingSingle adds the optional counters to fakeSingle.
type countingSingle struct{ fakeSingle }

func (c *countingSingle) Retries() int64           { return 3 }
func (c *countingSingle) ConnectionsOpened() int64 { return 2 }

// reenroller adds re-enrollment to fakeSingle.
type reenroller struct{ fakeSingle }

func (r *reenroller) Reenroll(ctx context.Context, csr []byte) (*x509.Certificate, []*x509.Certificate, error) {
	return r.Enroll(ctx, append([]byte("re-"), csr...))
}

func TestFanOut(t *testing.T) {
	tests := []struct {
		name        string
		concurrency int
		batches     int
		size        int
	}{
		{name: "bound 1", concurrency: 1, batches: 2, size: 8},
		{name: "bound 4 across 3 concurrent batches", concurrency: 4, batches: 3, size: 8},
		{name: "zero means 1", concurrency: 0, batches: 2, size: 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkGoroutines(t)
			se := &fakeSingle{delay: time.Millisecond}
			be := FanOut(se, tc.concurrency)
			var wg sync.WaitGroup
			for bi := range tc.batches {
				wg.Go(func() {
					reqs := make([]Request, tc.size)
					for i := range reqs {
						reqs[i] = Request{CSR: fmt.Appendf(nil, "B%d-%d", bi, i)}
					}
					reqs[1].CSR = []byte("bad")
					resps := be.EnrollBatch(context.Background(), reqs)
					if len(resps) != len(reqs) {
						t.Errorf("%d responses for %d requests", len(resps), len(reqs))
						return
					}
					for i, r := range resps {
						switch {
						case i == 1:
							if !isPermanent(r.Err) {
								t.Errorf("bad CSR: %v, want the rejection", r.Err)
							}
						case r.Err != nil:
							t.Errorf("request %d: %v", i, r.Err)
						case serialOf(r.Leaf) != string(reqs[i].CSR) || len(r.Chain) != 1:
							t.Errorf("request %d answered with %q", i, serialOf(r.Leaf))
						}
					}
				})
			}
			wg.Wait()
			if got, want := se.maxConcurrent(), max(tc.concurrency, 1); got > want {
				t.Errorf("%d concurrent calls, bound %d", got, want)
			}
			if got := se.calls(); got != tc.batches*tc.size {
				t.Errorf("%d calls, want %d", got, tc.batches*tc.size)
			}
		})
	}
}

func TestFanOutCancelled(t *testing.T) {
	checkGoroutines(t)
	se := &fakeSingle{gate: make(chan struct{})}
	be := FanOut(se, 2)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan []Response)
	go func() { done <- be.EnrollBatch(ctx, make([]Request, 5)) }()
	waitFor(t, "2 calls running", func() bool { return se.calls() == 2 })
	cancel()
	resps := <-done
	for i, r := range resps {
		if !errors.Is(r.Err, context.Canceled) {
			t.Errorf("request %d: %v, want context.Canceled", i, r.Err)
		}
	}
	if got := se.calls(); got != 2 {
		t.Errorf("%d calls started, want 2 (the rest never started)", got)
	}
}

func TestFanOutOptionalInterfaces(t *testing.T) {
	plain := FanOut(&fakeSingle{}, 1)
	counting := FanOut(&countingSingle{}, 1)
	if got := plain.(RetryCounter).Retries(); got != 0 {
		t.Errorf("plain Retries = %d", got)
	}
	if got := counting.(RetryCounter).Retries(); got != 3 {
		t.Errorf("forwarded Retries = %d, want 3", got)
	}
	if got := counting.(ConnCounter).ConnectionsOpened(); got != 2 {
		t.Errorf("forwarded ConnectionsOpened = %d, want 2", got)
	}

	b := newTestBatcher(t, counting, Config{})
	m := b.Metrics()
	if m.Retries != 3 || m.ConnectionsOpened != 2 || m.Name != t.Name() {
		t.Errorf("Metrics: Retries %d, ConnectionsOpened %d, Name %q", m.Retries, m.ConnectionsOpened, m.Name)
	}

	reqs := []Request{{CSR: []byte("U1"), Reenroll: true}}
	if r := plain.EnrollBatch(context.Background(), reqs); !errors.Is(r[0].Err, errors.ErrUnsupported) {
		t.Errorf("re-enrollment without support: %v, want errors.ErrUnsupported", r[0].Err)
	}
	r := FanOut(&reenroller{}, 1).EnrollBatch(context.Background(), reqs)
	if r[0].Err != nil || serialOf(r[0].Leaf) != "re-U1" {
		t.Errorf("re-enrollment: %v, %q", r[0].Err, serialOf(r[0].Leaf))
	}
}
