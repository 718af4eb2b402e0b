package server

import (
	"context"
	"crypto/x509"
	"time"

	"github.com/devid-station/devid/station/reconcile"
)

// reconcileEvery is how often the station asks the CAs with a search_url about its open
// possibly-issued entries (and once at start); reconcileSettle is how long after an entry's
// window it waits, so that a request the CA was still working on when its caller died is
// issued by then.
const (
	reconcileEvery  = time.Minute
	reconcileSettle = 2 * time.Minute
)

// startReconciler runs reconcile.Search for every CA with a search URL, at start and every
// reconcileEvery, until Close.
func (s *Server) startReconciler() {
	searchers := map[string]reconcile.Searcher{}
	for _, c := range s.rt.CAs {
		if c.SearchURL == "" {
			continue
		}
		anchors := x509.NewCertPool()
		for _, a := range c.TrustAnchors {
			anchors.AddCert(a)
		}
		searchers[c.Name] = &reconcile.HTTPSearcher{URL: c.SearchURL, Roots: anchors,
			HeaderName: c.HeaderName, HeaderValue: c.HeaderSecret.Reveal(),
			BasicUser: c.BasicUser, BasicPassword: c.BasicPassword.Reveal()}
	}
	if len(searchers) == 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stopReconcile = cancel
	s.wg.Go(func() {
		t := time.NewTicker(reconcileEvery)
		defer t.Stop()
		for {
			s.reconcileOnce(ctx, searchers)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
}

func (s *Server) reconcileOnce(ctx context.Context, searchers map[string]reconcile.Searcher) {
	for name, se := range searchers {
		rep, err := reconcile.Search(ctx, s.store, name, se, time.Now().Add(-reconcileSettle))
		if err != nil && ctx.Err() == nil {
			s.log.Warn("reconciling possibly issued certificates", "ca", name, "error", err)
		}
		if rep.Closed > 0 {
			s.log.Info("reconciled possibly issued certificates", "ca", name, "closed", rep.Closed, "recorded", rep.Recorded, "open", rep.Open)
		}
	}
}
