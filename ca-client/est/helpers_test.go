package est

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"
)

// testCA is a throwaway certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

var serialCounter struct {
	sync.Mutex
	n int64
}

func nextSerial() *big.Int {
	serialCounter.Lock()
	defer serialCounter.Unlock()
	serialCounter.n++
	return big.NewInt(serialCounter.n)
}

func newECKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newRootCA returns a self-signed root.
func newRootCA(t testing.TB, name string) *testCA {
	t.Helper()
	key := newECKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

// sign issues a certificate for pub from tmpl, signed by ca.
func (ca *testCA) sign(t testing.TB, tmpl *x509.Certificate, pub crypto.PublicKey) *x509.Certificate {
	t.Helper()
	tmpl.SerialNumber = nextSerial()
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
		tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// subCA returns an intermediate CA under ca.
func (ca *testCA) subCA(t testing.TB, name string) *testCA {
	t.Helper()
	key := newECKey(t)
	cert := ca.sign(t, &x509.Certificate{
		Subject:               pkix.Name{CommonName: name},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}, key.Public())
	return &testCA{cert: cert, key: key}
}

// leaf issues an end-entity certificate for pub.
func (ca *testCA) leaf(t testing.TB, cn string, pub crypto.PublicKey) *x509.Certificate {
	t.Helper()
	return ca.sign(t, &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, pub)
}

// testPKI is the PKI of one test: a TLS root for the server, an issuer
// root with an issuing CA, and a client CA for mTLS.
type testPKI struct {
	tlsRoot    *testCA
	serverCert tls.Certificate
	root       *testCA
	issuing    *testCA
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	p := &testPKI{tlsRoot: newRootCA(t, "Test TLS Root")}
	p.root = newRootCA(t, "Test Device Root")
	p.issuing = p.root.subCA(t, "Test Issuing CA")
	key := newECKey(t)
	srv := p.tlsRoot.sign(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "est.test"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, key.Public())
	p.serverCert = tls.Certificate{Certificate: [][]byte{srv.Raw}, PrivateKey: key, Leaf: srv}
	return p
}

// newCSR returns a DER CSR signed by key.
func newCSR(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "unit-0001", SerialNumber: "SN0001"},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func newRSAKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// certsOnly encodes certs as a degenerate PKCS#7, with an independent
// encoder (smallstep/pkcs7).
func certsOnly(t testing.TB, certs ...*x509.Certificate) []byte {
	t.Helper()
	var all []byte
	for _, c := range certs {
		all = append(all, c.Raw...)
	}
	der, err := pkcs7.DegenerateCertificate(all)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// base64Lines encodes der in base64 with lines of 64 characters ended by eol.
func base64Lines(der []byte, eol string) []byte {
	s := base64.StdEncoding.EncodeToString(der)
	var b bytes.Buffer
	for len(s) > 64 {
		b.WriteString(s[:64] + eol)
		s = s[64:]
	}
	b.WriteString(s + eol)
	return b.Bytes()
}

// writeCerts answers with a base64 certs-only PKCS#7 with CRLF lines.
func writeCerts(t testing.TB, w http.ResponseWriter, certs ...*x509.Certificate) {
	t.Helper()
	w.Header().Set("Content-Type", "application/pkcs7-mime; smime-type=certs-only")
	w.Header().Set("Content-Transfer-Encoding", "base64")
	w.Write(base64Lines(certsOnly(t, certs...), "\r\n"))
}

// seenRequest is what the fake CA recorded about a request.
type seenRequest struct {
	method, path string
	header       http.Header
	body         []byte
	peerCerts    []*x509.Certificate
}

// fakeCA is an EST server over real TLS on 127.0.0.1. handler gets the
// 1-based ordinal of the request.
type fakeCA struct {
	pki     *testPKI
	srv     *httptest.Server
	handler func(w http.ResponseWriter, r *http.Request, n int, body []byte)

	mu   sync.Mutex
	seen []seenRequest
}

func newFakeCA(t testing.TB, pki *testPKI, clientCAs *x509.CertPool, handler func(w http.ResponseWriter, r *http.Request, n int, body []byte)) *fakeCA {
	t.Helper()
	f := &fakeCA{pki: pki, handler: handler}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // expected handshake failures
	f.srv.TLS = &tls.Config{Certificates: []tls.Certificate{pki.serverCert}, MinVersion: tls.VersionTLS12}
	if clientCAs != nil {
		f.srv.TLS.ClientAuth = tls.RequireAndVerifyClientCert
		f.srv.TLS.ClientCAs = clientCAs
	}
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeCA) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	sr := seenRequest{method: r.Method, path: r.URL.Path, header: r.Header.Clone(), body: body}
	if r.TLS != nil {
		sr.peerCerts = r.TLS.PeerCertificates
	}
	f.mu.Lock()
	f.seen = append(f.seen, sr)
	n := len(f.seen)
	f.mu.Unlock()
	f.handler(w, r, n, body)
}

func (f *fakeCA) requests() []seenRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seenRequest(nil), f.seen...)
}

// config returns a Config for this CA with fast retries.
func (f *fakeCA) config() Config {
	return Config{
		BaseURL:       f.srv.URL,
		TrustAnchors:  []*x509.Certificate{f.pki.tlsRoot.cert},
		IssuerAnchors: []*x509.Certificate{f.pki.root.cert},
		RetryMax:      3,
		RetryWaitMin:  time.Millisecond,
		RetryWaitMax:  5 * time.Millisecond,
		Timeout:       5 * time.Second,
	}
}

// enrollOK is a handler body that issues the CSR under the issuing CA and
// answers with leaf + issuing CA.
func (f *fakeCA) issue(t testing.TB, w http.ResponseWriter, body []byte) {
	t.Helper()
	csr := parseCSRBody(t, w, body)
	if csr == nil {
		return
	}
	writeCerts(t, w, f.pki.issuing.leaf(t, csr.Subject.CommonName, csr.PublicKey), f.pki.issuing.cert)
}

func parseCSRBody(t testing.TB, w http.ResponseWriter, body []byte) *x509.CertificateRequest {
	t.Helper()
	der, err := base64.StdEncoding.DecodeString(string(body))
	if err != nil {
		http.Error(w, "bad base64", http.StatusBadRequest)
		return nil
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		http.Error(w, "bad csr", http.StatusBadRequest)
		return nil
	}
	return csr
}

func newClient(t testing.TB, cfg Config) *Client {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

// fakeClock is a Clock whose After fires at once, advancing the time.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	waits []time.Duration
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Now().Truncate(time.Second)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.waits = append(c.waits, d)
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

func (c *fakeClock) Waits() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.waits...)
}

// retryEvent is one Observer.OnRetry call.
type retryEvent struct {
	op     Op
	status int
	wait   time.Duration
}

// recObserver records Observer events.
type recObserver struct {
	mu       sync.Mutex
	attempts int
	statuses []int
	retries  []retryEvent
}

func (o *recObserver) OnAttempt(Op, int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.attempts++
}

func (o *recObserver) OnResponse(_ Op, status int, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.statuses = append(o.statuses, status)
}

func (o *recObserver) OnRetry(op Op, status int, wait time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.retries = append(o.retries, retryEvent{op, status, wait})
}

func (o *recObserver) snapshot() (int, []int, []retryEvent) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.attempts, append([]int(nil), o.statuses...), append([]retryEvent(nil), o.retries...)
}

// opaqueSigner is a crypto.Signer that is not a key type the standard
// library knows, as a TPM-backed signer would be.
type opaqueSigner struct {
	inner crypto.Signer
	mu    sync.Mutex
	signs int
}

func (s *opaqueSigner) Public() crypto.PublicKey { return s.inner.Public() }

func (s *opaqueSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	s.mu.Lock()
	s.signs++
	s.mu.Unlock()
	return s.inner.Sign(r, digest, opts)
}

// ctxTimeout returns a context that ends after d or with the test. Where it
// only guards against a hang, d is generous (a minute): a loaded machine may
// be slow, and no test measures speed with it.
func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
