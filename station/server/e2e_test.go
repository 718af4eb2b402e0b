package server

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"testing"

	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/fixture/estca"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
)

// TestProvisionHappyPath runs the whole workflow with a real agent on the TPM simulator, the
// dev EST CAs over TLS and a real store, for a unit with an ECC EK and one with only an RSA EK,
// and for both LDevID authentication modes.
func TestProvisionHappyPath(t *testing.T) {
	tests := []struct {
		name string
		ek   tpm.Algorithm
		auth string
	}{
		{"ecc ek, idevid mtls", tpm.ECCP256, workflow.AuthIDevIDMTLS},
		{"rsa ek, idevid mtls", tpm.RSA2048, workflow.AuthIDevIDMTLS},
		{"ecc ek, station ra", tpm.ECCP256, workflow.AuthStationRA},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newTestLine(t, lineOptions{ldevidAuth: tc.auth})
			l.workOrder("WO-1", "SN-0001")
			sim := l.manufacture(nil, tc.ek)
			v := l.runUnit(context.Background(), "SN-0001", sim)
			if !v.Passed {
				t.Fatalf("verdict %+v", v)
			}
			u := l.unit("SN-0001")
			if u.Status != store.StatusDone || u.WorkOrderID != "WO-1" || u.EKFingerprint == "" {
				t.Fatalf("unit state %+v", u)
			}
			if len(u.Certificates) != 2 {
				t.Fatalf("unit has %d certificates, want IDevID and LDevID", len(u.Certificates))
			}
			led := l.ca.Ledger()
			if len(led) != 2 {
				t.Fatalf("CA issued %d certificates, want 2", len(led))
			}
			l.issuedAllKnown(l.srv.Store())

			// What the unit holds, read without the station: the IDevID in NV, the LDevID file.
			nv, err := sim.NVRead(0x01C90000)
			if err != nil {
				t.Fatal(err)
			}
			idevid, err := x509.ParseCertificate(nv.Data)
			if err != nil {
				t.Fatal(err)
			}
			if idevid.Subject.SerialNumber != "SN-0001" || idevid.NotAfter.Year() != 9999 {
				t.Errorf("IDevID subject %s, not after %s", idevid.Subject, idevid.NotAfter)
			}
			if nv.Attributes&(1<<11) == 0 {
				t.Error("IDevID NV index is not write-locked")
			}
			pemData, err := os.ReadFile(l.file.Profiles[0].LDevIDCertPath)
			if err != nil {
				t.Fatal(err)
			}
			var fileCerts []*x509.Certificate
			for rest := pemData; ; {
				var block *pem.Block
				if block, rest = pem.Decode(rest); block == nil {
					break
				}
				c, err := x509.ParseCertificate(block.Bytes)
				if err != nil {
					t.Fatal(err)
				}
				fileCerts = append(fileCerts, c)
			}
			if len(fileCerts) < 2 {
				t.Fatalf("LDevID file holds %d certificates, want the leaf and its chain", len(fileCerts))
			}
			inter := x509.NewCertPool()
			for _, c := range fileCerts[1:] {
				inter.AddCert(c)
			}
			if _, err := fileCerts[0].Verify(x509.VerifyOptions{Roots: l.pki.CustomerRoot.RootPool(), Intermediates: inter,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				t.Errorf("LDevID file does not chain to the customer root: %v", err)
			}
			if fileCerts[0].Subject.SerialNumber != "SN-0001" {
				t.Errorf("LDevID subject %s", fileCerts[0].Subject)
			}
			onboarding, err := os.ReadFile(l.file.Profiles[0].Onboarding.Path)
			if err != nil || !bytes.Contains(onboarding, []byte(`registration_id = "SN-0001"`)) {
				t.Errorf("onboarding config missing or wrong (%v):\n%s", err, onboarding)
			}
		})
	}
}

// TestLostCAAnswer has the IDevID CA issue and then drop its answer: the EST client retries the
// same CSR, the (deduplicating) CA answers with the certificate it issued, and the store knows
// every certificate in the CA's ledger.
func TestLostCAAnswer(t *testing.T) {
	l := newTestLine(t, lineOptions{knobs: estca.Knobs{LoseAnswers: 1}})
	l.workOrder("WO-1", "SN-0001")
	sim := l.manufacture(nil, tpm.ECCP256)
	if v := l.runUnit(context.Background(), "SN-0001", sim); !v.Passed {
		t.Fatalf("verdict %+v", v)
	}
	led := l.ca.Ledger()
	if len(led) != 2 || !led[0].AnswerDropped {
		t.Fatalf("ledger %d entries (first dropped: %v), want 2 with the first answer lost", len(led), len(led) > 0 && led[0].AnswerDropped)
	}
	l.issuedAllKnown(l.srv.Store())
}
