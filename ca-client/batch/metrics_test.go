package batch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"
)

// TestObserversSeeEveryRequest checks a lone request reaches both observers: a batch of one and
// a latency no longer than the call.
func TestObserversSeeEveryRequest(t *testing.T) {
	obs := newObserved()
	b := newTestBatcher(t, &fakeBackend{}, obs.with(Config{}))
	start := time.Now()
	if _, err := b.Enroll(context.Background(), Request{Serial: "U"}); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start).Seconds()
	obs.check(t, b.Metrics(), 1)
	if lat := histogram(t, obs.latency); lat.GetSampleCount() != 1 || lat.GetSampleSum() < 0 || lat.GetSampleSum() > took {
		t.Errorf("latency: %d observations summing to %vs; the call took %vs", lat.GetSampleCount(), lat.GetSampleSum(), took)
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
