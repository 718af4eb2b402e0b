package est

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"github.com/devid-station/devid/ca-client/secret"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestEnroll(t *testing.T) {
	tests := []struct {
		name string
		key  func(t *testing.T) crypto.Signer
		// answer writes the certificates of the response.
		answer     func(t *testing.T, f *fakeCA, leaf *x509.Certificate, w http.ResponseWriter)
		wantCACall bool // the client must fetch /cacerts for the intermediate
	}{
		{
			name: "ECDSA CSR, chain in the answer",
			key:  func(t *testing.T) crypto.Signer { return newECKey(t) },
			answer: func(t *testing.T, f *fakeCA, leaf *x509.Certificate, w http.ResponseWriter) {
				writeCerts(t, w, leaf, f.pki.issuing.cert)
			},
		},
		{
			name: "RSA CSR, chain and root in reverse order",
			key:  func(t *testing.T) crypto.Signer { return newRSAKey(t) },
			answer: func(t *testing.T, f *fakeCA, leaf *x509.Certificate, w http.ResponseWriter) {
				writeCerts(t, w, f.pki.root.cert, f.pki.issuing.cert, leaf)
			},
		},
		{
			name: "leaf only, intermediate from /cacerts",
			key:  func(t *testing.T) crypto.Signer { return newECKey(t) },
			answer: func(t *testing.T, f *fakeCA, leaf *x509.Certificate, w http.ResponseWriter) {
				writeCerts(t, w, leaf)
			},
			wantCACall: true,
		},
		{
			name: "LF lines, no content-transfer-encoding, bare media type",
			key:  func(t *testing.T) crypto.Signer { return newECKey(t) },
			answer: func(t *testing.T, f *fakeCA, leaf *x509.Certificate, w http.ResponseWriter) {
				w.Header().Set("Content-Type", "application/pkcs7-mime")
				w.Write(base64Lines(certsOnly(t, leaf, f.pki.issuing.cert), "\n"))
			},
		},
		{
			name: "whitespace everywhere and no padding",
			key:  func(t *testing.T) crypto.Signer { return newECKey(t) },
			answer: func(t *testing.T, f *fakeCA, leaf *x509.Certificate, w http.ResponseWriter) {
				w.Header().Set("Content-Type", "application/pkcs7-mime; smime-type=certs-only")
				s := strings.TrimRight(base64.StdEncoding.EncodeToString(certsOnly(t, leaf, f.pki.issuing.cert)), "=")
				var b strings.Builder
				b.WriteString("\r\n  ")
				for i, r := range s {
					b.WriteRune(r)
					if i%7 == 0 {
						b.WriteString(" \t\r\n")
					}
				}
				w.Write([]byte(b.String() + "\r\n"))
			},
		},
		{
			name: "raw DER from a server ignoring RFC 8951",
			key:  func(t *testing.T) crypto.Signer { return newECKey(t) },
			answer: func(t *testing.T, f *fakeCA, leaf *x509.Certificate, w http.ResponseWriter) {
				w.Header().Set("Content-Type", "application/pkcs7-mime")
				w.Write(certsOnly(t, leaf, f.pki.issuing.cert))
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pki := newTestPKI(t)
			var f *fakeCA
			f = newFakeCA(t, pki, nil, func(w http.ResponseWriter, r *http.Request, _ int, body []byte) {
				switch r.URL.Path {
				case "/.well-known/est/cacerts":
					writeCerts(t, w, pki.issuing.cert, pki.root.cert)
				case "/.well-known/est/simpleenroll":
					csr := parseCSRBody(t, w, body)
					if csr == nil {
						return
					}
					tc.answer(t, f, pki.issuing.leaf(t, "unit", csr.PublicKey), w)
				default:
					http.NotFound(w, r)
				}
			})
			key := tc.key(t)
			csr := newCSR(t, key)
			c := newClient(t, f.config())
			res, err := c.Enroll(ctxTimeout(t, 10*time.Second), csr)
			if err != nil {
				t.Fatalf("Enroll: %v", err)
			}
			if !key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(res.Leaf.PublicKey) {
				t.Error("leaf key differs from the CSR key")
			}
			if len(res.Chain) != 1 || !res.Chain[0].Equal(pki.issuing.cert) {
				t.Errorf("Chain = %v, want exactly the issuing CA", res.Chain)
			}
			reqs := f.requests()
			wantReqs := 1
			if tc.wantCACall {
				wantReqs = 2
			}
			if len(reqs) != wantReqs {
				t.Fatalf("CA saw %d requests, want %d", len(reqs), wantReqs)
			}
			if res.Attempts != 1 || res.Pending != 0 {
				t.Errorf("Attempts, Pending = %d, %d; want 1, 0", res.Attempts, res.Pending)
			}
			r := reqs[0]
			if r.method != http.MethodPost || r.path != "/.well-known/est/simpleenroll" {
				t.Errorf("request %s %s", r.method, r.path)
			}
			if got := r.header.Get("Content-Type"); got != "application/pkcs10" {
				t.Errorf("Content-Type = %q", got)
			}
			if got := r.header.Get("Content-Transfer-Encoding"); got != "base64" {
				t.Errorf("Content-Transfer-Encoding = %q", got)
			}
			if got, err := base64.StdEncoding.DecodeString(string(r.body)); err != nil || !bytes.Equal(got, csr) {
				t.Errorf("body is not the base64 of the CSR (err %v)", err)
			}
		})
	}
}

func TestCACertsCache(t *testing.T) {
	pki := newTestPKI(t)
	f := newFakeCA(t, pki, nil, func(w http.ResponseWriter, r *http.Request, _ int, _ []byte) {
		if got := r.Header.Get("Accept"); got != "application/pkcs7-mime" {
			t.Errorf("Accept = %q", got)
		}
		writeCerts(t, w, pki.issuing.cert, pki.root.cert)
	})
	clock := newFakeClock()
	cfg := f.config()
	cfg.Clock = clock
	cfg.CACertsTTL = time.Minute
	c := newClient(t, cfg)
	ctx := ctxTimeout(t, 10*time.Second)

	steps := []struct {
		name     string
		advance  time.Duration
		wantReqs int
	}{
		{name: "first call fetches", wantReqs: 1},
		{name: "within TTL is cached", advance: 59 * time.Second, wantReqs: 1},
		{name: "after TTL refetches", advance: 2 * time.Second, wantReqs: 2},
		{name: "cached again", advance: time.Second, wantReqs: 2},
	}
	for _, s := range steps {
		clock.Advance(s.advance)
		certs, err := c.CACerts(ctx)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if len(certs) != 2 || !certs[0].Equal(pki.issuing.cert) || !certs[1].Equal(pki.root.cert) {
			t.Errorf("%s: got %d certificates, not the CA's two", s.name, len(certs))
		}
		if got := len(f.requests()); got != s.wantReqs {
			t.Errorf("%s: CA saw %d requests, want %d", s.name, got, s.wantReqs)
		}
	}
}

func TestCACertsConcurrentShareOneRequest(t *testing.T) {
	pki := newTestPKI(t)
	release := make(chan struct{})
	f := newFakeCA(t, pki, nil, func(w http.ResponseWriter, r *http.Request, _ int, _ []byte) {
		<-release
		writeCerts(t, w, pki.issuing.cert)
	})
	c := newClient(t, f.config())
	ctx := ctxTimeout(t, 10*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			_, err := c.CACerts(ctx)
			errs <- err
		})
	}
	time.Sleep(100 * time.Millisecond) // let the callers pile up on the fetch
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := len(f.requests()); got != 1 {
		t.Errorf("CA saw %d requests, want 1", got)
	}
}

func TestCSRAttrs(t *testing.T) {
	attrs := []byte{0x30, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x07} // SEQUENCE { challengePassword OID }
	tests := []struct {
		name    string
		handle  func(w http.ResponseWriter)
		want    []byte
		wantErr error
	}{
		{
			name: "attributes",
			handle: func(w http.ResponseWriter) {
				w.Header().Set("Content-Type", "application/csrattrs")
				w.Write(base64Lines(attrs, "\r\n"))
			},
			want: attrs,
		},
		{name: "204 no content", handle: func(w http.ResponseWriter) { w.WriteHeader(http.StatusNoContent) }},
		{name: "404 not found", handle: func(w http.ResponseWriter) { w.WriteHeader(http.StatusNotFound) }},
		{
			name: "not a sequence",
			handle: func(w http.ResponseWriter) {
				w.Header().Set("Content-Type", "application/csrattrs")
				w.Write([]byte(base64.StdEncoding.EncodeToString([]byte{0x04, 0x01, 0x00})))
			},
			wantErr: ErrBadResponse,
		},
		{
			name:    "403 rejected",
			handle:  func(w http.ResponseWriter) { http.Error(w, "no", http.StatusForbidden) },
			wantErr: ErrRejected,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pki := newTestPKI(t)
			f := newFakeCA(t, pki, nil, func(w http.ResponseWriter, r *http.Request, _ int, _ []byte) {
				if r.Method != http.MethodGet || r.URL.Path != "/.well-known/est/csrattrs" {
					t.Errorf("request %s %s", r.Method, r.URL.Path)
				}
				tc.handle(w)
			})
			got, err := newClient(t, f.config()).CSRAttrs(ctxTimeout(t, 10*time.Second))
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("attrs = %x, want %x", got, tc.want)
			}
		})
	}
}

func TestPaths(t *testing.T) {
	tests := []struct {
		name, suffix, label string
		wantPrefix          string
	}{
		{name: "no label", wantPrefix: "/.well-known/est/"},
		{name: "label", label: "idevid", wantPrefix: "/.well-known/est/idevid/"},
		{name: "base path and trailing slash", suffix: "/ca1/", label: "ldevid-2", wantPrefix: "/ca1/.well-known/est/ldevid-2/"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pki := newTestPKI(t)
			var f *fakeCA
			f = newFakeCA(t, pki, nil, func(w http.ResponseWriter, r *http.Request, _ int, body []byte) {
				switch strings.TrimPrefix(r.URL.Path, tc.wantPrefix) {
				case "cacerts":
					writeCerts(t, w, pki.issuing.cert)
				case "simpleenroll":
					f.issue(t, w, body)
				case "csrattrs":
					w.WriteHeader(http.StatusNoContent)
				default:
					http.NotFound(w, r)
				}
			})
			cfg := f.config()
			cfg.BaseURL += tc.suffix
			cfg.Label = tc.label
			c := newClient(t, cfg)
			ctx := ctxTimeout(t, 10*time.Second)
			if _, err := c.CACerts(ctx); err != nil {
				t.Errorf("CACerts: %v", err)
			}
			if _, err := c.CSRAttrs(ctx); err != nil {
				t.Errorf("CSRAttrs: %v", err)
			}
			if _, err := c.Enroll(ctx, newCSR(t, newECKey(t))); err != nil {
				t.Errorf("Enroll: %v", err)
			}
			for _, r := range f.requests() {
				if !strings.HasPrefix(r.path, tc.wantPrefix) {
					t.Errorf("path %s lacks prefix %s", r.path, tc.wantPrefix)
				}
			}
		})
	}
}

func TestAuthHeaders(t *testing.T) {
	tests := []struct {
		name  string
		auth  Auth
		check func(t *testing.T, h http.Header)
	}{
		{
			name: "none",
			check: func(t *testing.T, h http.Header) {
				if v := h.Get("Authorization"); v != "" {
					t.Errorf("Authorization = %q, want none", v)
				}
			},
		},
		{
			name: "basic",
			auth: Basic{User: "station-7", Password: secret.New("s3cret pass:word")},
			check: func(t *testing.T, h http.Header) {
				r := http.Request{Header: h}
				u, p, ok := r.BasicAuth()
				if !ok || u != "station-7" || p != "s3cret pass:word" {
					t.Errorf("basic auth = %q, %q, %v", u, p, ok)
				}
			},
		},
		{
			name: "header secret",
			auth: HeaderSecret{Name: "X-Api-Key", Value: secret.New("k-123")},
			check: func(t *testing.T, h http.Header) {
				if v := h.Values("X-Api-Key"); len(v) != 1 || v[0] != "k-123" {
					t.Errorf("X-Api-Key = %q", v)
				}
				if v := h.Get("Authorization"); v != "" {
					t.Errorf("Authorization = %q, want none", v)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pki := newTestPKI(t)
			var f *fakeCA
			f = newFakeCA(t, pki, nil, func(w http.ResponseWriter, r *http.Request, n int, body []byte) {
				if n == 1 { // retried attempts must carry the credentials too
					http.Error(w, "busy", http.StatusServiceUnavailable)
					return
				}
				f.issue(t, w, body)
			})
			cfg := f.config()
			cfg.Auth = tc.auth
			if _, err := newClient(t, cfg).Enroll(ctxTimeout(t, 10*time.Second), newCSR(t, newECKey(t))); err != nil {
				t.Fatal(err)
			}
			reqs := f.requests()
			if len(reqs) != 2 {
				t.Fatalf("CA saw %d requests, want 2", len(reqs))
			}
			for _, r := range reqs {
				tc.check(t, r.header)
			}
		})
	}
}

func TestClientCertAuthWithOpaqueSigner(t *testing.T) {
	pki := newTestPKI(t)
	clientCA := newRootCA(t, "Test IDevID CA")
	signer := &opaqueSigner{inner: newECKey(t)}
	clientLeaf := clientCA.leaf(t, "unit-0001 idevid", signer.Public())
	pool := x509.NewCertPool()
	pool.AddCert(clientCA.cert)
	var f *fakeCA
	f = newFakeCA(t, pki, pool, func(w http.ResponseWriter, r *http.Request, _ int, body []byte) {
		f.issue(t, w, body)
	})
	cfg := f.config()
	cfg.ClientCert = &ClientCertificate{Chain: []*x509.Certificate{clientLeaf}, Key: signer}
	cfg.Auth = HeaderSecret{Name: "X-Station", Value: secret.New("v")}
	c := newClient(t, cfg)
	ctx := ctxTimeout(t, 10*time.Second)
	for _, op := range []struct {
		name string
		fn   func(context.Context, []byte) (*Result, error)
		path string
	}{
		{"enroll", c.Enroll, "/.well-known/est/simpleenroll"},
		{"reenroll", c.Reenroll, "/.well-known/est/simplereenroll"},
	} {
		if _, err := op.fn(ctx, newCSR(t, newECKey(t))); err != nil {
			t.Fatalf("%s: %v", op.name, err)
		}
		reqs := f.requests()
		last := reqs[len(reqs)-1]
		if last.path != op.path {
			t.Errorf("%s: path %s", op.name, last.path)
		}
		if len(last.peerCerts) == 0 || !last.peerCerts[0].Equal(clientLeaf) {
			t.Errorf("%s: server did not see the client certificate", op.name)
		}
	}
	signer.mu.Lock()
	defer signer.mu.Unlock()
	if signer.signs == 0 {
		t.Error("the opaque signer never signed a handshake")
	}
}

func TestReenrollNeedsClientCert(t *testing.T) {
	pki := newTestPKI(t)
	f := newFakeCA(t, pki, nil, func(w http.ResponseWriter, _ *http.Request, _ int, _ []byte) {
		t.Error("no request expected")
	})
	_, err := newClient(t, f.config()).Reenroll(ctxTimeout(t, 5*time.Second), newCSR(t, newECKey(t)))
	if !errors.Is(err, ErrNoClientCert) {
		t.Fatalf("err = %v, want ErrNoClientCert", err)
	}
}

func TestPending(t *testing.T) {
	tests := []struct {
		name       string
		accepted   int // 202 answers before the certificate (-1: forever)
		retryAfter func(now time.Time) string
		deadline   time.Duration
		wantErr    error
		wantReqs   int
		wantWaits  []time.Duration
	}{
		{
			name:       "two 202 then certificate",
			accepted:   2,
			retryAfter: func(time.Time) string { return "10" },
			deadline:   time.Minute,
			wantReqs:   3,
			wantWaits:  []time.Duration{10 * time.Second, 10 * time.Second},
		},
		{
			name:       "HTTP-date Retry-After",
			accepted:   1,
			retryAfter: func(now time.Time) string { return now.Add(42 * time.Second).UTC().Format(http.TimeFormat) },
			deadline:   time.Minute,
			wantReqs:   2,
			wantWaits:  []time.Duration{42 * time.Second},
		},
		{
			name:       "202 until the deadline",
			accepted:   -1,
			retryAfter: func(time.Time) string { return "10" },
			deadline:   35 * time.Second,
			wantErr:    ErrPendingTimeout,
			wantReqs:   4, // at 0, 10, 20, 30 s; the next poll would be after 35 s
			wantWaits:  []time.Duration{10 * time.Second, 10 * time.Second, 10 * time.Second},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pki := newTestPKI(t)
			clock := newFakeClock()
			var f *fakeCA
			f = newFakeCA(t, pki, nil, func(w http.ResponseWriter, r *http.Request, n int, body []byte) {
				if tc.accepted < 0 || n <= tc.accepted {
					w.Header().Set("Retry-After", tc.retryAfter(clock.Now()))
					w.WriteHeader(http.StatusAccepted)
					return
				}
				f.issue(t, w, body)
			})
			obs := &recObserver{}
			cfg := f.config()
			cfg.Clock = clock
			cfg.PendingDeadline = tc.deadline
			cfg.Observer = obs
			csr := newCSR(t, newECKey(t))
			res, err := newClient(t, cfg).Enroll(ctxTimeout(t, 10*time.Second), csr)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			reqs := f.requests()
			if len(reqs) != tc.wantReqs {
				t.Errorf("CA saw %d requests, want %d", len(reqs), tc.wantReqs)
			}
			for i, r := range reqs {
				if !bytes.Equal(r.body, reqs[0].body) || r.method != http.MethodPost {
					t.Errorf("poll %d did not re-POST the same CSR", i)
				}
			}
			if got := clock.Waits(); !equalDurations(got, tc.wantWaits) {
				t.Errorf("waits = %v, want %v", got, tc.wantWaits)
			}
			_, _, retries := obs.snapshot()
			if len(retries) != len(tc.wantWaits) {
				t.Errorf("observer saw %d retries, want %d", len(retries), len(tc.wantWaits))
			}
			for _, r := range retries {
				if r.status != http.StatusAccepted || r.op != OpSimpleEnroll {
					t.Errorf("retry event %+v, want a 202 on simpleenroll", r)
				}
			}
			if err == nil && (res.Pending != tc.accepted || res.Attempts != tc.wantReqs) {
				t.Errorf("Pending, Attempts = %d, %d; want %d, %d", res.Pending, res.Attempts, tc.accepted, tc.wantReqs)
			}
		})
	}
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRetries(t *testing.T) {
	tests := []struct {
		name string
		// failures are the statuses answered before the certificate.
		failures   []int
		retryAfter string
		waitMax    time.Duration
		retryMax   int
		wantErr    error
		wantStatus int // for *RejectedError
		wantReqs   int
		// wantWaits, if set, are the exact waits the Observer must see.
		wantWaits []time.Duration
	}{
		{name: "503 then success", failures: []int{503}, wantReqs: 2},
		{name: "429 then success", failures: []int{429}, wantReqs: 2},
		{name: "408 then success", failures: []int{408}, wantReqs: 2},
		{name: "500 502 504 then success", failures: []int{500, 502, 504}, wantReqs: 4},
		{name: "503 until retries run out", failures: []int{503, 503, 503, 503, 503}, retryMax: 2, wantErr: ErrUnavailable, wantReqs: 3},
		{name: "403 not retried", failures: []int{403}, wantErr: ErrRejected, wantStatus: 403, wantReqs: 1},
		{name: "400 not retried", failures: []int{400}, wantErr: ErrRejected, wantStatus: 400, wantReqs: 1},
		{name: "501 not retried", failures: []int{501}, wantErr: ErrRejected, wantStatus: 501, wantReqs: 1},
		{
			name: "Retry-After seconds honoured", failures: []int{503}, retryAfter: "1",
			waitMax: 5 * time.Second, wantReqs: 2, wantWaits: []time.Duration{time.Second},
		},
		{
			name: "Retry-After capped by RetryWaitMax", failures: []int{429, 503}, retryAfter: "3600",
			waitMax: 20 * time.Millisecond, wantReqs: 3, wantWaits: []time.Duration{20 * time.Millisecond, 20 * time.Millisecond},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pki := newTestPKI(t)
			var f *fakeCA
			f = newFakeCA(t, pki, nil, func(w http.ResponseWriter, r *http.Request, n int, body []byte) {
				if n <= len(tc.failures) {
					if tc.retryAfter != "" {
						w.Header().Set("Retry-After", tc.retryAfter)
					}
					http.Error(w, "status "+http.StatusText(tc.failures[n-1]), tc.failures[n-1])
					return
				}
				f.issue(t, w, body)
			})
			obs := &recObserver{}
			cfg := f.config()
			cfg.Observer = obs
			if tc.waitMax != 0 {
				cfg.RetryWaitMax = tc.waitMax
			}
			if tc.retryMax != 0 {
				cfg.RetryMax = tc.retryMax
			}
			res, err := newClient(t, cfg).Enroll(ctxTimeout(t, 10*time.Second), newCSR(t, newECKey(t)))
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.wantStatus != 0 {
				var rej *RejectedError
				if !errors.As(err, &rej) || rej.Status != tc.wantStatus || !strings.Contains(rej.Message, "status") {
					t.Errorf("err = %#v, want *RejectedError with status %d and the CA's message", err, tc.wantStatus)
				}
			}
			if got := len(f.requests()); got != tc.wantReqs {
				t.Errorf("CA saw %d requests, want %d", got, tc.wantReqs)
			}
			attempts, statuses, retries := obs.snapshot()
			if attempts != tc.wantReqs || len(statuses) != tc.wantReqs {
				t.Errorf("observer saw %d attempts, %d responses; want %d", attempts, len(statuses), tc.wantReqs)
			}
			if len(retries) != tc.wantReqs-1 {
				t.Errorf("observer saw %d retries, want %d", len(retries), tc.wantReqs-1)
			}
			for i, r := range retries {
				if r.status != tc.failures[i] {
					t.Errorf("retry %d after status %d, want %d", i, r.status, tc.failures[i])
				}
				if tc.wantWaits != nil && r.wait != tc.wantWaits[i] {
					t.Errorf("retry %d waited %v, want %v", i, r.wait, tc.wantWaits[i])
				}
				if tc.wantWaits == nil && (r.wait <= 0 || r.wait > cfg.RetryWaitMax) {
					t.Errorf("retry %d waited %v, outside (0, %v]", i, r.wait, cfg.RetryWaitMax)
				}
			}
			if err == nil && res.Attempts != tc.wantReqs {
				t.Errorf("Attempts = %d, want %d", res.Attempts, tc.wantReqs)
			}
		})
	}
}

func TestRetryAfterHTTPDateUsesClock(t *testing.T) {
	pki := newTestPKI(t)
	clock := newFakeClock()
	var f *fakeCA
	f = newFakeCA(t, pki, nil, func(w http.ResponseWriter, r *http.Request, n int, body []byte) {
		if n == 1 {
			// Two seconds after the client's clock, which is 30 minutes
			// behind the wall clock: using the wall clock would give 0.
			w.Header().Set("Retry-After", clock.Now().Add(2*time.Second).UTC().Format(http.TimeFormat))
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		f.issue(t, w, body)
	})
	clock.Advance(-30 * time.Minute) // the test PKI is valid from an hour ago
	obs := &recObserver{}
	cfg := f.config()
	cfg.Clock = clock
	cfg.Observer = obs
	cfg.RetryWaitMax = time.Hour
	if _, err := newClient(t, cfg).Enroll(ctxTimeout(t, 10*time.Second), newCSR(t, newECKey(t))); err != nil {
		t.Fatal(err)
	}
	_, _, retries := obs.snapshot()
	if len(retries) != 1 || retries[0].wait != 2*time.Second {
		t.Errorf("retries = %+v, want one 2s wait", retries)
	}
}

func TestTransportErrorRetried(t *testing.T) {
	pki := newTestPKI(t)
	var f *fakeCA
	f = newFakeCA(t, pki, nil, func(w http.ResponseWriter, r *http.Request, n int, body []byte) {
		if n == 1 {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			conn.Close() // connection drops without an answer
			return
		}
		f.issue(t, w, body)
	})
	obs := &recObserver{}
	cfg := f.config()
	cfg.Observer = obs
	res, err := newClient(t, cfg).Enroll(ctxTimeout(t, 10*time.Second), newCSR(t, newECKey(t)))
	if err != nil {
		t.Fatal(err)
	}
	_, statuses, retries := obs.snapshot()
	if res.Attempts != 2 || len(statuses) != 2 || statuses[0] != 0 || statuses[1] != 200 {
		t.Errorf("Attempts = %d, statuses = %v; want 2, [0 200]", res.Attempts, statuses)
	}
	if len(retries) != 1 || retries[0].status != 0 {
		t.Errorf("retries = %+v, want one after a transport error", retries)
	}
}

func TestTLSFailureNotRetried(t *testing.T) {
	pki := newTestPKI(t)
	f := newFakeCA(t, pki, nil, func(w http.ResponseWriter, _ *http.Request, _ int, _ []byte) {
		t.Error("no request may reach the handler")
	})
	obs := &recObserver{}
	cfg := f.config()
	cfg.TrustAnchors = []*x509.Certificate{newRootCA(t, "Some Other Root").cert}
	cfg.Observer = obs
	_, err := newClient(t, cfg).Enroll(ctxTimeout(t, 10*time.Second), newCSR(t, newECKey(t)))
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if attempts, _, _ := obs.snapshot(); attempts != 1 {
		t.Errorf("%d attempts, want 1 (an untrusted server is not retried)", attempts)
	}
}

func TestBadResponses(t *testing.T) {
	tests := []struct {
		name      string
		answer    func(t *testing.T, pki *testPKI, csr *x509.CertificateRequest, w http.ResponseWriter)
		wantMsg   string
		wantCerts int
	}{
		{
			name: "malformed PKCS#7",
			answer: func(t *testing.T, pki *testPKI, csr *x509.CertificateRequest, w http.ResponseWriter) {
				der := certsOnly(t, pki.issuing.leaf(t, "u", csr.PublicKey))
				der[20] ^= 0xff
				w.Header().Set("Content-Type", "application/pkcs7-mime")
				w.Write(base64Lines(der[:len(der)-10], "\r\n"))
			},
			wantMsg: "PKCS#7",
		},
		{
			name: "not base64",
			answer: func(t *testing.T, pki *testPKI, csr *x509.CertificateRequest, w http.ResponseWriter) {
				w.Header().Set("Content-Type", "application/pkcs7-mime")
				w.Write([]byte("this is *not* base64!"))
			},
			wantMsg: "base64",
		},
		{
			name: "wrong content type",
			answer: func(t *testing.T, pki *testPKI, csr *x509.CertificateRequest, w http.ResponseWriter) {
				w.Header().Set("Content-Type", "text/html")
				w.Write([]byte("<html>login</html>"))
			},
			wantMsg: "content type",
		},
		{
			name: "certificate for another key",
			answer: func(t *testing.T, pki *testPKI, _ *x509.CertificateRequest, w http.ResponseWriter) {
				writeCerts(t, w, pki.issuing.leaf(t, "u", newECKey(t).Public()), pki.issuing.cert)
			},
			wantMsg:   "issued certificate's key differs from the CSR key",
			wantCerts: 2,
		},
		{
			name: "chain to the wrong root",
			answer: func(t *testing.T, _ *testPKI, csr *x509.CertificateRequest, w http.ResponseWriter) {
				rogue := newRootCA(t, "Rogue Root").subCA(t, "Test Issuing CA")
				writeCerts(t, w, rogue.leaf(t, "u", csr.PublicKey), rogue.cert)
			},
			wantMsg:   "does not chain to the issuer trust anchors",
			wantCerts: 2,
		},
		{
			name: "leaf is a CA",
			answer: func(t *testing.T, pki *testPKI, csr *x509.CertificateRequest, w http.ResponseWriter) {
				leaf := pki.issuing.sign(t, &x509.Certificate{
					Subject: pkix.Name{CommonName: "u"}, IsCA: true, BasicConstraintsValid: true,
					KeyUsage: x509.KeyUsageCertSign,
				}, csr.PublicKey)
				writeCerts(t, w, leaf, pki.issuing.cert)
			},
			wantMsg:   "issued certificate is a CA certificate",
			wantCerts: 2,
		},
		{
			name: "expired leaf",
			answer: func(t *testing.T, pki *testPKI, csr *x509.CertificateRequest, w http.ResponseWriter) {
				leaf := pki.issuing.sign(t, &x509.Certificate{
					Subject:   pkix.Name{CommonName: "u"},
					NotBefore: time.Now().Add(-3 * time.Hour), NotAfter: time.Now().Add(-2 * time.Hour),
				}, csr.PublicKey)
				writeCerts(t, w, leaf, pki.issuing.cert)
			},
			wantMsg:   "does not chain",
			wantCerts: 2,
		},
		{
			name: "oversized body",
			answer: func(t *testing.T, _ *testPKI, _ *x509.CertificateRequest, w http.ResponseWriter) {
				w.Header().Set("Content-Type", "application/pkcs7-mime")
				w.Write(bytes.Repeat([]byte("QUFB"), maxBodyLen/4+1))
			},
			wantMsg: "exceeds",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pki := newTestPKI(t)
			f := newFakeCA(t, pki, nil, func(w http.ResponseWriter, r *http.Request, _ int, body []byte) {
				switch r.URL.Path {
				case "/.well-known/est/cacerts":
					writeCerts(t, w, pki.issuing.cert)
				default:
					if csr := parseCSRBody(t, w, body); csr != nil {
						tc.answer(t, pki, csr, w)
					}
				}
			})
			_, err := newClient(t, f.config()).Enroll(ctxTimeout(t, 10*time.Second), newCSR(t, newECKey(t)))
			if !errors.Is(err, ErrBadResponse) {
				t.Fatalf("err = %v, want ErrBadResponse", err)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("err = %q, want it to mention %q", err, tc.wantMsg)
			}
			// A parsed answer hands its certificates back: the CA issued them, whatever they are.
			var bre *BadResponseError
			if got := errors.As(err, &bre); got && len(bre.Certificates) != tc.wantCerts || !got && tc.wantCerts > 0 {
				t.Errorf("err %v carries certificates %v, want %d", err, bre, tc.wantCerts)
			}
			enrolls := 0
			for _, r := range f.requests() {
				if r.path == "/.well-known/est/simpleenroll" {
					enrolls++
				}
			}
			if enrolls != 1 {
				t.Errorf("%d enrollment requests, want 1: a bad 200 answer is not retried", enrolls)
			}
		})
	}
}

func TestInvalidCSR(t *testing.T) {
	pki := newTestPKI(t)
	f := newFakeCA(t, pki, nil, func(w http.ResponseWriter, _ *http.Request, _ int, _ []byte) {
		t.Error("no request expected")
	})
	c := newClient(t, f.config())
	csr := newCSR(t, newECKey(t))
	csr[len(csr)-3] ^= 0x55 // break the signature
	for _, in := range [][]byte{nil, []byte("junk"), csr} {
		if _, err := c.Enroll(ctxTimeout(t, 5*time.Second), in); !errors.Is(err, ErrInvalidCSR) {
			t.Errorf("Enroll(%.8x...) err = %v, want ErrInvalidCSR", in, err)
		}
	}
}

func TestContextCancel(t *testing.T) {
	tests := []struct {
		name   string
		handle func(w http.ResponseWriter, r *http.Request, n int, release <-chan struct{})
	}{
		{
			name: "hung CA",
			handle: func(_ http.ResponseWriter, r *http.Request, _ int, release <-chan struct{}) {
				select {
				case <-release:
				case <-r.Context().Done():
				}
			},
		},
		{
			name: "waiting for a long Retry-After on 503",
			handle: func(w http.ResponseWriter, _ *http.Request, _ int, _ <-chan struct{}) {
				w.Header().Set("Retry-After", "3600")
				w.WriteHeader(http.StatusServiceUnavailable)
			},
		},
		{
			name: "polling a 202 with a long Retry-After",
			handle: func(w http.ResponseWriter, _ *http.Request, _ int, _ <-chan struct{}) {
				w.Header().Set("Retry-After", "3600")
				w.WriteHeader(http.StatusAccepted)
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pki := newTestPKI(t)
			release := make(chan struct{})
			t.Cleanup(func() { close(release) })
			f := newFakeCA(t, pki, nil, func(w http.ResponseWriter, r *http.Request, n int, _ []byte) {
				tc.handle(w, r, n, release)
			})
			cfg := f.config()
			cfg.RetryWaitMax = time.Hour
			cfg.Timeout = time.Hour
			cfg.PendingDeadline = 2 * time.Hour
			c := newClient(t, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := c.Enroll(ctx, newCSR(t, newECKey(t)))
			elapsed := time.Since(start)
			if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrUnavailable) {
				t.Errorf("err = %v, want DeadlineExceeded and ErrUnavailable", err)
			}
			if elapsed > 3*time.Second {
				t.Errorf("returned after %v, want promptly after the 300ms deadline", elapsed)
			}
		})
	}
}

func TestConcurrentEnroll(t *testing.T) {
	pki := newTestPKI(t)
	var f *fakeCA
	f = newFakeCA(t, pki, nil, func(w http.ResponseWriter, r *http.Request, n int, body []byte) {
		if n%3 == 0 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		f.issue(t, w, body)
	})
	obs := &recObserver{}
	cfg := f.config()
	cfg.Observer = obs
	cfg.RetryMax = 10
	c := newClient(t, cfg)
	ctx := ctxTimeout(t, 30*time.Second)
	const n = 16
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			_, err := c.Enroll(ctx, newCSR(t, newECKey(t)))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if attempts, _, _ := obs.snapshot(); attempts != len(f.requests()) {
		t.Errorf("observer saw %d attempts, CA saw %d", attempts, len(f.requests()))
	}
}

func TestNewValidation(t *testing.T) {
	pki := newTestPKI(t)
	key := newECKey(t)
	leaf := pki.issuing.leaf(t, "c", key.Public())
	good := Config{BaseURL: "https://127.0.0.1:8443", TrustAnchors: []*x509.Certificate{pki.root.cert}}
	tests := []struct {
		name   string
		mutate func(*Config)
		ok     bool
	}{
		{name: "minimal", mutate: func(*Config) {}, ok: true},
		{name: "http scheme", mutate: func(c *Config) { c.BaseURL = "http://127.0.0.1" }},
		{name: "credentials in URL", mutate: func(c *Config) { c.BaseURL = "https://u:p@127.0.0.1" }},
		{name: "query", mutate: func(c *Config) { c.BaseURL = "https://127.0.0.1/?a=b" }},
		{name: "bad label", mutate: func(c *Config) { c.Label = "a/b" }},
		{name: "no anchors", mutate: func(c *Config) { c.TrustAnchors = nil }},
		{name: "system roots but no issuer anchors", mutate: func(c *Config) { c.TrustAnchors, c.UseSystemRoots = nil, true }},
		{name: "system roots and issuer anchors", mutate: func(c *Config) {
			c.TrustAnchors, c.UseSystemRoots, c.IssuerAnchors = nil, true, []*x509.Certificate{pki.root.cert}
		}, ok: true},
		{name: "client cert key mismatch", mutate: func(c *Config) {
			c.ClientCert = &ClientCertificate{Chain: []*x509.Certificate{leaf}, Key: newECKey(t)}
		}},
		{name: "client cert ok", mutate: func(c *Config) {
			c.ClientCert = &ClientCertificate{Chain: []*x509.Certificate{leaf}, Key: key}
		}, ok: true},
		{name: "client cert without chain", mutate: func(c *Config) { c.ClientCert = &ClientCertificate{Key: key} }},
		{name: "bad header name", mutate: func(c *Config) { c.Auth = HeaderSecret{Name: "X Key", Value: secret.New("v")} }},
		{name: "pointer auth", mutate: func(c *Config) { c.Auth = &Basic{User: "u", Password: secret.New("p")} }},
		{name: "wait min above max", mutate: func(c *Config) { c.RetryWaitMin, c.RetryWaitMax = time.Second, time.Millisecond }},
		{name: "DialTLSContext", mutate: func(c *Config) {
			c.Transport = &http.Transport{DialTLSContext: func(context.Context, string, string) (net.Conn, error) { return nil, nil }}
		}},
		{name: "own transport", mutate: func(c *Config) { c.Transport = &http.Transport{MaxConnsPerHost: 4} }, ok: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.mutate(&cfg)
			_, err := New(cfg)
			if (err == nil) != tc.ok {
				t.Errorf("New err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestAttemptTimeoutRetried(t *testing.T) {
	pki := newTestPKI(t)
	var f *fakeCA
	f = newFakeCA(t, pki, nil, func(w http.ResponseWriter, r *http.Request, n int, body []byte) {
		if n == 1 {
			<-r.Context().Done() // hangs until the client gives up on the attempt
			return
		}
		f.issue(t, w, body)
	})
	obs := &recObserver{}
	cfg := f.config()
	cfg.Timeout = 200 * time.Millisecond
	cfg.Observer = obs
	res, err := newClient(t, cfg).Enroll(ctxTimeout(t, 10*time.Second), newCSR(t, newECKey(t)))
	if err != nil {
		t.Fatal(err)
	}
	if _, statuses, _ := obs.snapshot(); res.Attempts != 2 || len(statuses) != 2 || statuses[0] != 0 {
		t.Errorf("Attempts = %d, statuses = %v; want a timed-out attempt then success", res.Attempts, statuses)
	}
}

func TestSharedTransportReusesConnections(t *testing.T) {
	pki := newTestPKI(t)
	var f *fakeCA
	f = newFakeCA(t, pki, nil, func(w http.ResponseWriter, r *http.Request, _ int, body []byte) {
		f.issue(t, w, body)
	})
	var mu sync.Mutex
	dials := 0
	dialer := &net.Dialer{}
	cfg := f.config()
	cfg.Transport = &http.Transport{
		MaxIdleConnsPerHost: 8,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			dials++
			mu.Unlock()
			return dialer.DialContext(ctx, network, addr)
		},
	}
	c := newClient(t, cfg)
	ctx := ctxTimeout(t, 30*time.Second)
	for range 5 {
		if _, err := c.Enroll(ctx, newCSR(t, newECKey(t))); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if dials != 1 {
		t.Errorf("%d dials for 5 sequential enrollments, want 1 (keep-alive)", dials)
	}
}
