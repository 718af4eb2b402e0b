package cabench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/devid-station/devid/ca-client/secret"
	"math"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devid-station/devid/ca-client/batch"
	"github.com/devid-station/devid/ca-client/est"
	"github.com/devid-station/devid/fixture/devpki"
	"github.com/devid-station/devid/fixture/estca"
)

// The CA under test, as issue 3 describes it.
const (
	// caLatency is the dev CA's added round-trip latency.
	caLatency = 100 * time.Millisecond
	// caRateLimit is the CA's rate limit in requests per second; requests
	// above it get 429 + Retry-After.
	caRateLimit = 50
	// caRateBurst is the CA's token-bucket size: a fifth of a second of
	// traffic.
	caRateBurst = 10
	// caLabel is the CA's EST label.
	caLabel = "idevid"
)

// The batched client's settings (issue 3).
const (
	maxInFlight = 16
	maxWait     = 20 * time.Millisecond
	// clientBurst is the batcher's token-bucket size. Half the CA's bucket:
	// the other half (5 requests, 100 ms at 50/s) absorbs scheduling jitter
	// between the client's bucket and the CA's, so that a request sent on
	// time is not refused (each 429 halves the batcher's rate for seconds).
	// It also caps MaxBatch (batch.Config), so batches hold up to 5 requests.
	clientBurst = 5
)

// naiveRetryMax is the naive client's retry budget. It meets a 429 with a
// Retry-After of one second on most attempts once the callers outnumber the
// rate limit (256 callers compete for 50 slots a second), so it must be
// large enough that no caller gives up: the benchmark measures throughput,
// not failures.
const naiveRetryMax = 1000

// workload is the number of enrollments one benchmark run sends:
// max(bN, 4×callers, 100). With the default -benchtime of 1 s every
// configuration runs once with b.N = 1 (a run takes longer than a second), so
// the workload is 100 enrollments for 1 and 16 callers, 256 for 64 and 1024
// for 256 callers: every caller enrolls at least 4 times, and at 50/s the
// run lasts at least two seconds.
func workload(bN, callers int) int {
	return max(bN, 4*callers, 100)
}

// caFixture is a dev EST CA started for one measurement and the client
// configuration that reaches it.
type caFixture struct {
	srv    *estca.Server
	estCfg est.Config
}

// startCA starts a fresh dev EST CA (root -> issuing CA, TLS certificate for
// 127.0.0.1 from the root, header-secret auth, added latency and rate limit)
// and closes it when tb ends. A fresh CA per measurement starts with a full
// rate-limit bucket and zeroed Stats.
func startCA(tb testing.TB) *caFixture {
	tb.Helper()
	pki, err := devpki.New(devpki.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	root, issuing := pki.MakerRoot.Cert, pki.IDevIDIssuing.Cert
	tlsCert, err := estca.NewTLSCertificate(root, pki.MakerRoot.Signer, nil, newKey(tb), []string{"127.0.0.1"}, time.Now(), time.Hour)
	if err != nil {
		tb.Fatalf("TLS certificate: %v", err)
	}
	raw := make([]byte, 16)
	if _, err := rand.Read(raw); err != nil {
		tb.Fatal(err)
	}
	const secretHeader = "Secret-Value"
	srv, err := estca.New(estca.Config{
		TLSCert: tlsCert,
		CAs: []estca.CAConfig{{
			Label:         caLabel,
			Issuer:        issuing,
			Signer:        pki.IDevIDIssuing.Signer,
			ChainInEnroll: true, // the client verifies the chain without a /cacerts call
			Profile: estca.Profile{
				Validity:    24 * time.Hour,
				KeyUsage:    x509.KeyUsageDigitalSignature,
				ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
				CopySAN:     true,
			},
			Auth: estca.Auth{HeaderSecret: &estca.HeaderSecret{Name: secretHeader, Value: hex.EncodeToString(raw)}},
			Knobs: estca.Knobs{
				AddedLatency: caLatency,
				RateLimit:    caRateLimit,
				RateBurst:    caRateBurst,
			},
		}},
	})
	if err != nil {
		tb.Fatalf("estca.New: %v", err)
	}
	if err := srv.Start(); err != nil {
		tb.Fatalf("estca Start: %v", err)
	}
	tb.Cleanup(func() {
		if err := srv.Close(); err != nil && !errors.Is(err, estca.ErrClosed) {
			tb.Errorf("closing the CA: %v", err)
		}
	})
	return &caFixture{
		srv: srv,
		estCfg: est.Config{
			BaseURL:      srv.URL(),
			Label:        caLabel,
			TrustAnchors: []*x509.Certificate{root},
			Auth:         est.HeaderSecret{Name: secretHeader, Value: secret.New(hex.EncodeToString(raw))},
		},
	}
}

func newKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// newCSRs returns n DER CSRs, each for a fresh P-256 key with a unit serial
// in the subject.
func newCSRs(tb testing.TB, n int) [][]byte {
	tb.Helper()
	csrs := make([][]byte, n)
	for i := range csrs {
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
			Subject: pkix.Name{CommonName: "unit", SerialNumber: fmt.Sprintf("SN%06d", i)},
		}, newKey(tb))
		if err != nil {
			tb.Fatal(err)
		}
		csrs[i] = der
	}
	return csrs
}

// enroller is one way of sending enrollments to the CA. Implementations are
// safe for concurrent use.
type enroller interface {
	// enroll sends one CSR and waits for its verified certificate.
	enroll(ctx context.Context, csr []byte) error
	// connsOpened is the client-side count of TCP connections opened.
	connsOpened() int64
}

// batched is the station's way: one batch.NewEST per CA.
type batched struct{ b *batch.Batcher }

// newBatched returns the batched client of issue 3 for ca: MaxInFlight 16,
// MaxWait 20 ms, a token bucket at the CA's rate limit, keep-alive
// connections (batch.NewEST's transport). It is closed when tb ends.
func newBatched(tb testing.TB, ca *caFixture) enroller {
	tb.Helper()
	b, err := batch.NewEST("maker-ca", ca.estCfg, batch.Config{
		MaxInFlight: maxInFlight,
		MaxWait:     maxWait,
		RateLimit:   caRateLimit,
		Burst:       clientBurst,
	})
	if err != nil {
		tb.Fatalf("batch.NewEST: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			tb.Errorf("closing the batcher: %v", err)
		}
	})
	return batched{b}
}

func (e batched) enroll(ctx context.Context, csr []byte) error {
	_, err := e.b.Enroll(ctx, batch.Request{CSR: csr})
	return err
}

func (e batched) connsOpened() int64 { return e.b.Metrics().ConnectionsOpened }

// naive is the way the batcher replaces: every enrollment builds its own
// est.Client, whose transport is a fresh clone with keep-alives disabled, so
// every HTTP attempt (retries included) opens a new TLS connection. There is
// no batching and no rate limiting: the client meets the CA's 429s and
// retries after their Retry-After.
type naive struct {
	cfg   est.Config
	conns *atomic.Int64
}

func newNaive(ca *caFixture) enroller {
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.DisableKeepAlives = true
	// est.New clones cfg.Transport, and the clones share the counting dialer.
	tr, conns := batch.CountingTransport(base)
	cfg := ca.estCfg
	cfg.Transport = tr
	cfg.RetryMax = naiveRetryMax
	return naive{cfg: cfg, conns: conns}
}

func (e naive) enroll(ctx context.Context, csr []byte) error {
	c, err := est.New(e.cfg)
	if err != nil {
		return err
	}
	_, err = c.Enroll(ctx, csr)
	return err
}

func (e naive) connsOpened() int64 { return e.conns.Load() }

// result is what one measurement found.
type result struct {
	enrollments int
	failed      int
	firstErr    error
	elapsed     time.Duration
	// p50 and p95 are nearest-rank percentiles of the enrollment latencies
	// the callers saw (from their Enroll call to its return).
	p50, p95 time.Duration
	// caHandshakes is the CA's count of TLS handshakes during the run;
	// clientConns the client's count of connections opened.
	caHandshakes, clientConns int64
	// rateLimited counts the CA's 429 answers during the run.
	rateLimited int64
	// issued counts the certificates in the CA's ledger after the run.
	issued int
}

// perSecond is the throughput in enrollments per second.
func (r result) perSecond() float64 { return float64(r.enrollments) / r.elapsed.Seconds() }

// pctOfLimit is the throughput as a percentage of the CA's rate limit.
func (r result) pctOfLimit() float64 { return 100 * r.perSecond() / caRateLimit }

func (r result) String() string {
	return fmt.Sprintf("%d enrollments in %v: %.1f enroll/s (%.0f%% of the %d/s limit), p50 %v, p95 %v, "+
		"%d TLS handshakes at the CA, %d connections opened by the client, %d answers 429, %d failed",
		r.enrollments, r.elapsed.Round(time.Millisecond), r.perSecond(), r.pctOfLimit(), caRateLimit,
		r.p50.Round(time.Millisecond), r.p95.Round(time.Millisecond), r.caHandshakes, r.clientConns, r.rateLimited, r.failed)
}

// measure sends every CSR in csrs through e from callers concurrent
// goroutines, each taking the next CSR until none is left, and returns what
// it saw. It does not fail tb: the caller decides.
func measure(ca *caFixture, e enroller, callers int, csrs [][]byte) result {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	lat := make([]time.Duration, len(csrs))
	var (
		next     atomic.Int64
		mu       sync.Mutex
		failed   int
		firstErr error
		wg       sync.WaitGroup
	)
	before := ca.srv.Stats()
	conns0 := e.connsOpened()
	start := time.Now()
	for range callers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(csrs) {
					return
				}
				t0 := time.Now()
				err := e.enroll(ctx, csrs[i])
				lat[i] = time.Since(t0)
				if err != nil {
					mu.Lock()
					failed++
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	after := ca.srv.Stats()
	slices.Sort(lat)
	return result{
		enrollments:  len(csrs),
		failed:       failed,
		firstErr:     firstErr,
		elapsed:      elapsed,
		p50:          percentile(lat, 0.50),
		p95:          percentile(lat, 0.95),
		caHandshakes: after.Handshakes - before.Handshakes,
		clientConns:  e.connsOpened() - conns0,
		rateLimited: after.Requests[estca.RequestKey{Label: caLabel, Op: "simpleenroll", Status: http.StatusTooManyRequests}] -
			before.Requests[estca.RequestKey{Label: caLabel, Op: "simpleenroll", Status: http.StatusTooManyRequests}],
		issued: len(ca.srv.Ledger()),
	}
}

// percentile returns the nearest-rank q-quantile of sorted.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// clients are the two ways of enrolling that the benchmark compares.
var clients = []struct {
	name string
	new  func(testing.TB, *caFixture) enroller
}{
	{"batched", newBatched},
	{"naive", func(_ testing.TB, ca *caFixture) enroller { return newNaive(ca) }},
}

// BenchmarkEnroll runs workload(b.N, callers) enrollments against a fresh dev
// EST CA (100 ms added latency, 50 requests/s) for each client and number of
// concurrent callers, and reports:
//
//   - enroll/s: enrollments per second over the whole workload;
//   - pct-of-limit: enroll/s as a percentage of the CA's 50/s;
//   - p50-ms, p95-ms: enrollment latency seen by the callers;
//   - conns: TLS handshakes the CA completed (the server's count);
//   - client-conns: connections the client opened (its own count);
//   - 429s: answers 429 the CA gave;
//   - ns/op, B/op, allocs/op: per enrollment (not per b.N), the memory
//     figures including the in-process CA's.
//
// CSRs are generated outside the timer.
func BenchmarkEnroll(b *testing.B) {
	for _, c := range clients {
		for _, callers := range []int{1, 16, 64, 256} {
			b.Run(fmt.Sprintf("%s/callers=%d", c.name, callers), func(b *testing.B) {
				n := workload(b.N, callers)
				csrs := newCSRs(b, n)
				ca := startCA(b)
				e := c.new(b, ca)
				var m0, m1 runtime.MemStats
				runtime.ReadMemStats(&m0)
				b.ResetTimer()
				r := measure(ca, e, callers, csrs)
				b.StopTimer()
				runtime.ReadMemStats(&m1)
				if r.failed > 0 {
					b.Fatalf("%d of %d enrollments failed, first: %v", r.failed, n, r.firstErr)
				}
				b.ReportMetric(float64(r.elapsed.Nanoseconds())/float64(n), "ns/op")
				b.ReportMetric(float64(m1.TotalAlloc-m0.TotalAlloc)/float64(n), "B/op")
				b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/float64(n), "allocs/op")
				b.ReportMetric(r.perSecond(), "enroll/s")
				b.ReportMetric(r.pctOfLimit(), "pct-of-limit")
				b.ReportMetric(float64(r.p50)/float64(time.Millisecond), "p50-ms")
				b.ReportMetric(float64(r.p95)/float64(time.Millisecond), "p95-ms")
				b.ReportMetric(float64(r.caHandshakes), "conns")
				b.ReportMetric(float64(r.clientConns), "client-conns")
				b.ReportMetric(float64(r.rateLimited), "429s")
				b.Logf("%s, %d callers: %v", c.name, callers, r)
			})
		}
	}
}

// latencySlack is what TestBatchedMeetsTargets allows above the p50 target
// of caLatency + 2×maxWait (140 ms). The target counts the CA's round trip
// only; an enrollment also pays, with one caller, the first connection's TCP
// and TLS handshake, the CA's CSR check and ECDSA signature, the client's
// PKCS#7 parsing and chain verification (a few ms together on an idle
// machine), and on a loaded 2-core machine goroutine and timer scheduling
// delays of tens of ms. 60 ms covers that while a batcher that held requests
// much longer than MaxWait would still fail.
const latencySlack = 60 * time.Millisecond

// connSlack is what TestBatchedMeetsTargets allows above maxInFlight
// connections: a dial that loses the race to a connection coming back to
// the pool leaves one more connection. One connection per request would be
// hundreds.
const connSlack = 2

// TestBatchedMeetsTargets asserts issue 3's targets for the batched client:
// with 256 callers, throughput of at least 90% of the CA's rate limit and
// connections bounded by MaxInFlight; with 1 caller (under the limit), a p50
// latency within the CA's round trip plus 2×MaxWait (plus latencySlack).
func TestBatchedMeetsTargets(t *testing.T) {
	if testing.Short() {
		t.Skip("runs about 35 s of enrollments against a rate-limited CA; skipped in -short")
	}
	t.Run("callers=256", func(t *testing.T) {
		const callers = 256
		ca := startCA(t)
		r := measure(ca, newBatched(t, ca), callers, newCSRs(t, workload(0, callers)))
		t.Logf("batched, %d callers: %v", callers, r)
		checkComplete(t, r)
		for _, p := range throughputAndConnProblems(r) {
			t.Error(p)
		}
	})
	t.Run("callers=1", func(t *testing.T) {
		ca := startCA(t)
		r := measure(ca, newBatched(t, ca), 1, newCSRs(t, workload(0, 1)))
		t.Logf("batched, 1 caller: %v", r)
		checkComplete(t, r)
		for _, p := range latencyProblems(r) {
			t.Error(p)
		}
	})
}

// throughputAndConnProblems describes how r, a run at full load, misses the
// targets: at least 90% of the CA's rate limit, and connections (counted by
// the CA and by the client) bounded by MaxInFlight, not by the requests.
func throughputAndConnProblems(r result) []string {
	var out []string
	if want := 0.9 * caRateLimit; r.perSecond() < want {
		out = append(out, fmt.Sprintf("throughput %.1f enroll/s, want at least %.0f (90%% of the CA's %d/s)",
			r.perSecond(), want, caRateLimit))
	}
	for _, c := range []struct {
		name string
		n    int64
	}{{"CA TLS handshakes", r.caHandshakes}, {"client connections opened", r.clientConns}} {
		if c.n < 1 || c.n > maxInFlight+connSlack {
			out = append(out, fmt.Sprintf("%s = %d for %d enrollments, want 1..%d (MaxInFlight %d + %d)",
				c.name, c.n, r.enrollments, maxInFlight+connSlack, maxInFlight, connSlack))
		}
	}
	return out
}

// latencyProblems describes how r, a run under the rate limit, misses the
// target p50 <= round trip + 2×MaxWait (+ latencySlack).
func latencyProblems(r result) []string {
	var out []string
	if want := caLatency + 2*maxWait + latencySlack; r.p50 > want {
		out = append(out, fmt.Sprintf("p50 latency %v, want at most %v (round trip %v + 2×MaxWait %v + slack %v)",
			r.p50, want, caLatency, 2*maxWait, latencySlack))
	}
	if r.p50 < caLatency {
		out = append(out, fmt.Sprintf("p50 latency %v is below the CA's added latency %v: the CA knob is not in effect",
			r.p50, caLatency))
	}
	return out
}

// checkComplete fails t unless every enrollment succeeded and the CA issued
// exactly one certificate per enrollment.
func checkComplete(t *testing.T, r result) {
	t.Helper()
	if r.failed > 0 {
		t.Fatalf("%d of %d enrollments failed, first: %v", r.failed, r.enrollments, r.firstErr)
	}
	if r.issued != r.enrollments {
		t.Errorf("the CA issued %d certificates for %d enrollments", r.issued, r.enrollments)
	}
}
