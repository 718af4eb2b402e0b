package store

import (
	"strconv"
	"strings"
	"time"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
)

// Status is the workflow status of a unit.
type Status string

// Unit statuses.
const (
	StatusPending Status = "pending"
	StatusRunning Status = "running"
	StatusDone    Status = "done"
	StatusFailed  Status = "failed"
	StatusAborted Status = "aborted"
	// StatusHold: a security check failed (EK, activation, key, CSR, certificate); the unit is
	// not provisioned again until QA or an admin decides (DecideHold): rework or scrap.
	StatusHold Status = "hold"
	// StatusScrapped: QA or an admin scrapped a held unit; nothing reopens it.
	StatusScrapped Status = "scrapped"
)

func (s Status) valid() bool {
	switch s {
	case StatusPending, StatusRunning, StatusDone, StatusFailed, StatusAborted, StatusHold, StatusScrapped:
		return true
	}
	return false
}

// closed reports a status that only an authorized rework reopens (scrapped: nothing does).
func (s Status) closed() bool {
	return s == StatusDone || s == StatusAborted || s == StatusHold || s == StatusScrapped
}

// UnitState is the durable state of one unit. Values are copies: changing one
// changes nothing in the store.
type UnitState struct {
	Serial        string `json:"serial"`
	WorkOrderID   string `json:"work_order_id,omitempty"`
	Profile       string `json:"profile,omitempty"`
	EKFingerprint string `json:"ek_fingerprint,omitempty"` // managed by BindEK
	// EKCertSHA256 is the hex SHA-256 of the EK certificate the unit's EK verification
	// accepted, and FixtureSlot the fixture slot its agent reported then: set by the workflow,
	// kept in the unit's listing row (empty in units written before). UpdateUnit clears both
	// when a rework reopens the unit (reopenUnit): they are recorded again after the rework's
	// EK verification, and stay empty when the rework fails before it.
	EKCertSHA256 string `json:"ek_cert_sha256,omitempty"`
	FixtureSlot  string `json:"fixture_slot,omitempty"`
	CurrentStep  string `json:"current_step,omitempty"`
	Status       Status `json:"status"`
	ErrorCode    string `json:"error_code,omitempty"`
	ErrorMessage string `json:"error_message,omitempty"`
	// Attempts counts every BeginStep of the unit.
	Attempts uint64 `json:"attempts"`
	// Steps summarizes each step by name; managed by BeginStep and EndStep.
	Steps map[string]StepSummary `json:"steps,omitempty"`
	// Keys holds TPM key references by role (e.g. "idevid", "srk", "ldevid").
	Keys map[string]KeyRef `json:"keys,omitempty"`
	// Certificates lists every certificate recorded for the unit; managed by
	// RecordCertificate.
	Certificates []CertRef `json:"certificates,omitempty"`
	// Rework is the pending rework authorization, if any; managed by
	// AuthorizeRework and consumed when a done or aborted unit is reopened.
	Rework *Rework `json:"rework,omitempty"`
	// Reworks lists consumed rework authorizations, oldest first.
	Reworks   []Rework  `json:"reworks,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// StepSummary holds the attempts and timestamps of one step of a unit.
type StepSummary struct {
	Attempts  uint64    `json:"attempts"`
	StartedAt time.Time `json:"started_at"`        // latest attempt
	EndedAt   time.Time `json:"ended_at,omitzero"` // latest ended attempt
	ErrorCode string    `json:"error_code,omitempty"`
}

// KeyRef names a TPM key of a unit.
type KeyRef struct {
	Handle uint32 `json:"handle"`
	Name   []byte `json:"name,omitempty"` // TPM Name (nameAlg || digest)
}

// CertRef points from a unit to a certificate in the certificate index. A unit's
// Certificates are its whole certificate history: nothing is ever removed from it.
type CertRef struct {
	Role       Role   `json:"role"`
	SHA256     string `json:"sha256"`
	IssuerHash string `json:"issuer_hash"`
	SerialHex  string `json:"serial_hex"`
	Duplicate  bool   `json:"duplicate,omitempty"`
	// Status is CertActive, CertSuperseded, CertRefused or CertDuplicate ("" in records
	// written before statuses: read as active, or duplicate when Duplicate is set).
	Status CertStatus `json:"status,omitempty"`
	// Reason explains a status other than active.
	Reason string `json:"reason,omitempty"`
}

// CertStatus is where a certificate of a unit stands.
type CertStatus string

// Certificate statuses.
const (
	// CertActive: the unit holds and uses the certificate.
	CertActive CertStatus = "active"
	// CertSuperseded: a rework replaced the certificate (or its key is gone); revoke it.
	CertSuperseded CertStatus = "superseded"
	// CertRefused: the CA issued it but the station refused it (another key, no chain, ...);
	// it was never installed; revoke it.
	CertRefused CertStatus = "refused"
	// CertDuplicate: issued while another certificate of the same role was active.
	CertDuplicate CertStatus = "duplicate"
)

// Current returns the status of c, reading records written before statuses.
func (c CertRef) Current() CertStatus {
	switch {
	case c.Status != "":
		return c.Status
	case c.Duplicate:
		return CertDuplicate
	}
	return CertActive
}

// RevocationCandidate reports a certificate that was issued but must not stay valid:
// superseded or refused.
func (c CertRef) RevocationCandidate() bool {
	s := c.Current()
	return s == CertSuperseded || s == CertRefused
}

// Rework is an operator's authorization to provision a unit again.
type Rework struct {
	By           string    `json:"by"`
	Reason       string    `json:"reason"`
	AuthorizedAt time.Time `json:"authorized_at"`
	UsedAt       time.Time `json:"used_at,omitzero"`
}

// StepRef names one attempt of one step of a unit.
type StepRef struct {
	Serial  string `json:"serial"`
	Step    string `json:"step"`
	Attempt uint64 `json:"attempt"`
}

// StepRecord is one attempt of a step: the intent written before the side
// effect and the result written after it.
type StepRecord struct {
	StepRef
	Intent    []byte    `json:"intent,omitempty"`
	BeganAt   time.Time `json:"began_at"`
	Ended     bool      `json:"ended"`
	Result    []byte    `json:"result,omitempty"`
	ErrorCode string    `json:"error_code,omitempty"`
	EndedAt   time.Time `json:"ended_at,omitzero"`
}

// Event is an entry of a unit's event log and of the MES outbox.
type Event struct {
	// Seq is the global outbox sequence (the resume token of OutboxAfter).
	Seq uint64 `json:"seq"`
	// UnitSeq is the sequence within the unit's log; 0 for station events.
	UnitSeq uint64    `json:"unit_seq,omitempty"`
	Time    time.Time `json:"time"`
	Serial  string    `json:"serial,omitempty"`
	Type    string    `json:"type"`
	// Principal is who caused the event, as the audit trail names it: "station" or the API
	// caller (WithPrincipal). Empty in events stored before it was recorded.
	Principal string            `json:"principal,omitempty"`
	Step      string            `json:"step,omitempty"`
	Attempt   uint64            `json:"attempt,omitempty"`
	Status    Status            `json:"status,omitempty"`
	ErrorCode string            `json:"error_code,omitempty"`
	Message   string            `json:"message,omitempty"`
	Data      map[string]string `json:"data,omitempty"`
}

// Event types written by the Store: the event kinds of the station API (stationv1.EventKind).
const (
	EventUnitCreated      = stationv1.KindUnitCreated
	EventUnitUpdated      = stationv1.KindUnitUpdated
	EventStepBegun        = stationv1.KindStepBegun
	EventStepEnded        = stationv1.KindStepEnded
	EventEKBound          = stationv1.KindEKBound
	EventEKReleased       = stationv1.KindEKReleased
	EventCertRecorded     = stationv1.KindCertRecorded
	EventCertStatus       = stationv1.KindCertStatus
	EventReworkAuthorized = stationv1.KindReworkAuthorized
	EventHoldDecided      = stationv1.KindHoldDecided
	EventWorkOrderCreated = stationv1.KindWorkOrderCreated
	EventWorkOrderClosed  = stationv1.KindWorkOrderClosed
)

// Audit actions that are not event types.
const (
	auditActionStoreCreate = "store.created"
	auditActionUnitEvent   = "unit.event"
	// AuditActionWrite carries the digests of writes made after a call's
	// audit record, or by a call that audits nothing else.
	AuditActionWrite = "store.write"
	// AuditActionBaseline carries the digests of the records a store held
	// before its writes were covered by the chain (schema 1).
	AuditActionBaseline = "audit.baseline"
	// AuditActionCheckpoint is a signed checkpoint of the chain head.
	AuditActionCheckpoint = "audit.checkpoint"
	// AuditActionOverride records a start despite a failed verification,
	// with the admin's reason.
	AuditActionOverride = "audit.override"
	// AuditActionAPIRefused records API calls refused for authentication or role (see
	// AuditAPIRefusal).
	AuditActionAPIRefused = "api.refused"
)

// Role is the role of a device certificate.
type Role string

// Certificate roles.
const (
	RoleIDevID Role = "IDevID"
	RoleLDevID Role = "LDevID"
	// RoleIAK is the Initial Attestation Key's certificate (a profile with an IAK).
	RoleIAK Role = "IAK"
)

// CertRecord is a certificate in the certificate index.
type CertRecord struct {
	Serial     string `json:"serial"` // unit serial
	Role       Role   `json:"role"`
	SHA256     string `json:"sha256"`      // hex SHA-256 of DER
	IssuerHash string `json:"issuer_hash"` // hex SHA-256 of the raw issuer DN
	SerialHex  string `json:"serial_hex"`  // certificate serial number, hex
	DER        []byte `json:"der"`
	// Chain holds the CA certificates that came with it, issuing CA first (none in records
	// written before chains were kept, or when the certificate came from a reconciliation).
	Chain      [][]byte  `json:"chain,omitempty"`
	RecordedAt time.Time `json:"recorded_at"`
	// Duplicate is true when the unit already had another certificate for
	// the same role when this one was recorded (e.g. a retried enrollment
	// whose first answer was lost).
	Duplicate bool `json:"duplicate,omitempty"`
}

// WorkOrderStatus is the status of a work order.
type WorkOrderStatus string

// Work order statuses.
const (
	WorkOrderOpen   WorkOrderStatus = "open"
	WorkOrderClosed WorkOrderStatus = "closed"
)

// WorkOrder authorizes provisioning a set of serials with one profile. The
// set is either Serials or Range, not both.
type WorkOrder struct {
	ID        string          `json:"id"`
	Profile   string          `json:"profile"`
	Serials   []string        `json:"serials,omitempty"`
	Range     *SerialRange    `json:"range,omitempty"`
	Status    WorkOrderStatus `json:"status"`
	CreatedBy string          `json:"created_by"`
	CreatedAt time.Time       `json:"created_at"`
	ClosedBy  string          `json:"closed_by,omitempty"`
	ClosedAt  time.Time       `json:"closed_at,omitzero"`
}

// SerialRange is the serials Prefix + a decimal number in [From, To],
// zero-padded to Width digits (Width 0: no padding, no leading zeros).
type SerialRange struct {
	Prefix string `json:"prefix"`
	From   uint64 `json:"from"`
	To     uint64 `json:"to"`
	Width  int    `json:"width,omitempty"`
}

// Contains reports whether serial is in the range.
func (r SerialRange) Contains(serial string) bool {
	digits, ok := strings.CutPrefix(serial, r.Prefix)
	if !ok || digits == "" {
		return false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return false
		}
	}
	if r.Width > 0 && len(digits) != r.Width {
		return false
	}
	if r.Width == 0 && len(digits) > 1 && digits[0] == '0' {
		return false
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	return err == nil && n >= r.From && n <= r.To
}

// Contains reports whether serial belongs to the work order.
func (w WorkOrder) Contains(serial string) bool {
	if w.Range != nil {
		return w.Range.Contains(serial)
	}
	for _, s := range w.Serials {
		if s == serial {
			return true
		}
	}
	return false
}

// AuditEvent is one record of the station's audit log. Hash is SHA-256 over
// the canonical encoding of every other field, PrevHash included.
type AuditEvent struct {
	Seq          uint64            `json:"seq"`
	Time         time.Time         `json:"time"`
	StationID    string            `json:"station_id"`
	Principal    string            `json:"principal"`
	Serial       string            `json:"serial,omitempty"`
	Action       string            `json:"action"`
	Result       string            `json:"result"` // "ok" or "error"
	ErrorCode    string            `json:"error_code,omitempty"`
	Details      map[string]string `json:"details,omitempty"`
	Fingerprints []string          `json:"fingerprints,omitempty"`
	// Writes are the digests of every key/value the record's call wrote
	// (recorded on the call's last audit record).
	Writes   []WriteDigest `json:"writes,omitempty"`
	PrevHash []byte        `json:"prev_hash"`
	Hash     []byte        `json:"hash"`
	// Encoding is the canonical encoding Hash covers: AuditEncodingV2 for records written
	// from schema 4 on, 0 (v1) before.
	Encoding int `json:"encoding,omitempty"`
}

// AuditEncodingV2 is the canonical encoding of the audit records written from schema 4 on:
// lengths and counts as uvarints, and each write digest naming its bucket by a short id
// (writeBuckets) and eliding the record's serial from its key (see appendBodyV2).
const AuditEncodingV2 = 2

// WriteDigest is one key/value a call wrote: where, and the SHA-256 of the
// value (empty when the key was deleted).
type WriteDigest struct {
	// Bucket is the bucket path from the top, names joined by "/".
	Bucket string `json:"b"`
	Key    []byte `json:"k"`
	SHA256 []byte `json:"h,omitempty"`
	// Had says the key held a value before the write.
	Had bool `json:"had,omitempty"`
}

// Audit results.
const (
	ResultOK    = "ok"
	ResultError = "error"
)

// ChainHead is the last record of the audit chain: exports carry it so that
// tampering with an exported log shows.
type ChainHead struct {
	Seq  uint64 `json:"seq"`
	Hash []byte `json:"hash"`
}
