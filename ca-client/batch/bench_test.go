package batch

import (
	"context"
	"crypto/x509"
	"fmt"
	"sync"
	"testing"
	"time"
)

// BenchmarkBatcherOverhead measures the cost the batcher adds to one Enroll
// with an instant backend, for 1, 16 and 256 concurrent callers.
func BenchmarkBatcherOverhead(b *testing.B) {
	leaf := &x509.Certificate{}
	instant := backendFunc(func(_ context.Context, reqs []Request) []Response {
		resps := make([]Response, len(reqs))
		for i := range resps {
			resps[i].Leaf = leaf
		}
		return resps
	})
	for _, wait := range []time.Duration{0, 100 * time.Microsecond} {
		for _, callers := range []int{1, 16, 256} {
			b.Run(fmt.Sprintf("maxwait=%v/callers=%d", wait, callers), func(b *testing.B) {
				bt := New("bench", instant, Config{MaxBatch: 16, MaxWait: wait, MaxInFlight: 64})
				defer bt.Close(context.Background())
				req := Request{CSR: []byte("csr")}
				var wg sync.WaitGroup
				per := b.N/callers + 1
				b.ResetTimer()
				for range callers {
					wg.Go(func() {
						for range per {
							if _, err := bt.Enroll(context.Background(), req); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				m := bt.Metrics()
				b.ReportMetric(float64(m.Requests)/float64(m.Batches), "req/batch")
			})
		}
	}
}
