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

// unitIndex knows when units completed, and walks the units' listing rows. The completion
// times follow the outbox (the workflow appends unit.done when a unit completes); it reads
// only the events appended since its last refresh. It is safe for concurrent use.
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

// forEach calls fn with the listing row of every unit q selects (its filters; After, Limit
// and Brief are forEach's), in serial order, until fn returns false, reading the store's units
// a page at a time. A row (store.UnitQuery.Brief) holds the unit's serial, status, work order,
// profile, current step, error code and message, EK certificate digest, fixture slot,
// attempts, times and each step's attempts, not the rest of its state: fn must need no more.
// Reading the rows decodes no unit's JSON state, which is most of a pass's cost.
func (x *unitIndex) forEach(ctx context.Context, q store.UnitQuery, fn func(store.UnitState) bool) error {
	q.After, q.Limit, q.Brief = "", forEachPage, true
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
