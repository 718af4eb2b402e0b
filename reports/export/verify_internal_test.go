package export

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"reflect"
	"strings"
	"testing"

	"github.com/devid-station/devid/reports/traveler"
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
	// A lot whose units each have CAs of their own does not grow it.
	for i := range 3 * certCacheSize {
		c.chainCert([]byte{byte(i), byte(i >> 8)})
	}
	if len(c.certs) > certCacheSize {
		t.Errorf("%d certificates cached, at most %d", len(c.certs), certCacheSize)
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

// TestTravelerFacts keeps the verifier's view of a traveler in step with the traveler's
// format: each field it decodes is the record's field of the same name and JSON key.
func TestTravelerFacts(t *testing.T) {
	rec := reflect.TypeFor[traveler.Record]()
	facts := reflect.TypeFor[travelerFacts]()
	for i := range facts.NumField() {
		f := facts.Field(i)
		r, ok := rec.FieldByName(f.Name)
		if !ok || r.Type != f.Type {
			t.Errorf("traveler.Record has no field %s of type %s", f.Name, f.Type)
			continue
		}
		if key, _, _ := strings.Cut(r.Tag.Get("json"), ","); key != f.Tag.Get("json") {
			t.Errorf("field %s: traveler key %q, the verifier reads %q", f.Name, key, f.Tag.Get("json"))
		}
	}
}
