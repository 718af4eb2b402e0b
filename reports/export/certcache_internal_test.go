package export

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"

	"github.com/devid-station/devid/reports/traveler/travelertest"
)

func TestCertCacheKnowsRoots(t *testing.T) {
	root, stranger := travelertest.NewCA(t, "root"), travelertest.NewCA(t, "root") // same name, other key
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sub := root.Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "sub"}, IsCA: true, BasicConstraintsValid: true}, key.Public())
	pool := x509.NewCertPool()
	pool.AddCert(root.Cert)
	c := &certCache{roots: pool}
	for _, tc := range []struct {
		name string
		der  []byte
		root bool
	}{{"the root", root.Cert.Raw, true}, {"a root of the same name", stranger.Cert.Raw, false}, {"an intermediate", sub, false}} {
		for range 2 { // the second answer is the cached one
			got, isRoot, err := c.chainCert(tc.der)
			if err != nil || isRoot != tc.root || got == nil || !got.Equal(mustParse(t, tc.der)) {
				t.Errorf("%s: root %v, %v; want root %v", tc.name, isRoot, err, tc.root)
			}
		}
	}
	if _, _, err := c.chainCert([]byte("junk")); err == nil {
		t.Error("junk parses")
	}
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
