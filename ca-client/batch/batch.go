// Package batch puts a batcher in front of each CA: it gathers enrollment
// requests from many concurrent units into batches (up to MaxBatch requests or
// MaxWait, whichever comes first), bounds the requests in flight at the CA,
// paces them with a token bucket that backs off when the CA answers "rate
// limited" (AIMD), and fails fast through a circuit breaker while the CA is
// unavailable. The CA work itself is done by a Backend: natively for a CA with a
// bulk API, or by FanOut over a single-request client such as EST, sharing one
// keep-alive transport so that connections do not grow with the number of
// units (CountingTransport measures that).
//
// The package does not depend on any CA protocol: errors are mapped to a Class
// by a Classifier supplied in Config (DefaultClassify understands small
// interfaces such as RateLimited() bool).
package batch

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Request is one enrollment: a DER PKCS#10 CSR.
type Request struct {
	// CSR is the DER-encoded PKCS#10 request.
	CSR []byte
	// Reenroll asks for re-enrollment (EST /simplereenroll) instead of a
	// first enrollment.
	Reenroll bool
	// Serial is the unit's serial, for logs and metrics only.
	Serial string
	// Via, when set, sends this request with Via instead of the Backend's own client: a
	// client authenticated as the unit (its own TLS client certificate), which cannot share
	// the Backend's connections. The request still waits for an in-flight slot and a rate
	// token, the breaker still admits or refuses it, and its answer feeds the breaker and
	// the rate like any other. FanOut honours it; a Backend that cannot must fail it.
	Via SingleEnroller
	// OnRetry, when set, is called before the EST client retries this request (see
	// est.WithRetryNotice): an earlier attempt may have been issued and its answer lost.
	OnRetry func(status int)
}

// Response is the CA's answer to one Request.
type Response struct {
	// Leaf is the issued certificate; Chain the intermediates the CA returned.
	Leaf  *x509.Certificate
	Chain []*x509.Certificate
	// Err is the reason the request failed; nil on success.
	Err error
}

// Backend does the CA work for a batch. EnrollBatch returns one Response per
// Request, in the same order. It must honour ctx (the batcher cancels it when
// every caller of the batch gave up, or when a Close deadline passes) and be
// safe for concurrent use: batches run concurrently, within MaxInFlight.
type Backend interface {
	EnrollBatch(ctx context.Context, reqs []Request) []Response
}

// itemState tracks a request through the batcher.
type itemState int

const (
	itemQueued    itemState = iota // in a batch not yet handed to the Backend
	itemSent                       // handed to the Backend
	itemCancelled                  // removed before sending: the caller gave up
	itemDone                       // its Response is in ch
)

// item is one Enroll call waiting for its answer.
type item struct {
	req       Request
	start     time.Time
	ch        chan Response // buffered 1: written once, under Batcher.mu
	state     itemState
	probe     bool // admitted as a half-open breaker probe
	abandoned bool // the caller gave up after the request was sent
	batch     *batch
}

// batch is a group of items sent to the Backend together.
type batch struct {
	items  []*item
	closed chan struct{}      // closed when the batch stops gathering
	live   int                // sent items whose caller still waits
	cancel context.CancelFunc // cancels the Backend call; set when sent
}

// Batcher batches, paces and guards the enrollments sent to one CA. It is
// safe for concurrent use. Create it with New and stop it with Close.
type Batcher struct {
	name    string
	backend Backend
	cfg     Config
	clock   Clock
	log     *slog.Logger

	base   context.Context // parent of every Backend call; cancelled by an expired Close
	abort  context.CancelFunc
	sem    chan struct{} // one token per request in the Backend
	kick   chan struct{} // wakes the dispatcher (buffered 1)
	done   chan struct{} // closed when the dispatcher and every Backend call returned
	calls  sync.WaitGroup
	closeO sync.Once

	mu      sync.Mutex
	cur     *batch   // gathering; nil when none
	queue   []*batch // closed, waiting for the dispatcher
	closing bool
	br      breaker
	rate    *aimd
	m       Metrics // counters; Name, Retries, ConnectionsOpened, Breaker, Rate filled by Metrics()
}

// New starts a Batcher named name (the CA's name, used in logs and metrics)
// in front of backend. Unset Config fields take their defaults.
func New(name string, backend Backend, cfg Config) *Batcher {
	cfg = cfg.withDefaults()
	base, abort := context.WithCancel(context.Background())
	b := &Batcher{
		name:    name,
		backend: backend,
		cfg:     cfg,
		clock:   cfg.Clock,
		log:     cfg.Logger.With(slog.String("ca", name)),
		base:    base,
		abort:   abort,
		sem:     make(chan struct{}, cfg.MaxInFlight),
		kick:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		br:      breaker{cfg: cfg.Breaker},
		rate:    newAIMD(cfg),
	}
	go b.run()
	return b
}

// Enroll queues req in the current batch and waits for the CA's answer. The
// returned error is resp.Err when the CA (or the Backend) failed the request,
// ErrCircuitOpen (wrapped) when the breaker is open, ErrClosed after Close,
// or ctx.Err() when ctx ends first: then Enroll returns at once, and the
// request is removed from its batch if that batch was not sent yet. An answer
// that arrived before the caller gave up is still returned.
func (b *Batcher) Enroll(ctx context.Context, req Request) (Response, error) {
	b.mu.Lock()
	b.m.Enrolls++
	if err := ctx.Err(); err != nil {
		b.m.Cancelled++
		b.mu.Unlock()
		return Response{}, err
	}
	if b.closing {
		b.m.Dropped++
		b.mu.Unlock()
		return Response{}, ErrClosed
	}
	now := b.clock.Now()
	ok, probe := b.br.allow(now)
	if !ok {
		b.m.CircuitOpen++
		b.mu.Unlock()
		return Response{}, fmt.Errorf("ca %q: %w", b.name, ErrCircuitOpen)
	}
	it := &item{req: req, start: now, ch: make(chan Response, 1), probe: probe}
	b.addLocked(it)
	b.mu.Unlock()

	select {
	case r := <-it.ch:
		return r, r.Err
	case <-ctx.Done():
		return b.giveUp(it, ctx.Err())
	}
}

// addLocked appends it to the gathering batch, starting one if needed, and
// closes the batch when it is full (or at once when MaxWait is zero).
func (b *Batcher) addLocked(it *item) {
	if b.cur == nil {
		bt := &batch{closed: make(chan struct{})}
		b.cur = bt
		if b.cfg.MaxWait > 0 {
			t := b.clock.NewTimer(b.cfg.MaxWait)
			b.calls.Add(1)
			go b.gather(bt, t)
		}
	}
	it.batch = b.cur
	b.cur.items = append(b.cur.items, it)
	b.m.Queued++
	if len(b.cur.items) >= b.cfg.MaxBatch || b.cfg.MaxWait == 0 {
		b.closeCurLocked()
	}
}

// closeCurLocked moves the gathering batch to the dispatch queue.
func (b *Batcher) closeCurLocked() {
	bt := b.cur
	if bt == nil {
		return
	}
	b.cur = nil
	close(bt.closed)
	b.queue = append(b.queue, bt)
	b.wake()
}

// wake nudges the dispatcher without blocking.
func (b *Batcher) wake() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// gather closes bt when MaxWait has passed, unless it was closed before.
func (b *Batcher) gather(bt *batch, t Timer) {
	defer b.calls.Done()
	select {
	case <-t.C():
		b.mu.Lock()
		if b.cur == bt {
			b.closeCurLocked()
		}
		b.mu.Unlock()
	case <-bt.closed:
		t.Stop()
	}
}

// giveUp handles a caller whose ctx ended while it waited.
func (b *Batcher) giveUp(it *item, err error) (Response, error) {
	b.mu.Lock()
	switch it.state {
	case itemQueued:
		bt := it.batch
		bt.items = slices.DeleteFunc(bt.items, func(x *item) bool { return x == it })
		if len(bt.items) == 0 && b.cur == bt {
			b.cur = nil
			close(bt.closed) // stops its MaxWait timer; never queued
		}
		it.state = itemCancelled
		b.m.Queued--
		b.m.Cancelled++
		b.br.release(it.probe)
	case itemSent:
		it.abandoned = true
		b.m.Abandoned++
		it.batch.live--
		if it.batch.live == 0 {
			it.batch.cancel() // nobody waits for this batch any more
		}
	case itemDone:
		b.mu.Unlock()
		r := <-it.ch
		return r, r.Err
	}
	b.mu.Unlock()
	return Response{}, err
}

// run is the dispatcher: it sends queued batches in order, one after the
// other, each once it has in-flight slots and rate tokens for its requests.
func (b *Batcher) run() {
	for {
		bt := b.next()
		if bt == nil {
			break
		}
		b.dispatch(bt)
	}
	b.calls.Wait()
	b.abort() // releases the base context's resources
	close(b.done)
}

// next returns the next queued batch, waiting for one; nil once the batcher
// is closing and nothing is left.
func (b *Batcher) next() *batch {
	for {
		b.mu.Lock()
		if len(b.queue) > 0 {
			bt := b.queue[0]
			b.queue[0] = nil
			b.queue = b.queue[1:]
			b.mu.Unlock()
			return bt
		}
		if b.closing && b.cur == nil {
			b.mu.Unlock()
			return nil
		}
		b.mu.Unlock()
		<-b.kick
	}
}

// dispatch sends one batch: it fails the requests the breaker refuses, waits
// for slots and tokens, then hands what is left to the Backend.
func (b *Batcher) dispatch(bt *batch) {
	b.mu.Lock()
	n := b.admitLocked(bt)
	b.mu.Unlock()
	if n == 0 {
		return
	}
	held := 0
	release := func(k int) {
		for range k {
			<-b.sem
		}
		held -= k
	}
	for held < n {
		select {
		case b.sem <- struct{}{}:
			held++
		case <-b.base.Done():
			release(held)
			b.drop(bt)
			return
		}
	}
	if err := b.waitTokens(n); err != nil || b.base.Err() != nil {
		release(held)
		b.drop(bt)
		return
	}

	b.mu.Lock()
	b.admitLocked(bt) // the breaker may have opened meanwhile
	sent := bt.items
	bt.items = nil
	if len(sent) == 0 {
		b.mu.Unlock()
		release(held)
		return
	}
	for _, it := range sent {
		it.state = itemSent
	}
	ctx, cancel := context.WithCancel(b.base)
	bt.cancel, bt.live = cancel, len(sent)
	k := int64(len(sent))
	b.m.Queued -= k
	b.m.Requests += k
	b.m.Batches++
	b.cfg.BatchSize.Observe(float64(k))
	b.m.InFlight += k
	b.m.MaxInFlight = max(b.m.MaxInFlight, b.m.InFlight)
	b.calls.Add(1)
	b.mu.Unlock()
	release(held - len(sent)) // slots of requests cancelled while waiting
	go b.send(ctx, bt, sent)
}

// admitLocked fails the queued requests of bt that the breaker refuses now and
// returns how many are left. A request admitted while the breaker was closed
// may become a half-open probe here.
func (b *Batcher) admitLocked(bt *batch) int {
	now := b.clock.Now()
	bt.items = slices.DeleteFunc(bt.items, func(it *item) bool {
		if it.probe || b.br.state == BreakerClosed {
			return false
		}
		ok, probe := b.br.allow(now)
		if ok {
			it.probe = probe
			return false
		}
		b.m.Queued--
		b.m.CircuitOpen++
		b.finishLocked(it, Response{Err: fmt.Errorf("ca %q: %w", b.name, ErrCircuitOpen)})
		return true
	})
	return len(bt.items)
}

// drop fails every queued request of bt with ErrClosed.
func (b *Batcher) drop(bt *batch) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, it := range bt.items {
		b.m.Queued--
		b.m.Dropped++
		b.br.release(it.probe)
		b.finishLocked(it, Response{Err: ErrClosed})
	}
	bt.items = nil
}

// finishLocked delivers r to the caller of it.
func (b *Batcher) finishLocked(it *item, r Response) {
	it.state = itemDone
	it.ch <- r
}

// waitTokens takes n tokens from the bucket and waits until they are there.
func (b *Batcher) waitTokens(n int) error {
	b.mu.Lock()
	at := b.rate.reserve(b.clock.Now(), n)
	b.mu.Unlock()
	for {
		d := at.Sub(b.clock.Now())
		if d <= 0 {
			return nil
		}
		t := b.clock.NewTimer(d)
		select {
		case <-t.C():
		case <-b.base.Done():
			t.Stop()
			return b.base.Err()
		}
	}
}

// send runs the Backend for one batch and delivers the answers.
func (b *Batcher) send(ctx context.Context, bt *batch, sent []*item) {
	defer b.calls.Done()
	reqs := make([]Request, len(sent))
	for i, it := range sent {
		reqs[i] = it.req
	}
	resps := b.backend.EnrollBatch(ctx, reqs)
	// When the batch's context ended (every caller gave up, or Close timed
	// out) errors say nothing about the CA: keep them out of the breaker and
	// the rate.
	ours := ctx.Err() != nil
	bt.cancel()

	b.mu.Lock()
	now := b.clock.Now()
	b.m.InFlight -= int64(len(sent))
	for i, it := range sent {
		r := Response{Err: fmt.Errorf("request %d of %d: %w", i+1, len(sent), ErrBadBackend)}
		if i < len(resps) {
			r = resps[i]
		}
		if r.Err != nil {
			b.m.Failed++
		} else {
			b.m.Succeeded++
		}
		if !it.abandoned {
			b.cfg.Latency.Observe(now.Sub(it.start).Seconds())
		}
		if ours && r.Err != nil {
			b.br.release(it.probe)
		} else {
			b.accountLocked(b.cfg.Classify(r.Err), it.probe, now)
		}
		b.finishLocked(it, r)
	}
	b.mu.Unlock()
	// Free the slots only now, so that InFlight never counts more than
	// MaxInFlight.
	for range sent {
		<-b.sem
	}
}

// accountLocked feeds one answer's class to the breaker and the rate.
func (b *Batcher) accountLocked(c Class, probe bool, now time.Time) {
	if st, changed := b.br.record(c, probe, now); changed {
		b.log.Warn("ca circuit breaker", slog.String("state", st.String()), slog.Int("failures", b.br.failures))
	}
	switch c {
	case ClassRateLimited:
		b.m.RateLimited++
		if r, changed := b.rate.onRateLimited(now); changed {
			b.log.Info("ca rate lowered", slog.Float64("rate", r))
		}
	case ClassOK, ClassPermanent: // the CA kept up: raise the rate back
		if r, changed := b.rate.onAnswered(now); changed {
			b.log.Debug("ca rate raised", slog.Float64("rate", r))
		}
	}
}

// NoteRateLimited tells the batcher that the CA rate-limited a request even
// though the Backend's answer did not show it (for instance a 429 that the
// client retried successfully); it lowers the rate as a rate-limited answer
// would. Safe for concurrent use, e.g. from an HTTP client's observer hook.
func (b *Batcher) NoteRateLimited() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.m.RateLimited++
	if r, changed := b.rate.onRateLimited(b.clock.Now()); changed {
		b.log.Info("ca rate lowered", slog.Float64("rate", r))
	}
}

// Metrics returns a snapshot of the batcher's counters.
func (b *Batcher) Metrics() Metrics {
	b.mu.Lock()
	m := b.m
	m.Breaker = b.br.state
	if m.Breaker == BreakerOpen && b.clock.Now().Sub(b.br.openedAt) >= b.cfg.Breaker.OpenFor {
		m.Breaker = BreakerHalfOpen // would let a probe through now
	}
	m.Rate = b.rate.rate()
	b.mu.Unlock()
	m.Name = b.name
	if rc, ok := b.backend.(RetryCounter); ok {
		m.Retries = rc.Retries()
	}
	if cc, ok := b.backend.(ConnCounter); ok {
		m.ConnectionsOpened = cc.ConnectionsOpened()
	}
	return m
}

// Close stops accepting requests (Enroll then fails with ErrClosed), sends the
// gathering batch at once and waits until every queued and in-flight request
// has been answered. If ctx ends first, Close cancels the Backend calls, fails
// the requests not yet sent with ErrClosed, waits for the Backend to return
// and returns ctx.Err(). Calling Close again waits in the same way.
func (b *Batcher) Close(ctx context.Context) error {
	b.closeO.Do(func() {
		b.mu.Lock()
		b.closing = true
		b.closeCurLocked()
		b.wake()
		b.mu.Unlock()
	})
	select {
	case <-b.done:
		return nil
	case <-ctx.Done():
		b.abort()
		<-b.done
		return ctx.Err()
	}
}
