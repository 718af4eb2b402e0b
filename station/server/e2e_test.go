package server

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"os"
	"slices"
	"testing"

	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/fixture/estca"
	"github.com/devid-station/devid/station/config"
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
			// Both carry the TCG DevID policies: TPM residency and fixedTPM verified.
			residency, fixed := asn1.ObjectIdentifier{2, 23, 133, 11, 1, 1}, asn1.ObjectIdentifier{2, 23, 133, 11, 1, 2}
			for _, c := range []*x509.Certificate{idevid, ldevid(t, l.file.Profiles[0].LDevIDCertPath)} {
				if !slices.EqualFunc(c.PolicyIdentifiers, []asn1.ObjectIdentifier{residency, fixed}, asn1.ObjectIdentifier.Equal) {
					t.Errorf("%s policies %v, want verifiedTPMResidency and verifiedTPMFixed", c.Subject, c.PolicyIdentifiers)
				}
			}
			// The IDevID names the TPM (TCG DevID): hwType TPM 2.0, hwSerialNum the EK
			// certificate's serial number.
			ek, err := sim.ReadEK(tc.ek)
			if err != nil {
				t.Fatal(err)
			}
			ekCert, err := x509.ParseCertificate(ek.Certificate)
			if err != nil {
				t.Fatal(err)
			}
			if typ, serial := hardwareModuleName(t, idevid); !typ.Equal(asn1.ObjectIdentifier{2, 23, 133, 1, 2}) || !bytes.Equal(serial, ekCert.SerialNumber.Bytes()) {
				t.Errorf("IDevID hardwareModuleName %v %x, want 2.23.133.1.2 %x (the EK certificate's serial)", typ, serial, ekCert.SerialNumber.Bytes())
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
			// The test line's LDevID profile chose hardware_module_name = "serial".
			if typ, serial := hardwareModuleName(t, fileCerts[0]); !typ.Equal(asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1, 1}) || string(serial) != "SN-0001" {
				t.Errorf("LDevID hardwareModuleName %v %q, want the profile's hwType and the serial", typ, serial)
			}
			ob := l.file.Profiles[0].Onboarding
			onboarding, err := os.ReadFile(ob.Path)
			if err != nil || !bytes.Contains(onboarding, []byte(`registration_id = "SN-0001"`)) {
				t.Errorf("onboarding config missing or wrong (%v):\n%s", err, onboarding)
			}
			// The files the configuration names are on the unit: the trust bundle, the PIN
			// (0600, also the pin-value of the PKCS#11 URIs), the LDevID; and it passes the
			// Identity Service schema check.
			if problems := config.CheckAzureIoTIdentity(onboarding); len(problems) != 0 {
				t.Errorf("onboarding config fails the schema: %q", problems)
			}
			bundle, err := os.ReadFile(ob.TrustBundlePath)
			if block, _ := pem.Decode(bundle); err != nil || block == nil || !bytes.Equal(block.Bytes, l.pki.MakerRoot.Cert.Raw) {
				t.Errorf("trust bundle %s: %v, does not hold the EST server's root", ob.TrustBundlePath, err)
			}
			if !bytes.Contains(onboarding, []byte(`trusted_certs = ["file://`+ob.TrustBundlePath+`"]`)) {
				t.Errorf("config does not name the trust bundle %s", ob.TrustBundlePath)
			}
			pin, err := os.ReadFile(ob.PINPath)
			st, statErr := os.Stat(ob.PINPath)
			if err != nil || statErr != nil || st.Mode().Perm() != 0o600 || len(bytes.TrimSpace(pin)) != 32 {
				t.Fatalf("PIN file %s: %v %v, %d bytes", ob.PINPath, err, statErr, len(pin))
			}
			if want := "object=ldevid?pin-value=" + string(bytes.TrimSpace(pin)); !bytes.Contains(onboarding, []byte(want)) {
				t.Error("the bootstrap key's URI does not carry the unit's PIN as pin-value")
			}
			// The PIN is the unit's secret: the station's store never holds it.
			if db, err := os.ReadFile(l.file.StorePath); err != nil || bytes.Contains(db, bytes.TrimSpace(pin)) {
				t.Errorf("the store holds the unit's PIN (or cannot be read: %v)", err)
			}
		})
	}
}

// ldevid reads the LDevID certificate, the first of the PEM file on the unit.
func ldevid(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s holds no PEM", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// hardwareModuleName decodes the one hardwareModuleName otherName (RFC 4108) of a
// certificate's subjectAltName, independently of the station's code.
func hardwareModuleName(t *testing.T, c *x509.Certificate) (asn1.ObjectIdentifier, []byte) {
	t.Helper()
	for _, e := range c.Extensions {
		if !e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 17}) {
			continue
		}
		var names []asn1.RawValue
		if _, err := asn1.Unmarshal(e.Value, &names); err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			var on struct {
				Type  asn1.ObjectIdentifier
				Value asn1.RawValue // [0] EXPLICIT around the name
			}
			if n.Tag != 0 || n.Class != asn1.ClassContextSpecific {
				continue
			}
			if _, err := asn1.UnmarshalWithParams(n.FullBytes, &on, "tag:0"); err != nil {
				t.Fatal(err)
			}
			var hmn struct {
				Type   asn1.ObjectIdentifier
				Serial []byte
			}
			if _, err := asn1.Unmarshal(on.Value.Bytes, &hmn); err != nil {
				t.Fatal(err)
			}
			return hmn.Type, hmn.Serial
		}
	}
	t.Fatalf("%s has no hardwareModuleName", c.Subject)
	return nil, nil
}

// TestLostCAAnswer has the IDevID CA issue and then drop its answer: the EST client retries the
// same CSR, the (deduplicating) CA answers with the certificate it issued, and the store knows
// every certificate in the CA's ledger. It needs a CA that deduplicates CSRs: one that does
// not issues a second certificate, which only a reconciliation finds.
func TestLostCAAnswer(t *testing.T) {
	l := newTestLine(t, lineOptions{knobs: estca.Knobs{LoseAnswers: 1}, idempotentCSR: true})
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
