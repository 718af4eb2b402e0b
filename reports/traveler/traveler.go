// Package traveler builds a unit's traveler record: the document that follows one serial
// through the line, assembled from what the station's store recorded about it (unit state,
// step records, the certificate index). It reads only.
//
// The record is built from the shapes the workflow journals: the verify_ek step's intent
// carries the agent's identify report (encoding/json of {Info, EKs, Chain, Hello} with the
// generated agentv1 types), its result names the verified EK, the enroll steps' results carry
// the issued certificates, and the verify step's result holds the end-to-end checks.
package traveler

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/devid-station/devid/device-agent/tpm/tcgek"
	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"github.com/devid-station/devid/station/store"
)

// Schema identifies the record format; it changes when a field changes meaning.
const Schema = "devid-station/traveler/v1"

// Step names and keys of the workflow's journal that the record reads. They are stored names
// (station/workflow never renames them), repeated here so that reports do not depend on the
// workflow package.
const (
	stepVerifyEK     = "verify_ek"
	stepIDevIDEnroll = "idevid_enroll"
	stepLDevIDEnroll = "ldevid_enroll"
	stepVerify       = "verify"
	stepComplete     = "complete"
	intentIdentify   = "identify"
)

// Store is what Build reads; *store.Store implements it.
type Store interface {
	StationID() string
	Unit(ctx context.Context, serial string) (store.UnitState, error)
	StepRecords(ctx context.Context, serial string) ([]store.StepRecord, error)
	CertificateBySHA256(ctx context.Context, sha string) (store.CertRecord, error)
	UnitEvents(ctx context.Context, serial string, after uint64, limit int) ([]store.Event, error)
	WorkOrder(ctx context.Context, id string) (store.WorkOrder, error)
}

// Record is a unit's traveler record. Its JSON encoding is the published format (see Schema).
// A Record is a plain value: not safe for concurrent mutation.
type Record struct {
	// Schema is the format identifier, Schema.
	Schema string `json:"schema"`
	// Serial is the unit's serial.
	Serial string `json:"serial"`
	// WorkOrder is the work order the unit was provisioned under.
	WorkOrder string `json:"work_order,omitempty"`
	// WorkOrderCreatedBy is the principal that created the work order, as the audit trail and
	// the event stream name it.
	WorkOrderCreatedBy string `json:"work_order_created_by,omitempty"`
	// Profile is the station profile used.
	Profile string `json:"profile,omitempty"`
	// StationID names the station.
	StationID string `json:"station_id"`
	// Result is the unit's status: done, failed, aborted, hold, scrapped, running or pending.
	Result string `json:"result"`
	// ErrorCode and ErrorMessage explain a failure.
	ErrorCode    string `json:"error_code,omitempty"`
	ErrorMessage string `json:"error_message,omitempty"`
	// Attempts counts workflow attempts (agent sessions that reached EK verification).
	Attempts uint64 `json:"attempts"`
	// StartedAt is the start of the first step of the current provisioning (since the last
	// rework, if any).
	StartedAt *time.Time `json:"started_at,omitempty"`
	// EndedAt is when the unit completed or last failed; absent while it runs.
	EndedAt *time.Time `json:"ended_at,omitempty"`
	// CycleTimeSeconds is EndedAt - StartedAt.
	CycleTimeSeconds float64 `json:"cycle_time_seconds,omitempty"`
	// Steps lists every step attempt, in the order they began.
	Steps []Step `json:"steps"`
	// TPM is what the agent reported about the unit's TPM.
	TPM *TPMInfo `json:"tpm,omitempty"`
	// EK is the verified endorsement key certificate.
	EK *EKCertificate `json:"ek,omitempty"`
	// IDevID and LDevID are the certificates the unit was provisioned with.
	IDevID *Certificate `json:"idevid,omitempty"`
	LDevID *Certificate `json:"ldevid,omitempty"`
	// Certificates lists every certificate ever recorded for the unit, oldest first, with its
	// status (active, superseded, refused, duplicate) and the reason of any other than active.
	Certificates []CertificateRef `json:"certificates,omitempty"`
	// RevocationCandidates lists the superseded and refused certificates: issued by a CA, not
	// (or no longer) in use.
	RevocationCandidates []CertificateRef `json:"revocation_candidates,omitempty"`
	// Verification holds the end-to-end checks of the verify step (check name -> "ok").
	Verification map[string]string `json:"verification,omitempty"`
	// Reworks lists the rework authorizations the unit consumed.
	Reworks []store.Rework `json:"reworks,omitempty"`
	// Actions lists what people did to the unit (aborts, rework authorizations, hold
	// decisions), oldest first, each with the principal the audit trail names.
	Actions []Action `json:"actions,omitempty"`
}

// Action is one event of the unit caused by an API caller rather than by the station.
type Action struct {
	Time      time.Time         `json:"time"`
	Principal string            `json:"principal"`
	Kind      string            `json:"kind"`
	Message   string            `json:"message,omitempty"`
	Data      map[string]string `json:"data,omitempty"`
}

// Step is one attempt of one workflow step.
type Step struct {
	Name      string     `json:"name"`
	Attempt   uint64     `json:"attempt"`
	StartedAt time.Time  `json:"started_at"`
	EndedAt   *time.Time `json:"ended_at,omitempty"`
	// DurationMS is EndedAt - StartedAt in milliseconds.
	DurationMS float64 `json:"duration_ms,omitempty"`
	// ErrorCode is set when the attempt failed or was interrupted.
	ErrorCode string `json:"error_code,omitempty"`
}

// TPMInfo is the unit's TPM as its agent reported it during identify (claims that the EK
// verification then bound to a genuine TPM).
type TPMInfo struct {
	Manufacturer    string `json:"manufacturer"` // TPM_PT_MANUFACTURER as hex
	ManufacturerID  string `json:"manufacturer_id,omitempty"`
	VendorString    string `json:"vendor_string,omitempty"`
	FirmwareVersion string `json:"firmware_version,omitempty"` // four 16-bit parts, dotted
	Family          string `json:"family,omitempty"`
	SpecLevel       uint32 `json:"spec_level,omitempty"`
	SpecRevision    uint32 `json:"spec_revision,omitempty"`
	SpecYear        uint32 `json:"spec_year,omitempty"`
	// EKsHeld names every EK type of the TCG EK Credential Profile the TPM holds (its EK
	// handle or EK certificate index is present), e.g. "ECC-P256", "ECC-P384".
	EKsHeld []string `json:"eks_held,omitempty"`
	// EKsRead lists the EK algorithms the station read, in the order it read them.
	EKsRead []string `json:"eks_read,omitempty"`
	// EKUsed names the EK type the station verified and used, from its public area.
	EKUsed       string `json:"ek_used,omitempty"`
	AgentVersion string `json:"agent_version,omitempty"`
	TPMTransport string `json:"tpm_transport,omitempty"`
	SerialSource string `json:"serial_source,omitempty"`
	FixtureSlot  string `json:"fixture_slot,omitempty"`
	BootID       string `json:"boot_id,omitempty"`
}

// EKCertificate is the verified EK certificate.
type EKCertificate struct {
	Algorithm string `json:"algorithm"`
	// Fingerprint is the hex SHA-256 of the EK public key (the store's EK index key).
	Fingerprint  string `json:"ek_fingerprint"`
	Manufacturer string `json:"manufacturer,omitempty"`
	Subject      string `json:"subject"`
	Issuer       string `json:"issuer"`
	SerialNumber string `json:"serial_number"` // hex
	SHA256       string `json:"sha256"`
}

// Certificate is an issued DevID certificate.
type Certificate struct {
	Subject      string    `json:"subject"`
	Issuer       string    `json:"issuer"`
	SerialNumber string    `json:"serial_number"` // hex
	NotBefore    time.Time `json:"not_before"`
	NotAfter     time.Time `json:"not_after"`
	SHA256       string    `json:"sha256"`
	PEM          string    `json:"pem"`
}

// CertificateRef names one certificate recorded for the unit.
type CertificateRef struct {
	Role         string `json:"role"`
	SHA256       string `json:"sha256"`
	Duplicate    bool   `json:"duplicate,omitempty"`
	Status       string `json:"status"`
	Reason       string `json:"reason,omitempty"`
	Issuer       string `json:"issuer,omitempty"`
	SerialNumber string `json:"serial_number,omitempty"` // hex
}

// identify mirrors the workflow's identifyResult: encoding/json of the generated agentv1
// structs, so the field names are the Go names and the nested fields use the generated json
// tags.
type identify struct {
	Info  *agentv1.InfoResult
	EKs   []*agentv1.EndorsementKey
	Chain [][]byte
	Hello *agentv1.Hello
}

// verifyEK mirrors the workflow's verifyEKResult.
type verifyEK struct {
	Algorithm    string `json:"algorithm"`
	Fingerprint  string `json:"ek_fingerprint"`
	CertSHA256   string `json:"ek_cert_sha256"`
	Issuer       string `json:"issuer"`
	Manufacturer string `json:"manufacturer"`
}

// enrollResult mirrors the workflow's enrollResult.
type enrollResult struct {
	Cert []byte `json:"cert"`
}

// verifyResult mirrors the workflow's verifyResult.
type verifyResult struct {
	Checks map[string]string `json:"checks"`
}

// Build assembles the traveler record of serial. It returns an error matching
// store.ErrNotFound when the unit does not exist. Step results that do not decode are
// reported as errors: a traveler never silently omits recorded facts.
func Build(ctx context.Context, st Store, serial string) (*Record, error) {
	u, err := st.Unit(ctx, serial)
	if err != nil {
		return nil, fmt.Errorf("reading unit: %w", err)
	}
	recs, err := st.StepRecords(ctx, serial)
	if err != nil {
		return nil, fmt.Errorf("reading step records: %w", err)
	}
	r := &Record{
		Schema: Schema, Serial: u.Serial, WorkOrder: u.WorkOrderID, Profile: u.Profile,
		StationID: st.StationID(), Result: string(u.Status), ErrorCode: u.ErrorCode,
		ErrorMessage: u.ErrorMessage, Attempts: u.Steps[stepVerifyEK].Attempts,
		Steps: make([]Step, 0, len(recs)), Reworks: u.Reworks,
	}
	var since time.Time // records before the last rework belong to the unit's previous life
	if n := len(u.Reworks); n > 0 {
		since = u.Reworks[n-1].UsedAt
	}
	var start, end time.Time
	last := map[string]*store.StepRecord{} // latest successful attempt per step, current life
	var lastEK *store.StepRecord           // latest verify_ek attempt, ended or not
	for i := range recs {
		rec := &recs[i]
		s := Step{Name: rec.Step, Attempt: rec.Attempt, StartedAt: rec.BeganAt, ErrorCode: rec.ErrorCode}
		if rec.Ended {
			t := rec.EndedAt
			s.EndedAt = &t
			s.DurationMS = float64(rec.EndedAt.Sub(rec.BeganAt).Microseconds()) / 1000
		}
		r.Steps = append(r.Steps, s)
		if rec.BeganAt.Before(since) {
			continue
		}
		if start.IsZero() || rec.BeganAt.Before(start) {
			start = rec.BeganAt
		}
		if rec.Ended && rec.EndedAt.After(end) {
			end = rec.EndedAt
		}
		if rec.Ended && rec.ErrorCode == "" {
			last[rec.Step] = rec
		}
		if rec.Step == stepVerifyEK {
			lastEK = rec
		}
	}
	if !start.IsZero() {
		r.StartedAt = &start
	}
	if u.Status != store.StatusRunning && u.Status != store.StatusPending && !end.IsZero() {
		if c, ok := last[stepComplete]; ok && u.Status == store.StatusDone {
			end = c.EndedAt
		}
		r.EndedAt = &end
		if !start.IsZero() {
			r.CycleTimeSeconds = end.Sub(start).Seconds()
		}
	}
	if err := r.addTPM(lastEK, last[stepVerifyEK]); err != nil {
		return nil, err
	}
	if err := r.addCertificates(ctx, st, &u, last); err != nil {
		return nil, err
	}
	if err := r.addPrincipals(ctx, st, &u); err != nil {
		return nil, err
	}
	if v, ok := last[stepVerify]; ok {
		var vr verifyResult
		if err := json.Unmarshal(v.Result, &vr); err != nil {
			return nil, fmt.Errorf("decoding the verify result: %w", err)
		}
		r.Verification = vr.Checks
	}
	return r, nil
}

// addTPM fills TPM and EK from the verify_ek intent (the identify report) and result.
func (r *Record) addTPM(intentRec, resultRec *store.StepRecord) error {
	if intentRec == nil {
		return nil
	}
	var intent map[string]string
	if err := json.Unmarshal(intentRec.Intent, &intent); err != nil {
		return fmt.Errorf("decoding the verify_ek intent: %w", err)
	}
	var id identify
	if raw := intent[intentIdentify]; raw != "" {
		if err := json.Unmarshal([]byte(raw), &id); err != nil {
			return fmt.Errorf("decoding the identify report: %w", err)
		}
	}
	if info := id.Info; info != nil {
		t := &TPMInfo{
			Manufacturer: fmt.Sprintf("%#08x", info.GetManufacturer()), ManufacturerID: info.GetManufacturerId(),
			VendorString: info.GetVendorString(), Family: info.GetFamily(), SpecLevel: info.GetSpecLevel(),
			SpecRevision: info.GetSpecRevision(), SpecYear: info.GetSpecYear(),
		}
		if fw := info.GetFirmwareVersion(); fw != 0 {
			t.FirmwareVersion = fmt.Sprintf("%d.%d.%d.%d", fw>>48, fw>>32&0xffff, fw>>16&0xffff, fw&0xffff)
		}
		for _, ek := range id.EKs {
			t.EKsRead = append(t.EKsRead, ek.GetAlgorithm().String())
		}
		for _, ty := range tcgek.Held(info.GetPersistentHandles(), info.GetNvIndices()) {
			t.EKsHeld = append(t.EKsHeld, ty.Name)
		}
		if h := id.Hello; h != nil {
			t.AgentVersion, t.TPMTransport, t.SerialSource = h.GetAgentVersion(), h.GetTpmTransport(), h.GetSerialSource()
			t.FixtureSlot, t.BootID = h.GetFixtureSlot(), h.GetBootId()
		}
		r.TPM = t
	}
	if resultRec == nil {
		return nil
	}
	var v verifyEK
	if err := json.Unmarshal(resultRec.Result, &v); err != nil {
		return fmt.Errorf("decoding the verify_ek result: %w", err)
	}
	ek := &EKCertificate{Algorithm: v.Algorithm, Fingerprint: v.Fingerprint, Manufacturer: v.Manufacturer,
		Issuer: v.Issuer, SHA256: v.CertSHA256}
	for _, k := range id.EKs {
		if der := k.GetCertificate(); len(der) > 0 && sha256Hex(der) == v.CertSHA256 {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return fmt.Errorf("parsing the EK certificate: %w", err)
			}
			ek.Subject, ek.Issuer, ek.SerialNumber = c.Subject.String(), c.Issuer.String(), c.SerialNumber.Text(16)
			if p, err := tpm2.Unmarshal[tpm2.TPMTPublic](k.GetPublicArea()); err == nil && r.TPM != nil {
				if ty, ok := tcgek.Match(*p); ok {
					r.TPM.EKUsed = ty.Name
				}
			}
		}
	}
	r.EK = ek
	return nil
}

// addCertificates fills IDevID, LDevID, Certificates and RevocationCandidates. The certificate
// of a role is its active one; without one, the one the latest successful enroll step used, or
// the last recorded for the role.
func (r *Record) addCertificates(ctx context.Context, st Store, u *store.UnitState, last map[string]*store.StepRecord) error {
	chosen, active := map[store.Role]string{}, map[store.Role]bool{}
	for _, c := range u.Certificates {
		ref := CertificateRef{Role: string(c.Role), SHA256: c.SHA256, Duplicate: c.Duplicate, Status: string(c.Current()),
			Reason: c.Reason, SerialNumber: c.SerialHex}
		if cr, err := st.CertificateBySHA256(ctx, c.SHA256); err == nil {
			if cert, err := x509.ParseCertificate(cr.DER); err == nil {
				ref.Issuer = cert.Issuer.String()
			}
		}
		r.Certificates = append(r.Certificates, ref)
		if c.RevocationCandidate() {
			r.RevocationCandidates = append(r.RevocationCandidates, ref)
		}
		switch {
		case c.Current() == store.CertActive:
			chosen[c.Role], active[c.Role] = c.SHA256, true
		case !active[c.Role] && !c.RevocationCandidate():
			chosen[c.Role] = c.SHA256
		}
	}
	for role, step := range map[store.Role]string{store.RoleIDevID: stepIDevIDEnroll, store.RoleLDevID: stepLDevIDEnroll} {
		if rec, ok := last[step]; ok && !active[role] {
			var er enrollResult
			if err := json.Unmarshal(rec.Result, &er); err != nil {
				return fmt.Errorf("decoding the %s result: %w", step, err)
			}
			if len(er.Cert) > 0 {
				chosen[role] = sha256Hex(er.Cert)
			}
		}
	}
	for role, sha := range chosen {
		cr, err := st.CertificateBySHA256(ctx, sha)
		if err != nil {
			return fmt.Errorf("reading the %s certificate %s: %w", role, sha, err)
		}
		c, err := describe(cr.DER)
		if err != nil {
			return fmt.Errorf("the %s certificate %s: %w", role, sha, err)
		}
		switch role {
		case store.RoleIDevID:
			r.IDevID = c
		case store.RoleLDevID:
			r.LDevID = c
		}
	}
	return nil
}

// addPrincipals fills WorkOrderCreatedBy and Actions.
func (r *Record) addPrincipals(ctx context.Context, st Store, u *store.UnitState) error {
	if u.WorkOrderID != "" {
		wo, err := st.WorkOrder(ctx, u.WorkOrderID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("reading work order %s: %w", u.WorkOrderID, err)
		}
		r.WorkOrderCreatedBy = wo.CreatedBy
	}
	evs, err := st.UnitEvents(ctx, u.Serial, 0, 0)
	if err != nil {
		return fmt.Errorf("reading the unit's events: %w", err)
	}
	for _, ev := range evs {
		if ev.Principal != "" && ev.Principal != store.PrincipalStation {
			r.Actions = append(r.Actions, Action{Time: ev.Time, Principal: ev.Principal, Kind: ev.Type, Message: ev.Message, Data: ev.Data})
		}
	}
	return nil
}

func describe(der []byte) (*Certificate, error) {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing: %w", err)
	}
	return &Certificate{
		Subject: c.Subject.String(), Issuer: c.Issuer.String(), SerialNumber: c.SerialNumber.Text(16),
		NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(), SHA256: sha256Hex(der),
		PEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
	}, nil
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// JSON returns the record as indented JSON, the format of travelers/<serial>.json.
func (r *Record) JSON() ([]byte, error) {
	if r == nil {
		return nil, errors.New("nil traveler record")
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding traveler of %q: %w", r.Serial, err)
	}
	return append(b, '\n'), nil
}
