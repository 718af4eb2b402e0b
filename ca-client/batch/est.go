package batch

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/devid-station/devid/ca-client/est"
)

// This file is the only one that knows EST: it adapts an est.Client to the
// batcher. The rest of the package depends on no CA protocol.

// NewEST returns a Batcher named name in front of the EST CA that estCfg
// describes. The EST client gets a keep-alive transport cloned from
// estCfg.Transport (or the default one) that counts the connections it opens
// (Metrics.ConnectionsOpened) and keeps up to MaxInFlight idle connections;
// each batch is fanned out over at most MaxInFlight concurrent /simpleenroll
// or /simplereenroll calls (FanOut); every HTTP 429 the client sees lowers the
// batcher's rate (NoteRateLimited), even when the client's own retry then
// succeeds; retries are counted (Metrics.Retries); errors are classified by
// ClassifyEST unless cfg.Classify is set. estCfg.Observer, if set, still
// receives every event.
func NewEST(name string, estCfg est.Config, cfg Config) (*Batcher, error) {
	if cfg.Classify == nil {
		cfg.Classify = ClassifyEST
	}
	cfg = cfg.withDefaults()
	tr, conns := CountingTransport(estCfg.Transport)
	tr.MaxIdleConnsPerHost = max(tr.MaxIdleConnsPerHost, cfg.MaxInFlight)
	tr.MaxIdleConns = max(tr.MaxIdleConns, tr.MaxIdleConnsPerHost)
	e := &estEnroller{conns: conns, next: estCfg.Observer}
	estCfg.Transport = tr
	estCfg.Observer = e
	c, err := est.New(estCfg)
	if err != nil {
		return nil, err
	}
	e.c = c
	b := New(name, FanOut(e, cfg.MaxInFlight), cfg)
	e.batcher.Store(b)
	return b, nil
}

// ViaEST returns a Request.Via over a new EST client made from estCfg (typically with the
// unit's own ClientCert): its 429 answers lower b's rate as those of b's own client do. close
// closes the client's idle connections; call it once the request is answered, since such a
// connection serves no one else.
func (b *Batcher) ViaEST(estCfg est.Config) (via SingleEnroller, close func(), err error) {
	e := &estEnroller{conns: new(atomic.Int64), next: estCfg.Observer}
	estCfg.Observer = e
	c, err := est.New(estCfg)
	if err != nil {
		return nil, nil, err
	}
	e.c = c
	e.batcher.Store(b)
	return e, c.CloseIdleConnections, nil
}

// ClassifyEST maps est.Client errors to a Class: est.ErrUnavailable (transport
// and TLS errors, 5xx, and 429 or 408 after the client's retries) is
// ClassUnavailable; est.ErrRejected, est.ErrBadResponse, est.ErrInvalidCSR,
// est.ErrNoClientCert and est.ErrPendingTimeout (the CA is alive, only slow to
// approve) are ClassPermanent. Other errors go through DefaultClassify.
func ClassifyEST(err error) Class {
	switch {
	case err == nil:
		return ClassOK
	case errors.Is(err, est.ErrUnavailable):
		return ClassUnavailable
	case errors.Is(err, est.ErrRejected), errors.Is(err, est.ErrBadResponse),
		errors.Is(err, est.ErrInvalidCSR), errors.Is(err, est.ErrNoClientCert),
		errors.Is(err, est.ErrPendingTimeout):
		return ClassPermanent
	default:
		return DefaultClassify(err)
	}
}

// estEnroller is the SingleEnroller over an est.Client, and its observer. It
// is safe for concurrent use.
type estEnroller struct {
	c       *est.Client
	conns   *atomic.Int64
	retries atomic.Int64
	batcher atomic.Pointer[Batcher] // set once the Batcher exists
	next    est.Observer            // the caller's observer, if any
}

// Enroll implements SingleEnroller.
func (e *estEnroller) Enroll(ctx context.Context, csr []byte) (*x509.Certificate, []*x509.Certificate, error) {
	return unpack(e.c.Enroll(ctx, csr))
}

// Reenroll implements SingleReenroller.
func (e *estEnroller) Reenroll(ctx context.Context, csr []byte) (*x509.Certificate, []*x509.Certificate, error) {
	return unpack(e.c.Reenroll(ctx, csr))
}

func unpack(r *est.Result, err error) (*x509.Certificate, []*x509.Certificate, error) {
	if err != nil {
		return nil, nil, err
	}
	return r.Leaf, r.Chain, nil
}

// Retries implements RetryCounter: HTTP attempts repeated after a failure
// (202 polls are not retries).
func (e *estEnroller) Retries() int64 { return e.retries.Load() }

// ConnectionsOpened implements ConnCounter.
func (e *estEnroller) ConnectionsOpened() int64 { return e.conns.Load() }

// OnAttempt implements est.Observer.
func (e *estEnroller) OnAttempt(op est.Op, attempt int) {
	if e.next != nil {
		e.next.OnAttempt(op, attempt)
	}
}

// OnResponse implements est.Observer: a 429 lowers the batcher's rate.
func (e *estEnroller) OnResponse(op est.Op, status int, d time.Duration) {
	if status == http.StatusTooManyRequests {
		if b := e.batcher.Load(); b != nil {
			b.NoteRateLimited()
		}
	}
	if e.next != nil {
		e.next.OnResponse(op, status, d)
	}
}

// OnRetry implements est.Observer.
func (e *estEnroller) OnRetry(op est.Op, status int, wait time.Duration) {
	if status != http.StatusAccepted {
		e.retries.Add(1)
	}
	if e.next != nil {
		e.next.OnRetry(op, status, wait)
	}
}
