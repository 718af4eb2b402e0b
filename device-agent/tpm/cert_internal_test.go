package tpm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"
)

func testCert(t *testing.T) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ek"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestFindCertificate(t *testing.T) {
	cert := testCert(t)
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for _, tc := range []struct {
		name string
		in   []byte
		want []byte
	}{
		{"bare", cert, cert},
		{"vendor header", cat([]byte{0x10, 0x01, 0x00, 0x02}, cert), cert},
		{"header ending in a SEQUENCE tag", cat([]byte{0x10, 0x01, 0x00, 0x30}, cert), cert},
		{"header with a long-form SEQUENCE look-alike", cat([]byte{0x30, 0x82, 0x00, 0x10, 0x01}, cert), cert},
		{"0xFF padding", cat(cert, bytes.Repeat([]byte{0xFF}, 100)), cert},
		{"header and zero padding", cat([]byte{0x10, 0x01, 0x00, 0x02}, cert, make([]byte, 64)), cert},
		{"no certificate", bytes.Repeat([]byte{0xFF}, 512), nil},
		{"truncated", cert[:len(cert)-1], nil},
		{"empty", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _, ok := findCertificate(tc.in)
			if ok != (tc.want != nil) || !bytes.Equal(got, tc.want) {
				t.Errorf("findCertificate = %d bytes, ok %v; want %d bytes", len(got), ok, len(tc.want))
			}
		})
	}
}
