// Package travelertest writes units into a station store the way station/workflow journals
// them (the same step names, intents and results: station/journal's types), so that readers of
// the store — the traveler record, the station API — can be tested without running agents and
// CAs. It is for tests only.
package travelertest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"sync"
	"testing"
	"time"

	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/station/journal"
	"github.com/devid-station/devid/station/store"
)

// Clock is a manual clock for store.Options.Clock. It is safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock stopped at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Unit describes a unit to write.
type Unit struct {
	// Serial, WorkOrder and Profile identify the unit.
	Serial, WorkOrder, Profile string
	// FailAt names the step that fails with FailCode; empty runs every step to completion.
	FailAt, FailCode string
	// StopBefore names a step the unit does not reach: it stays running at the step before.
	StopBefore string
	// Slot is the fixture slot the agent claims.
	Slot string
	// EK, when set, is the unit's endorsement key, so that a second WriteUnit of a failed
	// unit is a second session of the same TPM; nil: a fresh key.
	EK *ecdsa.PrivateKey
	// Clock, when set, is advanced by StepTime after each step.
	Clock    *Clock
	StepTime time.Duration
}

// Written is what WriteUnit wrote.
type Written struct {
	// EKCert, IDevID and LDevID are the certificates' DER (nil when not reached).
	EKCert, IDevID, LDevID []byte
	// EKFingerprint is the hex SHA-256 of the EK public key.
	EKFingerprint string
	// Checks is the verify step's result.
	Checks map[string]string
	// DevIDRoot is the self-signed CA that issued the IDevID and LDevID: the trust anchor a
	// verifier of the unit's certificates is given.
	DevIDRoot *x509.Certificate
	// EKRoot is the self-signed CA that issued the EK certificate (of the TCG EK profile).
	EKRoot *x509.Certificate
}

// Step names of the workflow after identify, in order.
var steps = []string{journal.StepVerifyEK, journal.StepAuthorize, journal.StepIDevIDKey, journal.StepIDevIDProof,
	journal.StepIDevIDCSR, journal.StepIDevIDEnroll, journal.StepIDevIDInstall, journal.StepLDevIDKey,
	journal.StepLDevIDProof, journal.StepLDevIDCSR, journal.StepLDevIDEnroll, journal.StepLDevIDInstall,
	journal.StepOnboarding, journal.StepVerify, journal.StepComplete}

// CA is a throwaway certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewCA returns a self-signed CA named cn.
func NewCA(t testing.TB, cn string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn, Organization: []string{"test"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatalf("creating CA %s: %v", cn, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, Key: key}
}

var serialNumbers struct {
	sync.Mutex
	n int64
}

// Issue returns a certificate for pub signed by the CA, with tmpl's subject, extended key
// usages and validity (defaults: one day from an hour ago).
func (ca *CA) Issue(t testing.TB, tmpl *x509.Certificate, pub crypto.PublicKey) []byte {
	t.Helper()
	serialNumbers.Lock()
	serialNumbers.n++
	tmpl.SerialNumber = big.NewInt(1000 + serialNumbers.n)
	serialNumbers.Unlock()
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	}
	tmpl.KeyUsage |= x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		t.Fatalf("issuing %s: %v", tmpl.Subject, err)
	}
	return der
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// ekSAN returns the critical subjectAltName of a TCG EK certificate: one directoryName whose
// RDNs are the TPM manufacturer, model and version (2.23.133.2.1, .2, .3).
func ekSAN(t testing.TB) pkix.Extension {
	t.Helper()
	name, err := asn1.Marshal(pkix.RDNSequence{
		{{Type: asn1.ObjectIdentifier{2, 23, 133, 2, 1}, Value: "id:49465800"}},
		{{Type: asn1.ObjectIdentifier{2, 23, 133, 2, 2}, Value: "SLB9670"}},
		{{Type: asn1.ObjectIdentifier{2, 23, 133, 2, 3}, Value: "id:00070055"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	san, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: name}})
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Critical: true, Value: san}
}

// WriteUnit journals u in st through the store's calls, step by step, as the workflow does
// for a unit whose agent, TPM and CAs all answer (or that fails at u.FailAt).
func WriteUnit(t testing.TB, st *store.Store, u Unit) Written {
	t.Helper()
	ctx := context.Background()
	var w Written
	tick := func() {
		if u.Clock != nil {
			u.Clock.Advance(u.StepTime)
		}
	}
	check := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("writing unit %s: %v", u.Serial, err)
		}
	}
	ekCA := NewCA(t, "Test EK CA "+u.Serial)
	devCA := NewCA(t, "Test DevID CA "+u.Serial)
	w.DevIDRoot = devCA.Cert
	ekKey := u.EK
	if ekKey == nil {
		ekKey = newKey(t)
	}
	// An EK certificate as the TCG profile has it: a critical subjectAltName holding only a
	// directoryName (the TPM's manufacturer, model and version), extended key usage
	// tcg-kp-EKCertificate.
	w.EKRoot = ekCA.Cert
	w.EKCert = ekCA.Issue(t, &x509.Certificate{ExtraExtensions: []pkix.Extension{ekSAN(t)},
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{{2, 23, 133, 8, 1}}}, ekKey.Public())
	pubDER, err := x509.MarshalPKIXPublicKey(ekKey.Public())
	check(err)
	w.EKFingerprint = store.EKFingerprint(pubDER)
	ident, err := json.Marshal(journal.Identify{
		Info: &agentv1.InfoResult{Manufacturer: 0x49465800, ManufacturerId: "IFX", VendorString: "SLB9670",
			FirmwareVersion: 7<<48 | 85<<32 | 4555<<16, Family: "2.0", SpecLevel: 0, SpecRevision: 159, SpecYear: 2019},
		EKs: []*agentv1.EndorsementKey{{Algorithm: agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P256, PublicArea: []byte{0, 0x23},
			Certificate: w.EKCert, CertificateIndex: 0x01c0000a}},
		Hello: &agentv1.Hello{ProtocolVersion: 1, AgentVersion: "test", HardwareSerial: u.Serial, FixtureSlot: u.Slot,
			BootId: "boot-1", TpmTransport: "simulator", SerialSource: "flag"},
	})
	check(err)

	// open: the workflow marks the unit running once its agent identified it.
	_, err = st.UpdateUnit(ctx, u.Serial, func(s *store.UnitState) error { s.Status = store.StatusRunning; return nil })
	check(err)
	keys := map[string]*ecdsa.PrivateKey{"IDevID": newKey(t), "LDevID": newKey(t)}
	for _, step := range steps {
		if step == u.StopBefore {
			return w
		}
		intent := journal.Intent{Step: step}
		if step == journal.StepVerifyEK {
			intent.Identify = string(ident)
		}
		ib, err := json.Marshal(intent)
		check(err)
		ref, err := st.BeginStep(ctx, u.Serial, step, ib)
		check(err)
		tick()
		if step == u.FailAt {
			check(st.EndStep(ctx, ref, nil, u.FailCode))
			_, err = st.UpdateUnit(ctx, u.Serial, func(s *store.UnitState) error {
				s.Status, s.ErrorCode, s.ErrorMessage, s.CurrentStep = store.StatusFailed, u.FailCode, "test failure at "+step, step
				return nil
			})
			check(err)
			_, err = st.AppendEvent(ctx, u.Serial, stationv1.KindUnitFailed, "test failure at "+step, map[string]string{"code": u.FailCode, "step": step})
			check(err)
			return w
		}
		var result any
		switch step {
		case journal.StepVerifyEK:
			check(st.BindEK(ctx, w.EKFingerprint, u.Serial))
			result = journal.VerifyEKResult{Algorithm: "KEY_ALGORITHM_ECC_P256", Fingerprint: w.EKFingerprint,
				CertSHA256: sha(w.EKCert), Issuer: ekCA.Cert.Subject.String(), Manufacturer: "id:49465800"}
		case journal.StepAuthorize:
			_, err := st.UpdateUnit(ctx, u.Serial, func(s *store.UnitState) error {
				s.WorkOrderID, s.Profile = u.WorkOrder, u.Profile
				return nil
			})
			check(err)
			result = journal.AuthorizeResult{WorkOrder: u.WorkOrder, Profile: u.Profile}
		case journal.StepIDevIDKey, journal.StepLDevIDKey:
			result = journal.KeyResult{Handle: 0x81020000, Public: []byte{1}, Name: []byte{2}}
		case journal.StepIDevIDEnroll, journal.StepLDevIDEnroll:
			role := store.RoleIDevID
			if step == journal.StepLDevIDEnroll {
				role = store.RoleLDevID
			}
			der := devCA.Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: u.Serial + " " + string(role), SerialNumber: u.Serial}},
				keys[string(role)].Public())
			_, err := st.RecordCertificate(ctx, u.Serial, role, der)
			check(err)
			if role == store.RoleIDevID {
				w.IDevID = der
			} else {
				w.LDevID = der
			}
			result = journal.EnrollResult{Cert: der, Chain: [][]byte{devCA.Cert.Raw}}
		case journal.StepVerify:
			w.Checks = map[string]string{"idevid_nv": "ok", "ldevid_file": "ok", "IDevID_signature": "ok", "LDevID_signature": "ok"}
			result = journal.VerifyResult{Checks: w.Checks}
		case journal.StepComplete:
			_, err := st.UpdateUnit(ctx, u.Serial, func(s *store.UnitState) error {
				s.Status, s.CurrentStep, s.ErrorCode, s.ErrorMessage = store.StatusDone, journal.StepComplete, "", ""
				return nil
			})
			check(err)
			_, err = st.AppendEvent(ctx, u.Serial, stationv1.KindUnitDone, "provisioned and verified", map[string]string{"work_order": u.WorkOrder})
			check(err)
			result = journal.CompleteResult{WorkOrder: u.WorkOrder}
		default:
			result = journal.InstallResult{Where: "test", SHA256: sha([]byte(step))}
		}
		rb, err := json.Marshal(result)
		check(err)
		check(st.EndStep(ctx, ref, rb, ""))
	}
	return w
}
