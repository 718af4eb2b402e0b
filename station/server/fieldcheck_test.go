package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/reports/traveler"
	"github.com/devid-station/devid/station/config"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
)

// withFieldCheck sets the test line's profile's field check.
func withFieldCheck(fc config.FieldCheck) func(*config.File) {
	return func(f *config.File) { f.Profiles[0].FieldCheck = &fc }
}

// TestFieldCheckHandshake runs a unit on the simulator whose profile has the field check make
// an mTLS request with the LDevID, signed by the TPM through the session, to the customer's
// dev EST CA (which asks every client for a certificate): the traveler records it.
func TestFieldCheckHandshake(t *testing.T) {
	l := newTestLine(t, lineOptions{configure: func(f *config.File) {
		withFieldCheck(config.FieldCheck{Mode: workflow.FieldCheckHandshake,
			URL: f.CAs[1].URL + "/.well-known/est/ldevid/cacerts", TrustAnchors: []string{"pki/maker-root-ca.pem"}})(f)
	}})
	l.workOrder("WO-1", "SN-0001")
	v := l.runUnit(context.Background(), "SN-0001", l.manufacture(nil, tpm.ECCP256))
	if !v.Passed {
		t.Fatalf("verdict %+v", v)
	}
	rec, err := traveler.Build(context.Background(), l.srv.Store(), "SN-0001")
	if err != nil {
		t.Fatal(err)
	}
	fc := rec.FieldCheck
	if fc == nil || fc.Mode != workflow.FieldCheckHandshake || fc.HTTPStatus != http.StatusOK || fc.TLSVersion == "" || fc.Signatures < 1 ||
		fc.ClientCertSHA256 != rec.LDevID.SHA256 || fc.Reenrolled != nil {
		t.Errorf("traveler field check %+v; want a handshake with the LDevID %s answered 200 after a TPM signature", fc, rec.LDevID.SHA256)
	}
	if n := len(l.ca.Ledger()); n != 2 {
		t.Errorf("the CAs issued %d certificates; a handshake issues none (want 2)", n)
	}
}

// TestFieldCheckReenroll runs a unit whose profile re-enrolls the LDevID at its CA (EST
// /simplereenroll over TLS authenticated by the LDevID in the TPM): the new certificate is for
// the same key, recorded in the certificate index (duplicate, not installed) and shown in the
// traveler, and the CA saw the LDevID as the client.
func TestFieldCheckReenroll(t *testing.T) {
	l := newTestLine(t, lineOptions{configure: withFieldCheck(config.FieldCheck{Mode: workflow.FieldCheckReenroll})})
	l.workOrder("WO-1", "SN-0001")
	v := l.runUnit(context.Background(), "SN-0001", l.manufacture(nil, tpm.ECCP256))
	if !v.Passed {
		t.Fatalf("verdict %+v", v)
	}
	led := l.ca.Ledger()
	if len(led) != 3 {
		t.Fatalf("the CAs issued %d certificates, want IDevID, LDevID and the re-enrolled LDevID", len(led))
	}
	re := led[2]
	if re.Label != "ldevid" || re.Op != "simplereenroll" || !strings.Contains(re.Principal, "CN=SN-0001") {
		t.Errorf("last issuance: %s %s by %q; want ldevid simplereenroll by the unit's LDevID", re.Label, re.Op, re.Principal)
	}
	l.issuedAllKnown(l.srv.Store())
	rec, err := traveler.Build(context.Background(), l.srv.Store(), "SN-0001")
	if err != nil {
		t.Fatal(err)
	}
	fc := rec.FieldCheck
	if fc == nil || fc.Mode != workflow.FieldCheckReenroll || fc.Reenrolled == nil || fc.Reenrolled.SHA256 != re.SHA256 ||
		fc.Signatures < 1 || fc.ClientCertSHA256 != rec.LDevID.SHA256 {
		t.Fatalf("traveler field check %+v; want the re-enrolled certificate %s, authenticated by the LDevID", fc, re.SHA256)
	}
	old, renewed := parsePEMCert(t, rec.LDevID.PEM), parsePEMCert(t, fc.Reenrolled.PEM)
	if !publicKeysEqual(t, old, renewed) || old.Subject.String() != renewed.Subject.String() || old.SerialNumber.Cmp(renewed.SerialNumber) == 0 {
		t.Errorf("re-enrolled %s serial %x; want a new certificate for the LDevID key and subject %s", renewed.Subject, renewed.SerialNumber, old.Subject)
	}
	cr, err := l.srv.Store().CertificateBySHA256(context.Background(), re.SHA256)
	if err != nil || cr.Role != store.RoleLDevID || cr.Serial != "SN-0001" {
		t.Fatalf("certificate index: %+v, %v", cr, err)
	}
	var found bool
	for _, c := range l.unit("SN-0001").Certificates {
		if c.SHA256 == re.SHA256 {
			found = true
			if c.Current() != store.CertDuplicate {
				t.Errorf("re-enrolled certificate status %s; want %s (the unit keeps its provisioned LDevID)", c.Current(), store.CertDuplicate)
			}
		}
	}
	if !found {
		t.Error("the unit's certificates lack the re-enrolled one")
	}
	// The unit keeps the LDevID it was provisioned with.
	if onUnit := ldevid(t, l.file.Profiles[0].LDevIDCertPath); onUnit.SerialNumber.Cmp(old.SerialNumber) != 0 {
		t.Errorf("the unit's LDevID file holds serial %x; want the provisioned %x", onUnit.SerialNumber, old.SerialNumber)
	}
}

// TestFieldCheckRefused: an endpoint that requires a client certificate from another CA
// refuses the LDevID, and one that asks for none proves nothing; either way the unit fails
// with the field check's code.
func TestFieldCheckRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		auth tls.ClientAuthType
		code string
	}{
		{"client certificate of another CA", tls.RequireAndVerifyClientCert, workflow.CodeFieldCheckRejected},
		{"no client certificate asked", tls.NoClientCert, workflow.CodeFieldCheckNoClientAuth},
	} {
		t.Run(tc.name, func(t *testing.T) {
			endpoint := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
			t.Cleanup(endpoint.Close)
			anchors := filepath.Join(t.TempDir(), "endpoint-ca.pem")
			l := newTestLine(t, lineOptions{configure: func(f *config.File) {
				// It trusts only the maker's root, so the customer's LDevID does not verify.
				pool := x509.NewCertPool()
				makerRoot, err := os.ReadFile(filepath.Join(filepath.Dir(f.StorePath), "pki/maker-root-ca.pem"))
				if err != nil || !pool.AppendCertsFromPEM(makerRoot) {
					t.Fatalf("reading the maker's root: %v", err)
				}
				endpoint.TLS = &tls.Config{ClientAuth: tc.auth, ClientCAs: pool}
				endpoint.StartTLS()
				if err := os.WriteFile(anchors, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: endpoint.Certificate().Raw}), 0o644); err != nil {
					t.Fatal(err)
				}
				withFieldCheck(config.FieldCheck{Mode: workflow.FieldCheckHandshake, URL: endpoint.URL + "/health", TrustAnchors: []string{anchors}})(f)
			}})
			l.workOrder("WO-1", "SN-0001")
			v := l.runUnit(context.Background(), "SN-0001", l.manufacture(nil, tpm.ECCP256))
			if v.Passed || v.Code != tc.code {
				t.Fatalf("verdict %+v; want failed with %s", v, tc.code)
			}
			if u := l.unit("SN-0001"); u.Status != store.StatusFailed || u.ErrorCode != tc.code || u.CurrentStep != workflow.StepFieldCheck {
				t.Errorf("unit %s at %s with %s; want failed at %s with %s", u.Status, u.CurrentStep, u.ErrorCode, workflow.StepFieldCheck, tc.code)
			}
		})
	}
}

func parsePEMCert(t *testing.T, data string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(data))
	if b == nil {
		t.Fatal("no PEM certificate")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func publicKeysEqual(t *testing.T, a, b *x509.Certificate) bool {
	t.Helper()
	pa, err := x509.MarshalPKIXPublicKey(a.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := x509.MarshalPKIXPublicKey(b.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pa) == string(pb)
}
