package server

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"testing"

	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/station/journal"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
)

// TestEnrollIntentNamesCSRAndKey checks that each enrollment's intent, journaled before the
// request leaves, names the CA, the CSR's SHA-256 and the key (TPM Name and public key hash)
// that the certificate the CA issued is for.
func TestEnrollIntentNamesCSRAndKey(t *testing.T) {
	l := newTestLine(t, lineOptions{})
	l.workOrder("WO-1", "SN-0001")
	sim := l.manufacture(nil, tpm.ECCP256)
	if v := l.runUnit(context.Background(), "SN-0001", sim); !v.Passed {
		t.Fatalf("verdict: %+v", v)
	}
	st := l.srv.Store()
	recs, err := st.StepRecords(context.Background(), "SN-0001")
	if err != nil {
		t.Fatal(err)
	}
	csrs := map[string][]byte{}
	for _, r := range recs {
		if r.Step == workflow.StepIDevIDCSR || r.Step == workflow.StepLDevIDCSR {
			var res struct{ CSR []byte }
			if err := json.Unmarshal(r.Result, &res); err != nil {
				t.Fatal(err)
			}
			csrs[r.Step] = res.CSR
		}
	}
	byKey := map[string]bool{} // public key hashes of the certificates the CA issued
	for _, e := range l.ca.Ledger() {
		c, err := x509.ParseCertificate(e.DER)
		if err != nil {
			t.Fatal(err)
		}
		byKey[workflow.PublicKeySHA256(c.PublicKey)] = true
	}
	u := l.unit("SN-0001")
	for _, tc := range []struct{ enroll, csr, ca, role string }{
		{workflow.StepIDevIDEnroll, workflow.StepIDevIDCSR, "maker", string(store.RoleIDevID)},
		{workflow.StepLDevIDEnroll, workflow.StepLDevIDCSR, "customer", string(store.RoleLDevID)},
	} {
		n := 0
		for _, r := range recs {
			if r.Step != tc.enroll {
				continue
			}
			n++
			var in journal.Intent
			if err := json.Unmarshal(r.Intent, &in); err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(csrs[tc.csr])
			if in.CA != tc.ca || in.CSRSHA256 != hex.EncodeToString(sum[:]) {
				t.Errorf("%s intent %+v: want CA %s and CSR %x", tc.enroll, in, tc.ca, sum)
			}
			if !byKey[in.PublicKeySHA256] {
				t.Errorf("%s intent names key %s; the CA issued no certificate for it", tc.enroll, in.PublicKeySHA256)
			}
			if want := hex.EncodeToString(u.Keys[tc.role].Name); in.KeyName != want {
				t.Errorf("%s intent key name %s, want %s", tc.enroll, in.KeyName, want)
			}
		}
		if n != 1 {
			t.Errorf("%d %s records, want 1", n, tc.enroll)
		}
	}
}
