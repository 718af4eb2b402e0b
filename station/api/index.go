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

// unitIndex knows every unit's serial, in order, and when units completed. The store has no
// unit listing, so the index follows the outbox: every unit's log starts with a unit.created
// event, and the workflow appends unit.done when one completes. It reads only the events
// appended since its last refresh. It is safe for concurrent use.
type unitIndex struct {
	st *store.Store

	mu      sync.Mutex
	token   uint64
	serials []string // sorted
	done    []time.Time
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
			switch ev.Type {
			case store.EventUnitCreated:
				if i, found := slices.BinarySearch(x.serials, ev.Serial); !found {
					x.serials = slices.Insert(x.serials, i, ev.Serial)
				}
			case stationv1.KindUnitDone:
				x.done = append(x.done, ev.Time)
			}
		}
		x.token = next
		if len(evs) < outboxBatch {
			return nil
		}
	}
}

// after returns up to limit serials greater than after (all when limit <= 0).
func (x *unitIndex) after(ctx context.Context, after string, limit int) ([]string, error) {
	if err := x.refresh(ctx); err != nil {
		return nil, err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	i, found := slices.BinarySearch(x.serials, after)
	if found {
		i++
	}
	end := len(x.serials)
	if limit > 0 && i+limit < end {
		end = i + limit
	}
	return slices.Clone(x.serials[i:end]), nil
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

// forEach calls fn with every unit's state, in serial order, until fn returns false.
func (x *unitIndex) forEach(ctx context.Context, fn func(store.UnitState) bool) error {
	serials, err := x.after(ctx, "", 0)
	if err != nil {
		return err
	}
	for _, serial := range serials {
		u, err := x.st.Unit(ctx, serial)
		if err != nil {
			return err
		}
		if !fn(u) {
			return nil
		}
	}
	return nil
}
