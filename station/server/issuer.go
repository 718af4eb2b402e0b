package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devid-station/devid/ca-client/batch"
	"github.com/devid-station/devid/ca-client/est"
	"github.com/devid-station/devid/station/config"
	"github.com/devid-station/devid/station/metrics"
	"github.com/devid-station/devid/station/workflow"
)

// issuer is a workflow.Issuer for one EST CA: station-authenticated enrollments go through a
// batcher over one shared EST client; enrollments authenticated by the unit's own IDevID need
// a TLS connection of their own and go to a per-unit client, within the same in-flight bound.
type issuer struct {
	name    string
	cfg     est.Config // without ClientCert: the template of per-unit clients
	batcher *batch.Batcher
	roots   *x509.CertPool
	unitSem chan struct{}
	// Enrollments authenticated as the unit bypass the batcher; counted here for health.
	unitRequests, unitFailures, unitInFlight atomic.Int64
	latency                                  prometheus.Observer
}

func newIssuer(c config.CARuntime, log *slog.Logger, m *metrics.Metrics) (*issuer, error) {
	cfg := est.Config{
		BaseURL: c.URL, Label: c.Label, TrustAnchors: c.TrustAnchors, IssuerAnchors: c.IssuerAnchors,
		RetryMax: c.Retry.Max, RetryWaitMin: time.Duration(c.Retry.WaitMin), RetryWaitMax: time.Duration(c.Retry.WaitMax),
		PendingDeadline: time.Duration(c.Retry.PendingDeadline), Timeout: time.Duration(c.Retry.Timeout),
		Logger: log.With("ca", c.Name),
	}
	switch {
	case c.HeaderName != "":
		cfg.Auth = est.HeaderSecret{Name: c.HeaderName, Value: c.HeaderSecret}
	case c.BasicUser != "":
		cfg.Auth = est.Basic{User: c.BasicUser, Password: c.BasicPassword}
	}
	stationCfg := cfg
	if c.ClientCert != nil {
		stationCfg.ClientCert = &est.ClientCertificate{Chain: c.ClientCert.Chain, Key: c.ClientCert.Key}
	}
	inFlight := c.Batch.MaxInFlight
	if inFlight == 0 {
		inFlight = 16
	}
	latency := m.CALatency.WithLabelValues(c.Name)
	b, err := batch.NewEST(c.Name, stationCfg, batch.Config{
		MaxBatch: c.Batch.MaxBatch, MaxWait: time.Duration(c.Batch.MaxWait), MaxInFlight: inFlight,
		RateLimit: c.Batch.RateLimit, Burst: c.Batch.Burst, Logger: log.With("ca", c.Name),
		Latency: latency, BatchSize: m.CABatchSize.WithLabelValues(c.Name),
	})
	if err != nil {
		return nil, fmt.Errorf("CA %s: %w", c.Name, err)
	}
	anchors := c.IssuerAnchors
	if len(anchors) == 0 {
		anchors = c.TrustAnchors
	}
	roots := x509.NewCertPool()
	for _, a := range anchors {
		roots.AddCert(a)
	}
	return &issuer{name: c.Name, cfg: cfg, batcher: b, roots: roots, unitSem: make(chan struct{}, inFlight),
		latency: latency}, nil
}

func (i *issuer) Roots() *x509.CertPool { return i.roots }

// Enroll implements workflow.Issuer.
func (i *issuer) Enroll(ctx context.Context, req workflow.EnrollRequest) (*workflow.Issued, error) {
	if req.ClientCert != nil {
		return i.enrollAsUnit(ctx, req)
	}
	resp, err := i.batcher.Enroll(ctx, batch.Request{CSR: req.CSR, Serial: req.Serial})
	if err != nil {
		return nil, i.classify(err)
	}
	return &workflow.Issued{Leaf: resp.Leaf, Chain: resp.Chain}, nil
}

// enrollAsUnit authenticates with the unit's certificate; its key signs through the agent.
func (i *issuer) enrollAsUnit(ctx context.Context, req workflow.EnrollRequest) (*workflow.Issued, error) {
	select {
	case i.unitSem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-i.unitSem }()
	cfg := i.cfg
	cfg.ClientCert = &est.ClientCertificate{Chain: req.ClientCert.Chain, Key: req.ClientCert.Key}
	c, err := est.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("CA %s: %w", i.name, err)
	}
	i.unitRequests.Add(1)
	i.unitInFlight.Add(1)
	start := time.Now()
	r, err := c.Enroll(ctx, req.CSR)
	i.unitInFlight.Add(-1)
	if ctx.Err() == nil {
		i.latency.Observe(time.Since(start).Seconds())
	}
	if err != nil {
		i.unitFailures.Add(1)
		return nil, i.classify(err)
	}
	return &workflow.Issued{Leaf: r.Leaf, Chain: r.Chain}, nil
}

func (i *issuer) classify(err error) error {
	code := workflow.CodeCAUnavailable
	switch {
	case errors.Is(err, est.ErrRejected), errors.Is(err, est.ErrInvalidCSR):
		code = workflow.CodeCARejected
	case errors.Is(err, est.ErrBadResponse):
		code = workflow.CodeCertInvalid
	}
	return &workflow.Error{Code: code, Msg: "CA " + i.name, Err: err}
}
