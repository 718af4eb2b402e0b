package batch_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/devid-station/devid/ca-client/batch"
	"github.com/devid-station/devid/ca-client/est"
)

// A batched EST CA: up to 16 units per batch or 20 ms, 8 requests in flight
// on shared keep-alive connections, 50 requests per second.
func ExampleNewEST() {
	var roots []*x509.Certificate // the CA's TLS and issuer roots
	b, err := batch.NewEST("maker-idevid-ca", est.Config{
		BaseURL:      "https://127.0.0.1:8443",
		TrustAnchors: roots,
	}, batch.Config{
		MaxBatch: 16, MaxWait: 20 * time.Millisecond, MaxInFlight: 8,
		RateLimit: 50, Burst: 16,
		Breaker: batch.BreakerConfig{FailureThreshold: 5, OpenFor: 30 * time.Second},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close(context.Background())

	var csrDER []byte // from the unit's TPM
	resp, err := b.Enroll(context.Background(), batch.Request{CSR: csrDER, Serial: "SN0001"})
	if err != nil {
		fmt.Println(err)
		return
	}
	m := b.Metrics()
	fmt.Println(resp.Leaf.Subject, m.Batches, m.ConnectionsOpened, m.Breaker)
}
