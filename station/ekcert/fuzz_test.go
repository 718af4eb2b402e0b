package ekcert_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/asn1"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/devid-station/devid/fixture/devpki"
	"github.com/devid-station/devid/station/ekcert"
)

var fuzzID = ekcert.TPMIdentity{Manufacturer: "id:49424D00", Model: "SW   TPM", Version: "id:00010002"}

// fuzzPKI returns the dev PKI and EK certificates of an ECC and an RSA EK issued by its EK
// issuing CA, as fixture/tpmvendor issues them for the fixture's units.
func fuzzPKI(f *testing.F) (*devpki.PKI, [][]byte) {
	f.Helper()
	pki, err := devpki.New(devpki.Options{})
	if err != nil {
		f.Fatal(err)
	}
	ecc, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	// An RSA EK's certificate needs only its public key: a random odd modulus spares every
	// fuzz worker the generation of a real key.
	n := make([]byte, 256)
	if _, err := rand.Read(n); err != nil {
		f.Fatal(err)
	}
	n[0], n[255] = n[0]|0x80, n[255]|1
	rsaPub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: 65537}
	var certs [][]byte
	for _, c := range []struct {
		pub  any
		spec *ekcert.TPMSpec
	}{
		{&ecc.PublicKey, &ekcert.TPMSpec{Family: "2.0", Level: 0, Revision: 164}},
		{rsaPub, nil},
	} {
		der, err := pki.EKIssuing.IssueEKCert(c.pub, fuzzID, devpki.EKCertOptions{Spec: c.spec})
		if err != nil {
			f.Fatal(err)
		}
		certs = append(certs, der)
	}
	return pki, certs
}

// FuzzVerifyEKCert feeds arbitrary bytes to the station's EK certificate check: every failure
// wraps one of the package's three errors, and every success is the certificate given,
// chained to a pinned root, with a complete TPM identity that its subjectAltName re-parses to.
func FuzzVerifyEKCert(f *testing.F) {
	pki, certs := fuzzPKI(f)
	roots, inter := pki.TPMVendorBundle(), pki.EKIntermediates()
	now := time.Now()
	for _, der := range certs {
		f.Add(der)
		f.Add(der[:len(der)/2])
	}
	f.Add(pki.EKIssuing.Cert.Raw) // a CA certificate
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		info, err := ekcert.VerifyEKCert(der, roots, inter, now)
		if err != nil {
			if !errors.Is(err, ekcert.ErrMalformed) && !errors.Is(err, ekcert.ErrProfile) && !errors.Is(err, ekcert.ErrUntrusted) {
				t.Fatalf("error wraps none of the package's errors: %v", err)
			}
			return
		}
		if !bytes.Equal(info.Certificate.Raw, der) {
			t.Fatal("the parsed certificate is not the bytes given")
		}
		if info.Manufacturer == "" || info.Model == "" || info.Version == "" {
			t.Fatalf("incomplete TPM identity %+v", info.TPMIdentity)
		}
		if len(info.Chain) < 2 || info.Chain[0] != info.Certificate {
			t.Fatalf("chain of %d certificates does not start at the EK certificate", len(info.Chain))
		}
		top := info.Chain[len(info.Chain)-1]
		if !top.Equal(roots[0]) && !top.Equal(roots[1]) {
			t.Fatal("chain does not end at a pinned root")
		}
		id, err := ekcert.ParseTPMIdentity(info.Certificate)
		if err != nil || id != info.TPMIdentity {
			t.Fatalf("subjectAltName re-parses to %+v, %v; want %+v", id, err, info.TPMIdentity)
		}
	})
}

// FuzzParseSAN checks the subjectAltName parser: failures are ErrMalformed or ErrProfile, and
// what it accepts is a complete identity that SANExtension encodes and ParseSAN reads back.
func FuzzParseSAN(f *testing.F) {
	ext, err := ekcert.SANExtension(fuzzID)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ext.Value)
	f.Add(ext.Value[:len(ext.Value)-3])
	f.Add([]byte{0x30, 0x00})
	f.Add([]byte{0x30, 0x02, 0xa4, 0x00})
	f.Fuzz(func(t *testing.T, value []byte) {
		id, err := ekcert.ParseSAN(value)
		if err != nil {
			if !errors.Is(err, ekcert.ErrMalformed) && !errors.Is(err, ekcert.ErrProfile) {
				t.Fatalf("error wraps neither ErrMalformed nor ErrProfile: %v", err)
			}
			return
		}
		if id.Manufacturer == "" || id.Model == "" || id.Version == "" {
			t.Fatalf("incomplete identity %+v", id)
		}
		again, err := ekcert.SANExtension(id)
		if err != nil {
			// Only a string asn1 cannot encode as PrintableString or UTF8String fails here.
			return
		}
		back, err := ekcert.ParseSAN(again.Value)
		if err != nil || back != id {
			t.Fatalf("round trip gave %+v, %v; want %+v", back, err, id)
		}
	})
}

// FuzzExtractDER checks the NV framing: failures are ErrMalformed, and a success is one whole
// DER SEQUENCE taken from the start of the data or from just behind the NV header.
func FuzzExtractDER(f *testing.F) {
	_, certs := fuzzPKI(f)
	for _, der := range certs {
		hdr, err := ekcert.NVHeader(len(der))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(der)
		f.Add(append(append(hdr, der...), 0xff, 0xff, 0xff))
		f.Add(append(hdr, der[:len(der)-1]...))
	}
	f.Add(bytes.Repeat([]byte{0xff}, 16))
	f.Fuzz(func(t *testing.T, nv []byte) {
		der, err := ekcert.ExtractDER(nv)
		if err != nil {
			if !errors.Is(err, ekcert.ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		if !bytes.HasPrefix(nv, der) && !(len(nv) >= 4 && bytes.HasPrefix(nv[4:], der)) {
			t.Fatal("result is not taken from the start or from behind the header")
		}
		var raw asn1.RawValue
		rest, err := asn1.Unmarshal(der, &raw)
		if err != nil || len(rest) != 0 || raw.Tag != asn1.TagSequence {
			t.Fatalf("result is not exactly one SEQUENCE: %v, %d trailing bytes", err, len(rest))
		}
	})
}
