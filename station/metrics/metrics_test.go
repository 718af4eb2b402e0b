package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCAQuantiles(t *testing.T) {
	m, err := New(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if p50, p95 := m.CAQuantiles("maker"); p50 != 0 || p95 != 0 {
		t.Errorf("empty: p50 %v, p95 %v; want 0, 0", p50, p95)
	}
	for i := 1; i <= 100; i++ { // 10 ms .. 1 s
		m.CALatency.WithLabelValues("maker").Observe(float64(i) / 100)
	}
	p50, p95 := m.CAQuantiles("maker")
	if p50 < 490*time.Millisecond || p50 > 510*time.Millisecond || p95 < 940*time.Millisecond || p95 > 960*time.Millisecond {
		t.Errorf("p50 %v, p95 %v; want about 500ms and 950ms", p50, p95)
	}
	if p50, _ := m.CAQuantiles("customer"); p50 != 0 {
		t.Errorf("another CA's p50 %v", p50)
	}
}

func TestWatch(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(reg)
	if err != nil {
		t.Fatal(err)
	}
	agents, inFlight := 3, 2
	if err := m.WatchLine(func() int { return agents }, func() int { return inFlight }); err != nil {
		t.Fatal(err)
	}
	states := []CAState{{Name: "maker", Requests: 10, Errors: 1, Retries: 2, Breaker: 1}, {Name: "customer", Requests: 5}}
	if err := m.WatchCAs(func() []CAState { return states }); err != nil {
		t.Fatal(err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP devid_agents_connected Open agent sessions.
# TYPE devid_agents_connected gauge
devid_agents_connected 3
# HELP devid_ca_breaker_state Circuit breaker state: 0 closed, 1 open, 2 half-open.
# TYPE devid_ca_breaker_state gauge
devid_ca_breaker_state{ca="customer"} 0
devid_ca_breaker_state{ca="maker"} 1
# HELP devid_ca_requests_total Requests sent to the CA.
# TYPE devid_ca_requests_total counter
devid_ca_requests_total{ca="customer"} 5
devid_ca_requests_total{ca="maker"} 10
# HELP devid_ca_retries_total EST client retries (5xx, 429, 408, transport errors).
# TYPE devid_ca_retries_total counter
devid_ca_retries_total{ca="customer"} 0
devid_ca_retries_total{ca="maker"} 2
`), NameAgentsConnected, NameCABreaker, NameCARequests, NameCARetries); err != nil {
		t.Error(err)
	}
	agents = 0 // read at scrape time
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP devid_agents_connected Open agent sessions.
# TYPE devid_agents_connected gauge
devid_agents_connected 0
`), NameAgentsConnected); err != nil {
		t.Error(err)
	}
	// A second registration of the same gauges is refused, not silently doubled.
	if err := m.WatchLine(func() int { return 0 }, func() int { return 0 }); err == nil {
		t.Error("WatchLine twice on one registry: no error")
	}
}
