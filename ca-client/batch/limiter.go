package batch

import (
	"time"

	"golang.org/x/time/rate"
)

// aimd is the per-CA token bucket with additive-increase/multiplicative-decrease
// reaction to rate-limited answers. The rate.Limiter is safe for concurrent use;
// the AIMD fields are guarded by the Batcher's mutex. A nil *aimd means no limit.
type aimd struct {
	lim          *rate.Limiter
	max          float64
	cfg          BackoffConfig
	lastDecrease time.Time
	lastChange   time.Time
}

func newAIMD(cfg Config) *aimd {
	if cfg.RateLimit <= 0 {
		return nil
	}
	return &aimd{
		lim: rate.NewLimiter(rate.Limit(cfg.RateLimit), cfg.Burst),
		max: cfg.RateLimit,
		cfg: cfg.Backoff429,
	}
}

// rate returns the current rate (0 when unlimited).
func (a *aimd) rate() float64 {
	if a == nil {
		return 0
	}
	return float64(a.lim.Limit())
}

// reserve takes n tokens at now and returns when they are all available.
func (a *aimd) reserve(now time.Time, n int) time.Time {
	if a == nil {
		return now
	}
	at := now
	for n > 0 {
		k := min(n, a.lim.Burst())
		r := a.lim.ReserveN(now, k)
		if !r.OK() { // cannot happen: k <= burst and no max wait
			return at
		}
		if t := now.Add(r.DelayFrom(now)); t.After(at) {
			at = t
		}
		n -= k
	}
	return at
}

// onRateLimited lowers the rate, at most once per Interval. It reports the new
// rate and whether it changed.
func (a *aimd) onRateLimited(now time.Time) (float64, bool) {
	if a == nil {
		return 0, false
	}
	if !a.lastDecrease.IsZero() && now.Sub(a.lastDecrease) < a.cfg.Interval {
		return a.rate(), false
	}
	old := a.rate()
	next := max(old*a.cfg.Factor, a.cfg.MinRate)
	a.lastDecrease, a.lastChange = now, now
	if next == old {
		return old, false
	}
	a.lim.SetLimitAt(now, rate.Limit(next))
	return next, true
}

// onAnswered raises the rate by Step, at most once per Interval, after an
// answer that was not rate-limited. It reports the new rate and whether it
// changed.
func (a *aimd) onAnswered(now time.Time) (float64, bool) {
	if a == nil {
		return 0, false
	}
	old := a.rate()
	if old >= a.max || now.Sub(a.lastChange) < a.cfg.Interval {
		return old, false
	}
	next := min(old+a.cfg.Step, a.max)
	a.lastChange = now
	a.lim.SetLimitAt(now, rate.Limit(next))
	return next, true
}
