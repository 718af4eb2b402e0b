package server

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
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/devid-station/devid/device-agent/agent"
	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/fixture/devpki"
	"github.com/devid-station/devid/fixture/estca"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
)

// lyingTPM is a compromised agent: a real TPM behind it, with some answers replaced.
type lyingTPM struct {
	agent.TPM
	readEK      func(tpm.Algorithm) (*tpm.EK, error)
	readEKChain func() ([][]byte, error)
	createKey   func(tpm.KeyRequest) (*tpm.Key, error)
	activate    func(keyHandle uint32, ekAlg tpm.Algorithm, blob, secret []byte) ([]byte, error)
	buildCSR    func(uint32, []byte, []pkix.Extension, tpm.Scheme) ([]byte, error)
}

func (l *lyingTPM) ReadEKChain() ([][]byte, error) {
	if l.readEKChain != nil {
		return l.readEKChain()
	}
	return l.TPM.ReadEKChain()
}

func (l *lyingTPM) ActivateCredential(keyHandle uint32, ekAlg tpm.Algorithm, blob, secret []byte) ([]byte, error) {
	if l.activate != nil {
		return l.activate(keyHandle, ekAlg, blob, secret)
	}
	return l.TPM.ActivateCredential(keyHandle, ekAlg, blob, secret)
}

func (l *lyingTPM) ReadEK(alg tpm.Algorithm) (*tpm.EK, error) {
	if l.readEK != nil {
		return l.readEK(alg)
	}
	return l.TPM.ReadEK(alg)
}

func (l *lyingTPM) CreateKey(req tpm.KeyRequest) (*tpm.Key, error) {
	if l.createKey != nil {
		return l.createKey(req)
	}
	return l.TPM.CreateKey(req)
}

func (l *lyingTPM) BuildCSR(h uint32, subject []byte, exts []pkix.Extension, s tpm.Scheme) ([]byte, error) {
	if l.buildCSR != nil {
		return l.buildCSR(h, subject, exts, s)
	}
	return l.TPM.BuildCSR(h, subject, exts, s)
}

// softwarePublic puts a software key into a TPM template, as a lying agent would.
func softwarePublic(t *testing.T, tmpl tpm2.TPMTPublic, k *ecdsa.PublicKey) []byte {
	t.Helper()
	tmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: k.X.FillBytes(make([]byte, 32))},
		Y: tpm2.TPM2BECCParameter{Buffer: k.Y.FillBytes(make([]byte, 32))},
	})
	return tpm2.Marshal(tmpl)
}

func softwareKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestChecksRefuse makes each check fail on purpose: the unit fails with its stable code, the
// failure is in the store, and the dev CA issued nothing.
func TestChecksRefuse(t *testing.T) {
	otherVendor, err := devpki.New(devpki.Options{TPMVendorOrg: "Unknown TPM Vendor"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		serial string
		ekCA   *devpki.CA
		knobs  estca.Knobs
		lie    func(t *testing.T, real *tpm.TPM, l *lyingTPM)
		code   string
		// refused: the session fails the first checks and writes nothing of the unit.
		refused bool
		issued  int
	}{
		{name: "unknown EK vendor CA", ekCA: otherVendor.EKIssuing, code: workflow.CodeEKUntrusted, refused: true},
		{name: "EK public area not its certificate's", code: workflow.CodeEKMismatch, refused: true,
			lie: func(t *testing.T, real *tpm.TPM, l *lyingTPM) {
				l.readEK = func(alg tpm.Algorithm) (*tpm.EK, error) {
					ek, err := real.ReadEK(alg)
					if err == nil && alg == tpm.ECCP256 {
						ek.Public = softwarePublic(t, tpm2.ECCEKTemplate, &softwareKey(t).PublicKey)
					}
					return ek, err
				}
			}},
		{name: "agent answers with a software key", code: workflow.CodeActivationFailed,
			lie: func(t *testing.T, real *tpm.TPM, l *lyingTPM) {
				l.createKey = func(req tpm.KeyRequest) (*tpm.Key, error) {
					if _, err := real.CreateKey(req); err != nil { // a real key sits at the handle
						return nil, err
					}
					pub := softwarePublic(t, tpm.DevIDTemplate(tpm.ECCP256), &softwareKey(t).PublicKey)
					name, err := tpm.Name(pub)
					if err != nil {
						t.Fatal(err)
					}
					return &tpm.Key{Public: pub, Name: name, Handle: req.Handle}, nil
				}
			}},
		{name: "agent reports a Name that is not its key's", code: workflow.CodeKeyNameMismatch,
			lie: func(t *testing.T, real *tpm.TPM, l *lyingTPM) {
				l.createKey = func(req tpm.KeyRequest) (*tpm.Key, error) {
					k, err := real.CreateKey(req)
					if err == nil {
						k.Name = append([]byte{0, 0x0b}, make([]byte, 32)...)
					}
					return k, err
				}
			}},
		{name: "CSR signed by another key", code: workflow.CodeCSRInvalid,
			lie: func(t *testing.T, real *tpm.TPM, l *lyingTPM) {
				l.buildCSR = func(_ uint32, subject []byte, exts []pkix.Extension, _ tpm.Scheme) ([]byte, error) {
					return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{RawSubject: subject, ExtraExtensions: exts}, softwareKey(t))
				}
			}},
		{name: "CSR with another subject", code: workflow.CodeCSRInvalid,
			lie: func(t *testing.T, real *tpm.TPM, l *lyingTPM) {
				l.buildCSR = func(h uint32, _ []byte, exts []pkix.Extension, s tpm.Scheme) ([]byte, error) {
					other, _ := workflowSubject("SN-EVIL")
					return real.BuildCSR(h, other, exts, s)
				}
			}},
		{name: "CSR with a challengePassword, signed by the TPM key", code: workflow.CodeCSRInvalid,
			lie: func(t *testing.T, real *tpm.TPM, l *lyingTPM) {
				l.buildCSR = func(h uint32, subject []byte, exts []pkix.Extension, s tpm.Scheme) ([]byte, error) {
					csr, err := real.BuildCSR(h, subject, exts, s)
					if err != nil {
						return nil, err
					}
					return withChallengePassword(t, real, h, csr), nil
				}
			}},
		{name: "serial outside every work order", serial: "SN-9999", code: workflow.CodeNotAuthorized, refused: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newTestLine(t, lineOptions{knobs: tc.knobs})
			l.workOrder("WO-1", "SN-0001")
			serial := tc.serial
			if serial == "" {
				serial = "SN-0001"
			}
			real := l.manufacture(tc.ekCA, tpm.ECCP256, tpm.RSA2048)
			lying := &lyingTPM{TPM: real}
			if tc.lie != nil {
				tc.lie(t, real, lying)
			}
			v := l.runUnit(context.Background(), serial, lying)
			if v.Passed || v.Code != tc.code {
				t.Fatalf("verdict %+v, want failed with %s", v, tc.code)
			}
			// The code travels in a field of its own; the message does not repeat it.
			if v.Message == "" || strings.Contains(v.Message, tc.code+": ") {
				t.Errorf("verdict message %q: want a message without the code %s", v.Message, tc.code)
			}
			if tc.refused {
				// Refused before its first checks passed: no unit record, one bounded refusal.
				if u := l.unit(serial); u.Status != "" {
					t.Errorf("a refused session wrote the unit %+v", u)
				}
				refusals, _, err := l.srv.Store().Refusals(context.Background())
				if err != nil || len(refusals) != 1 || refusals[0].Code != tc.code || refusals[0].Serial != serial {
					t.Errorf("refusals %+v (%v), want one %s for %s", refusals, err, tc.code, serial)
				}
			} else if u := l.unit(serial); u.Status != wantStatus(tc.code) || u.ErrorCode != tc.code {
				t.Errorf("stored unit %+v, want %s with %s", u, wantStatus(tc.code), tc.code)
			}
			if strings.Contains(l.unit(serial).ErrorMessage, tc.code+": ") {
				t.Errorf("stored error message %q repeats the code %s", l.unit(serial).ErrorMessage, tc.code)
			}
			if n := len(l.ca.Ledger()); n != tc.issued {
				t.Errorf("the CA issued %d certificates, want %d", n, tc.issued)
			}
			l.issuedAllKnown(l.srv.Store())
		})
	}
}

// wantStatus is the status of an admitted unit that failed with code: a security failure after
// its TPM proved it holds the EK (the IDevID's credential activation) holds it for QA; one
// before (the key step, the activation itself) or of another class fails it.
func wantStatus(code string) store.Status {
	switch {
	case workflow.Class(code) != workflow.ClassSecurity, code == workflow.CodeActivationFailed,
		code == workflow.CodeKeyNameMismatch, code == workflow.CodeKeyAttributes:
		return store.StatusFailed
	}
	return store.StatusHold
}

// withChallengePassword re-signs csr with the TPM key at h after adding a challengePassword
// attribute: a CSR whose key, signature, subject and extensions all check out.
func withChallengePassword(t *testing.T, real *tpm.TPM, h uint32, csr []byte) []byte {
	t.Helper()
	parsed, err := x509.ParseCertificateRequest(csr)
	if err != nil {
		t.Fatal(err)
	}
	var tbs struct {
		Version             int
		Subject, Key, Attrs asn1.RawValue
	}
	if _, err := asn1.Unmarshal(parsed.RawTBSCertificateRequest, &tbs); err != nil {
		t.Fatal(err)
	}
	value, err := asn1.MarshalWithParams("let-me-in", "utf8")
	if err != nil {
		t.Fatal(err)
	}
	pw, err := asn1.Marshal(struct {
		Type   asn1.ObjectIdentifier
		Values asn1.RawValue
	}{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 7}, asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSet, IsCompound: true, Bytes: value}})
	if err != nil {
		t.Fatal(err)
	}
	tbs.Attrs = asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: append(tbs.Attrs.Bytes, pw...)}
	raw, err := asn1.Marshal(tbs)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(raw)
	sig, err := real.Sign(h, digest[:], crypto.SHA256, tpm.ECDSA)
	if err != nil {
		t.Fatal(err)
	}
	der, err := asn1.Marshal(struct {
		TBS       asn1.RawValue
		Algorithm pkix.AlgorithmIdentifier
		Signature asn1.BitString
	}{asn1.RawValue{FullBytes: raw}, pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}},
		asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := x509.ParseCertificateRequest(der); err != nil || p.CheckSignature() != nil {
		t.Fatalf("the re-signed CSR does not verify: %v", err)
	}
	return der
}

func workflowSubject(serial string) ([]byte, error) {
	return asn1.Marshal(pkix.Name{CommonName: serial, SerialNumber: serial}.ToRDNSequence())
}

// TestEKBoundToAnotherSerial provisions one TPM, then presents it under another serial.
func TestEKBoundToAnotherSerial(t *testing.T) {
	l := newTestLine(t, lineOptions{})
	l.workOrder("WO-1", "SN-0001", "SN-0002")
	sim := l.manufacture(nil, tpm.ECCP256)
	if v := l.runUnit(context.Background(), "SN-0001", sim); !v.Passed {
		t.Fatalf("first unit: %+v", v)
	}
	v := l.runUnit(context.Background(), "SN-0002", sim)
	if v.Passed || v.Code != workflow.CodeEKBound {
		t.Fatalf("second serial on the same TPM: %+v, want %s", v, workflow.CodeEKBound)
	}
	if n := len(l.ca.Ledger()); n != 2 {
		t.Errorf("the CA issued %d certificates, want the first unit's 2", n)
	}
	// The first unit reconnecting with its own serial is told it is already provisioned.
	if v := l.runUnit(context.Background(), "SN-0001", sim); !v.Passed {
		t.Errorf("provisioned unit reconnecting: %+v", v)
	}
	if n := len(l.ca.Ledger()); n != 2 {
		t.Errorf("a reconnect of a provisioned unit issued certificates: ledger %d", n)
	}
}

// TestCAMisissues has the IDevID CA certify another key: the unit fails, and the certificate
// the CA issued is still recorded (and flagged) in the store.
func TestCAMisissues(t *testing.T) {
	l := newTestLine(t, lineOptions{knobs: estca.Knobs{MisissueOtherKey: true}})
	l.workOrder("WO-1", "SN-0001")
	sim := l.manufacture(nil, tpm.ECCP256)
	v := l.runUnit(context.Background(), "SN-0001", sim)
	if v.Passed || v.Code != workflow.CodeCertInvalid {
		t.Fatalf("verdict %+v, want %s", v, workflow.CodeCertInvalid)
	}
	if n := len(l.ca.Ledger()); n != 1 {
		t.Fatalf("ledger %d, want the one misissued certificate", n)
	}
	l.issuedAllKnown(l.srv.Store())
	if nv, err := sim.NVRead(0x01C90000); err == nil {
		t.Errorf("a refused certificate was installed (%d bytes)", len(nv.Data))
	}
}

// laggingClock is a CA clock running behind the station's.
type laggingClock time.Duration

func (c laggingClock) Now() time.Time { return time.Now().Add(-time.Duration(c)) }

// TestCABackdates has the IDevID CA issue with a NotBefore an hour before the request (its clock
// lags): IEEE 802.1AR wants the creation time, so the station refuses the certificate.
func TestCABackdates(t *testing.T) {
	l := newTestLine(t, lineOptions{caClock: laggingClock(time.Hour)})
	l.workOrder("WO-1", "SN-0001")
	sim := l.manufacture(nil, tpm.ECCP256)
	v := l.runUnit(context.Background(), "SN-0001", sim)
	if v.Passed || v.Code != workflow.CodeCertInvalid || !strings.Contains(v.Message, "NotBefore") {
		t.Fatalf("verdict %+v, want %s about NotBefore", v, workflow.CodeCertInvalid)
	}
	l.issuedAllKnown(l.srv.Store())
}

// TestCADropsPolicies has the IDevID CA leave out the TCG DevID certificate policies the
// station asked for: the station refuses the certificate.
func TestCADropsPolicies(t *testing.T) {
	l := newTestLine(t, lineOptions{noPolicies: true})
	l.workOrder("WO-1", "SN-0001")
	sim := l.manufacture(nil, tpm.ECCP256)
	v := l.runUnit(context.Background(), "SN-0001", sim)
	if v.Passed || v.Code != workflow.CodeCertInvalid || !strings.Contains(v.Message, "certificate policies") {
		t.Fatalf("verdict %+v, want %s about the certificate policies", v, workflow.CodeCertInvalid)
	}
	l.issuedAllKnown(l.srv.Store())
}
