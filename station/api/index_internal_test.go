package api

import (
	"path/filepath"
	"testing"

	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/store/storetest"
)

// TestForEachRows: forEach walks every unit a query selects, in serial order, with the fields
// its callers count by (serial, status, current step, work order) as the units' full states
// hold them, across several of its pages; workOrderCounts counts each work order's units as
// the full states do.
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
	of := func(u *store.UnitState) fields {
		return fields{u.Serial, string(u.Status), u.CurrentStep, u.WorkOrderID}
	}
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
	// The work orders' counts, each from its own units, are those of the full states.
	want := woCounts{}
	ids := []string{"WO-3", "WO-0", "WO-none", "WO-3", "WO-9"}
	for i := range n {
		u, err := st.Unit(ctx, storetest.Serial("", i))
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			if want[id] == nil {
				want[id] = new([2]uint64)
			}
		}
		c := want[u.WorkOrderID]
		if c == nil {
			continue
		}
		switch u.Status {
		case store.StatusDone:
			c[0]++
		case store.StatusFailed, store.StatusAborted, store.StatusHold, store.StatusScrapped:
			c[1]++
		}
	}
	counts, err := (&Server{index: x}).workOrderCounts(ctx, ids...)
	if err != nil {
		t.Fatal(err)
	}
	if len(counts) != len(want) {
		t.Errorf("counts of %d work orders, want %d", len(counts), len(want))
	}
	for id, w := range want {
		if c := counts[id]; c == nil || *c != *w {
			t.Errorf("%s: done and failed %v, want %v", id, c, *w)
		}
	}
	if *want["WO-0"] == [2]uint64{} || *want["WO-9"] != [2]uint64{} {
		t.Errorf("the test's work orders: WO-0 %v, WO-9 %v; want units in WO-0, none in WO-9", *want["WO-0"], *want["WO-9"])
	}

	// fn stops the walk.
	seen := 0
	if err := x.forEach(ctx, store.UnitQuery{}, func(store.UnitState) bool { seen++; return seen < 3 }); err != nil || seen != 3 {
		t.Errorf("walk stopped after %d units (%v), want 3", seen, err)
	}
}
