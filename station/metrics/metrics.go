// Package metrics holds the station's Prometheus collectors, all named devid_*: units by result
// and code, step durations, the CA clients (requests, latency, errors, retries, breaker state),
// agents connected, units in flight, store commit latency and the audit checkpoint's age. Every collector is registered on
// the registry the caller passes to New (never on the library's global default), so each
// station, and each test, has its own. Handler serves a registry in the Prometheus text format.
package metrics

import (
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// Metric names, for the dashboard and tests.
const (
	NameUnits              = "devid_units_total"
	NameStepDuration       = "devid_step_duration_seconds"
	NameCARequests         = "devid_ca_requests_total"
	NameCAErrors           = "devid_ca_errors_total"
	NameCARetries          = "devid_ca_retries_total"
	NameCARateLimited      = "devid_ca_rate_limited_total"
	NameCACircuitOpen      = "devid_ca_circuit_open_total"
	NameCAInFlight         = "devid_ca_in_flight"
	NameCABreaker          = "devid_ca_breaker_state"
	NameCALatency          = "devid_ca_request_duration_seconds"
	NameCABatchSize        = "devid_ca_batch_size"
	NameAgentsConnected    = "devid_agents_connected"
	NameUnitsInFlight      = "devid_units_in_flight"
	NameStoreCommit        = "devid_store_commit_duration_seconds"
	NameCheckpointAge      = "devid_audit_checkpoint_age_seconds"
	resultLabel, codeLabel = "result", "code"
)

// Unit results (the result label of devid_units_total).
const (
	ResultDone        = "done"        // provisioned and verified
	ResultFailed      = "failed"      // failed with a code
	ResultInterrupted = "interrupted" // the session ended early; the unit resumes on reconnect
)

// Step results (the result label of devid_step_duration_seconds).
const (
	StepOK    = "ok"
	StepError = "error"
)

// Metrics are the station's collectors. Create them with New.
type Metrics struct {
	reg prometheus.Registerer
	// Units counts finished agent sessions by result and failure code (empty unless failed).
	Units *prometheus.CounterVec
	// StepDuration observes each workflow step attempt's duration by step and result.
	StepDuration *prometheus.HistogramVec
	// CALatency observes each CA request's latency in seconds, from the station's call to the
	// CA's answer, by CA; its quantiles feed GetStatus.
	CALatency *prometheus.SummaryVec
	// CABatchSize observes the size of each batch sent to a CA, by CA.
	CABatchSize *prometheus.HistogramVec
	// StoreCommit observes each store write's time from call to durable commit, in seconds.
	StoreCommit prometheus.Histogram
}

// New creates the collectors and registers them on reg.
func New(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		reg: reg,
		Units: prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameUnits,
			Help: "Agent sessions ended, by result (done, failed, interrupted) and failure code."}, []string{resultLabel, codeLabel}),
		StepDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: NameStepDuration,
			Help:    "Duration of workflow step attempts, by step and result (ok, error).",
			Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}}, []string{"step", resultLabel}),
		CALatency: prometheus.NewSummaryVec(prometheus.SummaryOpts{Name: NameCALatency,
			Help:       "CA request latency from the station's call to the CA's answer (10 minute window), by CA.",
			Objectives: map[float64]float64{0.5: 0.01, 0.95: 0.005, 0.99: 0.001}, MaxAge: 10 * time.Minute}, []string{"ca"}),
		CABatchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: NameCABatchSize,
			Help: "Requests per batch sent to a CA, by CA.", Buckets: prometheus.ExponentialBuckets(1, 2, 9)}, []string{"ca"}),
		StoreCommit: prometheus.NewHistogram(prometheus.HistogramOpts{Name: NameStoreCommit,
			Help:    "Store write latency from the call to the durable (batched) commit.",
			Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}}),
	}
	for _, c := range []prometheus.Collector{m.Units, m.StepDuration, m.CALatency, m.CABatchSize, m.StoreCommit} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering metrics: %w", err)
		}
	}
	return m, nil
}

// Unit counts one ended agent session.
func (m *Metrics) Unit(result, code string) { m.Units.WithLabelValues(result, code).Inc() }

// Step observes one step attempt of duration d; errCode is empty when it succeeded.
func (m *Metrics) Step(step, errCode string, d time.Duration) {
	result := StepOK
	if errCode != "" {
		result = StepError
	}
	m.StepDuration.WithLabelValues(step, result).Observe(d.Seconds())
}

// WatchLine registers the gauges read at scrape time: agents connected and units in flight.
func (m *Metrics) WatchLine(agents, inFlight func() int) error {
	for _, g := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: NameAgentsConnected, Help: "Open agent sessions."},
			func() float64 { return float64(agents()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: NameUnitsInFlight, Help: "Units being provisioned now."},
			func() float64 { return float64(inFlight()) }),
	} {
		if err := m.reg.Register(g); err != nil {
			return fmt.Errorf("registering metrics: %w", err)
		}
	}
	return nil
}

// WatchCheckpoint registers the age of the latest signed audit checkpoint, read at scrape time
// from last (zero time: none yet, reported as -1).
func (m *Metrics) WatchCheckpoint(last func() time.Time, now func() time.Time) error {
	g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: NameCheckpointAge,
		Help: "Seconds since the latest signed audit checkpoint (-1: none yet)."},
		func() float64 {
			t := last()
			if t.IsZero() {
				return -1
			}
			return now().Sub(t).Seconds()
		})
	if err := m.reg.Register(g); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	return nil
}

// CAState is one CA client's counters, read at scrape time.
type CAState struct {
	Name string
	// Requests and Errors count the requests sent to the CA and those that failed.
	Requests, Errors int64
	// Retries counts the EST client's retries; RateLimited the CA's rate-limit answers.
	Retries, RateLimited int64
	// CircuitOpen counts requests failed fast by the open breaker, never sent.
	CircuitOpen int64
	// InFlight is the number of requests at the CA now.
	InFlight int64
	// Breaker is the breaker's state: 0 closed, 1 open, 2 half-open.
	Breaker int
}

// WatchCAs registers a collector that reads every CA client's counters from states at scrape
// time.
func (m *Metrics) WatchCAs(states func() []CAState) error {
	if err := m.reg.Register(caCollector(states)); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	return nil
}

// CAQuantiles returns the CA's p50 and p95 latency over the summary's window (0 before any
// request).
func (m *Metrics) CAQuantiles(ca string) (p50, p95 time.Duration) {
	var d dto.Metric
	if err := m.CALatency.WithLabelValues(ca).(prometheus.Metric).Write(&d); err != nil {
		return 0, 0
	}
	for _, q := range d.GetSummary().GetQuantile() {
		v := q.GetValue()
		if v != v { // NaN: no observation in the window
			continue
		}
		switch q.GetQuantile() {
		case 0.5:
			p50 = time.Duration(v * float64(time.Second))
		case 0.95:
			p95 = time.Duration(v * float64(time.Second))
		}
	}
	return p50, p95
}

// Handler serves g's metrics in the Prometheus exposition format.
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

var caDescs = struct{ requests, errors, retries, rateLimited, circuitOpen, inFlight, breaker *prometheus.Desc }{
	requests:    prometheus.NewDesc(NameCARequests, "Requests sent to the CA.", []string{"ca"}, nil),
	errors:      prometheus.NewDesc(NameCAErrors, "Requests the CA (or the way to it) failed.", []string{"ca"}, nil),
	retries:     prometheus.NewDesc(NameCARetries, "EST client retries (5xx, 429, 408, transport errors).", []string{"ca"}, nil),
	rateLimited: prometheus.NewDesc(NameCARateLimited, "Rate-limited answers from the CA.", []string{"ca"}, nil),
	circuitOpen: prometheus.NewDesc(NameCACircuitOpen, "Requests failed fast by the open circuit breaker.", []string{"ca"}, nil),
	inFlight:    prometheus.NewDesc(NameCAInFlight, "Requests at the CA now.", []string{"ca"}, nil),
	breaker:     prometheus.NewDesc(NameCABreaker, "Circuit breaker state: 0 closed, 1 open, 2 half-open.", []string{"ca"}, nil),
}

// caCollector turns CA client snapshots into metrics.
type caCollector func() []CAState

func (c caCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{caDescs.requests, caDescs.errors, caDescs.retries, caDescs.rateLimited,
		caDescs.circuitOpen, caDescs.inFlight, caDescs.breaker} {
		ch <- d
	}
}

func (c caCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c() {
		for _, v := range []struct {
			d *prometheus.Desc
			t prometheus.ValueType
			v float64
		}{
			{caDescs.requests, prometheus.CounterValue, float64(s.Requests)},
			{caDescs.errors, prometheus.CounterValue, float64(s.Errors)},
			{caDescs.retries, prometheus.CounterValue, float64(s.Retries)},
			{caDescs.rateLimited, prometheus.CounterValue, float64(s.RateLimited)},
			{caDescs.circuitOpen, prometheus.CounterValue, float64(s.CircuitOpen)},
			{caDescs.inFlight, prometheus.GaugeValue, float64(s.InFlight)},
			{caDescs.breaker, prometheus.GaugeValue, float64(s.Breaker)},
		} {
			ch <- prometheus.MustNewConstMetric(v.d, v.t, v.v, s.Name)
		}
	}
}
