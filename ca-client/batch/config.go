package batch

import (
	"log/slog"
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// discard is the Observer of measurements nobody collects.
var discard = prometheus.ObserverFunc(func(float64) {})

// Config tunes a Batcher. The zero value is usable: every request is sent at
// once (set MaxWait to gather batches of up to MaxBatch = 16), at most 16
// requests in flight, no rate limit, and a breaker that opens for 30 s after 5
// consecutive unavailability failures.
type Config struct {
	// MaxBatch is the largest number of requests handed to the Backend in one
	// batch (default 16). It is capped at MaxInFlight and, with a RateLimit,
	// at Burst, so one batch never needs more slots or tokens than can exist.
	MaxBatch int
	// MaxWait is how long a batch gathers requests after its first one before
	// it is sent even if not full. Zero sends every request at once (batches
	// then hold one request).
	MaxWait time.Duration
	// MaxInFlight bounds the requests being processed by the Backend at once,
	// across batches (default 16).
	MaxInFlight int
	// RateLimit is the sustained number of requests per second sent to the CA
	// (token bucket); zero or less means no limit. Burst is the bucket size
	// (default MaxBatch).
	RateLimit float64
	Burst     int
	// Backoff429 lowers the rate when the CA answers "rate limited" and
	// raises it back; it is active only with a RateLimit.
	Backoff429 BackoffConfig
	// Breaker configures the circuit breaker.
	Breaker BreakerConfig
	// Classify maps backend errors to a Class; nil means DefaultClassify.
	Classify Classifier
	// Clock is the time source; nil means the system clock.
	Clock Clock
	// Logger receives state changes (breaker, rate); nil means silence.
	Logger *slog.Logger
	// Latency observes, in seconds, the time from Enroll to the Backend's
	// answer of every answered request whose caller still waited; BatchSize
	// observes the size of every batch handed to the Backend. Nil discards.
	Latency, BatchSize prometheus.Observer
}

// BackoffConfig is the AIMD (additive increase, multiplicative decrease)
// reaction to rate-limited answers.
type BackoffConfig struct {
	// Factor multiplies the current rate on a rate-limited answer (default 0.5).
	Factor float64
	// MinRate is the floor of the rate, requests per second (default
	// RateLimit/32).
	MinRate float64
	// Step is added to the rate, up to RateLimit, once per Interval while
	// answers are not rate-limited (default RateLimit/10).
	Step float64
	// Interval is the least time between two decreases and between two
	// increases (default 1 s): one burst of 429s lowers the rate once.
	Interval time.Duration
}

// BreakerConfig configures the circuit breaker in front of the CA.
type BreakerConfig struct {
	// FailureThreshold is the number of consecutive unavailability failures
	// that opens the breaker (default 5; negative disables the breaker).
	FailureThreshold int
	// OpenFor is how long the breaker stays open before it lets probes
	// through (default 30 s).
	OpenFor time.Duration
	// HalfOpenProbes is the number of requests let through after OpenFor
	// (default 1). The first answer from the CA closes the breaker; an
	// unavailability failure opens it again.
	HalfOpenProbes int
}

// withDefaults returns cfg with every unset field given its default value and
// the caps on MaxBatch applied.
func (cfg Config) withDefaults() Config {
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 16
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 16
	}
	cfg.MaxBatch = min(cfg.MaxBatch, cfg.MaxInFlight)
	if cfg.MaxWait < 0 {
		cfg.MaxWait = 0
	}
	if cfg.RateLimit > 0 && !math.IsInf(cfg.RateLimit, 1) {
		if cfg.Burst <= 0 {
			cfg.Burst = cfg.MaxBatch
		}
		cfg.MaxBatch = min(cfg.MaxBatch, cfg.Burst)
		b := &cfg.Backoff429
		if b.Factor <= 0 || b.Factor >= 1 {
			b.Factor = 0.5
		}
		if b.MinRate <= 0 {
			b.MinRate = cfg.RateLimit / 32
		}
		b.MinRate = min(b.MinRate, cfg.RateLimit)
		if b.Step <= 0 {
			b.Step = cfg.RateLimit / 10
		}
		if b.Interval <= 0 {
			b.Interval = time.Second
		}
	} else {
		cfg.RateLimit = 0
	}
	br := &cfg.Breaker
	if br.FailureThreshold == 0 {
		br.FailureThreshold = 5
	}
	if br.OpenFor <= 0 {
		br.OpenFor = 30 * time.Second
	}
	if br.HalfOpenProbes <= 0 {
		br.HalfOpenProbes = 1
	}
	if cfg.Classify == nil {
		cfg.Classify = DefaultClassify
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Latency == nil {
		cfg.Latency = discard
	}
	if cfg.BatchSize == nil {
		cfg.BatchSize = discard
	}
	return cfg
}
