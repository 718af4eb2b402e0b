// Package cabench benchmarks the CA client (ca-client/est and
// ca-client/batch) against the dev EST CA (fixture/estca) over real TLS on
// 127.0.0.1, as issue 3 asks: enrollments per second, p50/p95 enrollment
// latency seen by the callers and TLS connections opened, for the batched
// client and for a naive one (a new client and a new TLS connection per
// request, no batching, no rate limiting), with 1, 16, 64 and 256 concurrent
// callers, against a CA with 100 ms of added latency and a 50 requests/s rate
// limit.
//
// The package holds only tests. Run the benchmark with
//
//	go test -run '^$' -bench . -benchmem ./ca-client/cabench/
//
// (or make bench-ca), and the assertion of the targets with
//
//	go test -run TestBatchedMeetsTargets -v ./ca-client/cabench/
package cabench
