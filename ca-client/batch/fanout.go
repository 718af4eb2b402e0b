package batch

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"

	"github.com/devid-station/devid/ca-client/est"
)

// SingleEnroller enrolls one CSR at a time, e.g. an EST client's
// /simpleenroll. Implementations must be safe for concurrent use.
type SingleEnroller interface {
	Enroll(ctx context.Context, csr []byte) (*x509.Certificate, []*x509.Certificate, error)
}

// SingleReenroller is implemented by a SingleEnroller that can also re-enroll
// (EST /simplereenroll). FanOut uses it for requests with Reenroll set.
type SingleReenroller interface {
	Reenroll(ctx context.Context, csr []byte) (*x509.Certificate, []*x509.Certificate, error)
}

// FanOut returns a Backend that runs each request of a batch as its own call to
// e (or to the request's Via), at most concurrency calls at once across all batches (at
// least 1). Give e
// one shared keep-alive HTTP transport so that the calls reuse connections.
// The Backend implements RetryCounter and ConnCounter by forwarding to e when
// e implements them (and reports 0 otherwise). A request with Reenroll set
// fails with errors.ErrUnsupported unless e implements SingleReenroller.
// It is safe for concurrent use.
func FanOut(e SingleEnroller, concurrency int) Backend {
	return &fanOut{e: e, sem: make(chan struct{}, max(concurrency, 1))}
}

type fanOut struct {
	e   SingleEnroller
	sem chan struct{}
}

// EnrollBatch implements Backend.
func (f *fanOut) EnrollBatch(ctx context.Context, reqs []Request) []Response {
	resps := make([]Response, len(reqs))
	var wg sync.WaitGroup
	for i, req := range reqs {
		var err error
		select {
		case f.sem <- struct{}{}:
			// A slot freed by a call that ctx ended and ctx itself can be
			// ready together, and select picks either: after ctx ended, no
			// call starts.
			if err = ctx.Err(); err != nil {
				<-f.sem
			}
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err != nil {
			for j := i; j < len(reqs); j++ {
				resps[j].Err = err
			}
			wg.Wait()
			return resps
		}
		wg.Go(func() {
			defer func() { <-f.sem }()
			resps[i] = f.one(ctx, req)
		})
	}
	wg.Wait()
	return resps
}

func (f *fanOut) one(ctx context.Context, req Request) Response {
	var (
		leaf  *x509.Certificate
		chain []*x509.Certificate
		err   error
	)
	e := f.e
	if req.Via != nil {
		e = req.Via
	}
	if req.OnRetry != nil {
		ctx = est.WithRetryNotice(ctx, func(_ est.Op, status int) { req.OnRetry(status) })
	}
	if req.Reenroll {
		re, ok := e.(SingleReenroller)
		if !ok {
			return Response{Err: fmt.Errorf("re-enrollment: %w", errors.ErrUnsupported)}
		}
		leaf, chain, err = re.Reenroll(ctx, req.CSR)
	} else {
		leaf, chain, err = e.Enroll(ctx, req.CSR)
	}
	return Response{Leaf: leaf, Chain: chain, Err: err}
}

// Retries implements RetryCounter.
func (f *fanOut) Retries() int64 {
	if rc, ok := f.e.(RetryCounter); ok {
		return rc.Retries()
	}
	return 0
}

// ConnectionsOpened implements ConnCounter.
func (f *fanOut) ConnectionsOpened() int64 {
	if cc, ok := f.e.(ConnCounter); ok {
		return cc.ConnectionsOpened()
	}
	return 0
}
