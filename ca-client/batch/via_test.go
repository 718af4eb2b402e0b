package batch

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/devid-station/devid/ca-client/est"
)

// failingSingle is a SingleEnroller whose CA is unavailable.
type failingSingle struct{ fakeSingle }

func (f *failingSingle) Enroll(ctx context.Context, csr []byte) (*x509.Certificate, []*x509.Certificate, error) {
	f.fakeSingle.Enroll(ctx, csr)
	return nil, nil, errUnavailable()
}

// TestVia: a request with Via is sent with Via, not with the Backend's client, and it is
// subject to the batcher like any other: it waits for an in-flight slot, its failures open
// the breaker, and an open breaker refuses it without calling Via.
func TestVia(t *testing.T) {
	checkGoroutines(t)
	shared := &fakeSingle{gate: make(chan struct{})}
	b := newTestBatcher(t, FanOut(shared, 1), Config{
		MaxBatch: 1, MaxInFlight: 1,
		Breaker: BreakerConfig{FailureThreshold: 1, OpenFor: time.Hour, HalfOpenProbes: 1},
	})
	ctx := context.Background()

	// The shared client holds the only in-flight slot: a Via request waits for it.
	first := enrollAsync(ctx, b, "shared")
	deadline := time.Now().Add(10 * time.Second)
	for shared.calls() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	unit := &fakeSingle{}
	viaDone := make(chan result, 1)
	go func() {
		resp, err := b.Enroll(ctx, Request{CSR: []byte("unit-1"), Serial: "unit-1", Via: unit})
		viaDone <- result{serial: "unit-1", resp: resp, err: err}
	}()
	time.Sleep(50 * time.Millisecond)
	if n := unit.calls(); n != 0 {
		t.Fatalf("the Via request ran with the only in-flight slot taken (%d calls)", n)
	}
	close(shared.gate)
	if r := await(t, first); r.err != nil {
		t.Fatalf("shared request: %v", r.err)
	}
	r := await(t, viaDone)
	if r.err != nil || serialOf(r.resp.Leaf) != "unit-1" {
		t.Fatalf("Via request: %v, %v", r.resp.Leaf, r.err)
	}
	if unit.calls() != 1 || shared.calls() != 1 {
		t.Fatalf("calls: Via %d, shared %d; want 1 and 1", unit.calls(), shared.calls())
	}

	// A failing Via opens the breaker; the next Via request is refused without a call.
	down := &failingSingle{}
	if _, err := b.Enroll(ctx, Request{CSR: []byte("unit-2"), Via: down}); DefaultClassify(err) != ClassUnavailable {
		t.Fatalf("failing Via: %v, want unavailable", err)
	}
	if st := b.Metrics().Breaker; st != BreakerOpen {
		t.Fatalf("breaker %v after a failing Via request, want open", st)
	}
	next := &fakeSingle{}
	if _, err := b.Enroll(ctx, Request{CSR: []byte("unit-3"), Via: next}); !errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("Via request with the breaker open: %v, want ErrCircuitOpen", err)
	}
	if next.calls() != 0 {
		t.Fatal("the open breaker let a Via request through")
	}
	if m := b.Metrics(); m.Requests != 3 || m.Failed != 1 {
		t.Fatalf("metrics: %d requests, %d failed; want 3 and 1 (Via requests count)", m.Requests, m.Failed)
	}
}

// TestViaESTClosesConnections: the EST client ViaEST makes goes through the batcher and its
// close function closes the TLS connection it opened (a unit's connection serves no one
// else).
func TestViaESTClosesConnections(t *testing.T) {
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusBadRequest)
	}))
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		mu.Lock()
		defer mu.Unlock()
		switch s {
		case http.StateNew:
			open[c] = true
		case http.StateClosed, http.StateHijacked:
			delete(open, c)
		}
	}
	srv.StartTLS()
	defer srv.Close()
	openConns := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(open)
	}

	b := newTestBatcher(t, FanOut(&fakeSingle{}, 1), Config{MaxBatch: 1})
	via, closeConns, err := b.ViaEST(est.Config{BaseURL: srv.URL, TrustAnchors: []*x509.Certificate{srv.Certificate()}})
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "unit"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Enroll(context.Background(), Request{CSR: csr, Via: via}); !errors.Is(err, est.ErrRejected) {
		t.Fatalf("Enroll: %v, want the CA's rejection", err)
	}
	if m := b.Metrics(); m.Requests != 1 {
		t.Fatalf("batcher saw %d requests, want 1", m.Requests)
	}
	if n := openConns(); n != 1 {
		t.Fatalf("%d connections open after the answer, want the unit's 1 (kept alive)", n)
	}
	closeConns()
	deadline := time.Now().Add(10 * time.Second)
	for openConns() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open after close", openConns())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
