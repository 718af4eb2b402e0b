// Package ekcert encodes and verifies TPM endorsement key (EK) certificates as the TCG EK
// Credential Profile for TPM Family 2.0 defines them, with the quirks Go's crypto/x509 needs
// help with: the subject is empty and the subjectAltName is critical and holds only a
// directoryName with the TPM manufacturer, model and version attributes, which crypto/x509
// leaves as an unhandled critical extension; the extended key usage is the TCG-specific
// tcg-kp-EKCertificate; and the certificate may sit in NV behind a small header and before
// padding.
//
// The station verifies EK certificates with VerifyEKCert; the development PKI in fixture/devpki
// builds them with SANExtension and SubjectDirectoryAttributesExtension, so the encoding lives
// in this one place.
//
// Every function in this package is safe for concurrent use.
package ekcert

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Object identifiers of the TCG EK Credential Profile and RFC 5280, in dotted form (compare
// with asn1.ObjectIdentifier.String, convert with OID). Constants, so no caller can modify them.
const (
	// OIDSubjectAltName is id-ce-subjectAltName.
	OIDSubjectAltName = "2.5.29.17"
	// OIDSubjectDirectoryAttributes is id-ce-subjectDirectoryAttributes.
	OIDSubjectDirectoryAttributes = "2.5.29.9"
	// OIDTPMManufacturer is tcg-at-tpmManufacturer.
	OIDTPMManufacturer = "2.23.133.2.1"
	// OIDTPMModel is tcg-at-tpmModel.
	OIDTPMModel = "2.23.133.2.2"
	// OIDTPMVersion is tcg-at-tpmVersion.
	OIDTPMVersion = "2.23.133.2.3"
	// OIDTPMSpecification is tcg-at-tpmSpecification.
	OIDTPMSpecification = "2.23.133.2.16"
	// OIDEKCertificate is tcg-kp-EKCertificate, the extended key usage of an EK certificate.
	OIDEKCertificate = "2.23.133.8.1"
)

// OID parses one of the dotted OID constants of this package (or any dotted OID) into an
// asn1.ObjectIdentifier. It panics on a malformed string, so use it with constants only.
func OID(dotted string) asn1.ObjectIdentifier {
	parts := strings.Split(dotted, ".")
	oid := make(asn1.ObjectIdentifier, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			panic(fmt.Sprintf("ekcert: malformed OID %q", dotted))
		}
		oid[i] = n
	}
	return oid
}

// Sentinel errors. Every parsing and verification error of this package wraps one of them.
var (
	// ErrMalformed means the input is not a parsable certificate or extension.
	ErrMalformed = errors.New("malformed EK certificate")
	// ErrProfile means the certificate parses but breaks the TCG EK Credential Profile.
	ErrProfile = errors.New("EK certificate violates the TCG EK credential profile")
	// ErrUntrusted means the certificate does not chain to the given roots at the given time
	// (expired, unknown issuer, bad signature, ...). The crypto/x509 error is wrapped too.
	ErrUntrusted = errors.New("EK certificate not trusted")
)

// TPMIdentity is the TPM manufacturer, model and version an EK certificate names in its
// subjectAltName, in the TCG string forms: Manufacturer "id:" and the 4-byte TPM vendor ID in
// 8 upper-case hex digits (e.g. "id:49424D00"), Model the vendor's model string, Version "id:"
// and the firmware version in 8 hex digits (e.g. "id:00010002").
type TPMIdentity struct {
	Manufacturer string
	Model        string
	Version      string
}

// FormatID renders a 32-bit TCG ID ("id:%08X"), as used for TPMIdentity.Manufacturer and
// TPMIdentity.Version.
func FormatID(v uint32) string { return fmt.Sprintf("id:%08X", v) }

// ParseID parses a TCG ID string of the form "id:" followed by 8 hex digits.
func ParseID(s string) (uint32, error) {
	hexPart, ok := strings.CutPrefix(s, "id:")
	if !ok || len(hexPart) != 8 {
		return 0, fmt.Errorf("%w: TCG ID %q is not id:XXXXXXXX", ErrProfile, s)
	}
	v, err := strconv.ParseUint(hexPart, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("%w: TCG ID %q is not id:XXXXXXXX", ErrProfile, s)
	}
	return uint32(v), nil
}

// TPMSpec is the TPMSpecification attribute (family, level, revision) carried in the
// optional subjectDirectoryAttributes extension, e.g. {"2.0", 0, 138}.
type TPMSpec struct {
	Family   string
	Level    int
	Revision int
}

// tcgAttribute is one AttributeTypeAndValue of the SAN directoryName; TCG defines the values
// as UTF8String.
type tcgAttribute struct {
	Type  asn1.ObjectIdentifier
	Value string `asn1:"utf8"`
}

// tcgRDNSET is one RelativeDistinguishedName; encoding/asn1 encodes a slice type whose name
// ends in SET as SET OF.
type tcgRDNSET []tcgAttribute

// SANExtension builds the critical subjectAltName of an EK certificate: GeneralNames holding
// one directoryName ([4], explicit, as Name is a CHOICE) whose RDNs carry, one each, the
// manufacturer, model and version as UTF8String attributes (printed by openssl as
// DirName:/2.23.133.2.1=.../2.23.133.2.2=.../2.23.133.2.3=..., as field EK certificates are).
func SANExtension(id TPMIdentity) (pkix.Extension, error) {
	if id.Manufacturer == "" || id.Model == "" || id.Version == "" {
		return pkix.Extension{}, fmt.Errorf("%w: TPM identity needs manufacturer, model and version", ErrProfile)
	}
	name, err := asn1.Marshal([]tcgRDNSET{
		{{Type: OID(OIDTPMManufacturer), Value: id.Manufacturer}},
		{{Type: OID(OIDTPMModel), Value: id.Model}},
		{{Type: OID(OIDTPMVersion), Value: id.Version}},
	})
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("encoding directoryName: %w", err)
	}
	value, err := asn1.Marshal([]asn1.RawValue{{
		Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: name,
	}})
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("encoding subjectAltName: %w", err)
	}
	return pkix.Extension{Id: OID(OIDSubjectAltName), Critical: true, Value: value}, nil
}

// ParseSAN parses the value of an EK certificate's subjectAltName. It accepts exactly one
// general name, a directoryName, holding each of the manufacturer, model and version
// attributes exactly once (as one multi-valued RDN or as separate RDNs, both seen in the
// field) and nothing else.
func ParseSAN(value []byte) (TPMIdentity, error) {
	var names []asn1.RawValue
	rest, err := asn1.Unmarshal(value, &names)
	if err != nil {
		return TPMIdentity{}, fmt.Errorf("%w: subjectAltName: %w", ErrMalformed, err)
	}
	if len(rest) != 0 {
		return TPMIdentity{}, fmt.Errorf("%w: trailing bytes after subjectAltName", ErrMalformed)
	}
	if len(names) != 1 {
		return TPMIdentity{}, fmt.Errorf("%w: subjectAltName holds %d names, want one directoryName", ErrProfile, len(names))
	}
	gn := names[0]
	if gn.Class != asn1.ClassContextSpecific || gn.Tag != 4 || !gn.IsCompound {
		return TPMIdentity{}, fmt.Errorf("%w: subjectAltName holds general name [%d], want directoryName [4]", ErrProfile, gn.Tag)
	}
	var rdns pkix.RDNSequence
	rest, err = asn1.Unmarshal(gn.Bytes, &rdns)
	if err != nil {
		return TPMIdentity{}, fmt.Errorf("%w: directoryName: %w", ErrMalformed, err)
	}
	if len(rest) != 0 {
		return TPMIdentity{}, fmt.Errorf("%w: trailing bytes after directoryName", ErrMalformed)
	}
	var id TPMIdentity
	for _, rdn := range rdns {
		for _, atv := range rdn {
			var dst *string
			switch atv.Type.String() {
			case OIDTPMManufacturer:
				dst = &id.Manufacturer
			case OIDTPMModel:
				dst = &id.Model
			case OIDTPMVersion:
				dst = &id.Version
			default:
				return TPMIdentity{}, fmt.Errorf("%w: directoryName holds unexpected attribute %s", ErrProfile, atv.Type)
			}
			s, ok := atv.Value.(string)
			if !ok || s == "" {
				return TPMIdentity{}, fmt.Errorf("%w: attribute %s is not a non-empty string", ErrProfile, atv.Type)
			}
			if *dst != "" {
				return TPMIdentity{}, fmt.Errorf("%w: attribute %s appears twice", ErrProfile, atv.Type)
			}
			*dst = s
		}
	}
	if id.Manufacturer == "" || id.Model == "" || id.Version == "" {
		return TPMIdentity{}, fmt.Errorf("%w: directoryName lacks manufacturer, model or version", ErrProfile)
	}
	return id, nil
}

// tpmSpecification is TPMSpecification ::= SEQUENCE { family UTF8String, level INTEGER,
// revision INTEGER }.
type tpmSpecification struct {
	Family   string `asn1:"utf8"`
	Level    int
	Revision int
}

// directoryAttribute is Attribute ::= SEQUENCE { type OID, values SET OF ANY }.
type directoryAttribute struct {
	Type   asn1.ObjectIdentifier
	Values []asn1.RawValue `asn1:"set"`
}

// SubjectDirectoryAttributesExtension builds the non-critical subjectDirectoryAttributes
// extension carrying the TPMSpecification attribute.
func SubjectDirectoryAttributesExtension(spec TPMSpec) (pkix.Extension, error) {
	v, err := asn1.Marshal(tpmSpecification(spec))
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("encoding TPM specification: %w", err)
	}
	value, err := asn1.Marshal([]directoryAttribute{{
		Type: OID(OIDTPMSpecification), Values: []asn1.RawValue{{FullBytes: v}},
	}})
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("encoding subjectDirectoryAttributes: %w", err)
	}
	return pkix.Extension{Id: OID(OIDSubjectDirectoryAttributes), Value: value}, nil
}

// parseTPMSpec returns the TPMSpecification from a subjectDirectoryAttributes value, or nil if
// the extension holds none.
func parseTPMSpec(value []byte) (*TPMSpec, error) {
	var attrs []directoryAttribute
	rest, err := asn1.Unmarshal(value, &attrs)
	if err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("%w: subjectDirectoryAttributes", ErrMalformed)
	}
	for _, a := range attrs {
		if a.Type.String() != OIDTPMSpecification {
			continue
		}
		if len(a.Values) != 1 {
			return nil, fmt.Errorf("%w: TPMSpecification holds %d values", ErrProfile, len(a.Values))
		}
		var s tpmSpecification
		rest, err := asn1.Unmarshal(a.Values[0].FullBytes, &s)
		if err != nil || len(rest) != 0 {
			return nil, fmt.Errorf("%w: TPMSpecification", ErrMalformed)
		}
		spec := TPMSpec(s)
		return &spec, nil
	}
	return nil, nil
}

// ParseTPMIdentity returns the TPM identity from a parsed certificate's subjectAltName. It
// checks the extension is present and, since the subject of an EK certificate is empty,
// critical (RFC 5280 4.2.1.6).
func ParseTPMIdentity(cert *x509.Certificate) (TPMIdentity, error) {
	ext, ok := findExtension(cert, OIDSubjectAltName)
	if !ok {
		return TPMIdentity{}, fmt.Errorf("%w: no subjectAltName", ErrProfile)
	}
	if !ext.Critical {
		return TPMIdentity{}, fmt.Errorf("%w: subjectAltName not critical", ErrProfile)
	}
	return ParseSAN(ext.Value)
}

func findExtension(cert *x509.Certificate, dotted string) (pkix.Extension, bool) {
	found := false
	var out pkix.Extension
	for _, e := range cert.Extensions {
		if e.Id.String() == dotted {
			if found {
				// crypto/x509 already rejects duplicate extensions; be safe anyway.
				return pkix.Extension{}, false
			}
			out, found = e, true
		}
	}
	return out, found
}

// EKCertInfo is what VerifyEKCert learned from a valid EK certificate.
type EKCertInfo struct {
	// TPMIdentity is the manufacturer, model and version from the subjectAltName.
	TPMIdentity
	// PublicKey is the EK public key (*rsa.PublicKey or *ecdsa.PublicKey).
	PublicKey crypto.PublicKey
	// Spec is the TPMSpecification from subjectDirectoryAttributes, nil if absent.
	Spec *TPMSpec
	// Certificate is the parsed EK certificate.
	Certificate *x509.Certificate
	// Chain is the verified chain from the EK certificate to a root (the first one found).
	Chain []*x509.Certificate
}

// VerifyEKCert verifies a DER EK certificate as the station must: it checks the TCG profile
// (version 3, not a CA, RSA or ECC key, critical subjectAltName with exactly a directoryName
// holding the manufacturer, model and version, extended key usage tcg-kp-EKCertificate),
// then the chain to roots through intermediates at time now. The subjectAltName is handed
// to crypto/x509 as handled only after it was parsed here; every other unhandled critical
// extension still fails. The chain is built with ExtKeyUsageAny and the EK key usage is
// checked explicitly, as crypto/x509 knows no TCG key purposes. The key usage bits
// (keyEncipherment for RSA, keyAgreement for ECC) are not enforced: field certificates vary.
func VerifyEKCert(der []byte, roots, intermediates []*x509.Certificate, now time.Time) (*EKCertInfo, error) {
	return VerifyEKCertWith(der, func(cert *x509.Certificate) ([]*x509.Certificate, error) {
		opts := x509.VerifyOptions{
			Roots:         x509.NewCertPool(),
			Intermediates: x509.NewCertPool(),
			CurrentTime:   now,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		}
		for _, c := range roots {
			opts.Roots.AddCert(c)
		}
		for _, c := range intermediates {
			opts.Intermediates.AddCert(c)
		}
		chains, err := cert.Verify(opts)
		if err != nil {
			return nil, err
		}
		return chains[0], nil
	})
}

// VerifyEKCertWith is VerifyEKCert with the chain built by chain, which must verify cert as
// VerifyEKCert does (crypto/x509 with ExtKeyUsageAny, to the pinned roots at the time of the
// check) and return the chain it found; the station passes one that remembers the
// intermediates it verified. chain gets cert once the profile checks passed; its error is
// returned as ErrUntrusted.
func VerifyEKCertWith(der []byte, chain func(cert *x509.Certificate) ([]*x509.Certificate, error)) (*EKCertInfo, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if cert.Version != 3 {
		return nil, fmt.Errorf("%w: version %d, want 3", ErrProfile, cert.Version)
	}
	if cert.IsCA {
		return nil, fmt.Errorf("%w: certificate is a CA", ErrProfile)
	}
	switch cert.PublicKey.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey:
	default:
		return nil, fmt.Errorf("%w: public key type %T is neither RSA nor ECC", ErrProfile, cert.PublicKey)
	}
	id, err := ParseTPMIdentity(cert)
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(cert.UnknownExtKeyUsage, func(o asn1.ObjectIdentifier) bool {
		return o.String() == OIDEKCertificate
	}) {
		return nil, fmt.Errorf("%w: extended key usage lacks tcg-kp-EKCertificate", ErrProfile)
	}
	var spec *TPMSpec
	if ext, ok := findExtension(cert, OIDSubjectDirectoryAttributes); ok {
		if spec, err = parseTPMSpec(ext.Value); err != nil {
			return nil, err
		}
	}

	// The SAN was checked above: tell crypto/x509 it is handled.
	cert.UnhandledCriticalExtensions = slices.DeleteFunc(slices.Clone(cert.UnhandledCriticalExtensions),
		func(o asn1.ObjectIdentifier) bool { return o.String() == OIDSubjectAltName })

	path, err := chain(cert)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUntrusted, err)
	}
	return &EKCertInfo{
		TPMIdentity: id,
		PublicKey:   cert.PublicKey,
		Spec:        spec,
		Certificate: cert,
		Chain:       path,
	}, nil
}

// NVHeaderTag is the first two bytes of the optional 4-byte header some TPM vendors put in
// front of the EK certificate in NV: the tag 0x1001 (as in TCG_PCCLIENT_STORED_CERT), then the
// certificate length as a big-endian uint16.
const NVHeaderTag uint16 = 0x1001

// NVHeader returns the 4-byte NV header for a certificate of n bytes.
func NVHeader(n int) ([]byte, error) {
	if n <= 0 || n > 0xFFFF {
		return nil, fmt.Errorf("%w: certificate length %d does not fit the NV header", ErrMalformed, n)
	}
	h := make([]byte, 4)
	binary.BigEndian.PutUint16(h, NVHeaderTag)
	binary.BigEndian.PutUint16(h[2:], uint16(n))
	return h, nil
}

// ExtractDER returns the DER certificate from the contents of an EK certificate NV index:
// either the DER itself or the 4-byte header (see NVHeaderTag) and the DER, in both cases
// possibly followed by padding, which is dropped. The result aliases data.
func ExtractDER(data []byte) ([]byte, error) {
	body := data
	if len(data) >= 4 && binary.BigEndian.Uint16(data) == NVHeaderTag {
		body = data[4:]
		n := int(binary.BigEndian.Uint16(data[2:]))
		der, err := derPrefix(body)
		if err != nil {
			return nil, err
		}
		if len(der) != n {
			return nil, fmt.Errorf("%w: NV header says %d bytes, certificate has %d", ErrMalformed, n, len(der))
		}
		return der, nil
	}
	return derPrefix(body)
}

// derPrefix returns the leading DER SEQUENCE of b.
func derPrefix(b []byte) ([]byte, error) {
	var raw asn1.RawValue
	if _, err := asn1.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%w: NV contents: %w", ErrMalformed, err)
	}
	if raw.Class != asn1.ClassUniversal || raw.Tag != asn1.TagSequence {
		return nil, fmt.Errorf("%w: NV contents do not start with a certificate", ErrMalformed)
	}
	return b[:len(raw.FullBytes)], nil
}
