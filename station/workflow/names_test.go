package workflow

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"testing"
	"time"
)

func TestHardwareModuleNameRoundTrip(t *testing.T) {
	hwType := asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1, 1}
	ext, ok, err := sanExtension(hwType, []byte("SN-0042"))
	if err != nil || !ok {
		t.Fatalf("sanExtension: %v %v", ok, err)
	}
	gotType, gotSerial, err := parseHardwareModuleName(ext.Value)
	if err != nil || !gotType.Equal(hwType) || string(gotSerial) != "SN-0042" {
		t.Fatalf("parse = %v %q %v", gotType, gotSerial, err)
	}
	// crypto/x509 must accept it in a certificate (an otherName it does not interpret).
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	subject, _ := Subject{CommonName: "{serial}"}.subjectDER("SN-0042")
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(1), RawSubject: subject,
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), ExtraExtensions: []pkix.Extension{ext}}, &x509.Certificate{}, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("x509 refuses the SAN: %v", err)
	}
	if cert.Subject.SerialNumber != "SN-0042" || cert.Subject.CommonName != "SN-0042" {
		t.Errorf("subject %s", cert.Subject)
	}
	other, _, _ := sanExtension(hwType, []byte("SN-0043"))
	if !sameHardwareModuleName(ext.Value, ext.Value) || sameHardwareModuleName(ext.Value, other.Value) {
		t.Error("sameHardwareModuleName does not tell serials apart")
	}
	if _, _, err := parseHardwareModuleName([]byte{0x30, 0x00}); err == nil {
		t.Error("empty SAN parsed")
	}
}

func TestPoliciesExtension(t *testing.T) {
	ext, err := policiesExtension(devIDPolicies)
	if err != nil {
		t.Fatal(err)
	}
	if !ext.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 32}) || ext.Critical {
		t.Fatalf("extension %v critical %v", ext.Id, ext.Critical)
	}
	restricted := asn1.ObjectIdentifier{2, 23, 133, 11, 1, 3}
	for _, tc := range []struct {
		name string
		got  []asn1.ObjectIdentifier
		want bool
	}{
		{"both", []asn1.ObjectIdentifier{OIDVerifiedTPMResidency, OIDVerifiedTPMFixed}, true},
		{"both and another", []asn1.ObjectIdentifier{restricted, OIDVerifiedTPMFixed, OIDVerifiedTPMResidency}, true},
		{"fixed missing", []asn1.ObjectIdentifier{OIDVerifiedTPMResidency, restricted}, false},
		{"none", nil, false},
	} {
		if got := hasPolicies(tc.got, ext.Value); got != tc.want {
			t.Errorf("%s: hasPolicies = %v, want %v", tc.name, got, tc.want)
		}
	}
	if hasPolicies([]asn1.ObjectIdentifier{OIDVerifiedTPMResidency}, []byte{0x04, 0x00}) {
		t.Error("a malformed requested value matched")
	}
	// crypto/x509 reads the extension back as the two policies.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(),
		NotAfter: time.Now().Add(time.Hour), ExtraExtensions: []pkix.Extension{ext}}, &x509.Certificate{}, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil || len(cert.PolicyIdentifiers) != 2 || !hasPolicies(cert.PolicyIdentifiers, ext.Value) {
		t.Fatalf("parsed policies %v (%v)", cert.PolicyIdentifiers, err)
	}
}
