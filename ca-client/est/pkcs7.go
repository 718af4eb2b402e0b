package est

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"

	"github.com/smallstep/pkcs7"
)

// maxCerts bounds the certificates accepted in one certs-only message.
const maxCerts = 64

var oidSignedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}

// contentInfo is RFC 5652 ContentInfo.
type contentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"explicit,tag:0"`
}

// signedData is RFC 5652 SignedData with the parts a certs-only message
// does not need left raw.
type signedData struct {
	Version          int
	DigestAlgorithms asn1.RawValue
	EncapContentInfo asn1.RawValue
	Certificates     asn1.RawValue `asn1:"optional,tag:0"`
	CRLs             asn1.RawValue `asn1:"optional,tag:1"`
	SignerInfos      asn1.RawValue
}

// parseCertsOnly returns the certificates of a degenerate certs-only
// PKCS#7/CMS SignedData (RFC 7030 4.1.3, 4.2.3). It parses DER itself and
// hands indefinite-length BER to a BER-tolerant parser.
// It never panics on malformed input.
func parseCertsOnly(der []byte) ([]*x509.Certificate, error) {
	if len(der) >= 2 && der[0] == 0x30 && der[1] == 0x80 {
		return parseCertsOnlyBER(der)
	}
	return parseCertsOnlyDER(der)
}

func parseCertsOnlyDER(der []byte) ([]*x509.Certificate, error) {
	var ci contentInfo
	rest, err := asn1.Unmarshal(der, &ci)
	if err != nil {
		return nil, fmt.Errorf("parsing PKCS#7 ContentInfo: %w", err)
	}
	if len(rest) != 0 {
		return nil, errors.New("trailing data after PKCS#7 ContentInfo")
	}
	if !ci.ContentType.Equal(oidSignedData) {
		return nil, fmt.Errorf("PKCS#7 content type %v is not signedData", ci.ContentType)
	}
	var sd signedData
	rest, err = asn1.Unmarshal(ci.Content.Bytes, &sd)
	if err != nil {
		return nil, fmt.Errorf("parsing PKCS#7 SignedData: %w", err)
	}
	if len(rest) != 0 {
		return nil, errors.New("trailing data after PKCS#7 SignedData")
	}
	if sd.DigestAlgorithms.Tag != asn1.TagSet || sd.SignerInfos.Tag != asn1.TagSet ||
		sd.EncapContentInfo.Tag != asn1.TagSequence {
		return nil, errors.New("malformed PKCS#7 SignedData")
	}
	if !sd.Certificates.IsCompound || sd.Certificates.Class != asn1.ClassContextSpecific {
		return nil, errors.New("PKCS#7 SignedData holds no certificates")
	}
	var certs []*x509.Certificate
	for b := sd.Certificates.Bytes; len(b) > 0; {
		var raw asn1.RawValue
		b, err = asn1.Unmarshal(b, &raw)
		if err != nil {
			return nil, fmt.Errorf("parsing PKCS#7 certificate set: %w", err)
		}
		if raw.Class != asn1.ClassUniversal || raw.Tag != asn1.TagSequence {
			continue // another CertificateChoices alternative: not needed
		}
		if len(certs) == maxCerts {
			return nil, fmt.Errorf("more than %d certificates in PKCS#7", maxCerts)
		}
		cert, err := x509.ParseCertificate(raw.FullBytes)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate %d in PKCS#7: %w", len(certs), err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, errors.New("PKCS#7 SignedData holds no certificates")
	}
	return certs, nil
}

// parseCertsOnlyBER handles BER with an indefinite outer length, as some
// CMS libraries emit, with smallstep/pkcs7 (which converts BER to DER); a
// panic in the library on hostile input is turned into an error.
func parseCertsOnlyBER(ber []byte) (certs []*x509.Certificate, err error) {
	defer func() {
		if r := recover(); r != nil {
			certs, err = nil, errors.New("malformed BER PKCS#7")
		}
	}()
	p7, err := pkcs7.Parse(ber)
	if err != nil {
		return nil, err
	}
	if len(p7.Certificates) == 0 {
		return nil, errors.New("PKCS#7 SignedData holds no certificates")
	}
	if len(p7.Certificates) > maxCerts {
		return nil, fmt.Errorf("more than %d certificates in PKCS#7", maxCerts)
	}
	return p7.Certificates, nil
}
