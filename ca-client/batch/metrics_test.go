package batch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"
)

func TestHistogramQuantile(t *testing.T) {
	tests := []struct {
		name   string
		values []float64
		q      float64
		want   float64
	}{
		{name: "empty", q: 0.5, want: 0},
		{name: "median in a bucket", values: []float64{1, 2, 3, 3, 8}, q: 0.5, want: 4},
		{name: "p95 in the top bucket", values: []float64{1, 2, 3, 3, 8}, q: 0.95, want: 8},
		{name: "bound above the max is capped", values: []float64{3, 3}, q: 0.5, want: 3},
		{name: "overflow returns max", values: []float64{1, 1000}, q: 0.95, want: 1000},
		{name: "exact bound", values: []float64{2, 2, 2}, q: 0.5, want: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHistogram(sizeBounds)
			for _, v := range tc.values {
				h.observe(v)
			}
			if got := h.Quantile(tc.q); got != tc.want {
				t.Errorf("Quantile(%v) = %v, want %v (counts %v)", tc.q, got, tc.want, h.Counts)
			}
			if h.Count != int64(len(tc.values)) {
				t.Errorf("Count = %d", h.Count)
			}
		})
	}
}

func TestHistogramSnapshotIsACopy(t *testing.T) {
	b := newTestBatcher(t, &fakeBackend{}, Config{})
	if _, err := b.Enroll(context.Background(), Request{Serial: "U"}); err != nil {
		t.Fatal(err)
	}
	m := b.Metrics()
	m.BatchSize.Counts[0] = 99
	if got := b.Metrics().BatchSize.Counts[0]; got != 1 {
		t.Errorf("batcher's histogram changed through a snapshot: %d", got)
	}
	if p := b.Metrics().LatencyP95(); p <= 0 || p > time.Second {
		t.Errorf("p95 %v for an instant backend", p)
	}
}

type tempErr struct{}

func (tempErr) Error() string   { return "temporary" }
func (tempErr) Temporary() bool { return true }

func TestDefaultClassify(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want Class
	}{
		{name: "nil", err: nil, want: ClassOK},
		{name: "plain error", err: errors.New("bad csr"), want: ClassPermanent},
		{name: "rate limited, wrapped", err: fmt.Errorf("enroll: %w", errRateLimited()), want: ClassRateLimited},
		{name: "unavailable", err: errUnavailable(), want: ClassUnavailable},
		{name: "rejected", err: errRejected(), want: ClassPermanent},
		{name: "temporary", err: fmt.Errorf("x: %w", tempErr{}), want: ClassUnavailable},
		{name: "connection refused", err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}, want: ClassUnavailable},
		{name: "deadline", err: fmt.Errorf("post: %w", context.DeadlineExceeded), want: ClassUnavailable},
		{name: "circuit open is ours, not the CA's", err: ErrCircuitOpen, want: ClassPermanent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := DefaultClassify(tc.err); got != tc.want {
				t.Errorf("DefaultClassify(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestCustomClassifier(t *testing.T) {
	checkGoroutines(t)
	be := &fakeBackend{}
	be.setFail(func(Request) error { return errors.New("503 from the CA") })
	b := newTestBatcher(t, be, Config{
		MaxBatch: 1,
		Breaker:  BreakerConfig{FailureThreshold: 2, OpenFor: time.Hour},
		Classify: func(err error) Class {
			if err != nil {
				return ClassUnavailable
			}
			return ClassOK
		},
	})
	for range 2 {
		if _, err := b.Enroll(context.Background(), Request{Serial: "U"}); err == nil {
			t.Fatal("Enroll succeeded against a failing CA")
		}
	}
	if got := b.Metrics().Breaker; got != BreakerOpen {
		t.Errorf("breaker %v after 2 failures the classifier calls unavailable, want open", got)
	}
}
