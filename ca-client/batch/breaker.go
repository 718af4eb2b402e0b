package batch

import "time"

// BreakerState is the state of a Batcher's circuit breaker.
type BreakerState int

const (
	// BreakerClosed: requests flow to the CA.
	BreakerClosed BreakerState = iota
	// BreakerOpen: requests fail fast with ErrCircuitOpen.
	BreakerOpen
	// BreakerHalfOpen: OpenFor has passed; up to HalfOpenProbes requests test
	// the CA, the others fail fast.
	BreakerHalfOpen
)

// String returns "closed", "open" or "half-open".
func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerOpen:
		return "open"
	case BreakerHalfOpen:
		return "half-open"
	default:
		return "unknown"
	}
}

// breaker is a consecutive-failure circuit breaker. Not safe for concurrent
// use: the Batcher guards it with its mutex.
type breaker struct {
	cfg      BreakerConfig
	state    BreakerState
	failures int       // consecutive unavailability failures
	openedAt time.Time // when it last opened
	probes   int       // probes admitted and not yet answered while half-open
}

// allow reports whether a request may go to the CA at now, and whether it goes
// as a half-open probe (which must later be passed to record or release).
func (br *breaker) allow(now time.Time) (ok, probe bool) {
	if br.cfg.FailureThreshold < 0 {
		return true, false
	}
	switch br.state {
	case BreakerClosed:
		return true, false
	case BreakerOpen:
		if now.Sub(br.openedAt) < br.cfg.OpenFor {
			return false, false
		}
		br.state, br.probes = BreakerHalfOpen, 0
	}
	if br.probes < br.cfg.HalfOpenProbes {
		br.probes++
		return true, true
	}
	return false, false
}

// release gives back a probe slot whose request never got a meaningful answer
// (its caller gave up, or the batcher was closed).
func (br *breaker) release(probe bool) {
	if probe && br.state == BreakerHalfOpen && br.probes > 0 {
		br.probes--
	}
}

// record accounts for the CA's answer to one request and returns the new state
// and whether it changed.
func (br *breaker) record(c Class, probe bool, now time.Time) (BreakerState, bool) {
	if br.cfg.FailureThreshold < 0 {
		return br.state, false
	}
	old := br.state
	switch c {
	case ClassUnavailable:
		br.failures++
		switch {
		case br.state == BreakerHalfOpen && probe,
			br.state == BreakerClosed && br.failures >= br.cfg.FailureThreshold:
			br.state, br.openedAt = BreakerOpen, now
		}
	case ClassOK, ClassPermanent, ClassRateLimited:
		// The CA answered. A straggler sent before the breaker opened does
		// not close it: only a probe does.
		switch br.state {
		case BreakerClosed:
			br.failures = 0
		case BreakerHalfOpen:
			if probe {
				br.state, br.failures = BreakerClosed, 0
			}
		}
	}
	return br.state, br.state != old
}
