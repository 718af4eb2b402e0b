package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/devid-station/devid/station/journal"
	"github.com/devid-station/devid/station/store"
	bolterrors "go.etcd.io/bbolt/errors"
)

// TestReworkListingRow: a rework starts a new provisioning, so the unit's EK certificate digest
// and fixture slot, which its previous provisioning's EK verification recorded, are cleared
// when the rework reopens the unit. A rework whose verify_ek (or its own cleanup) then fails
// leaves a unit whose state, and listing row, name no EK certificate: not the superseded one as
// if it were still the accepted one. One that passes has the new one recorded again, as the
// workflow's authorize step does. Each case runs through the store's API on a bbolt file, then
// again after the file is closed and opened again, and the chain verifies.
func TestReworkListingRow(t *testing.T) {
	const (
		oldSHA, newSHA   = "aaaa000000000000000000000000000000000000000000000000000000000000", "bbbb000000000000000000000000000000000000000000000000000000000000"
		oldSlot, newSlot = "slot-1", "slot-7"
	)
	type want struct{ sha, slot string }
	cases := []struct {
		name string
		// closed is where the first provisioning left the unit: done or hold (then DecideHold
		// authorizes the rework) or failed (a failed unit reopens without a rework).
		closed store.Status
		// reopen is UpdateUnit's fn when the unit is opened again.
		reopen func(*store.UnitState)
		// then is what the new provisioning does after the reopening.
		then func(t *testing.T, st *store.Store, serial string)
		want want
	}{
		{name: "rework, verify_ek fails", closed: store.StatusDone,
			then: failStep(journal.StepVerifyEK, "EK_UNTRUSTED"), want: want{}},
		{name: "rework, its cleanup fails before verify_ek", closed: store.StatusDone,
			then: failStep(journal.StepRework, "INSTALL_FAILED"), want: want{}},
		{name: "rework in flight, verify_ek not ended", closed: store.StatusDone,
			then: func(t *testing.T, st *store.Store, serial string) {
				begin(t, st, serial, journal.StepVerifyEK)
			}, want: want{}},
		{name: "hold decided rework, verify_ek fails", closed: store.StatusHold,
			then: failStep(journal.StepVerifyEK, "EK_UNTRUSTED"), want: want{}},
		{name: "rework, verify_ek passes and authorize records the new EK", closed: store.StatusDone,
			then: func(t *testing.T, st *store.Store, serial string) {
				passStep(t, st, serial, journal.StepVerifyEK)
				if _, err := st.UpdateUnit(t.Context(), serial, func(u *store.UnitState) error {
					u.EKCertSHA256, u.FixtureSlot = newSHA, newSlot
					return nil
				}); err != nil {
					t.Fatal(err)
				}
			}, want: want{newSHA, newSlot}},
		{name: "rework, the reopening itself records them", closed: store.StatusDone,
			reopen: func(u *store.UnitState) { u.EKCertSHA256, u.FixtureSlot = newSHA, newSlot },
			then:   failStep(journal.StepVerifyEK, "EK_UNTRUSTED"), want: want{newSHA, newSlot}},
		{name: "rework, the reopening records the slot only", closed: store.StatusDone,
			reopen: func(u *store.UnitState) { u.FixtureSlot = newSlot },
			then:   failStep(journal.StepVerifyEK, "EK_UNTRUSTED"), want: want{"", newSlot}},
		{name: "failed unit reopened without a rework keeps its EK", closed: store.StatusFailed,
			then: failStep(journal.StepVerifyEK, "EK_UNTRUSTED"), want: want{oldSHA, oldSlot}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := t.Context()
			path := filepath.Join(t.TempDir(), "station.db")
			st := openStore(t, path)
			const serial = "SN-RW-1"
			// The first provisioning: EK verified, authorized (EK certificate and slot recorded),
			// then closed.
			if _, err := st.UpdateUnit(ctx, serial, func(u *store.UnitState) error {
				u.Status, u.WorkOrderID, u.Profile = store.StatusRunning, "WO-1", "default"
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			passStep(t, st, serial, journal.StepVerifyEK)
			if _, err := st.UpdateUnit(ctx, serial, func(u *store.UnitState) error {
				u.EKCertSHA256, u.FixtureSlot = oldSHA, oldSlot
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if _, err := st.UpdateUnit(ctx, serial, func(u *store.UnitState) error {
				u.Status = c.closed
				if c.closed != store.StatusDone {
					u.ErrorCode = "ACTIVATION_FAILED"
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			check(t, st, serial, want{oldSHA, oldSlot}, "before the rework")
			switch c.closed {
			case store.StatusDone:
				if _, err := st.AuthorizeRework(ctx, serial, "admin", "new CA"); err != nil {
					t.Fatal(err)
				}
			case store.StatusHold:
				if _, err := st.DecideHold(ctx, serial, "qa", "rework", "TPM replaced"); err != nil {
					t.Fatal(err)
				}
			}
			// The rework authorization alone changes nothing: the unit is what it was until
			// it is reopened.
			check(t, st, serial, want{oldSHA, oldSlot}, "authorized, not reopened")
			if _, err := st.UpdateUnit(ctx, serial, func(u *store.UnitState) error {
				u.Status, u.ErrorCode, u.ErrorMessage = store.StatusRunning, "", ""
				if c.reopen != nil {
					c.reopen(u)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			c.then(t, st, serial)
			check(t, st, serial, c.want, "")
			if _, err := st.VerifyChain(ctx); err != nil {
				t.Fatalf("store does not verify before it is closed: %v", err)
			}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			st = openStore(t, path)
			check(t, st, serial, c.want, "after the store was opened again")
		})
	}
}

// openStore opens the store file at path (creating it) and, at the end of the test, verifies its
// chain (unless the test closed it) and closes it.
func openStore(t *testing.T, path string) *store.Store {
	t.Helper()
	st, err := store.Open(path, store.Options{StationID: "station-rework"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			if _, err := st.VerifyChain(context.Background()); err != nil && !errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
				t.Errorf("store does not verify at the end of the test: %v", err)
			}
		}
		st.Close()
	})
	return st
}

func begin(t *testing.T, st *store.Store, serial, step string) store.StepRef {
	t.Helper()
	ref, err := st.BeginStep(t.Context(), serial, step, []byte(`{"step":"`+step+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

func passStep(t *testing.T, st *store.Store, serial, step string) {
	t.Helper()
	if err := st.EndStep(t.Context(), begin(t, st, serial, step), []byte(`{}`), ""); err != nil {
		t.Fatal(err)
	}
}

// failStep is a new provisioning's step that fails with code, leaving the unit failed there,
// as the workflow's finishFailed does.
func failStep(step, code string) func(*testing.T, *store.Store, string) {
	return func(t *testing.T, st *store.Store, serial string) {
		t.Helper()
		if err := st.EndStep(t.Context(), begin(t, st, serial, step), nil, code); err != nil {
			t.Fatal(err)
		}
		if _, err := st.UpdateUnit(t.Context(), serial, func(u *store.UnitState) error {
			u.Status, u.ErrorCode, u.ErrorMessage, u.CurrentStep = store.StatusFailed, code, "failed", step
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// check compares the unit's EK certificate digest and fixture slot with w in its state, in a
// listing of full states and in a brief listing (its listing row).
func check(t *testing.T, st *store.Store, serial string, w struct{ sha, slot string }, when string) {
	t.Helper()
	u, err := st.Unit(t.Context(), serial)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]store.UnitState{"state": u}
	for _, brief := range []bool{false, true} {
		l, _, err := st.ListUnits(t.Context(), store.UnitQuery{Brief: brief, WorkOrder: "WO-1"})
		if err != nil || len(l) != 1 {
			t.Fatalf("listing: %v, %v", l, err)
		}
		name := "listing"
		if brief {
			name = "listing row"
		}
		got[name] = l[0].Unit
	}
	for name, u := range got {
		if u.EKCertSHA256 != w.sha || u.FixtureSlot != w.slot {
			t.Errorf("%s %s: EK certificate %q, slot %q; want %q, %q", name, when, u.EKCertSHA256, u.FixtureSlot, w.sha, w.slot)
		}
	}
}
