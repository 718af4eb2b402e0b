package ctl_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devid-station/devid/reports/traveler/travelertest"
	"github.com/devid-station/devid/station/api/apitest"
	"github.com/devid-station/devid/station/store"
)

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestPossiblyIssuedAndImport lists an open possibly-issued entry, imports the CA's issuance
// log (QA; an operator may not), and finds the entry closed and the certificate recorded.
func TestPossiblyIssuedAndImport(t *testing.T) {
	f := newFixture(t)
	st := f.env.Store
	travelertest.WriteUnit(t, st, travelertest.Unit{Serial: "SN-0001", WorkOrder: "WO-1", Profile: "default"})
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(99), Subject: pkix.Name{CommonName: "SN-0001"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	spki, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	now := time.Now()
	p, err := st.OpenPossiblyIssued(t.Context(), store.PossiblyIssued{Serial: "SN-0001", Role: store.RoleLDevID,
		Step: "ldevid_enroll", Attempt: 1, CA: "customer", CSRSHA256: hexSum([]byte("csr")), PublicKeySHA256: hexSum(spki),
		From: now.Add(-time.Second), To: now})
	if err != nil {
		t.Fatal(err)
	}
	out := f.mustRun(t, apitest.Operator, "possibly-issued")
	if column(t, out, 1, "ID") != p.ID || column(t, out, 1, "STATE") != "open" {
		t.Fatalf("possibly-issued:\n%s", out)
	}
	if out := f.mustRun(t, apitest.Operator, "-o", "json", "traveler", "SN-0001"); !strings.Contains(out, `"possibly_issued"`) || !strings.Contains(out, p.ID) {
		t.Errorf("the traveler does not show the open entry:\n%s", out)
	}
	logFile := filepath.Join(t.TempDir(), "issued.jsonl")
	line := `{"der":"` + base64.StdEncoding.EncodeToString(der) + `","time":"` + now.Add(time.Second).UTC().Format(time.RFC3339Nano) + `"}` + "\n"
	if err := os.WriteFile(logFile, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := f.run(t, apitest.Operator, "reconcile", "import", logFile, "--ca", "customer"); err == nil || !strings.Contains(err.Error(), "PermissionDenied") {
		t.Errorf("an operator imported an issuance log: %v", err)
	}
	if _, err := f.run(t, apitest.QA, "reconcile", "import", logFile); err == nil {
		t.Error("import without --ca was accepted")
	}
	out = f.mustRun(t, apitest.QA, "reconcile", "import", logFile, "--ca", "customer")
	if !strings.Contains(out, "1 entries closed, 1 certificates recorded, 0 entries of customer still open") {
		t.Errorf("reconcile import:\n%s", out)
	}
	if out := f.mustRun(t, apitest.Operator, "possibly-issued"); len(rows(out)) != 1 {
		t.Errorf("open entries after the import:\n%s", out)
	}
	out = f.mustRun(t, apitest.Operator, "possibly-issued", "--all", "--serial", "SN-0001")
	if !strings.HasPrefix(column(t, out, 1, "STATE"), "closed") {
		t.Errorf("possibly-issued --all:\n%s", out)
	}
	if out := f.mustRun(t, apitest.Operator, "-o", "json", "traveler", "SN-0001"); strings.Contains(out, `"possibly_issued"`) {
		t.Errorf("the traveler still shows the reconciled entry:\n%s", out)
	}
	rec, err := st.CertificateBySHA256(t.Context(), hexSum(der))
	if err != nil || rec.Serial != "SN-0001" || rec.Role != store.RoleLDevID {
		t.Fatalf("imported certificate: %+v, %v", rec, err)
	}
	u, err := st.Unit(t.Context(), "SN-0001")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range u.Certificates {
		if c.SHA256 == rec.SHA256 && c.Current() != store.CertSuperseded && c.Current() != store.CertDuplicate {
			t.Errorf("imported certificate is %s", c.Current())
		}
	}
}
