package batch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestBatchCloses(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		n    int
		// holdFor is advanced on the fake clock once every request is
		// queued or sent; then sentBefore requests must have been sent.
		holdFor    time.Duration
		sentBefore int64
		// release is advanced afterwards to let the rest go.
		release   time.Duration
		wantSizes []int
	}{
		{
			name:      "full at MaxBatch",
			cfg:       Config{MaxBatch: 4, MaxWait: time.Hour, MaxInFlight: 16},
			n:         8,
			wantSizes: []int{4, 4},
		},
		{
			name:       "partial batch waits for MaxWait",
			cfg:        Config{MaxBatch: 10, MaxWait: 50 * time.Millisecond},
			n:          3,
			holdFor:    49 * time.Millisecond,
			sentBefore: 0,
			release:    time.Millisecond,
			wantSizes:  []int{3},
		},
		{
			name:       "full batches go, the rest waits for MaxWait",
			cfg:        Config{MaxBatch: 4, MaxWait: time.Second},
			n:          10,
			holdFor:    999 * time.Millisecond,
			sentBefore: 8,
			release:    time.Millisecond,
			wantSizes:  []int{2, 4, 4},
		},
		{
			name:      "zero MaxWait sends each request alone",
			cfg:       Config{MaxBatch: 8},
			n:         3,
			wantSizes: []int{1, 1, 1},
		},
		{
			name:      "MaxBatch capped at MaxInFlight",
			cfg:       Config{MaxBatch: 8, MaxInFlight: 2, MaxWait: time.Hour},
			n:         4,
			wantSizes: []int{2, 2},
		},
		{
			name:      "MaxBatch capped at Burst",
			cfg:       Config{MaxBatch: 8, MaxInFlight: 8, MaxWait: time.Hour, RateLimit: 1000, Burst: 3},
			n:         6,
			release:   time.Second, // refills the bucket for the second batch
			wantSizes: []int{3, 3},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkGoroutines(t)
			clk := newFakeClock()
			be := &fakeBackend{}
			tc.cfg.Clock = clk
			b := newTestBatcher(t, be, tc.cfg)
			var chans []<-chan result
			for i := range tc.n {
				chans = append(chans, enrollAsync(context.Background(), b, fmt.Sprintf("U%03d", i)))
			}
			waitFor(t, "requests queued or sent", func() bool {
				m := b.Metrics()
				return m.Queued+m.Requests == int64(tc.n)
			})
			if tc.holdFor > 0 {
				clk.Advance(tc.holdFor)
				time.Sleep(20 * time.Millisecond) // a wrongly early batch would show now
				if got := b.Metrics().Requests; got != tc.sentBefore {
					t.Fatalf("after %v: %d requests sent, want %d", tc.holdFor, got, tc.sentBefore)
				}
			}
			clk.Advance(tc.release)
			for _, ch := range chans {
				checkOK(t, await(t, ch))
			}
			if got := be.sizes(); !slices.Equal(got, tc.wantSizes) {
				t.Errorf("batch sizes %v, want %v", got, tc.wantSizes)
			}
			m := b.Metrics()
			checkCounts(t, m)
			if m.Requests != int64(tc.n) || m.Succeeded != int64(tc.n) {
				t.Errorf("Requests = %d, Succeeded = %d, want %d", m.Requests, m.Succeeded, tc.n)
			}
		})
	}
}

func TestBatchClosesAtMaxWaitRealClock(t *testing.T) {
	checkGoroutines(t)
	const maxWait = 100 * time.Millisecond
	be := &fakeBackend{}
	b := newTestBatcher(t, be, Config{MaxBatch: 10, MaxWait: maxWait})
	start := time.Now()
	r := await(t, enrollAsync(context.Background(), b, "U1"))
	checkOK(t, r)
	if took := time.Since(start); took < maxWait {
		t.Errorf("lone request answered after %v, before MaxWait %v", took, maxWait)
	}
	if got := be.sizes(); !slices.Equal(got, []int{1}) {
		t.Errorf("batch sizes %v, want [1]", got)
	}
}

func TestInFlightBound(t *testing.T) {
	tests := []struct {
		name        string
		maxInFlight int
		maxBatch    int
		fanOut      int
	}{
		{name: "one at a time", maxInFlight: 1, maxBatch: 4, fanOut: 64},
		{name: "8 in flight, batches of 4", maxInFlight: 8, maxBatch: 4, fanOut: 64},
		{name: "32 in flight, batches of 16", maxInFlight: 32, maxBatch: 16, fanOut: 64},
	}
	const callers = 256
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkGoroutines(t)
			se := &fakeSingle{delay: 200 * time.Microsecond}
			obs := newObserved()
			b := newTestBatcher(t, FanOut(se, tc.fanOut), obs.with(Config{
				MaxBatch: tc.maxBatch, MaxWait: time.Millisecond, MaxInFlight: tc.maxInFlight,
			}))
			var wg sync.WaitGroup
			errs := make(chan error, callers)
			for i := range callers {
				wg.Go(func() {
					serial := fmt.Sprintf("U%03d", i)
					resp, err := b.Enroll(context.Background(), Request{CSR: []byte(serial), Serial: serial})
					switch {
					case err != nil:
						errs <- err
					case serialOf(resp.Leaf) != serial:
						errs <- fmt.Errorf("%s got certificate for %s", serial, serialOf(resp.Leaf))
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if got := se.maxConcurrent(); got > tc.maxInFlight {
				t.Errorf("CA saw %d concurrent requests, MaxInFlight %d", got, tc.maxInFlight)
			}
			m := b.Metrics()
			if m.MaxInFlight > int64(tc.maxInFlight) || m.MaxInFlight < 1 {
				t.Errorf("Metrics.MaxInFlight = %d, want 1..%d", m.MaxInFlight, tc.maxInFlight)
			}
			if m.InFlight != 0 {
				t.Errorf("Metrics.InFlight = %d after all returned", m.InFlight)
			}
			if m.Requests != callers || se.calls() != callers {
				t.Errorf("Requests = %d, CA calls = %d, want %d", m.Requests, se.calls(), callers)
			}
			checkCounts(t, m)
			obs.check(t, m, tc.maxBatch)
		})
	}
}

func TestRateLimit(t *testing.T) {
	tests := []struct {
		name     string
		rate     float64
		burst    int
		maxBatch int
		n        int
	}{
		{name: "10/s burst 2, single requests", rate: 10, burst: 2, maxBatch: 1, n: 12},
		{name: "8/s burst 4, batches of 4", rate: 8, burst: 4, maxBatch: 4, n: 16},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkGoroutines(t)
			clk := newFakeClock()
			be := &fakeBackend{clk: clk}
			b := newTestBatcher(t, be, Config{
				MaxBatch: tc.maxBatch, MaxWait: 0, MaxInFlight: 64,
				RateLimit: tc.rate, Burst: tc.burst, Clock: clk,
			})
			t0 := clk.Now()
			var chans []<-chan result
			for i := range tc.n {
				chans = append(chans, enrollAsync(context.Background(), b, fmt.Sprintf("U%03d", i)))
			}
			deadline := time.Now().Add(20 * time.Second)
			for b.Metrics().Succeeded < int64(tc.n) {
				if time.Now().After(deadline) {
					t.Fatalf("only %d of %d answered", b.Metrics().Succeeded, tc.n)
				}
				clk.Advance(10 * time.Millisecond)
				time.Sleep(200 * time.Microsecond)
			}
			for _, ch := range chans {
				checkOK(t, await(t, ch))
			}
			be.mu.Lock()
			times := slices.Clone(be.times)
			be.mu.Unlock()
			slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
			// In any window [t0, t] at most burst + rate*(t-t0) requests.
			for i := range times {
				allowed := float64(tc.burst) + tc.rate*times[i].Sub(t0).Seconds() + 1e-9
				if float64(i+1) > allowed {
					t.Fatalf("request %d sent at +%v: %d requests, bucket allows %.2f",
						i+1, times[i].Sub(t0), i+1, allowed)
				}
			}
			minSpan := time.Duration(float64(tc.n-tc.burst) / tc.rate * float64(time.Second))
			if span := times[len(times)-1].Sub(t0); span < minSpan {
				t.Errorf("all %d requests sent within %v, rate allows no less than %v", tc.n, span, minSpan)
			}
			if got := b.Metrics().Rate; got != tc.rate {
				t.Errorf("Metrics.Rate = %v, want %v", got, tc.rate)
			}
		})
	}
}

func TestBackoff429ThenRecovery(t *testing.T) {
	checkGoroutines(t)
	clk := newFakeClock()
	be := &fakeBackend{}
	b := newTestBatcher(t, be, Config{
		MaxBatch: 1, RateLimit: 100, Burst: 10, Clock: clk,
		Backoff429: BackoffConfig{Factor: 0.5, MinRate: 20, Step: 10, Interval: time.Second},
	})
	enroll := func(serial string) result {
		t.Helper()
		return await(t, enrollAsync(context.Background(), b, serial))
	}
	rate := func() float64 { return b.Metrics().Rate }

	be.setFail(func(Request) error { return errRateLimited() })
	steps := []struct {
		name    string
		advance time.Duration
		want    float64
	}{
		{name: "first 429 halves the rate", want: 50},
		{name: "429 within the interval does not lower it again", want: 50},
		{name: "429 a second later halves it", advance: time.Second, want: 25},
		{name: "floor at MinRate", advance: time.Second, want: 20},
	}
	for _, s := range steps {
		clk.Advance(s.advance)
		if r := enroll("U"); r.err == nil || DefaultClassify(r.err) != ClassRateLimited {
			t.Fatalf("%s: Enroll error %v, want the rate-limited answer", s.name, r.err)
		}
		if got := rate(); got != s.want {
			t.Fatalf("%s: rate %v, want %v", s.name, got, s.want)
		}
	}
	if got := b.Metrics().RateLimited; got != int64(len(steps)) {
		t.Errorf("RateLimited = %d, want %d", got, len(steps))
	}

	be.setFail(nil)
	checkOK(t, enroll("U-same-instant")) // less than Interval since the last change
	if got := rate(); got != 20 {
		t.Fatalf("rate raised to %v within the interval", got)
	}
	want := 20.0
	for want < 100 {
		clk.Advance(time.Second)
		checkOK(t, enroll("U"))
		want = min(want+10, 100)
		if got := rate(); got != want {
			t.Fatalf("recovery: rate %v, want %v", got, want)
		}
	}
	clk.Advance(time.Second)
	checkOK(t, enroll("U"))
	if got := rate(); got != 100 {
		t.Errorf("rate %v after recovery, want the configured 100", got)
	}

	b.NoteRateLimited() // a 429 the client retried on its own
	if got := rate(); got != 50 {
		t.Errorf("NoteRateLimited: rate %v, want 50", got)
	}
}

func TestCancel(t *testing.T) {
	tests := []struct {
		name     string
		inFlight int // MaxInFlight; 0 means 4
		run      func(t *testing.T, clk *fakeClock, be *fakeBackend, b *Batcher)
	}{
		{
			name: "gathering batch, the other request still goes",
			run: func(t *testing.T, clk *fakeClock, be *fakeBackend, b *Batcher) {
				ctx, cancel := context.WithCancel(context.Background())
				a := enrollAsync(ctx, b, "A")
				other := enrollAsync(context.Background(), b, "B")
				waitFor(t, "2 queued", func() bool { return b.Metrics().Queued == 2 })
				cancel()
				r := await(t, a)
				if !errors.Is(r.err, context.Canceled) {
					t.Fatalf("cancelled Enroll: %v, want context.Canceled", r.err)
				}
				if m := b.Metrics(); m.Queued != 1 || m.Cancelled != 1 {
					t.Fatalf("Queued = %d, Cancelled = %d, want 1, 1", m.Queued, m.Cancelled)
				}
				clk.Advance(time.Second)
				checkOK(t, await(t, other))
				if got := be.seen(); !slices.Equal(got, []string{"B"}) {
					t.Errorf("backend saw %v, want [B]", got)
				}
			},
		},
		{
			name: "lone request: the batch is never sent",
			run: func(t *testing.T, clk *fakeClock, be *fakeBackend, b *Batcher) {
				ctx, cancel := context.WithCancel(context.Background())
				a := enrollAsync(ctx, b, "A")
				waitFor(t, "1 queued", func() bool { return b.Metrics().Queued == 1 })
				cancel()
				if r := await(t, a); !errors.Is(r.err, context.Canceled) {
					t.Fatalf("cancelled Enroll: %v, want context.Canceled", r.err)
				}
				waitFor(t, "MaxWait timer stopped", func() bool { return clk.Timers() == 0 })
				clk.Advance(time.Second)
				time.Sleep(20 * time.Millisecond)
				if n := be.calls(); n != 0 {
					t.Errorf("backend called with %d requests", n)
				}
				// The batcher still works.
				c := enrollAsync(context.Background(), b, "C")
				waitFor(t, "1 queued", func() bool { return b.Metrics().Queued == 1 })
				clk.Advance(time.Second)
				checkOK(t, await(t, c))
			},
		},
		{
			name:     "closed batch waiting for an in-flight slot is not sent",
			inFlight: 1, // so also MaxBatch 1: batches close at once
			run: func(t *testing.T, clk *fakeClock, be *fakeBackend, b *Batcher) {
				be.gate = make(chan struct{})
				be.entered = make(chan struct{}, 4)
				x := enrollAsync(context.Background(), b, "X")
				<-be.entered // X went at once and holds the only slot
				ctx, cancel := context.WithCancel(context.Background())
				a := enrollAsync(ctx, b, "A")
				// A's batch is closed (MaxBatch 1) and waits for the slot.
				waitFor(t, "A queued", func() bool { return b.Metrics().Queued == 1 })
				time.Sleep(10 * time.Millisecond)
				cancel()
				if r := await(t, a); !errors.Is(r.err, context.Canceled) {
					t.Fatalf("cancelled Enroll: %v, want context.Canceled", r.err)
				}
				close(be.gate)
				checkOK(t, await(t, x))
				checkOK(t, await(t, enrollAsync(context.Background(), b, "C")))
				if got := be.seen(); !slices.Equal(got, []string{"X", "C"}) {
					t.Errorf("backend saw %v, want [X C]", got)
				}
			},
		},
		{
			name: "deadline while gathering",
			run: func(t *testing.T, clk *fakeClock, be *fakeBackend, b *Batcher) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
				defer cancel()
				r := await(t, enrollAsync(ctx, b, "A"))
				if !errors.Is(r.err, context.DeadlineExceeded) {
					t.Fatalf("Enroll: %v, want context.DeadlineExceeded", r.err)
				}
				clk.Advance(time.Second)
				time.Sleep(20 * time.Millisecond)
				if n := be.calls(); n != 0 {
					t.Errorf("backend called with %d requests", n)
				}
			},
		},
		{
			name: "after send: returns at once, the backend call is cancelled",
			run: func(t *testing.T, clk *fakeClock, be *fakeBackend, b *Batcher) {
				be.gate = make(chan struct{})
				be.entered = make(chan struct{}, 1)
				ctx, cancel := context.WithCancel(context.Background())
				a := enrollAsync(ctx, b, "A")
				waitFor(t, "A queued", func() bool { return b.Metrics().Queued == 1 })
				clk.Advance(time.Second)
				<-be.entered
				cancel()
				if r := await(t, a); !errors.Is(r.err, context.Canceled) {
					t.Fatalf("Enroll: %v, want context.Canceled", r.err)
				}
				waitFor(t, "backend call cancelled", func() bool {
					be.mu.Lock()
					defer be.mu.Unlock()
					return be.ctxDone == 1
				})
				waitFor(t, "in-flight back to 0", func() bool { return b.Metrics().InFlight == 0 })
				m := b.Metrics()
				if m.Abandoned != 1 || m.Cancelled != 0 {
					t.Errorf("Abandoned = %d, Cancelled = %d, want 1, 0", m.Abandoned, m.Cancelled)
				}
				if m.Breaker != BreakerClosed {
					t.Errorf("breaker %v after a cancelled call, want closed", m.Breaker)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkGoroutines(t)
			clk := newFakeClock()
			be := &fakeBackend{}
			b := newTestBatcher(t, be, Config{
				MaxBatch: 4, MaxWait: time.Second, MaxInFlight: cmp.Or(tc.inFlight, 4), Clock: clk,
				Breaker: BreakerConfig{FailureThreshold: 1},
			})
			tc.run(t, clk, be, b)
			checkCounts(t, b.Metrics())
		})
	}
}

func TestBreaker(t *testing.T) {
	checkGoroutines(t)
	clk := newFakeClock()
	be := &fakeBackend{}
	b := newTestBatcher(t, be, Config{
		MaxBatch: 1, Clock: clk,
		Breaker: BreakerConfig{FailureThreshold: 3, OpenFor: 10 * time.Second, HalfOpenProbes: 1},
	})
	type mode int
	const (
		ok mode = iota
		unavailable
		rejected
	)
	steps := []struct {
		name      string
		advance   time.Duration
		ca        mode
		wantErr   func(error) bool
		wantCalls int // backend requests so far
		wantState BreakerState
	}{
		{name: "failure 1", ca: unavailable, wantErr: isUnavailable, wantCalls: 1, wantState: BreakerClosed},
		{name: "a rejection is an answer: resets the count", ca: rejected, wantErr: isPermanent, wantCalls: 2, wantState: BreakerClosed},
		{name: "failure 1 again", ca: unavailable, wantErr: isUnavailable, wantCalls: 3, wantState: BreakerClosed},
		{name: "failure 2", ca: unavailable, wantErr: isUnavailable, wantCalls: 4, wantState: BreakerClosed},
		{name: "failure 3 opens", ca: unavailable, wantErr: isUnavailable, wantCalls: 5, wantState: BreakerOpen},
		{name: "open: fails fast", ca: ok, wantErr: isCircuitOpen, wantCalls: 5, wantState: BreakerOpen},
		{name: "still open before OpenFor", advance: 9 * time.Second, ca: ok, wantErr: isCircuitOpen, wantCalls: 5, wantState: BreakerOpen},
		{name: "failed probe opens again", advance: time.Second, ca: unavailable, wantErr: isUnavailable, wantCalls: 6, wantState: BreakerOpen},
		{name: "open again: fails fast", advance: 5 * time.Second, ca: ok, wantErr: isCircuitOpen, wantCalls: 6, wantState: BreakerOpen},
		{name: "successful probe closes", advance: 5 * time.Second, ca: ok, wantErr: isNil, wantCalls: 7, wantState: BreakerClosed},
		{name: "closed: requests flow", ca: ok, wantErr: isNil, wantCalls: 8, wantState: BreakerClosed},
	}
	for _, s := range steps {
		clk.Advance(s.advance)
		switch s.ca {
		case ok:
			be.setFail(nil)
		case unavailable:
			be.setFail(func(Request) error { return errUnavailable() })
		case rejected:
			be.setFail(func(Request) error { return errRejected() })
		}
		r := await(t, enrollAsync(context.Background(), b, "U"))
		if !s.wantErr(r.err) {
			t.Fatalf("%s: Enroll error %v", s.name, r.err)
		}
		if got := be.calls(); got != s.wantCalls {
			t.Fatalf("%s: backend requests %d, want %d", s.name, got, s.wantCalls)
		}
		if got := b.Metrics().Breaker; got != s.wantState {
			t.Fatalf("%s: breaker %v, want %v", s.name, got, s.wantState)
		}
	}
	m := b.Metrics()
	if m.CircuitOpen != 3 {
		t.Errorf("CircuitOpen = %d, want 3", m.CircuitOpen)
	}
	checkCounts(t, m)
}

func isNil(err error) bool         { return err == nil }
func isCircuitOpen(err error) bool { return errors.Is(err, ErrCircuitOpen) }
func isUnavailable(err error) bool { return DefaultClassify(err) == ClassUnavailable }
func isPermanent(err error) bool   { return DefaultClassify(err) == ClassPermanent }

func TestBreakerHalfOpenLetsOneProbeThrough(t *testing.T) {
	checkGoroutines(t)
	clk := newFakeClock()
	be := &fakeBackend{}
	be.setFail(func(Request) error { return errUnavailable() })
	b := newTestBatcher(t, be, Config{
		MaxBatch: 1, MaxInFlight: 4, Clock: clk,
		Breaker: BreakerConfig{FailureThreshold: 1, OpenFor: time.Second, HalfOpenProbes: 1},
	})
	if r := await(t, enrollAsync(context.Background(), b, "F")); !isUnavailable(r.err) {
		t.Fatalf("Enroll: %v, want unavailable", r.err)
	}
	clk.Advance(time.Second)

	// A probe whose caller gives up before it is sent frees its slot.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Enroll(ctx, Request{Serial: "gone"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Enroll with a done ctx: %v", err)
	}

	be.setFail(nil)
	be.gate = make(chan struct{})
	be.entered = make(chan struct{}, 1)
	probe := enrollAsync(context.Background(), b, "P")
	<-be.entered
	if got := b.Metrics().Breaker; got != BreakerHalfOpen {
		t.Fatalf("breaker %v while the probe runs, want half-open", got)
	}
	r := await(t, enrollAsync(context.Background(), b, "Q"))
	if !errors.Is(r.err, ErrCircuitOpen) {
		t.Fatalf("second request while half-open: %v, want ErrCircuitOpen", r.err)
	}
	close(be.gate)
	checkOK(t, await(t, probe))
	if got := b.Metrics().Breaker; got != BreakerClosed {
		t.Fatalf("breaker %v after a successful probe, want closed", got)
	}
	checkOK(t, await(t, enrollAsync(context.Background(), b, "R")))
	if got := be.seen(); !slices.Equal(got, []string{"F", "P", "R"}) {
		t.Errorf("backend saw %v, want [F P R]", got)
	}
}

func TestBreakerFailsQueuedRequests(t *testing.T) {
	checkGoroutines(t)
	clk := newFakeClock()
	be := &fakeBackend{gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	be.setFail(func(Request) error { return errUnavailable() })
	b := newTestBatcher(t, be, Config{
		MaxBatch: 1, MaxInFlight: 1, Clock: clk,
		Breaker: BreakerConfig{FailureThreshold: 1, OpenFor: time.Minute},
	})
	first := enrollAsync(context.Background(), b, "A")
	<-be.entered
	queued := enrollAsync(context.Background(), b, "B") // waits for the slot
	waitFor(t, "B queued", func() bool { return b.Metrics().Queued == 1 })
	close(be.gate)
	if r := await(t, first); !isUnavailable(r.err) {
		t.Fatalf("first: %v, want unavailable", r.err)
	}
	if r := await(t, queued); !errors.Is(r.err, ErrCircuitOpen) {
		t.Fatalf("queued behind the failure: %v, want ErrCircuitOpen", r.err)
	}
	if got := be.seen(); !slices.Equal(got, []string{"A"}) {
		t.Errorf("backend saw %v, want [A]", got)
	}
	checkCounts(t, b.Metrics())
}

func TestClose(t *testing.T) {
	t.Run("drains the gathering batch at once", func(t *testing.T) {
		checkGoroutines(t)
		clk := newFakeClock()
		be := &fakeBackend{}
		b := New("ca", be, Config{MaxBatch: 10, MaxWait: time.Hour, Clock: clk})
		var chans []<-chan result
		for i := range 3 {
			chans = append(chans, enrollAsync(context.Background(), b, fmt.Sprintf("U%d", i)))
		}
		waitFor(t, "3 queued", func() bool { return b.Metrics().Queued == 3 })
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Fatalf("Close: %v", err)
		}
		for _, ch := range chans {
			checkOK(t, await(t, ch))
		}
		if _, err := b.Enroll(context.Background(), Request{Serial: "late"}); !errors.Is(err, ErrClosed) {
			t.Errorf("Enroll after Close: %v, want ErrClosed", err)
		}
		if err := b.Close(ctx); err != nil {
			t.Errorf("second Close: %v", err)
		}
		checkCounts(t, b.Metrics())
	})
	t.Run("deadline cancels the backend and drops queued requests", func(t *testing.T) {
		checkGoroutines(t)
		be := &fakeBackend{gate: make(chan struct{}), entered: make(chan struct{}, 1)}
		b := New("ca", be, Config{MaxBatch: 1, MaxInFlight: 1})
		inFlight := enrollAsync(context.Background(), b, "A")
		<-be.entered
		queued := enrollAsync(context.Background(), b, "B")
		waitFor(t, "B queued", func() bool { return b.Metrics().Queued == 1 })
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := b.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Close: %v, want context.DeadlineExceeded", err)
		}
		if r := await(t, inFlight); !errors.Is(r.err, context.Canceled) {
			t.Errorf("in-flight request: %v, want the backend's context.Canceled", r.err)
		}
		if r := await(t, queued); !errors.Is(r.err, ErrClosed) {
			t.Errorf("queued request: %v, want ErrClosed", r.err)
		}
		m := b.Metrics()
		if m.Dropped != 1 || m.Breaker != BreakerClosed {
			t.Errorf("Dropped = %d, breaker %v; want 1, closed", m.Dropped, m.Breaker)
		}
		checkCounts(t, m)
	})
}

func TestMetricsConsistent(t *testing.T) {
	checkGoroutines(t)
	be := &fakeBackend{delay: time.Millisecond}
	be.setFail(func(r Request) error {
		if r.Serial[len(r.Serial)-1] == '7' {
			return errRejected()
		}
		return nil
	})
	obs := newObserved()
	b := newTestBatcher(t, be, obs.with(Config{MaxBatch: 8, MaxWait: 2 * time.Millisecond, MaxInFlight: 16}))
	const callers = 200
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			ctx := context.Background()
			if i%5 == 0 { // some callers give up early, at various points
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, time.Duration(i%7)*time.Millisecond)
				defer cancel()
			}
			_, _ = b.Enroll(ctx, Request{Serial: fmt.Sprintf("U%03d", i)})
		})
	}
	wg.Wait()
	waitFor(t, "in-flight 0", func() bool { return b.Metrics().InFlight == 0 })
	m := b.Metrics()
	checkCounts(t, m)
	if m.Enrolls != callers || m.Queued != 0 {
		t.Errorf("Enrolls = %d, Queued = %d; want %d, 0", m.Enrolls, m.Queued, callers)
	}
	if got := int64(be.calls()); got != m.Requests {
		t.Errorf("backend saw %d requests, Metrics.Requests = %d", got, m.Requests)
	}
	if got := int64(len(be.sizes())); got != m.Batches {
		t.Errorf("backend saw %d batches, Metrics.Batches = %d", got, m.Batches)
	}
	if m.Succeeded+m.Failed != m.Requests {
		t.Errorf("Succeeded+Failed = %d, Requests = %d", m.Succeeded+m.Failed, m.Requests)
	}
	obs.check(t, m, 8)
	t.Logf("metrics: enrolls %d requests %d batches %d cancelled %d abandoned %d failed %d",
		m.Enrolls, m.Requests, m.Batches, m.Cancelled, m.Abandoned, m.Failed)
}

func TestBackendShortAnswer(t *testing.T) {
	checkGoroutines(t)
	b := newTestBatcher(t, backendFunc(func(context.Context, []Request) []Response { return nil }), Config{})
	if _, err := b.Enroll(context.Background(), Request{Serial: "U"}); !errors.Is(err, ErrBadBackend) {
		t.Errorf("Enroll: %v, want ErrBadBackend", err)
	}
}

// backendFunc adapts a function to Backend.
type backendFunc func(context.Context, []Request) []Response

func (f backendFunc) EnrollBatch(ctx context.Context, reqs []Request) []Response { return f(ctx, reqs) }
