package export

import (
	"context"
	"sync"

	"github.com/devid-station/devid/station/store"
)

// unitReader is the store as one unit's traveler and bundle files read it: each of the unit's
// reads reaches the store once (traveler.Build and the bundle both read the step records and
// every certificate, some twice), and work orders are read once for the whole export.
type unitReader struct {
	*store.Store
	wos   *workOrders
	steps []store.StepRecord
	read  bool // steps were read
	certs map[string]store.CertRecord
}

func (r *unitReader) StepRecords(ctx context.Context, serial string) ([]store.StepRecord, error) {
	if !r.read {
		steps, err := r.Store.StepRecords(ctx, serial)
		if err != nil {
			return nil, err
		}
		r.steps, r.read = steps, true
	}
	return r.steps, nil
}

func (r *unitReader) CertificateBySHA256(ctx context.Context, sha string) (store.CertRecord, error) {
	if c, ok := r.certs[sha]; ok {
		return c, nil
	}
	c, err := r.Store.CertificateBySHA256(ctx, sha)
	if err != nil {
		return c, err
	}
	if r.certs == nil {
		r.certs = map[string]store.CertRecord{}
	}
	r.certs[sha] = c
	return c, nil
}

func (r *unitReader) WorkOrder(ctx context.Context, id string) (store.WorkOrder, error) {
	return r.wos.get(ctx, r.Store, id)
}

// workOrders caches the work orders an export reads. It is safe for concurrent use.
type workOrders struct {
	mu sync.Mutex
	m  map[string]store.WorkOrder
}

func (w *workOrders) get(ctx context.Context, st *store.Store, id string) (store.WorkOrder, error) {
	w.mu.Lock()
	wo, ok := w.m[id]
	w.mu.Unlock()
	if ok {
		return wo, nil
	}
	wo, err := st.WorkOrder(ctx, id)
	if err != nil {
		return wo, err
	}
	w.mu.Lock()
	if w.m == nil {
		w.m = map[string]store.WorkOrder{}
	}
	w.m[id] = wo
	w.mu.Unlock()
	return wo, nil
}
