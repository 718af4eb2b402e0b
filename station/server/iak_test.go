package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/reports/printable"
	"github.com/devid-station/devid/reports/traveler"
	"github.com/devid-station/devid/station/attest"
	"github.com/devid-station/devid/station/config"
	"github.com/devid-station/devid/station/journal"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
	"github.com/google/go-tpm/tpm2"
)

// withIAK gives the test line's profile an IAK certified by the maker's CA (its IAK profile).
func withIAK(f *config.File) {
	ca := f.CAs[0]
	ca.Name, ca.Label = "maker-iak", "iak"
	f.CAs = append(f.CAs, ca)
	f.Profiles[0].IAK = &config.Key{Algorithm: "ecc-p256", CA: "maker-iak",
		Subject: config.Subject{Organization: []string{"Test Maker"}, CommonName: "{serial} IAK"}}
}

// TestIAKProvisioning runs a unit whose profile has an IAK on the TPM simulator: the IAK is
// created at 0x81020001, activated against the EK, certifies the IDevID key (the evidence is in
// the journal and verifies independently) and gets its own certificate, recorded in the
// certificate index.
func TestIAKProvisioning(t *testing.T) {
	l := newTestLine(t, lineOptions{ldevidAuth: workflow.AuthIDevIDMTLS, configure: withIAK})
	l.workOrder("WO-1", "SN-IAK")
	sim := l.manufacture(nil, tpm.ECCP256)
	if v := l.runUnit(context.Background(), "SN-IAK", sim); !v.Passed {
		t.Fatalf("verdict %+v", v)
	}
	u := l.unit("SN-IAK")
	if u.Status != store.StatusDone || u.Keys["IAK"].Handle != tpm.IAKHandle {
		t.Fatalf("unit %s, keys %+v", u.Status, u.Keys)
	}
	l.issuedAllKnown(l.srv.Store())

	// The unit's TPM, read without the station.
	iak, err := sim.CreateKey(tpm.KeyRequest{Role: tpm.IAK, Algorithm: tpm.ECCP256, Handle: tpm.IAKHandle})
	if err != nil || !iak.Existed {
		t.Fatalf("IAK at 0x81020001: %v (existed %v)", err, iak != nil && iak.Existed)
	}
	idevid, err := sim.CreateKey(tpm.KeyRequest{Role: tpm.IDevID, Algorithm: tpm.ECCP256, Handle: tpm.IDevIDHandle})
	if err != nil || !idevid.Existed {
		t.Fatalf("IDevID: %v", err)
	}
	iakKey, err := attest.CheckIAK(iak.Public)
	if err != nil {
		t.Fatal(err)
	}

	// The IAK certificate: in the certificate index, for the TPM's IAK, with the TCG IAK
	// extended key usage and policies.
	var iakCert *x509.Certificate
	for _, c := range u.Certificates {
		if c.Role != store.RoleIAK {
			continue
		}
		rec, err := l.srv.Store().CertificateBySHA256(context.Background(), c.SHA256)
		if err != nil {
			t.Fatalf("IAK certificate %s not in the index: %v", c.SHA256, err)
		}
		if iakCert, err = x509.ParseCertificate(rec.DER); err != nil {
			t.Fatal(err)
		}
	}
	if iakCert == nil || len(u.Certificates) != 3 {
		t.Fatalf("unit certificates %+v, want IDevID, IAK and LDevID", u.Certificates)
	}
	if !iakCert.PublicKey.(*ecdsa.PublicKey).Equal(iakKey.PublicKey) {
		t.Error("the IAK certificate is for another key")
	}
	if !slices.ContainsFunc(iakCert.UnknownExtKeyUsage, workflow.OIDAIKCertificate.Equal) {
		t.Errorf("IAK certificate extended key usage %v, want tcg-kp-AIKCertificate", iakCert.UnknownExtKeyUsage)
	}
	want := []asn1.ObjectIdentifier{workflow.OIDVerifiedTPMResidency, workflow.OIDVerifiedTPMFixed, workflow.OIDVerifiedTPMRestricted}
	if !slices.EqualFunc(iakCert.PolicyIdentifiers, want, asn1.ObjectIdentifier.Equal) {
		t.Errorf("IAK certificate policies %v, want %v", iakCert.PolicyIdentifiers, want)
	}
	// The IAK certificate names the TPM like the IDevID: hwType TPM 2.0, hwSerialNum the EK
	// certificate's serial number.
	ek, err := sim.ReadEK(tpm.ECCP256)
	if err != nil {
		t.Fatal(err)
	}
	ekCert, err := x509.ParseCertificate(ek.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	if typ, serial := hardwareModuleName(t, iakCert); !typ.Equal(workflow.OIDTPM20) || !bytes.Equal(serial, ekCert.SerialNumber.Bytes()) {
		t.Errorf("IAK hardwareModuleName %v %x, want the TPM's", typ, serial)
	}
	if _, err := iakCert.Verify(x509.VerifyOptions{Roots: l.pki.MakerRoot.RootPool(), Intermediates: poolOf(l.pki.IDevIDIssuing.Chain()...),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("IAK certificate does not chain to the maker's root: %v", err)
	}

	// The certification in the journal: the IDevID key's Name, signed by the IAK.
	recs, err := l.srv.Store().StepRecords(context.Background(), "SN-IAK")
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(recs, func(r store.StepRecord) bool { return r.Step == workflow.StepIAKCertify && r.Ended })
	if i < 0 {
		t.Fatal("no iak_certify record")
	}
	var cr journal.CertifyResult
	if err := json.Unmarshal(recs[i].Result, &cr); err != nil {
		t.Fatal(err)
	}
	c, err := attest.CheckCertify(cr.Attest, cr.Signature, iakKey, idevid.Name, cr.Nonce)
	if err != nil {
		t.Fatalf("the journaled certification does not verify: %v", err)
	}
	if sum := sha256.Sum256(cr.Attest); c.Digest != sum || len(cr.Nonce) != 32 {
		t.Errorf("journaled digest %s, nonce %d bytes", cr.AttestSHA256, len(cr.Nonce))
	}

	// The traveler carries the IAK certificate and the certification, also printed.
	rec, err := traveler.Build(context.Background(), l.srv.Store(), "SN-IAK")
	if err != nil {
		t.Fatal(err)
	}
	if rec.IAK == nil || rec.IAK.SHA256 != hex.EncodeToString(sha256Of(iakCert.Raw)) {
		t.Errorf("traveler IAK %+v", rec.IAK)
	}
	tc := rec.IAKCertification
	if tc == nil || tc.Attest != hex.EncodeToString(cr.Attest) || tc.AttestSHA256 != cr.AttestSHA256 ||
		tc.CertifiedName != hex.EncodeToString(idevid.Name) || tc.IAKName != hex.EncodeToString(iak.Name) {
		t.Fatalf("traveler certification %+v", tc)
	}
	var page bytes.Buffer
	if err := (printable.Traveler{Record: rec}).HTML(&page); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"IAK certificate", "IDevID certified by the IAK", tc.AttestSHA256} {
		if !strings.Contains(page.String(), want) {
			t.Errorf("printable traveler lacks %q", want)
		}
	}
}

func sha256Of(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

func poolOf(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// tamperTPM is the unit's TPM with its answers to Certify and ActivateCredential changed.
type tamperTPM struct {
	*tpm.TPM
	certify   func(t *tpm.TPM, object, sign uint32, nonce []byte) (*tpm.Certification, error)
	activate  func(handle uint32) error
	certified atomic.Int32
}

func (w *tamperTPM) Certify(object, sign uint32, nonce []byte) (*tpm.Certification, error) {
	w.certified.Add(1)
	return w.certify(w.TPM, object, sign, nonce)
}

func (w *tamperTPM) ActivateCredential(handle uint32, ekAlg tpm.Algorithm, blob, secret []byte) ([]byte, error) {
	if w.activate != nil {
		if err := w.activate(handle); err != nil {
			return nil, err
		}
	}
	return w.TPM.ActivateCredential(handle, ekAlg, blob, secret)
}

// TestIAKCertificationRefused: a unit whose agent answers Certify with evidence that does not
// prove the IDevID key beside the activated IAK fails iak_certify with the stable code, and
// gets no certificate at all.
func TestIAKCertificationRefused(t *testing.T) {
	const otherHandle = 0x81020010
	stale := make([]byte, 32)
	tests := []struct {
		name     string
		certify  func(t *tpm.TPM, object, sign uint32, nonce []byte) (*tpm.Certification, error)
		activate func(handle uint32) error
		code     string
		step     string
	}{
		{name: "signed by a different key", code: workflow.CodeCertifySignature, step: workflow.StepIAKCertify,
			certify: func(t *tpm.TPM, object, sign uint32, nonce []byte) (*tpm.Certification, error) {
				c, err := t.Certify(object, sign, nonce)
				if err != nil {
					return nil, err
				}
				c.Signature, err = softwareSigned(c.Attest)
				return c, err
			}},
		{name: "wrong Name", code: workflow.CodeCertifyNameMismatch, step: workflow.StepIAKCertify,
			certify: func(t *tpm.TPM, _, sign uint32, nonce []byte) (*tpm.Certification, error) {
				if _, err := t.CreateKey(tpm.KeyRequest{Role: tpm.IDevID, Algorithm: tpm.RSA2048, Handle: otherHandle}); err != nil {
					return nil, err
				}
				return t.Certify(otherHandle, sign, nonce)
			}},
		{name: "stale nonce", code: workflow.CodeCertifyNonce, step: workflow.StepIAKCertify,
			certify: func(t *tpm.TPM, object, sign uint32, _ []byte) (*tpm.Certification, error) {
				return t.Certify(object, sign, stale)
			}},
		{name: "IAK not activated", code: workflow.CodeActivationFailed, step: workflow.StepIAKProof,
			certify: func(t *tpm.TPM, object, sign uint32, nonce []byte) (*tpm.Certification, error) {
				return t.Certify(object, sign, nonce)
			},
			activate: func(handle uint32) error {
				if handle == tpm.IAKHandle {
					// The TPM's refusal (TPM_RC_INTEGRITY and the like), not a TPM out of reach.
					return fmt.Errorf("this TPM will not activate a credential for the IAK: %w", tpm.ErrActivationFailed)
				}
				return nil
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newTestLine(t, lineOptions{ldevidAuth: workflow.AuthStationRA, configure: withIAK})
			l.workOrder("WO-1", "SN-BAD")
			w := &tamperTPM{TPM: l.manufacture(nil, tpm.ECCP256), certify: tc.certify, activate: tc.activate}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			v := l.runUnit(ctx, "SN-BAD", w)
			if v.Passed || v.Code != tc.code {
				t.Fatalf("verdict %+v, want %s", v, tc.code)
			}
			u := l.unit("SN-BAD")
			if u.ErrorCode != tc.code || u.CurrentStep != tc.step || u.Status != store.StatusHold {
				t.Errorf("unit %s at %s with %s, want on hold at %s with %s", u.Status, u.CurrentStep, u.ErrorCode, tc.step, tc.code)
			}
			if len(u.Certificates) != 0 || len(l.ca.Ledger()) != 0 {
				t.Errorf("certificates issued: unit %d, CA %d", len(u.Certificates), len(l.ca.Ledger()))
			}
			if tc.activate != nil && w.certified.Load() != 0 {
				t.Error("the station asked an IAK not activated to certify")
			}
		})
	}
}

// softwareSigned signs attest with a fresh software key, as a TPMT_SIGNATURE.
func softwareSigned(attestBytes []byte) ([]byte, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	d := sha256.Sum256(attestBytes)
	r, s, err := ecdsa.Sign(rand.Reader, k, d[:])
	if err != nil {
		return nil, err
	}
	return tpm2.Marshal(tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgECDSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
		Hash: tpm2.TPMAlgSHA256, SignatureR: tpm2.TPM2BECCParameter{Buffer: r.Bytes()}, SignatureS: tpm2.TPM2BECCParameter{Buffer: s.Bytes()}})}), nil
}

// TestIAKRework reworks a unit with an IAK twice: a rework that keeps the IDevID keeps the IAK
// certificate and its certification; one that issues the IDevID again supersedes the IAK
// certificate too: the IAK certifies the IDevID key again and is certified again.
func TestIAKRework(t *testing.T) {
	ctx := context.Background()
	l := newTestLine(t, lineOptions{configure: withIAK})
	l.workOrder("WO-1", "SN-0001")
	sim := l.manufacture(nil, tpm.ECCP256)
	st := l.srv.Store()
	issuedIAKs := func() (n int) {
		for _, e := range l.ca.Ledger() {
			if e.Label == "iak" {
				n++
			}
		}
		return n
	}
	run := func(rework bool) *traveler.Record {
		t.Helper()
		if rework {
			if _, err := st.AuthorizeRework(ctx, "SN-0001", "admin:CN=test", "retest"); err != nil {
				t.Fatal(err)
			}
		}
		if v := l.runUnit(ctx, "SN-0001", sim); !v.Passed {
			t.Fatalf("verdict %+v", v)
		}
		rec, err := traveler.Build(ctx, st, "SN-0001")
		if err != nil {
			t.Fatal(err)
		}
		if rec.IAK == nil || rec.IAKCertification == nil {
			t.Fatalf("traveler IAK %v, certification %v", rec.IAK, rec.IAKCertification)
		}
		return rec
	}
	statuses := func(rec *traveler.Record) string {
		var b strings.Builder
		for _, c := range rec.Certificates {
			b.WriteString(c.Role + ":" + c.Status + " ")
		}
		return strings.TrimSpace(b.String())
	}

	first := run(false)
	kept := run(true)
	if n := issuedIAKs(); n != 1 || kept.IAK.SHA256 != first.IAK.SHA256 || *kept.IAKCertification != *first.IAKCertification {
		t.Fatalf("a rework that keeps the IDevID: %d IAK certificates issued, IAK %s (was %s)", n, kept.IAK.SHA256, first.IAK.SHA256)
	}
	if _, err := sim.NVUndefine(0x01C90000, tpm.Platform); err != nil {
		t.Fatal(err)
	}
	again := run(true)
	if n := issuedIAKs(); n != 2 || again.IAK.SHA256 == first.IAK.SHA256 {
		t.Fatalf("a rework that issues the IDevID again: %d IAK certificates issued, IAK %s", n, again.IAK.SHA256)
	}
	if got, want := statuses(again), "IAK:superseded IDevID:superseded LDevID:superseded LDevID:superseded IAK:active IDevID:active LDevID:active"; got != want {
		t.Errorf("certificate history %q, want %q", got, want)
	}
	c, f := again.IAKCertification, first.IAKCertification
	// Both keys are primaries of the endorsement seed: recreated, they are the same keys, and
	// the IDevID is certified again with a fresh nonce.
	if c.IAKName != f.IAKName || c.CertifiedName != f.CertifiedName || c.Nonce == f.Nonce || c.AttestSHA256 == f.AttestSHA256 {
		t.Errorf("certification after the reissue %+v, before %+v: want the same keys certified again with a new nonce", c, f)
	}
}
