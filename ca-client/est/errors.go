package est

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strconv"
)

// Sentinel errors. The station maps them to stable failure codes with errors.Is.
var (
	// ErrRejected means the CA answered with a final, non-retryable refusal
	// (a 4xx other than 408 and 429, or 501). Use errors.As with *RejectedError
	// for the status and the CA's message.
	ErrRejected = errors.New("est: request rejected by the CA")
	// ErrUnavailable means the CA could not be reached or kept failing:
	// transport errors, TLS failures, or 5xx/429/408 answers until the retry
	// budget ran out, or the caller's context ended while waiting.
	ErrUnavailable = errors.New("est: CA unavailable")
	// ErrPendingTimeout means the CA kept answering 202 Accepted until
	// Config.PendingDeadline passed.
	ErrPendingTimeout = errors.New("est: enrollment still pending at deadline")
	// ErrBadResponse means the CA answered 2xx but the answer is unusable:
	// malformed encoding, or an issued certificate that fails verification
	// (wrong key, a CA certificate, no chain to the trust anchors).
	ErrBadResponse = errors.New("est: bad response from the CA")
	// ErrInvalidCSR means the CSR given to Enroll or Reenroll does not parse
	// or its signature does not verify; nothing was sent.
	ErrInvalidCSR = errors.New("est: invalid CSR")
	// ErrNoClientCert means Reenroll was called on a Client configured
	// without a TLS client certificate; nothing was sent.
	ErrNoClientCert = errors.New("est: re-enrollment needs a TLS client certificate")
)

// errBodyTooLarge stops retries: a CA that sends too much is not transient.
// It is returned wrapped in ErrBadResponse.
var errBodyTooLarge = fmt.Errorf("response body exceeds %d bytes", maxBodyLen)

// maxMessageLen bounds RejectedError.Message.
const maxMessageLen = 256

// RejectedError is the error returned when the CA refuses a request. It
// matches ErrRejected with errors.Is.
type RejectedError struct {
	// Status is the HTTP status code of the refusal.
	Status int
	// Message is the CA's response body, reduced to printable ASCII and at
	// most 256 bytes, with any configured secret removed.
	Message string
}

// Error implements error.
func (e *RejectedError) Error() string {
	s := "est: request rejected by the CA: HTTP " + strconv.Itoa(e.Status)
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Is reports whether target is ErrRejected.
func (e *RejectedError) Is(target error) bool { return target == ErrRejected }

// BadResponseError is returned when the CA answered 2xx with something unusable. It matches
// ErrBadResponse with errors.Is. Certificates holds whatever certificates the answer carried:
// a CA that issued a wrong certificate still issued it, and the caller should record it.
type BadResponseError struct {
	// Op is the operation that got the answer.
	Op Op
	// Reason says what is wrong with it.
	Reason string
	// Certificates are the certificates the answer held, if it parsed.
	Certificates []*x509.Certificate
}

// Error implements error.
func (e *BadResponseError) Error() string {
	return "est " + string(e.Op) + ": " + ErrBadResponse.Error() + ": " + e.Reason
}

// Is reports whether target is ErrBadResponse.
func (e *BadResponseError) Is(target error) bool { return target == ErrBadResponse }

// IssuedCertificates returns the certificates the unusable answer carried.
func (e *BadResponseError) IssuedCertificates() []*x509.Certificate { return e.Certificates }
