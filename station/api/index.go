package api

import (
	"context"
	"slices"
	"sync"
	"time"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/station/store"
)

// outboxBatch is how many outbox events one read returns.
const outboxBatch = 512

// unitIndex knows when units completed, and walks every unit. The completion times follow
// the outbox (the workflow appends unit.done when a unit completes); it reads only the events
// appended since its last refresh. It is safe for concurrent use.
type unitIndex struct {
	st *store.Store

	mu    sync.Mutex
	token uint64
	done  []time.Time
}

func newUnitIndex(st *store.Store) *unitIndex { return &unitIndex{st: st} }

// refresh reads the outbox events appended since the last refresh.
func (x *unitIndex) refresh(ctx context.Context) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	for {
		evs, next, err := x.st.OutboxAfter(ctx, x.token, outboxBatch)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if ev.Type == stationv1.KindUnitDone {
				x.done = append(x.done, ev.Time)
			}
		}
		x.token = next
		if len(evs) < outboxBatch {
			return nil
		}
	}
}

// doneSince counts unit.done events at or after t.
func (x *unitIndex) doneSince(ctx context.Context, t time.Time) (int, error) {
	if err := x.refresh(ctx); err != nil {
		return 0, err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	i, _ := slices.BinarySearchFunc(x.done, t, func(a, b time.Time) int { return a.Compare(b) })
	return len(x.done) - i, nil
}

// forEachPage is how many units forEach reads in one read transaction.
const forEachPage = 1000

// forEach calls fn with every unit's state, in serial order, until fn returns false, reading
// the store's units a page at a time.
func (x *unitIndex) forEach(ctx context.Context, fn func(store.UnitState) bool) error {
	q := store.UnitQuery{Limit: forEachPage}
	for {
		units, more, err := x.st.ListUnits(ctx, q)
		if err != nil {
			return err
		}
		for _, l := range units {
			if !fn(l.Unit) {
				return nil
			}
		}
		if !more {
			return nil
		}
		q.After = units[len(units)-1].Unit.Serial
	}
}
