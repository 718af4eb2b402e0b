package batch

// Metrics is a snapshot of a Batcher's counters. The counts satisfy
// Enrolls == Requests + Queued + Cancelled + CircuitOpen + Dropped. Latency and
// batch sizes are not kept here: they go to the Prometheus observers in Config.
type Metrics struct {
	// Name is the batcher's (CA's) name.
	Name string
	// Enrolls counts Enroll calls.
	Enrolls int64
	// Requests counts requests handed to the Backend.
	Requests int64
	// Queued is the number of requests waiting in a batch not yet sent.
	Queued int64
	// Cancelled counts requests whose caller gave up before they were sent;
	// they never reached the Backend.
	Cancelled int64
	// Abandoned counts requests whose caller gave up after they were sent.
	Abandoned int64
	// CircuitOpen counts requests failed with ErrCircuitOpen without reaching
	// the Backend.
	CircuitOpen int64
	// Dropped counts requests failed with ErrClosed.
	Dropped int64
	// Succeeded and Failed count the Backend's answers, by whether they
	// carried an error.
	Succeeded, Failed int64
	// RateLimited counts answers classified ClassRateLimited plus rate limits
	// reported through NoteRateLimited.
	RateLimited int64
	// Batches counts batches handed to the Backend (their sizes go to
	// Config.BatchSize).
	Batches int64
	// InFlight is the number of requests in the Backend now; MaxInFlight the
	// highest it has been.
	InFlight, MaxInFlight int64
	// Retries is the Backend's retry count, when it implements RetryCounter.
	Retries int64
	// ConnectionsOpened is the Backend's count of connections opened, when it
	// implements ConnCounter.
	ConnectionsOpened int64
	// Breaker is the circuit breaker's state; an open breaker whose OpenFor
	// has passed shows as half-open (the next request will be a probe).
	Breaker BreakerState
	// Rate is the current rate limit in requests per second (0: unlimited).
	Rate float64
}

// RetryCounter is implemented by a Backend that retries and counts its retries.
type RetryCounter interface{ Retries() int64 }

// ConnCounter is implemented by a Backend that counts the connections it
// opened to the CA (see CountingTransport).
type ConnCounter interface{ ConnectionsOpened() int64 }
