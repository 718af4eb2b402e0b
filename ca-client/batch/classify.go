package batch

import (
	"context"
	"errors"
	"net"
)

// Class is how the breaker and the rate limiter see the outcome of one request.
type Class int

const (
	// ClassOK: the CA issued the certificate.
	ClassOK Class = iota
	// ClassPermanent: the CA answered and refused (bad CSR, policy). The CA is
	// healthy: this resets the breaker's failure count.
	ClassPermanent
	// ClassUnavailable: the CA could not be reached or failed (transport error,
	// 5xx, timeout). Consecutive ones open the breaker.
	ClassUnavailable
	// ClassRateLimited: the CA asked us to slow down (HTTP 429 or 503 with
	// Retry-After). The batcher lowers its rate (AIMD).
	ClassRateLimited
)

// String returns the class name used in logs.
func (c Class) String() string {
	switch c {
	case ClassOK:
		return "ok"
	case ClassPermanent:
		return "permanent"
	case ClassUnavailable:
		return "unavailable"
	case ClassRateLimited:
		return "rate-limited"
	default:
		return "unknown"
	}
}

// Classifier maps a backend error (nil for success) to a Class.
type Classifier func(error) Class

// RateLimitedError is implemented by errors that report a CA rate limit.
type RateLimitedError interface{ RateLimited() bool }

// UnavailableError is implemented by errors that report the CA as unavailable.
type UnavailableError interface{ Unavailable() bool }

// TemporaryError is implemented by errors that report a temporary condition;
// DefaultClassify treats them as unavailability.
type TemporaryError interface{ Temporary() bool }

// DefaultClassify is the Classifier used when Config.Classify is nil. In order:
// nil is ClassOK; an error in the chain with RateLimited() true is
// ClassRateLimited; one with Unavailable() or Temporary() true, any net.Error
// (connection refused, reset, timeout; *url.Error too), or
// context.DeadlineExceeded is ClassUnavailable; anything else is
// ClassPermanent.
func DefaultClassify(err error) Class {
	if err == nil {
		return ClassOK
	}
	var rl RateLimitedError
	if errors.As(err, &rl) && rl.RateLimited() {
		return ClassRateLimited
	}
	var un UnavailableError
	if errors.As(err, &un) && un.Unavailable() {
		return ClassUnavailable
	}
	var tmp TemporaryError
	if errors.As(err, &tmp) && tmp.Temporary() {
		return ClassUnavailable
	}
	var ne net.Error // *net.OpError, *url.Error: the CA was not reached
	if errors.As(err, &ne) {
		return ClassUnavailable
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return ClassUnavailable
	}
	return ClassPermanent
}
