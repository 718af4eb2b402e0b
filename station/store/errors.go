package store

import (
	"errors"
	"fmt"
)

// Sentinel errors returned by the Store. Callers test them with errors.Is;
// the typed errors below unwrap to one of them.
var (
	// ErrNotFound reports that a unit, step record, certificate, work order
	// or EK binding does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInvalidArgument reports a malformed serial, step name, fingerprint,
	// work order or certificate. Nothing was written.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrSchemaTooNew reports a store file written by a newer station.
	ErrSchemaTooNew = errors.New("store schema is newer than this station supports")
	// ErrStationMismatch reports a store file that belongs to another station.
	ErrStationMismatch = errors.New("store belongs to another station")
	// ErrEKBoundElsewhere reports an EK already bound to another serial; the
	// returned error is an *EKBoundError naming that serial.
	ErrEKBoundElsewhere = errors.New("EK bound to another serial")
	// ErrEKMismatch reports a unit already bound to a different EK.
	ErrEKMismatch = errors.New("unit bound to a different EK")
	// ErrIntentOpen reports a step whose latest intent has no result yet: the
	// caller must resolve it (EndStep) before beginning the step again.
	ErrIntentOpen = errors.New("step has an open intent")
	// ErrStepEnded reports an EndStep on a step record that already holds a
	// different result.
	ErrStepEnded = errors.New("step already ended with another result")
	// ErrUnitClosed reports a write that needs a unit that is not done or
	// aborted.
	ErrUnitClosed = errors.New("unit is done or aborted")
	// ErrCertBoundElsewhere reports a certificate already recorded for another
	// unit or role.
	ErrCertBoundElsewhere = errors.New("certificate recorded for another unit or role")
	// ErrCertSerialReused reports a different certificate with the same issuer
	// and serial number as one already recorded.
	ErrCertSerialReused = errors.New("issuer and serial number already used by another certificate")
	// ErrWorkOrderExists reports a work order id already used with other
	// content.
	ErrWorkOrderExists = errors.New("work order exists with other content")
	// ErrNotAuthorized reports a serial outside every open work order for the
	// profile, or a provisioned unit without an authorized rework.
	ErrNotAuthorized = errors.New("not authorized")
	// ErrChainBroken reports an audit log whose hash chain does not verify;
	// the returned error is a *ChainBrokenError naming the first bad record.
	ErrChainBroken = errors.New("audit chain broken")
	// ErrNotOnHold reports a hold decision on a unit that is not on hold.
	ErrNotOnHold = errors.New("unit is not on hold")
	// ErrCorrupt reports a store file whose pages are damaged or one of whose
	// records does not decode: Open refuses it, and once such damage is met at
	// run time every later write is refused. The returned error is a
	// *CorruptError.
	ErrCorrupt = errors.New("store file corrupt")
)

// CodeStoreCorrupt is the stable code of a corrupt store file, in every
// CorruptError message.
const CodeStoreCorrupt = "STORE_CORRUPT"

// CorruptError describes a damaged store file. It matches ErrCorrupt with
// errors.Is.
type CorruptError struct {
	// Path is the store file.
	Path string
	// Reason says what was found (the first consistency check failures, the
	// panic bbolt raised on a damaged page, or the record that does not decode).
	Reason string
}

// Error implements error; it starts with CodeStoreCorrupt.
func (e *CorruptError) Error() string {
	return fmt.Sprintf("%s: store file %s is corrupt (%s); restore it from a backup", CodeStoreCorrupt, e.Path, e.Reason)
}

// Unwrap returns ErrCorrupt.
func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// EKBoundError is returned when an EK fingerprint is already bound to another
// serial. It matches ErrEKBoundElsewhere with errors.Is.
type EKBoundError struct {
	// Fingerprint is the EK fingerprint (hex SHA-256 of the EK public key DER).
	Fingerprint string
	// Serial is the serial the EK is bound to.
	Serial string
}

// Error implements error.
func (e *EKBoundError) Error() string {
	return fmt.Sprintf("EK %s bound to serial %q", e.Fingerprint, e.Serial)
}

// Unwrap returns ErrEKBoundElsewhere.
func (e *EKBoundError) Unwrap() error { return ErrEKBoundElsewhere }

// CodeAuditChainBroken is the stable code of an audit chain that does not
// verify, in every ChainBrokenError message.
const CodeAuditChainBroken = "AUDIT_CHAIN_BROKEN"

// ChainBrokenError names the first audit record whose link does not verify,
// or the stored record whose value the chain does not vouch for. It matches
// ErrChainBroken with errors.Is.
type ChainBrokenError struct {
	// Seq is the sequence number of the first record that fails (for a
	// stored value, the record holding its latest digest).
	Seq uint64
	// Bucket and Key name the stored record at fault, when one is.
	Bucket string
	Key    string
	// Reason says what failed (hash, previous hash, sequence, head, a stored
	// value's digest, a checkpoint).
	Reason string
}

// Error implements error; it starts with CodeAuditChainBroken.
func (e *ChainBrokenError) Error() string {
	if e.Bucket != "" {
		return fmt.Sprintf("%s: audit chain broken at seq %d: bucket %s key %s: %s", CodeAuditChainBroken, e.Seq, e.Bucket, printableKey(e.Key), e.Reason)
	}
	return fmt.Sprintf("%s: audit chain broken at seq %d: %s", CodeAuditChainBroken, e.Seq, e.Reason)
}

// printableKey shows a text key as it is and any other (a sequence number)
// in hex.
func printableKey(k string) string {
	for _, r := range k {
		if r < 0x20 || r > 0x7e {
			return fmt.Sprintf("0x%x", k)
		}
	}
	return fmt.Sprintf("%q", k)
}

// Unwrap returns ErrChainBroken.
func (e *ChainBrokenError) Unwrap() error { return ErrChainBroken }

// errorCode maps a refusal to the stable code written in the audit log.
func errorCode(err error) string {
	codes := []struct {
		err  error
		code string
	}{
		{ErrEKBoundElsewhere, "ek_bound_elsewhere"},
		{ErrEKMismatch, "ek_mismatch"},
		{ErrIntentOpen, "intent_open"},
		{ErrStepEnded, "step_ended"},
		{ErrUnitClosed, "unit_closed"},
		{ErrCertBoundElsewhere, "cert_bound_elsewhere"},
		{ErrCertSerialReused, "cert_serial_reused"},
		{ErrWorkOrderExists, "work_order_exists"},
		{ErrNotAuthorized, "not_authorized"},
	}
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return "internal"
}
