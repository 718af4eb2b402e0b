package ekcert

import (
	"bytes"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"testing"
)

var testID = TPMIdentity{Manufacturer: "id:49424D00", Model: "SW   TPM", Version: "id:00010002"}

// dirNameSAN encodes GeneralNames holding one directoryName with the given RDNs.
func dirNameSAN(t *testing.T, rdns pkix.RDNSequence) []byte {
	t.Helper()
	name, err := asn1.Marshal(rdns)
	if err != nil {
		t.Fatal(err)
	}
	v, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: name}})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func atv(oid string, v any) pkix.AttributeTypeAndValue {
	return pkix.AttributeTypeAndValue{Type: OID(oid), Value: v}
}

func TestSANExtensionRoundTrip(t *testing.T) {
	ext, err := SANExtension(testID)
	if err != nil {
		t.Fatal(err)
	}
	if !ext.Critical || ext.Id.String() != OIDSubjectAltName {
		t.Errorf("extension %s critical=%v, want critical %s", ext.Id, ext.Critical, OIDSubjectAltName)
	}
	got, err := ParseSAN(ext.Value)
	if err != nil {
		t.Fatalf("ParseSAN: %v", err)
	}
	if got != testID {
		t.Errorf("ParseSAN = %+v, want %+v", got, testID)
	}
	// Values are UTF8String as the profile says, even when printable, one attribute per RDN.
	type rawATV struct {
		Type  asn1.ObjectIdentifier
		Value asn1.RawValue
	}
	type rawRDNSET []rawATV
	var gns []asn1.RawValue
	if _, err := asn1.Unmarshal(ext.Value, &gns); err != nil || len(gns) != 1 {
		t.Fatalf("GeneralNames: %v (%d names)", err, len(gns))
	}
	var rdns []rawRDNSET
	if _, err := asn1.Unmarshal(gns[0].Bytes, &rdns); err != nil {
		t.Fatalf("directoryName: %v", err)
	}
	if len(rdns) != 3 {
		t.Fatalf("directoryName has %d RDNs, want 3", len(rdns))
	}
	for i, want := range []string{OIDTPMManufacturer, OIDTPMModel, OIDTPMVersion} {
		if len(rdns[i]) != 1 || rdns[i][0].Type.String() != want || rdns[i][0].Value.Tag != asn1.TagUTF8String {
			t.Errorf("RDN %d = %+v, want one UTF8String %s", i, rdns[i], want)
		}
	}
	if _, err := SANExtension(TPMIdentity{Manufacturer: "id:49424D00", Model: "m"}); !errors.Is(err, ErrProfile) {
		t.Errorf("SANExtension without version: %v, want ErrProfile", err)
	}
}

func TestParseSAN(t *testing.T) {
	man, mod, ver := OIDTPMManufacturer, OIDTPMModel, OIDTPMVersion
	tests := []struct {
		name    string
		value   func(t *testing.T) []byte
		want    TPMIdentity
		wantErr error
	}{
		{
			name: "one multi-valued RDN",
			value: func(t *testing.T) []byte {
				return dirNameSAN(t, pkix.RDNSequence{{atv(man, testID.Manufacturer), atv(mod, testID.Model), atv(ver, testID.Version)}})
			},
			want: testID,
		},
		{
			name: "separate RDNs, printable strings, other order",
			value: func(t *testing.T) []byte {
				return dirNameSAN(t, pkix.RDNSequence{{atv(ver, testID.Version)}, {atv(mod, testID.Model)}, {atv(man, testID.Manufacturer)}})
			},
			want: testID,
		},
		{
			name: "missing version",
			value: func(t *testing.T) []byte {
				return dirNameSAN(t, pkix.RDNSequence{{atv(man, testID.Manufacturer)}, {atv(mod, testID.Model)}})
			},
			wantErr: ErrProfile,
		},
		{
			name: "duplicate model",
			value: func(t *testing.T) []byte {
				return dirNameSAN(t, pkix.RDNSequence{{atv(man, "id:1")}, {atv(mod, "a")}, {atv(mod, "b")}, {atv(ver, "id:2")}})
			},
			wantErr: ErrProfile,
		},
		{
			name: "non-string value",
			value: func(t *testing.T) []byte {
				return dirNameSAN(t, pkix.RDNSequence{{atv(man, 5)}, {atv(mod, "a")}, {atv(ver, "id:2")}})
			},
			wantErr: ErrProfile,
		},
		{
			name: "uniformResourceIdentifier instead of directoryName",
			value: func(t *testing.T) []byte {
				v, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte("urn:x")}})
				if err != nil {
					t.Fatal(err)
				}
				return v
			},
			wantErr: ErrProfile,
		},
		{
			name: "empty GeneralNames",
			value: func(t *testing.T) []byte {
				v, err := asn1.Marshal([]asn1.RawValue{})
				if err != nil {
					t.Fatal(err)
				}
				return v
			},
			wantErr: ErrProfile,
		},
		{
			name: "trailing bytes",
			value: func(t *testing.T) []byte {
				return append(dirNameSAN(t, pkix.RDNSequence{{atv(man, "id:1")}, {atv(mod, "a")}, {atv(ver, "id:2")}}), 0)
			},
			wantErr: ErrMalformed,
		},
		{
			name:    "garbage",
			value:   func(t *testing.T) []byte { return []byte{0x04, 0x01} },
			wantErr: ErrMalformed,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSAN(tc.value(t))
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("ParseSAN error = %v, want %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("ParseSAN = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestSubjectDirectoryAttributesRoundTrip(t *testing.T) {
	spec := TPMSpec{Family: "2.0", Level: 0, Revision: 164}
	ext, err := SubjectDirectoryAttributesExtension(spec)
	if err != nil {
		t.Fatal(err)
	}
	if ext.Critical || ext.Id.String() != OIDSubjectDirectoryAttributes {
		t.Errorf("extension %s critical=%v", ext.Id, ext.Critical)
	}
	got, err := parseTPMSpec(ext.Value)
	if err != nil || got == nil || *got != spec {
		t.Fatalf("parseTPMSpec = %+v, %v; want %+v", got, err, spec)
	}
}

func TestParseID(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    uint32
		wantErr bool
	}{
		{"IBM", "id:49424D00", 0x49424D00, false},
		{"lower case", "id:0001000a", 0x0001000A, false},
		{"no prefix", "49424D00", 0, true},
		{"short", "id:4942", 0, true},
		{"not hex", "id:4942XD00", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseID(tc.in)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("ParseID(%q) = %#x, %v; want %#x, err %v", tc.in, got, err, tc.want, tc.wantErr)
			}
			if err == nil && roundTripID(t, got) != got {
				t.Errorf("FormatID does not round-trip %#x", got)
			}
		})
	}
}

// roundTripID formats v and parses it back.
func roundTripID(t *testing.T, v uint32) uint32 {
	t.Helper()
	got, err := ParseID(FormatID(v))
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestExtractDER(t *testing.T) {
	// A minimal DER SEQUENCE stands in for a certificate: ExtractDER only frames.
	der := append([]byte{0x30, 0x82, 0x01, 0x00}, bytes.Repeat([]byte{0xAB}, 0x100)...)
	hdr, err := NVHeader(len(der))
	if err != nil {
		t.Fatal(err)
	}
	pad := bytes.Repeat([]byte{0xFF}, 37)
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	tests := []struct {
		name    string
		nv      []byte
		wantErr error
	}{
		{"bare DER", der, nil},
		{"DER and padding", cat(der, pad), nil},
		{"header and DER", cat(hdr, der), nil},
		{"header, DER and padding", cat(hdr, der, pad), nil},
		{"header with a wrong length", cat([]byte{0x10, 0x01, 0x00, 0x10}, der), ErrMalformed},
		{"truncated", der[:100], ErrMalformed},
		{"erased NV", bytes.Repeat([]byte{0xFF}, 64), ErrMalformed},
		{"not a SEQUENCE", []byte{0x04, 0x01, 0x00}, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ExtractDER(tc.nv)
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("ExtractDER error = %v, want %v", err, tc.wantErr)
			}
			if err == nil && !bytes.Equal(got, der) {
				t.Errorf("ExtractDER returned %d bytes, want the %d DER bytes", len(got), len(der))
			}
		})
	}
	if _, err := NVHeader(0x10000); !errors.Is(err, ErrMalformed) {
		t.Errorf("NVHeader(65536) error = %v, want ErrMalformed", err)
	}
}
