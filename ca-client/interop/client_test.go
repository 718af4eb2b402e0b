package interop

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devid-station/devid/fixture/estca"
)

// devCA is a throwaway PKI for the dev EST CA: a root, an issuing CA under it, and a TLS
// server certificate for 127.0.0.1 under the root.
type devCA struct {
	root, issuing *x509.Certificate
	issuingKey    *ecdsa.PrivateKey
	tls           tls.Certificate
}

func newDevCA(t *testing.T) *devCA {
	t.Helper()
	rootKey, issuingKey, tlsKey := newKey(t), newKey(t), newKey(t)
	now := time.Now()
	sign := func(tmpl, parent *x509.Certificate, pub, signer any) *x509.Certificate {
		n, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
		tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = n, now.Add(-time.Minute), now.Add(time.Hour)
		if parent == nil {
			parent = tmpl
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ca := func(cn string) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	}
	root := sign(ca("interop dev root"), nil, &rootKey.PublicKey, rootKey)
	issuing := sign(ca("interop dev issuing CA"), root, &issuingKey.PublicKey, rootKey)
	server := sign(&x509.Certificate{Subject: pkix.Name{CommonName: "127.0.0.1"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, root, &tlsKey.PublicKey, rootKey)
	return &devCA{root: root, issuing: issuing, issuingKey: issuingKey,
		tls: tls.Certificate{Certificate: [][]byte{server.Raw}, PrivateKey: tlsKey, Leaf: server}}
}

// TestGlobalSignESTClient runs the independent github.com/globalsign/est client (the
// estclient command of the nested module) against the project's dev EST CA: /cacerts,
// /simpleenroll with basic authentication (and refused with a wrong password), and
// /simplereenroll authenticated by the enrolled certificate as TLS client certificate.
func TestGlobalSignESTClient(t *testing.T) {
	dir := t.TempDir()
	bin := buildNested(t, dir, "./estclient", "estclient")
	pki := newDevCA(t)
	password := randomHex(t, 16)
	srv, err := estca.New(estca.Config{TLSCert: pki.tls, CAs: []estca.CAConfig{{
		Label: "ldevid", Issuer: pki.issuing, Signer: pki.issuingKey, Root: pki.root,
		Profile: estca.Profile{Validity: time.Hour, KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
		Auth: estca.Auth{Basic: &estca.Basic{User: "unit", Password: password}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	anchor := filepath.Join(dir, "root.pem")
	if err := os.WriteFile(anchor, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pki.root.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(srv.URL(), "https://")
	// estclient runs one operation; it returns the certificates it wrote and its output.
	estclient := func(t *testing.T, pw string, args ...string) ([]*x509.Certificate, string, error) {
		t.Helper()
		out := filepath.Join(t.TempDir(), "out.pem")
		cmd := exec.Command(bin, append([]string{"-host", host, "-label", "ldevid", "-anchor", anchor, "-out", out}, args...)...)
		cmd.Env = append(os.Environ(), "ESTCLIENT_PASSWORD="+pw)
		output, err := cmd.CombinedOutput()
		if strings.Contains(string(output), password) {
			t.Error("estclient output contains the password")
		}
		if err != nil {
			return nil, string(output), err
		}
		b, rerr := os.ReadFile(out)
		if rerr != nil {
			t.Fatal(rerr)
		}
		var certs []*x509.Certificate
		for {
			var block *pem.Block
			if block, b = pem.Decode(b); block == nil {
				break
			}
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			certs = append(certs, c)
		}
		return certs, string(output), nil
	}
	verify := func(t *testing.T, c *x509.Certificate) {
		t.Helper()
		inter := x509.NewCertPool()
		inter.AddCert(pki.issuing)
		roots := x509.NewCertPool()
		roots.AddCert(pki.root)
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("issued certificate does not verify: %v", err)
		}
	}

	t.Run("cacerts", func(t *testing.T) {
		certs, out, err := estclient(t, "", "-op", "cacerts")
		if err != nil {
			t.Fatalf("cacerts: %v\n%s", err, out)
		}
		if want := []*x509.Certificate{pki.issuing, pki.root}; !sameCertSet(certs, want) {
			t.Errorf("cacerts %s, want %s", subjects(certs), subjects(want))
		}
	})

	keyPath, certPath := filepath.Join(dir, "unit.key"), filepath.Join(dir, "unit.pem")
	var enrolled *x509.Certificate
	if !t.Run("simpleenroll", func(t *testing.T) {
		if _, out, err := estclient(t, "wrong-"+password, "-op", "enroll", "-user", "unit", "-cn", "unit-0001", "-key-out", filepath.Join(dir, "refused.key")); err == nil || !strings.Contains(out, "HTTP status 401") {
			t.Errorf("enroll with a wrong password: %v, output %q; want a refusal with HTTP status 401", err, out)
		}
		certs, out, err := estclient(t, password, "-op", "enroll", "-user", "unit", "-cn", "unit-0001", "-key-out", keyPath)
		if err != nil || len(certs) != 1 {
			t.Fatalf("enroll: %v (%d certificates)\n%s", err, len(certs), out)
		}
		enrolled = certs[0]
		verify(t, enrolled)
		pair, err := tls.LoadX509KeyPair(writeCertFile(t, certPath, enrolled), keyPath)
		if err != nil {
			t.Fatalf("the certificate is not for the client's key: %v", err)
		}
		if enrolled.Subject.CommonName != "unit-0001" || pair.Leaf == nil {
			t.Errorf("subject %s", enrolled.Subject)
		}
		if st, err := os.Stat(keyPath); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("key file %v mode %v", err, st.Mode())
		}
	}) {
		return
	}

	t.Run("simplereenroll", func(t *testing.T) {
		certs, out, err := estclient(t, password, "-op", "reenroll", "-user", "unit", "-cert", certPath, "-key", keyPath)
		if err != nil || len(certs) != 1 {
			t.Fatalf("reenroll: %v (%d certificates)\n%s", err, len(certs), out)
		}
		renewed := certs[0]
		verify(t, renewed)
		if !bytes.Equal(renewed.RawSubject, enrolled.RawSubject) || !bytes.Equal(renewed.RawSubjectPublicKeyInfo, enrolled.RawSubjectPublicKeyInfo) ||
			renewed.SerialNumber.Cmp(enrolled.SerialNumber) == 0 {
			t.Errorf("renewed certificate %s (serial %x) is not a new certificate for the same subject and key", renewed.Subject, renewed.SerialNumber)
		}
		// A client certificate the CA did not issue is refused.
		stranger := newKey(t)
		strangerCert := selfSigned(t, stranger, pkix.Name{CommonName: "unit-0001"}, nil)
		der, err := x509.MarshalPKCS8PrivateKey(stranger)
		if err != nil {
			t.Fatal(err)
		}
		strangerKey := filepath.Join(dir, "stranger.key")
		if err := os.WriteFile(strangerKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, out, err := estclient(t, password, "-op", "reenroll", "-user", "unit", "-cert", writeCertFile(t, filepath.Join(dir, "stranger.pem"), strangerCert), "-key", strangerKey); err == nil {
			t.Errorf("reenroll with a certificate of another issuer succeeded:\n%s", out)
		}
	})

	ops := map[string]int{}
	for _, e := range srv.Ledger() {
		ops[e.Op]++
		if !strings.Contains(e.Principal, "basic:unit") {
			t.Errorf("ledger entry %s by %q, want the basic user", e.Op, e.Principal)
		}
	}
	if ops["simpleenroll"] != 1 || ops["simplereenroll"] != 1 {
		t.Errorf("ledger operations %v, want one enrollment and one re-enrollment", ops)
	}
}

func writeCertFile(t *testing.T, path string, c *x509.Certificate) string {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
