// Package traveler builds a unit's traveler record: the document that follows one serial
// through the line, assembled from what the station's store recorded about it (unit state,
// step records, the certificate index). It reads only.
//
// The record is built from the step records' stored shapes (station/journal): the verify_ek
// step's intent carries the agent's identify report, its result names the verified EK, the
// enroll steps' results carry the issued certificates, and the verify step's result holds the
// end-to-end checks.
package traveler

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/devid-station/devid/device-agent/tpm/tcgek"
	"github.com/devid-station/devid/reports/internal/jsonindent"
	"github.com/devid-station/devid/station/journal"
	"github.com/devid-station/devid/station/store"
)

// Schema identifies the record format; it changes when a field changes meaning.
const Schema = "devid-station/traveler/v1"

// Store is what Build reads; *store.Store implements it.
type Store interface {
	StationID() string
	Unit(ctx context.Context, serial string) (store.UnitState, error)
	StepRecords(ctx context.Context, serial string) ([]store.StepRecord, error)
	CertificateBySHA256(ctx context.Context, sha string) (store.CertRecord, error)
	UnitActions(ctx context.Context, serial string) ([]store.Event, error)
	WorkOrder(ctx context.Context, id string) (store.WorkOrder, error)
	PossiblyIssuedEntries(ctx context.Context, serial string, open bool) ([]store.PossiblyIssued, error)
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
	// StartedAt is the start of the unit's first step ever.
	StartedAt *time.Time `json:"started_at,omitempty"`
	// EndedAt is the end of its last step when the unit has ended (done, failed, aborted, on
	// hold, scrapped); absent while it runs or waits.
	EndedAt *time.Time `json:"ended_at,omitempty"`
	// CycleTimeSeconds is the time the unit spent being provisioned: the sum of its
	// provisionings' cycle times.
	CycleTimeSeconds float64 `json:"cycle_time_seconds,omitempty"`
	// Provisionings lists the unit's provisionings: the first, then one per consumed rework.
	Provisionings []Provisioning `json:"provisionings"`
	// Steps lists every step attempt, in the order they began.
	Steps []Step `json:"steps"`
	// TPM is what the agent reported about the unit's TPM.
	TPM *TPMInfo `json:"tpm,omitempty"`
	// EK is the verified endorsement key certificate.
	EK *EKCertificate `json:"ek,omitempty"`
	// IDevID and LDevID are the certificates the unit was provisioned with.
	IDevID *Certificate `json:"idevid,omitempty"`
	LDevID *Certificate `json:"ldevid,omitempty"`
	// IAK is the Initial Attestation Key's certificate (a profile with an IAK), IAKCertification
	// the IAK's certification of the IDevID key the station checked (step iak_certify).
	IAK              *Certificate      `json:"iak,omitempty"`
	IAKCertification *IAKCertification `json:"iak_certification,omitempty"`
	// Certificates lists every certificate ever recorded for the unit, oldest first, with its
	// status (active, superseded, refused, duplicate) and the reason of any other than active.
	Certificates []CertificateRef `json:"certificates,omitempty"`
	// RevocationCandidates lists the superseded and refused certificates: issued by a CA, not
	// (or no longer) in use.
	RevocationCandidates []CertificateRef `json:"revocation_candidates,omitempty"`
	// PossiblyIssued lists the enrollments whose answer was lost and that no reconciliation
	// closed yet: the CA may have issued a certificate for the key (a revocation candidate by
	// key) that the store does not know.
	PossiblyIssued []PossiblyIssued `json:"possibly_issued,omitempty"`
	// TPM and EK come from the latest EK verification; Verification holds the end-to-end checks
	// of the latest successful verify step (check name -> "ok"), whichever provisioning ran it.
	Verification map[string]string `json:"verification,omitempty"`
	// FieldCheck is the latest successful field_check step's result.
	FieldCheck *FieldCheck `json:"field_check,omitempty"`
	// Reworks lists the rework authorizations the unit consumed.
	Reworks []store.Rework `json:"reworks,omitempty"`
	// Actions lists what people did to the unit (aborts, rework authorizations, hold
	// decisions), oldest first, each with the principal the audit trail names.
	Actions []Action `json:"actions,omitempty"`
}

// FieldCheck is how the unit's LDevID fared at the profile's field check: mode "off",
// "handshake" (TLS version and HTTP status of the endpoint's answer) or "reenroll" (the
// re-enrolled certificate, also listed under Certificates).
type FieldCheck struct {
	Mode             string       `json:"mode"`
	Endpoint         string       `json:"endpoint,omitempty"`
	ClientCertSHA256 string       `json:"client_cert_sha256,omitempty"`
	TLSVersion       string       `json:"tls_version,omitempty"`
	HTTPStatus       int          `json:"http_status,omitempty"`
	Signatures       int          `json:"tpm_signatures,omitempty"`
	Reenrolled       *Certificate `json:"reenrolled,omitempty"`
}

// PossiblyIssued is an open possibly-issued entry: an enrollment whose answer was lost.
type PossiblyIssued struct {
	ID   string `json:"id"`
	Role string `json:"role"`
	CA   string `json:"ca"`
	// PublicKeySHA256 names the key a certificate may have been issued for (hex SHA-256 of its
	// SubjectPublicKeyInfo); CSRSHA256 the CSR sent.
	PublicKeySHA256 string    `json:"public_key_sha256"`
	CSRSHA256       string    `json:"csr_sha256"`
	From            time.Time `json:"from"`
	To              time.Time `json:"to"`
}

// Action is one event of the unit caused by an API caller rather than by the station.
type Action struct {
	Time      time.Time         `json:"time"`
	Principal string            `json:"principal"`
	Kind      string            `json:"kind"`
	Message   string            `json:"message,omitempty"`
	Data      map[string]string `json:"data,omitempty"`
}

// Provisioning is one pass of the unit through the workflow: the first, or one opened by a
// rework authorization.
type Provisioning struct {
	// Number counts provisionings from 1.
	Number int `json:"number"`
	// Rework is the authorization that opened it; absent for the first.
	Rework *store.Rework `json:"rework,omitempty"`
	// Result is the unit's status for the latest provisioning; for an earlier one done, failed
	// or ended (stopped before completing without a failed step: aborted or reworked).
	Result    string `json:"result"`
	ErrorCode string `json:"error_code,omitempty"`
	// StartedAt and EndedAt bound its steps; CycleTimeSeconds is EndedAt - StartedAt.
	StartedAt        *time.Time `json:"started_at,omitempty"`
	EndedAt          *time.Time `json:"ended_at,omitempty"`
	CycleTimeSeconds float64    `json:"cycle_time_seconds,omitempty"`
	// Verification holds its verify step's checks.
	Verification map[string]string `json:"verification,omitempty"`
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
	// DER and Chain are the certificate and the chain the unit's agent sent with it, from the
	// identify report Build read them in (not in the traveler's JSON: the QA export writes them
	// as the unit's EK certificate file). Empty when that report does not hold the certificate.
	DER   []byte   `json:"-"`
	Chain [][]byte `json:"-"`
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

// IAKCertification is the evidence that the IDevID key resides in the TPM of the IAK: the
// TPM2_Certify answer as the TPM produced it (hex), with what the station checked in it.
type IAKCertification struct {
	// AttestSHA256 is the SHA-256 of Attest, the digest the IAK signed.
	AttestSHA256 string `json:"attest_sha256"`
	// Attest is the TPMS_ATTEST, Signature the TPMT_SIGNATURE over it.
	Attest    string `json:"attest"`
	Signature string `json:"signature"`
	// Nonce is the station's nonce (the attest's extraData).
	Nonce string `json:"nonce"`
	// CertifiedName is the IDevID key's TPM Name, IAKName the IAK's.
	CertifiedName string `json:"certified_name"`
	IAKName       string `json:"iak_name"`
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

// Build assembles the traveler record of serial: the full history of every attempt, never
// erased by a rework or an abort. It returns an error matching store.ErrNotFound when the unit
// does not exist. Step results that do not decode are reported as errors: a traveler never
// silently omits recorded facts.
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
		ErrorMessage: u.ErrorMessage, Attempts: u.Steps[journal.StepVerifyEK].Attempts,
		Steps: make([]Step, 0, len(recs)), Reworks: u.Reworks,
	}
	// Provisioning i runs from the (i-1)th consumed rework on; the first from the start.
	lives := make([]life, len(u.Reworks)+1)
	lifeOf := func(t time.Time) int {
		n := 0
		for n < len(u.Reworks) && !t.Before(u.Reworks[n].UsedAt) {
			n++
		}
		return n
	}
	last := map[string]*store.StepRecord{} // latest successful attempt per step, whole history
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
		lives[lifeOf(rec.BeganAt)].add(rec)
		if rec.Ended && rec.ErrorCode == "" && (last[rec.Step] == nil || !rec.BeganAt.Before(last[rec.Step].BeganAt)) {
			last[rec.Step] = rec
		}
		if rec.Step == journal.StepVerifyEK && (lastEK == nil || !rec.BeganAt.Before(lastEK.BeganAt)) {
			lastEK = rec
		}
	}
	ended := u.Status != store.StatusRunning && u.Status != store.StatusPending
	// The latest provisioning's verify step is most often the whole history's latest: each
	// verify result is decoded once.
	var checks verifyChecks
	for i := range lives {
		p, err := lives[i].provisioning(i, u, ended && i == len(lives)-1, &checks)
		if err != nil {
			return nil, err
		}
		r.Provisionings = append(r.Provisionings, p)
		if p.StartedAt != nil && (r.StartedAt == nil || p.StartedAt.Before(*r.StartedAt)) {
			r.StartedAt = p.StartedAt
		}
		if p.EndedAt != nil && (r.EndedAt == nil || p.EndedAt.After(*r.EndedAt)) {
			r.EndedAt = p.EndedAt
		}
		r.CycleTimeSeconds += p.CycleTimeSeconds
	}
	if !ended {
		r.EndedAt = nil
	}
	if err := r.addTPM(lastEK, last[journal.StepVerifyEK]); err != nil {
		return nil, err
	}
	if err := r.addCertificates(ctx, st, &u, last); err != nil {
		return nil, err
	}
	if err := r.addPrincipals(ctx, st, &u); err != nil {
		return nil, err
	}
	open, err := st.PossiblyIssuedEntries(ctx, serial, true)
	if err != nil {
		return nil, fmt.Errorf("reading possibly issued certificates: %w", err)
	}
	for _, p := range open {
		r.PossiblyIssued = append(r.PossiblyIssued, PossiblyIssued{ID: p.ID, Role: string(p.Role), CA: p.CA,
			PublicKeySHA256: p.PublicKeySHA256, CSRSHA256: p.CSRSHA256, From: p.From, To: p.To})
	}
	if c, ok := last[journal.StepIAKCertify]; ok {
		var cr journal.CertifyResult
		if err := json.Unmarshal(c.Result, &cr); err != nil {
			return nil, fmt.Errorf("decoding the %s result: %w", journal.StepIAKCertify, err)
		}
		if len(cr.Attest) > 0 { // else skipped: the profile has no IAK
			r.IAKCertification = &IAKCertification{AttestSHA256: cr.AttestSHA256, Attest: hex.EncodeToString(cr.Attest),
				Signature: hex.EncodeToString(cr.Signature), Nonce: hex.EncodeToString(cr.Nonce),
				CertifiedName: hex.EncodeToString(cr.CertifiedName), IAKName: hex.EncodeToString(cr.IAKName)}
		}
	}
	if v, ok := last[journal.StepVerify]; ok {
		if r.Verification, err = checks.of(v); err != nil {
			return nil, err
		}
	}
	if f, ok := last[journal.StepFieldCheck]; ok {
		var fr journal.FieldCheckResult
		if err := json.Unmarshal(f.Result, &fr); err != nil {
			return nil, fmt.Errorf("decoding the field check result: %w", err)
		}
		r.FieldCheck = &FieldCheck{Mode: fr.Mode, Endpoint: fr.Endpoint, ClientCertSHA256: fr.ClientCertSHA256,
			TLSVersion: fr.TLSVersion, HTTPStatus: fr.HTTPStatus, Signatures: fr.Signatures}
		if len(fr.Cert) > 0 {
			if r.FieldCheck.Reenrolled, err = describe(fr.Cert); err != nil {
				return nil, fmt.Errorf("field check certificate: %w", err)
			}
		}
	}
	return r, nil
}

// life gathers the step records of one provisioning.
type life struct {
	start, end  time.Time
	complete    *store.StepRecord // successful complete step
	verify      *store.StepRecord // latest successful verify step
	lastFailure *store.StepRecord // latest failed step attempt
}

func (l *life) add(rec *store.StepRecord) {
	if l.start.IsZero() || rec.BeganAt.Before(l.start) {
		l.start = rec.BeganAt
	}
	if !rec.Ended {
		return
	}
	if rec.EndedAt.After(l.end) {
		l.end = rec.EndedAt
	}
	switch {
	case rec.ErrorCode != "":
		if l.lastFailure == nil || !rec.EndedAt.Before(l.lastFailure.EndedAt) {
			l.lastFailure = rec
		}
	case rec.Step == journal.StepComplete:
		l.complete = rec
	case rec.Step == journal.StepVerify:
		l.verify = rec
	}
}

// verifyChecks decodes verify step results, remembering the last one decoded.
type verifyChecks struct {
	rec    *store.StepRecord
	checks map[string]string
}

// of returns the checks of the verify step record rec. The same record gives the same map:
// the record's checks are one value, however many places of the traveler show them.
func (v *verifyChecks) of(rec *store.StepRecord) (map[string]string, error) {
	if rec == v.rec && rec != nil {
		return v.checks, nil
	}
	var vr journal.VerifyResult
	if err := json.Unmarshal(rec.Result, &vr); err != nil {
		return nil, fmt.Errorf("decoding the verify result: %w", err)
	}
	v.rec, v.checks = rec, vr.Checks
	return vr.Checks, nil
}

// provisioning summarizes life i. The latest one takes the unit's status; an earlier one is
// done when its complete step succeeded, else failed when a step failed, else ended (aborted or
// interrupted before any failure). ended says the latest one has ended. checks decodes the
// verify step's result.
func (l *life) provisioning(i int, u store.UnitState, ended bool, checks *verifyChecks) (Provisioning, error) {
	p := Provisioning{Number: i + 1}
	if i > 0 {
		rw := u.Reworks[i-1]
		p.Rework = &rw
	}
	latest := i == len(u.Reworks)
	switch {
	case latest:
		p.Result, p.ErrorCode = string(u.Status), u.ErrorCode
	case l.complete != nil:
		p.Result = string(store.StatusDone)
	case l.lastFailure != nil:
		p.Result, p.ErrorCode = string(store.StatusFailed), l.lastFailure.ErrorCode
	default:
		p.Result = "ended"
	}
	if !l.start.IsZero() {
		t := l.start
		p.StartedAt = &t
	}
	end := l.end
	if l.complete != nil {
		end = l.complete.EndedAt
	}
	if !end.IsZero() && (!latest || ended) {
		p.EndedAt = &end
		p.CycleTimeSeconds = end.Sub(l.start).Seconds()
	}
	if l.verify != nil {
		var err error
		if p.Verification, err = checks.of(l.verify); err != nil {
			return p, err
		}
	}
	return p, nil
}

// addTPM fills TPM and EK from the verify_ek intent (the identify report) and result.
func (r *Record) addTPM(intentRec, resultRec *store.StepRecord) error {
	if intentRec == nil {
		return nil
	}
	id, err := decodeIdentifyIntent(intentRec.Intent)
	if err != nil {
		return err
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
	var v journal.VerifyEKResult
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
			ek.DER, ek.Chain = der, id.Chain
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
	// Each certificate is read and parsed once: the chosen ones are described from the same
	// read and parse.
	type readCert struct {
		der    []byte
		parsed *x509.Certificate // nil: does not parse
		issuer string            // parsed's, as pkix.Name.String spells it
	}
	read := make(map[string]readCert, len(u.Certificates)) // by the SHA-256 it was read by
	for _, c := range u.Certificates {
		ref := CertificateRef{Role: string(c.Role), SHA256: c.SHA256, Duplicate: c.Duplicate, Status: string(c.Current()),
			Reason: c.Reason, SerialNumber: c.SerialHex}
		if cr, err := st.CertificateBySHA256(ctx, c.SHA256); err == nil {
			rc := readCert{der: cr.DER}
			if cert, err := x509.ParseCertificate(cr.DER); err == nil {
				ref.Issuer = cert.Issuer.String()
				rc.parsed, rc.issuer = cert, ref.Issuer
			}
			read[c.SHA256] = rc
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
	for role, step := range map[store.Role]string{store.RoleIDevID: journal.StepIDevIDEnroll, store.RoleLDevID: journal.StepLDevIDEnroll, store.RoleIAK: journal.StepIAKEnroll} {
		if rec, ok := last[step]; ok && !active[role] {
			var er journal.EnrollResult
			if err := json.Unmarshal(rec.Result, &er); err != nil {
				return fmt.Errorf("decoding the %s result: %w", step, err)
			}
			if len(er.Cert) > 0 {
				chosen[role] = sha256Hex(er.Cert)
			}
		}
	}
	for role, sha := range chosen {
		rc, ok := read[sha]
		if !ok {
			cr, err := st.CertificateBySHA256(ctx, sha)
			if err != nil {
				return fmt.Errorf("reading the %s certificate %s: %w", role, sha, err)
			}
			rc.der = cr.DER
		}
		c, err := describeParsed(rc.der, rc.parsed, rc.issuer)
		if err != nil {
			return fmt.Errorf("the %s certificate %s: %w", role, sha, err)
		}
		switch role {
		case store.RoleIDevID:
			r.IDevID = c
		case store.RoleLDevID:
			r.LDevID = c
		case store.RoleIAK:
			r.IAK = c
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
	// Only the events an API caller caused: the store leaves the station's undecoded.
	evs, err := st.UnitActions(ctx, u.Serial)
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
	return describeParsed(der, nil, "")
}

// describeParsed is describe with der already parsed as c (nil: not yet), whose issuer,
// when not empty, is c.Issuer.String() already spelled.
func describeParsed(der []byte, c *x509.Certificate, issuer string) (*Certificate, error) {
	if c == nil {
		var err error
		if c, err = x509.ParseCertificate(der); err != nil {
			return nil, fmt.Errorf("parsing: %w", err)
		}
		issuer = ""
	}
	if issuer == "" {
		issuer = c.Issuer.String()
	}
	return &Certificate{
		Subject: c.Subject.String(), Issuer: issuer, SerialNumber: c.SerialNumber.Text(16),
		NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(), SHA256: sha256Hex(der),
		PEM: certificatePEM(der),
	}, nil
}

const (
	pemBegin = "-----BEGIN CERTIFICATE-----\n"
	pemEnd   = "-----END CERTIFICATE-----\n"
	// pemLine is how many bytes of DER one line of PEM holds: encoding/pem writes 64 base64
	// characters a line, and 48 bytes (a multiple of 3) encode to 64 characters without padding.
	pemLine = 48
)

// certificatePEM returns der as one PEM CERTIFICATE block without headers: what
// pem.EncodeToMemory writes (TestCertificatePEM), without its line breaker's copies.
func certificatePEM(der []byte) string {
	n := base64.StdEncoding.EncodedLen(len(der))
	b := make([]byte, 0, len(pemBegin)+n+(len(der)+pemLine-1)/pemLine+len(pemEnd))
	b = append(b, pemBegin...)
	for len(der) > 0 {
		k := min(pemLine, len(der))
		b = append(base64.StdEncoding.AppendEncode(b, der[:k]), '\n')
		der = der[k:]
	}
	b = append(b, pemEnd...)
	return string(b)
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
	buf := compactBuffers.Get().(*[]byte)
	defer compactBuffers.Put(buf)
	b, err := appendRecord((*buf)[:0], r)
	if err != nil {
		return nil, fmt.Errorf("encoding traveler of %q: %w", r.Serial, err)
	}
	*buf = b
	return append(jsonindent.Append(make([]byte, 0, len(b)+len(b)/2), b, "  "), '\n'), nil
}

// compactBuffers hold the compact encodings JSON indents: one is in use only during a call.
var compactBuffers = sync.Pool{New: func() any { return new([]byte) }}
