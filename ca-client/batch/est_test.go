package batch

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"

	"github.com/devid-station/devid/ca-client/est"
)

// estTestServer is a minimal EST CA over real TLS on loopback: it signs every
// valid CSR with its root, can answer 429 to the first requests, and can
// refuse every request with a 503.
type estTestServer struct {
	srv      *httptest.Server
	caCert   *x509.Certificate
	caKey    *ecdsa.PrivateKey
	tooMany  atomic.Int64 // answer 429 while positive, decrementing
	down     atomic.Bool  // answer 503
	requests atomic.Int64
}

func newESTTestServer(t *testing.T) *estTestServer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "batch test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	s := &estTestServer{caCert: caCert, caKey: key}
	s.srv = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *estTestServer) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/.well-known/est/simpleenroll" {
		http.NotFound(w, r)
		return
	}
	s.requests.Add(1)
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "reading body", http.StatusBadRequest)
		return
	}
	if s.down.Load() {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	if s.tooMany.Add(-1) >= 0 {
		w.Header().Set("Retry-After", "0")
		http.Error(w, "slow down", http.StatusTooManyRequests)
		return
	}
	csrDER, err := base64.StdEncoding.DecodeString(strings.NewReplacer("\r", "", "\n", "").Replace(string(body)))
	if err != nil {
		http.Error(w, "bad base64", http.StatusBadRequest)
		return
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil || csr.CheckSignature() != nil {
		http.Error(w, "bad csr", http.StatusBadRequest)
		return
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	leaf := &x509.Certificate{
		SerialNumber: serial,
		Subject:      csr.Subject,
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, s.caCert, csr.PublicKey, s.caKey)
	if err != nil {
		http.Error(w, "signing", http.StatusInternalServerError)
		return
	}
	p7, err := pkcs7.DegenerateCertificate(der)
	if err != nil {
		http.Error(w, "pkcs7", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/pkcs7-mime; smime-type=certs-only")
	w.Header().Set("Content-Transfer-Encoding", "base64")
	_, _ = io.WriteString(w, base64.StdEncoding.EncodeToString(p7))
}

// estConfig is an est.Config for s with fast retries.
func (s *estTestServer) estConfig() est.Config {
	return est.Config{
		BaseURL:       s.srv.URL,
		TrustAnchors:  []*x509.Certificate{s.srv.Certificate()},
		IssuerAnchors: []*x509.Certificate{s.caCert},
		RetryMax:      3,
		RetryWaitMin:  time.Millisecond,
		RetryWaitMax:  5 * time.Millisecond,
		Timeout:       10 * time.Second,
	}
}

// newCSR returns a DER CSR for a fresh P-256 key with serial in the subject.
func newCSR(t testing.TB, serial string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "unit", SerialNumber: serial},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// newESTBatcher starts NewEST against s and closes it when the test ends.
func newESTBatcher(t *testing.T, s *estTestServer, ecfg est.Config, cfg Config) *Batcher {
	t.Helper()
	b, err := NewEST("maker-ca", ecfg, cfg)
	if err != nil {
		t.Fatalf("NewEST: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

func TestESTBatchedReusesConnections(t *testing.T) {
	s := newESTTestServer(t)
	const units, maxInFlight = 32, 4
	b := newESTBatcher(t, s, s.estConfig(), Config{MaxBatch: 4, MaxWait: 5 * time.Millisecond, MaxInFlight: maxInFlight})
	csrs := make([][]byte, units)
	for i := range csrs {
		csrs[i] = newCSR(t, fmt.Sprintf("SN%03d", i))
	}
	var wg sync.WaitGroup
	for i := range units {
		wg.Go(func() {
			resp, err := b.Enroll(context.Background(), Request{CSR: csrs[i], Serial: fmt.Sprintf("SN%03d", i)})
			if err != nil {
				t.Errorf("unit %d: %v", i, err)
				return
			}
			if got := serialOf(resp.Leaf); got != fmt.Sprintf("SN%03d", i) {
				t.Errorf("unit %d got the certificate of %s", i, got)
			}
		})
	}
	wg.Wait()
	m := b.Metrics()
	if m.Succeeded != units || s.requests.Load() != units {
		t.Errorf("Succeeded %d, CA requests %d, want %d", m.Succeeded, s.requests.Load(), units)
	}
	// How many connections the concurrent callers open depends on when each
	// answer comes back to the pool, that is on the scheduler: the test asks
	// only that every dial served a request (the benchmark in
	// ca-client/cabench reports the counts under load).
	if m.ConnectionsOpened < 1 || m.ConnectionsOpened > units {
		t.Errorf("%d connections for %d units, want 1..%d", m.ConnectionsOpened, units, units)
	}

	// Keep-alive: enrollments one after another share one connection, the
	// answer having been read to its end before the next request.
	before := m.ConnectionsOpened
	for i := range 4 {
		if _, err := b.Enroll(context.Background(), Request{CSR: newCSR(t, fmt.Sprintf("SQ%03d", i))}); err != nil {
			t.Fatalf("sequential unit %d: %v", i, err)
		}
	}
	if got := b.Metrics().ConnectionsOpened - before; got != 0 {
		t.Errorf("%d new connections for 4 sequential units after the pool was filled, want 0 (keep-alive)", got)
	}

	// The naive way, one client per unit, opens one connection per unit.
	var naive atomic.Int64
	for i := range 4 {
		tr, n := CountingTransport(nil)
		ecfg := s.estConfig()
		ecfg.Transport = tr
		c, err := est.New(ecfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Enroll(context.Background(), newCSR(t, fmt.Sprintf("N%d", i))); err != nil {
			t.Fatalf("naive enroll: %v", err)
		}
		naive.Add(n.Load())
	}
	if naive.Load() != 4 {
		t.Errorf("naive clients opened %d connections for 4 units, want 4", naive.Load())
	}
	t.Logf("batched: %d units, %d connections, %d batches; naive: 4 units, %d connections",
		units, m.ConnectionsOpened, m.Batches, naive.Load())
}

// eventLog is an est.Observer that records statuses.
type eventLog struct {
	mu       sync.Mutex
	statuses []int
}

func (l *eventLog) OnAttempt(est.Op, int) {}
func (l *eventLog) OnResponse(_ est.Op, status int, _ time.Duration) {
	l.mu.Lock()
	l.statuses = append(l.statuses, status)
	l.mu.Unlock()
}
func (l *eventLog) OnRetry(est.Op, int, time.Duration) {}

func TestEST429LowersRateAndCountsRetries(t *testing.T) {
	s := newESTTestServer(t)
	s.tooMany.Store(2)
	obs := &eventLog{}
	ecfg := s.estConfig()
	ecfg.Observer = obs
	b := newESTBatcher(t, s, ecfg, Config{MaxBatch: 1, RateLimit: 100, Burst: 4})
	if _, err := b.Enroll(context.Background(), Request{CSR: newCSR(t, "SN1")}); err != nil {
		t.Fatalf("Enroll after two 429s: %v", err)
	}
	m := b.Metrics()
	if m.RateLimited < 1 || m.Rate >= 100 {
		t.Errorf("RateLimited %d, rate %v: the 429s did not lower the rate", m.RateLimited, m.Rate)
	}
	if m.Retries != 2 {
		t.Errorf("Retries = %d, want 2", m.Retries)
	}
	obs.mu.Lock()
	got := fmt.Sprint(obs.statuses)
	obs.mu.Unlock()
	if got != "[429 429 200]" {
		t.Errorf("caller's observer saw %s, want [429 429 200]", got)
	}
}

func TestESTUnavailableOpensBreaker(t *testing.T) {
	s := newESTTestServer(t)
	s.down.Store(true)
	ecfg := s.estConfig()
	ecfg.RetryMax = -1
	b := newESTBatcher(t, s, ecfg, Config{MaxBatch: 1, Breaker: BreakerConfig{FailureThreshold: 2, OpenFor: time.Hour}})
	for range 2 {
		if _, err := b.Enroll(context.Background(), Request{CSR: newCSR(t, "SN")}); !errors.Is(err, est.ErrUnavailable) {
			t.Fatalf("Enroll against a 503 CA: %v, want est.ErrUnavailable", err)
		}
	}
	if _, err := b.Enroll(context.Background(), Request{CSR: newCSR(t, "SN")}); !errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("third Enroll: %v, want ErrCircuitOpen", err)
	}
	if n := s.requests.Load(); n != 2 {
		t.Errorf("CA saw %d requests, want 2", n)
	}
	// A rejected CSR is an answer, not an outage.
	if got := ClassifyEST(&est.RejectedError{Status: 400}); got != ClassPermanent {
		t.Errorf("ClassifyEST(rejected) = %v", got)
	}
}
