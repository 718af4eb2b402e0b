package workflow

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"
)

// testCA is a CA certificate and its key, for chainVerifier's tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

var testSerial int64

func issueTest(t *testing.T, parent *testCA, tmpl *x509.Certificate) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	testSerial++
	tmpl.SerialNumber = big.NewInt(testSerial)
	signer, signerCert := key, tmpl
	if parent != nil {
		signer, signerCert = parent.key, parent.cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

func caTemplate(name string, notAfter time.Time) *x509.Certificate {
	return &x509.Certificate{Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
}

func leafTemplate(dns ...string) *x509.Certificate {
	return &x509.Certificate{Subject: pkix.Name{CommonName: "leaf"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature, DNSNames: dns}
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// TestChainVerifier: the second leaf of a remembered intermediate is verified through it, and
// nothing the whole chain refuses passes: a leaf signed by another key under the
// intermediate's name, a root that expired since, another root pool, a root's name
// constraints.
func TestChainVerifier(t *testing.T) {
	now := time.Now()
	root := issueTest(t, nil, caTemplate("root", now.Add(2*time.Hour)))
	inter := issueTest(t, root, caTemplate("inter", now.Add(48*time.Hour)))
	roots := pool(root.cert)
	var v chainVerifier

	for i, want := range []int{0, 1, 2} {
		leaf := issueTest(t, inter, leafTemplate()).cert
		chain, err := v.verify(leaf, roots, []*x509.Certificate{inter.cert}, now)
		if err != nil {
			t.Fatalf("leaf %d: %v", i, err)
		}
		if len(chain) != 3 || chain[0] != leaf || !chain[1].Equal(inter.cert) || !chain[2].Equal(root.cert) {
			t.Fatalf("leaf %d: chain %v", i, chain)
		}
		if v.hits != want {
			t.Fatalf("leaf %d: %d chains through a remembered intermediate, want %d", i, v.hits, want)
		}
	}

	// The same name, another key: the remembered intermediate must not vouch for it.
	impostor := issueTest(t, nil, caTemplate("inter", now.Add(48*time.Hour)))
	forged := issueTest(t, impostor, leafTemplate()).cert
	if _, err := v.verify(forged, roots, []*x509.Certificate{inter.cert}, now); err == nil {
		t.Error("a leaf of another key under the intermediate's name verified")
	}
	if _, err := v.verify(forged, roots, []*x509.Certificate{impostor.cert}, now); err == nil {
		t.Error("a leaf through an intermediate no root signed verified")
	}

	leaf := issueTest(t, inter, leafTemplate()).cert
	if _, err := v.verify(leaf, roots, []*x509.Certificate{inter.cert}, now.Add(3*time.Hour)); err == nil {
		t.Error("a chain to an expired root verified")
	}
	other := issueTest(t, nil, caTemplate("root", now.Add(2*time.Hour)))
	if _, err := v.verify(leaf, pool(other.cert), []*x509.Certificate{inter.cert}, now); err == nil {
		t.Error("a chain verified to a root pool it does not chain to")
	}

	// A root's name constraints bind every leaf below it: its intermediates are not remembered.
	ncTmpl := caTemplate("constrained root", now.Add(48*time.Hour))
	ncTmpl.PermittedDNSDomains = []string{"example.com"}
	ncRoot := issueTest(t, nil, ncTmpl)
	ncInter := issueTest(t, ncRoot, caTemplate("inter under constraints", now.Add(48*time.Hour)))
	ncRoots := pool(ncRoot.cert)
	hits := v.hits
	for _, dns := range []string{"a.example.com", "b.example.com"} {
		if _, err := v.verify(issueTest(t, ncInter, leafTemplate(dns)).cert, ncRoots, []*x509.Certificate{ncInter.cert}, now); err != nil {
			t.Fatalf("%s: %v", dns, err)
		}
	}
	if _, err := v.verify(issueTest(t, ncInter, leafTemplate("evil.org")).cert, ncRoots, []*x509.Certificate{ncInter.cert}, now); err == nil {
		t.Error("a leaf outside the root's name constraints verified")
	}
	if v.hits != hits {
		t.Errorf("%d chains under a constrained root went through a remembered intermediate", v.hits-hits)
	}
}
