package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/devid-station/devid/ca-client/batch"
	"github.com/devid-station/devid/station/metrics"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
)

// newMetrics builds the station's registry: the Go runtime and process collectors and the
// station's own.
func newMetrics() (*prometheus.Registry, *metrics.Metrics, error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, nil, fmt.Errorf("registering metrics: %w", err)
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, nil, fmt.Errorf("registering metrics: %w", err)
	}
	m, err := metrics.New(reg)
	if err != nil {
		return nil, nil, err
	}
	return reg, m, nil
}

// watch registers the gauges and CA counters read at scrape time.
func (s *Server) watch() error {
	if err := s.metrics.WatchLine(s.gw.Connected, func() int { return len(s.runner.Running()) }); err != nil {
		return err
	}
	if err := s.metrics.WatchCheckpoint(s.store.LastCheckpointTime, time.Now); err != nil {
		return err
	}
	return s.metrics.WatchCAs(s.caStates)
}

// caStates reads every CA client's counters.
func (s *Server) caStates() []metrics.CAState {
	out := make([]metrics.CAState, 0, len(s.issuers))
	for _, is := range s.issuers {
		out = append(out, is.state(is.batcher.Metrics()))
	}
	return out
}

// state is the CA client's counters given its batcher's: enrollments authenticated as the unit
// bypass the batcher and are added to its counts.
func (i *issuer) state(m batch.Metrics) metrics.CAState {
	return metrics.CAState{Name: i.name,
		Requests: m.Requests, Errors: m.Failed,
		Retries: m.Retries, RateLimited: m.RateLimited, CircuitOpen: m.CircuitOpen,
		InFlight: m.InFlight, Breaker: breakerValue(m.Breaker)}
}

// breakerValue is the devid_ca_breaker_state value of st.
func breakerValue(st batch.BreakerState) int {
	switch st {
	case batch.BreakerOpen:
		return 1
	case batch.BreakerHalfOpen:
		return 2
	default:
		return 0
	}
}

// countOutcome counts an ended session by its result.
func (s *Server) countOutcome(out workflow.Outcome) {
	switch {
	case out.Done:
		s.metrics.Unit(metrics.ResultDone, "")
	case out.Interrupted:
		s.metrics.Unit(metrics.ResultInterrupted, "")
	default:
		s.metrics.Unit(metrics.ResultFailed, out.Code)
	}
}

// serveMetrics starts the /metrics listener when one is configured.
func (s *Server) serveMetrics(reg prometheus.Gatherer) error {
	if s.rt.MetricsListen == "" {
		return nil
	}
	lis, err := net.Listen("tcp", s.rt.MetricsListen)
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler(reg))
	s.metricsLis = lis
	s.metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	s.wg.Go(func() {
		if err := s.metricsSrv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("metrics server stopped", "addr", lis.Addr().String(), "error", err)
		}
	})
	return nil
}

// MetricsAddr is the /metrics listener's address after Start; empty when metrics are off.
func (s *Server) MetricsAddr() string {
	if s.metricsLis == nil {
		return ""
	}
	return s.metricsLis.Addr().String()
}

// stepTimer is the journal as the workflow sees it, timing each step attempt from its intent
// to its result. A step begun before a restart is not timed.
type stepTimer struct {
	workflow.Journal
	m     *metrics.Metrics
	mu    sync.Mutex
	begun map[string]begun // by serial: a unit runs one step at a time
}

type begun struct {
	ref store.StepRef
	at  time.Time
}

func newStepTimer(j workflow.Journal, m *metrics.Metrics) *stepTimer {
	return &stepTimer{Journal: j, m: m, begun: map[string]begun{}}
}

func (t *stepTimer) BeginStep(ctx context.Context, serial, step string, intent []byte) (store.StepRef, error) {
	ref, err := t.Journal.BeginStep(ctx, serial, step, intent)
	if err == nil {
		t.start(ref)
	}
	return ref, err
}

func (t *stepTimer) EndStep(ctx context.Context, ref store.StepRef, result []byte, errCode string) error {
	err := t.Journal.EndStep(ctx, ref, result, errCode)
	if err == nil {
		t.end(ref, errCode)
	}
	return err
}

func (t *stepTimer) Advance(ctx context.Context, end store.StepRef, result []byte, step string, intent []byte) (store.StepRef, error) {
	ref, err := t.Journal.Advance(ctx, end, result, step, intent)
	if err == nil {
		t.end(end, "")
		t.start(ref)
	}
	return ref, err
}

func (t *stepTimer) start(ref store.StepRef) {
	t.mu.Lock()
	t.begun[ref.Serial] = begun{ref: ref, at: time.Now()}
	t.mu.Unlock()
}

func (t *stepTimer) end(ref store.StepRef, errCode string) {
	t.mu.Lock()
	b, ok := t.begun[ref.Serial]
	if ok && b.ref == ref {
		delete(t.begun, ref.Serial)
	}
	t.mu.Unlock()
	if ok && b.ref == ref {
		t.m.Step(ref.Step, errCode, time.Since(b.at))
	}
}

// forget drops the step a unit's ended session left open.
func (t *stepTimer) forget(serial string) {
	t.mu.Lock()
	delete(t.begun, serial)
	t.mu.Unlock()
}
