package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/devid-station/devid/ca-client/batch"
	"github.com/devid-station/devid/ca-client/est"
	"github.com/devid-station/devid/station/config"
	"github.com/devid-station/devid/station/metrics"
	"github.com/devid-station/devid/station/workflow"
)

// issuer is a workflow.Issuer for one EST CA: every enrollment goes through the CA's batcher
// (in-flight bound, rate limit, circuit breaker); station-authenticated ones over one shared
// EST client, those authenticated by the unit's own IDevID over a per-unit client with a TLS
// connection of its own.
type issuer struct {
	name    string
	cfg     est.Config // without ClientCert: the template of per-unit clients
	batcher *batch.Batcher
	roots   *x509.CertPool
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
	return &issuer{name: c.Name, cfg: cfg, batcher: b, roots: roots}, nil
}

func (i *issuer) Roots() *x509.CertPool { return i.roots }

// Enroll implements workflow.Issuer.
func (i *issuer) Enroll(ctx context.Context, req workflow.EnrollRequest) (*workflow.Issued, error) {
	if req.ClientCert != nil {
		return i.enrollAsUnit(ctx, req)
	}
	if req.Reenroll {
		return nil, &workflow.Error{Code: workflow.CodeInternal, Msg: "CA " + i.name + ": a re-enrollment needs the unit's certificate"}
	}
	resp, err := i.batcher.Enroll(ctx, batch.Request{CSR: req.CSR, Serial: req.Serial, OnRetry: onRetry(req)})
	if err != nil {
		return nil, i.classify(err)
	}
	return &workflow.Issued{Leaf: resp.Leaf, Chain: resp.Chain}, nil
}

// enrollAsUnit authenticates with the unit's certificate (its key signs through the agent) on
// a TLS connection of its own, which is closed once answered; a re-enrollment renews that
// certificate (EST /simplereenroll). The request goes through the CA's batcher like the
// others: in-flight bound, rate limit and circuit breaker.
func (i *issuer) enrollAsUnit(ctx context.Context, req workflow.EnrollRequest) (*workflow.Issued, error) {
	cfg := i.cfg
	cfg.ClientCert = &est.ClientCertificate{Chain: req.ClientCert.Chain, Key: req.ClientCert.Key}
	via, closeConns, err := i.batcher.ViaEST(cfg)
	if err != nil {
		return nil, fmt.Errorf("CA %s: %w", i.name, err)
	}
	defer closeConns()
	resp, err := i.batcher.Enroll(ctx, batch.Request{CSR: req.CSR, Reenroll: req.Reenroll, Serial: req.Serial, Via: via, OnRetry: onRetry(req)})
	if err != nil {
		return nil, i.classify(err)
	}
	return &workflow.Issued{Leaf: resp.Leaf, Chain: resp.Chain}, nil
}

// onRetry tells the workflow of a request sent again after an attempt whose answer was lost
// (a transport error) or that failed at a server error other than 503: the CA may have issued
// for it. A 429, a 503 or a poll of a pending request issued nothing.
func onRetry(req workflow.EnrollRequest) func(int) {
	if req.OnRetry == nil {
		return nil
	}
	return func(status int) {
		if status == 0 || (status >= 500 && status != http.StatusServiceUnavailable) {
			req.OnRetry()
		}
	}
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
