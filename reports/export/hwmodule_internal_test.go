package export

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"strings"
	"testing"

	"github.com/devid-station/devid/reports/traveler"
)

// sanWith encodes a subjectAltName holding one hardwareModuleName otherName (RFC 4108), as the
// station's workflow writes it.
func sanWith(t *testing.T, serial []byte) pkix.Extension {
	t.Helper()
	hmn, err := asn1.Marshal(struct {
		Type   asn1.ObjectIdentifier
		Serial []byte
	}{asn1.ObjectIdentifier{2, 23, 133, 1, 2}, serial})
	if err != nil {
		t.Fatal(err)
	}
	on, err := asn1.MarshalWithParams(struct {
		TypeID asn1.ObjectIdentifier
		Value  asn1.RawValue
	}{oidHWModuleName, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: hmn}}, "tag:0")
	if err != nil {
		t.Fatal(err)
	}
	names, err := asn1.Marshal([]asn1.RawValue{{FullBytes: on}})
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: oidSAN, Value: names}
}

func TestCheckHWModule(t *testing.T) {
	tr := &traveler.Record{Serial: "SN-1", EK: &traveler.EKCertificate{SerialNumber: new(big.Int).SetBytes([]byte{0x0a, 0xbc}).Text(16)}}
	for _, c := range []struct {
		name    string
		ext     []pkix.Extension
		wantErr string
	}{
		{"none", nil, ""},
		{"unit serial", []pkix.Extension{sanWith(t, []byte("SN-1"))}, ""},
		{"EK certificate serial", []pkix.Extension{sanWith(t, []byte{0x0a, 0xbc})}, ""},
		{"another unit", []pkix.Extension{sanWith(t, []byte("SN-2"))}, "neither the unit's serial nor its EK"},
		{"malformed", []pkix.Extension{{Id: oidSAN, Value: []byte{0x30, 0x05}}}, "malformed subjectAltName"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := checkHWModule(&x509.Certificate{Extensions: c.ext}, tr)
			if (err == nil) != (c.wantErr == "") || (err != nil && !strings.Contains(err.Error(), c.wantErr)) {
				t.Errorf("error %v, want %q", err, c.wantErr)
			}
		})
	}
}
