package batch

import (
	"time"

	"github.com/devid-station/devid/ca-client/clock"
)

// Clock is the time source of a Batcher: the MaxWait timers, the token bucket,
// the breaker's open period, the AIMD intervals and the latency histogram all
// read it. Implementations must be safe for concurrent use.
type Clock interface {
	clock.Clock
	// NewTimer returns a timer that fires once, d after now.
	NewTimer(d time.Duration) Timer
}

// Timer is a one-shot timer created by a Clock.
type Timer interface {
	// C returns the channel on which the time is delivered when the timer fires.
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it stopped it.
	Stop() bool
}

// realClock is the Clock backed by package time.
type realClock struct{ clock.System }

func (realClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time { return t.t.C }
func (t realTimer) Stop() bool          { return t.t.Stop() }
