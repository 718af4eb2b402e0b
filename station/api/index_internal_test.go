package api

import (
	"path/filepath"
	"testing"

	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/store/storetest"
)

// TestForEachRows: forEach walks every unit a query selects, in serial order, with the fields
// its callers count by (serial, status, current step, work order) as the units' full states
// hold them, across several of its pages.
func TestForEachRows(t *testing.T) {
	ctx := t.Context()
	st, err := store.Open(filepath.Join(t.TempDir(), "station.db"), store.Options{StationID: "st-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	n := 2*forEachPage + 17
	if err := storetest.Seed(ctx, st, 0, n, storetest.Options{PerWorkOrder: 300, InFlightEvery: 7, FailedEvery: 11}); err != nil {
		t.Fatal(err)
	}
	for serial, status := range map[string]store.Status{storetest.Serial("", 11): store.StatusHold,
		storetest.Serial("", 22): store.StatusAborted, storetest.Serial("", 1504): store.StatusPending} {
		if _, err := st.UpdateUnit(ctx, serial, func(u *store.UnitState) error { u.Status = status; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	type fields struct{ serial, status, step, workOrder string }
	of := func(u *store.UnitState) fields { return fields{u.Serial, string(u.Status), u.CurrentStep, u.WorkOrderID} }
	x := newUnitIndex(st)
	for _, q := range []store.UnitQuery{{}, {WorkOrder: "WO-3"}, {WorkOrder: "WO-none"}} {
		var want []fields
		for i := range n {
			u, err := st.Unit(ctx, storetest.Serial("", i))
			if err != nil {
				t.Fatal(err)
			}
			if q.WorkOrder == "" || u.WorkOrderID == q.WorkOrder {
				want = append(want, of(&u))
			}
		}
		var got []fields
		if err := x.forEach(ctx, q, func(u store.UnitState) bool { got = append(got, of(&u)); return true }); err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("query %+v: %d units walked, want %d", q, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("query %+v: unit %d is %+v, want %+v", q, i, got[i], want[i])
			}
		}
	}
	// fn stops the walk.
	seen := 0
	if err := x.forEach(ctx, store.UnitQuery{}, func(store.UnitState) bool { seen++; return seen < 3 }); err != nil || seen != 3 {
		t.Errorf("walk stopped after %d units (%v), want 3", seen, err)
	}
}
