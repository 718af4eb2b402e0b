package store_test

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devid-station/devid/station/journal"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/store/storetest"
)

// openSeeded opens a new store holding n seeded units; the chain must verify at the end.
func openSeeded(t *testing.T, n int, opts storetest.Options) *store.Store {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "station.db"), store.Options{StationID: "station-list"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			if _, err := st.VerifyChain(context.Background()); err != nil {
				t.Errorf("store does not verify at the end of the test: %v", err)
			}
		}
		st.Close()
	})
	opts.Batch = 64
	if err := storetest.Seed(t.Context(), st, 0, n, opts); err != nil {
		t.Fatal(err)
	}
	return st
}

// listAll pages through q with pages of size, checking that serials ascend strictly.
func listAll(t *testing.T, st *store.Store, q store.UnitQuery, size int) []store.ListedUnit {
	t.Helper()
	q.Limit = size
	var all []store.ListedUnit
	for page := 0; ; page++ {
		units, more, err := st.ListUnits(t.Context(), q)
		if err != nil {
			t.Fatal(err)
		}
		if len(units) > size || (more && len(units) != size) {
			t.Fatalf("page %d: %d units, more %v, page size %d", page, len(units), more, size)
		}
		for _, u := range units {
			if len(all) > 0 && all[len(all)-1].Unit.Serial >= u.Unit.Serial {
				t.Fatalf("page %d: %s after %s", page, u.Unit.Serial, all[len(all)-1].Unit.Serial)
			}
			all = append(all, u)
		}
		if !more {
			return all
		}
		q.After = units[len(units)-1].Unit.Serial
	}
}

func serials(units []store.ListedUnit) []string {
	var out []string
	for _, u := range units {
		out = append(out, u.Unit.Serial)
	}
	return out
}

// TestListUnitsFilters checks every filter, and their combinations, against the units read one
// by one, at several page sizes, after units changed status, work order and error code (so the
// index has removed entries as well as added them).
func TestListUnitsFilters(t *testing.T) {
	const n = 240
	opts := storetest.Options{PerWorkOrder: 50, InFlightEvery: 7, FailedEvery: 11}
	st := openSeeded(t, n, opts)
	ctx := t.Context()
	// Move some units: a failed one on hold, running ones failed (one with another code), a
	// done one reopened by a rework, a running one to another work order, a new pending unit.
	changes := []struct {
		serial string
		fn     func(*store.UnitState) error
	}{
		{storetest.Serial("", 11), func(u *store.UnitState) error { u.Status, u.ErrorCode = store.StatusHold, "EK_UNTRUSTED"; return nil }},
		{storetest.Serial("", 6), func(u *store.UnitState) error { u.Status, u.ErrorCode = store.StatusFailed, "TIMEOUT"; return nil }},
		{storetest.Serial("", 13), func(u *store.UnitState) error { u.Status = store.StatusFailed; return nil }},
		{storetest.Serial("", 1), func(u *store.UnitState) error { u.Status = store.StatusPending; return nil }},
		{storetest.Serial("", 20), func(u *store.UnitState) error { u.WorkOrderID = "WO-X"; return nil }},
		{"SN-new", func(u *store.UnitState) error { u.WorkOrderID = "WO-X"; return nil }},
	}
	if _, err := st.AuthorizeRework(ctx, storetest.Serial("", 1), "admin", "test"); err != nil {
		t.Fatal(err)
	}
	for _, c := range changes {
		if _, err := st.UpdateUnit(ctx, c.serial, c.fn); err != nil {
			t.Fatalf("%s: %v", c.serial, err)
		}
	}
	var every []store.UnitState
	for _, serial := range append(serialRange(n), "SN-new") {
		u, err := st.Unit(ctx, serial)
		if err != nil {
			t.Fatal(err)
		}
		every = append(every, u)
	}
	slices.SortFunc(every, func(a, b store.UnitState) int { return strings.Compare(a.Serial, b.Serial) })

	queries := []store.UnitQuery{
		{},
		{Statuses: []store.Status{store.StatusDone}},
		{Statuses: []store.Status{store.StatusFailed}},
		{Statuses: store.InFlightStatuses},
		{Statuses: []store.Status{store.StatusHold, store.StatusFailed}},
		{Statuses: []store.Status{store.StatusScrapped}},
		{WorkOrder: "WO-2"},
		{WorkOrder: "WO-X"},
		{WorkOrder: "WO-none"},
		{ErrorCode: "CA_REJECTED"},
		{ErrorCode: "TIMEOUT"},
		{WorkOrder: "WO-1", Statuses: []store.Status{store.StatusRunning}},
		{WorkOrder: "WO-0", ErrorCode: "CA_REJECTED", Statuses: []store.Status{store.StatusFailed}},
		{Statuses: []store.Status{store.StatusDone}, Keep: func(u *store.UnitState) bool { return u.Serial[len(u.Serial)-1] == '3' }},
	}
	for i, q := range queries {
		var want []string
		for _, u := range every {
			if matches(q, u) {
				want = append(want, u.Serial)
			}
		}
		for _, size := range []int{1, 7, 100, 1000} {
			got := listAll(t, st, q, size)
			if !slices.Equal(serials(got), want) {
				t.Errorf("query %d (%+v), pages of %d:\n got %v\nwant %v", i, q, size, serials(got), want)
			}
		}
		if len(want) > 2 {
			q.After = want[len(want)/2]
			got := listAll(t, st, q, 5)
			if !slices.Equal(serials(got), want[len(want)/2+1:]) {
				t.Errorf("query %d after %s: got %v, want %v", i, q.After, serials(got), want[len(want)/2+1:])
			}
		}
	}

	inflight, err := st.InFlight(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var gotIF, wantIF []string
	for _, u := range inflight {
		gotIF = append(gotIF, u.Serial)
	}
	for _, u := range every {
		if u.Status == store.StatusPending || u.Status == store.StatusRunning {
			wantIF = append(wantIF, u.Serial)
		}
	}
	if !slices.Equal(gotIF, wantIF) || len(wantIF) == 0 {
		t.Errorf("InFlight = %v, want %v", gotIF, wantIF)
	}

	// The latest attempt of a step comes with each unit when asked.
	got, _, err := st.ListUnits(ctx, store.UnitQuery{Limit: 3, Step: journal.StepVerifyEK})
	if err != nil || len(got) != 3 {
		t.Fatalf("ListUnits with step: %v, %v", got, err)
	}
	for _, l := range got {
		if l.Step == nil || l.Step.Step != journal.StepVerifyEK || l.Step.Serial != l.Unit.Serial || len(l.Step.Intent) == 0 {
			t.Errorf("%s: step %+v", l.Unit.Serial, l.Step)
		}
	}
}

// matches is q's filters applied to u one by one.
func matches(q store.UnitQuery, u store.UnitState) bool {
	if q.WorkOrder != "" && u.WorkOrderID != q.WorkOrder || q.ErrorCode != "" && u.ErrorCode != q.ErrorCode {
		return false
	}
	if len(q.Statuses) > 0 && !slices.Contains(q.Statuses, u.Status) {
		return false
	}
	return q.Keep == nil || q.Keep(&u)
}

func serialRange(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = storetest.Serial("", i)
	}
	return out
}

// TestListUnitsConcurrentInserts pages through the units while others are created between
// and around them: every unit that existed throughout comes exactly once, in order, and a
// new one comes at most once.
func TestListUnitsConcurrentInserts(t *testing.T) {
	st := openSeeded(t, 0, storetest.Options{})
	ctx := t.Context()
	const n = 120
	var units []store.SeedUnit
	for i := range n {
		units = append(units, store.SeedUnit{State: store.UnitState{Serial: fmt.Sprintf("SN-%04d", 2*i+1), Status: store.StatusDone}})
	}
	if err := st.Seed(ctx, units); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 3 {
		wg.Go(func() {
			for i := w; ; i += 3 {
				select {
				case <-stop:
					return
				default:
				}
				// Even serials fall between the listed ones; SN-9xxx after them all.
				serial := fmt.Sprintf("SN-%04d", 2*(i%n))
				if i >= n {
					serial = fmt.Sprintf("SN-9%03d", i%1000)
				}
				if _, err := st.UpdateUnit(ctx, serial, func(*store.UnitState) error { return nil }); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	seen := listAll(t, st, store.UnitQuery{}, 7) // listAll fails on a repeat or a step back
	close(stop)
	wg.Wait()
	odd := 0
	for _, u := range seen {
		var k int
		if _, err := fmt.Sscanf(u.Unit.Serial, "SN-%04d", &k); err == nil && k%2 == 1 && k < 2*n {
			odd++
		}
	}
	if odd != n {
		t.Errorf("%d of the %d units that existed throughout were listed (%d units listed)", odd, n, len(seen))
	}
}

// TestListBrief: a brief listing gives each unit's listing row, the same fields as its state.
func TestListBrief(t *testing.T) {
	st := openSeeded(t, 40, storetest.Options{InFlightEvery: 7, FailedEvery: 5, PerWorkOrder: 10})
	ctx := t.Context()
	if _, err := st.UpdateUnit(ctx, storetest.Serial("", 3), func(u *store.UnitState) error {
		u.ErrorMessage = "näh \"quoted\"\x00"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	full := listAll(t, st, store.UnitQuery{}, 13)
	brief := listAll(t, st, store.UnitQuery{Brief: true}, 13)
	if len(full) != 40 || len(brief) != 40 {
		t.Fatalf("%d units listed, %d brief; want 40", len(full), len(brief))
	}
	for i, f := range full {
		u, b := f.Unit, brief[i].Unit
		want := store.UnitState{Serial: u.Serial, WorkOrderID: u.WorkOrderID, Profile: u.Profile, CurrentStep: u.CurrentStep,
			Status: u.Status, ErrorCode: u.ErrorCode, ErrorMessage: u.ErrorMessage, EKCertSHA256: u.EKCertSHA256,
			FixtureSlot: u.FixtureSlot, Attempts: u.Attempts}
		got := b
		got.CreatedAt, got.UpdatedAt, got.Steps = time.Time{}, time.Time{}, nil
		if !reflect.DeepEqual(got, want) || !b.CreatedAt.Equal(u.CreatedAt) || !b.UpdatedAt.Equal(u.UpdatedAt) || len(b.Steps) != len(u.Steps) {
			t.Fatalf("brief %+v\nwant %+v (from %+v)", b, want, u)
		}
		for name, s := range u.Steps {
			if b.Steps[name].Attempts != s.Attempts {
				t.Errorf("%s step %s: %d attempts in the row, %d in the state", u.Serial, name, b.Steps[name].Attempts, s.Attempts)
			}
		}
		if u.FixtureSlot == "" || u.EKCertSHA256 == "" {
			t.Errorf("%s: seeded without its EK certificate or slot", u.Serial)
		}
	}
	// Filters and Keep apply to rows as to states.
	failed := listAll(t, st, store.UnitQuery{Brief: true, Statuses: []store.Status{store.StatusFailed},
		Keep: func(u *store.UnitState) bool { return u.ErrorCode != "" }}, 5)
	if len(failed) != 6 {
		t.Errorf("%d failed units listed brief, want 6", len(failed))
	}
}
