// Package clock is the one time source of the station's packages. Clock tells the time; System
// is the real clock. A package that also waits extends Clock with what it needs (est.Clock adds
// After, batch.Clock timers, latency.Clock Sleep), and tests pass fakes of their own.
package clock

import "time"

// Clock tells the time. Implementations must be safe for concurrent use.
type Clock interface {
	Now() time.Time
}

// System is the real clock, package time.
type System struct{}

// Now is time.Now.
func (System) Now() time.Time { return time.Now() }

// After is time.After.
func (System) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Sleep is time.Sleep.
func (System) Sleep(d time.Duration) { time.Sleep(d) }
