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
// (or make bench-ca); it logs each of the targets (throughput at
// least 90% of the rate limit and connections bounded by MaxInFlight with
// 256 callers, p50 within the round trip plus 2×MaxWait with one caller)
// that the batched client missed. The targets depend on the machine and its
// load, so no test asserts them: TestBatchedEnrollsEveryCSR asserts only
// what holds under any scheduling (every enrollment succeeds, one
// certificate each).
package cabench
