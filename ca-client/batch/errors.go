package batch

import "errors"

// Sentinel errors returned by a Batcher. Match them with errors.Is.
var (
	// ErrCircuitOpen is returned without contacting the CA while the batcher's
	// circuit breaker is open (or half-open with all probes in use).
	ErrCircuitOpen = errors.New("ca circuit breaker open")
	// ErrClosed is returned by Enroll after Close was called, and for requests
	// that were still queued when a Close deadline cut the drain short.
	ErrClosed = errors.New("batcher closed")
	// ErrBadBackend is the error of a request for which the Backend returned no
	// response (it returned fewer responses than requests).
	ErrBadBackend = errors.New("backend returned no response for request")
)
