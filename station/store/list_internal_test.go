package store

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// inFlightByState returns the serials whose stored state is pending or running, reading every
// unit (what the index saves the station from doing).
func inFlightByState(t *testing.T, s *Store) []string {
	t.Helper()
	var out []string
	err := s.view(t.Context(), func(tx *bolt.Tx) error {
		return tx.Bucket(bUnitStates).ForEach(func(k, v []byte) error {
			u, err := s.decodeUnit(string(k), v)
			if err == nil && slices.Contains(InFlightStatuses, u.Status) {
				out = append(out, u.Serial)
			}
			return err
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func inFlightSerials(t *testing.T, s *Store) []string {
	t.Helper()
	units, err := s.InFlight(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, u := range units {
		out = append(out, u.Serial)
	}
	return out
}

// TestInFlightIndexAfterCrash moves units through their statuses from several goroutines while
// taking snapshots of the file as a crash would leave it (bbolt commits whole transactions: a
// read transaction's copy is the file after some commit). Every snapshot opens, verifies, and
// its in-flight index names exactly the units whose state is in flight.
func TestInFlightIndexAfterCrash(t *testing.T) {
	s, _ := openTemp(t)
	ctx := t.Context()
	dir := t.TempDir()
	var snaps []string
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 12 {
				serial := fmt.Sprintf("SN-%d-%02d", w, i)
				mustUnit(t, s, serial, StatusPending)
				ref, err := s.BeginStep(ctx, serial, "identify", []byte(`{}`))
				if err != nil {
					t.Error(err)
					return
				}
				if i%3 == 0 {
					continue // stays running: the station stopped here
				}
				code := map[bool]string{true: "CA_REJECTED", false: ""}[i%3 == 1]
				if err := s.EndStep(ctx, ref, []byte(`{}`), code); err != nil {
					t.Error(err)
					return
				}
				final := map[bool]Status{true: StatusFailed, false: StatusDone}[code != ""]
				if _, err := s.UpdateUnit(ctx, serial, func(u *UnitState) error { u.Status, u.ErrorCode = final, code; return nil }); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for i := range 6 {
		path := filepath.Join(dir, fmt.Sprintf("crash-%d.db", i))
		if err := s.db.View(func(tx *bolt.Tx) error { return tx.CopyFile(path, 0o600) }); err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, path)
	}
	wg.Wait()
	for _, path := range snaps {
		c := openAt(t, path) // verifies the chain at the end of the test
		if got, want := inFlightSerials(t, c), inFlightByState(t, c); !slices.Equal(got, want) {
			t.Errorf("%s: in-flight index %v, states %v", filepath.Base(path), got, want)
		}
	}
	got, want := inFlightSerials(t, s), inFlightByState(t, s)
	if !slices.Equal(got, want) || len(want) != 4*4 {
		t.Errorf("in-flight index %v, states %v (want 16 units)", got, want)
	}
}

// TestUnitIndexBuiltForOlderFiles writes units as a store without the unit index did (plain
// JSON states, without a listing row), then
// opens the file: Open builds the index, audited, so listings and InFlight see every unit and
// the chain still verifies.
func TestUnitIndexBuiltForOlderFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "station.db")
	s, err := Open(path, Options{StationID: testStation})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	old := &Store{stationID: testStation, clock: newStepClock()}
	err = db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bUnitIndex); err != nil { // still empty
			return err
		}
		w := old.newWtx(tx, PrincipalStation)
		for i, st := range []Status{StatusDone, StatusRunning, StatusFailed, StatusPending} {
			u := UnitState{Serial: fmt.Sprintf("SN-%d", i), WorkOrderID: "WO-1", Status: st}
			data, _ := json.Marshal(u)
			if err := w.tx.Bucket(bUnitStates).Put([]byte(u.Serial), data); err != nil {
				return err
			}
			if err := w.audit(AuditEvent{Serial: u.Serial, Action: EventUnitUpdated}); err != nil {
				return err
			}
		}
		return w.flush()
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	s = openAt(t, path)
	if got := inFlightSerials(t, s); !slices.Equal(got, []string{"SN-1", "SN-3"}) {
		t.Errorf("InFlight after building the index: %v", got)
	}
	for _, brief := range []bool{false, true} {
		units, _, err := s.ListUnits(t.Context(), UnitQuery{WorkOrder: "WO-1", Brief: brief})
		if err != nil || len(units) != 4 || units[2].Unit.Status != StatusFailed {
			t.Errorf("work order WO-1 after building the index (brief %v): %v, %v", brief, units, err)
		}
	}
	if a := lastAudit(t, s); a.Action != AuditActionWrite || a.Details["unit_index"] != "built" || a.Details["units"] != "4" {
		t.Errorf("last audit record %+v, want the index's build", a)
	}
}

// TestOnlyTheUnitIndexRemovesKeys: unindex refuses every other bucket.
func TestOnlyTheUnitIndexRemovesKeys(t *testing.T) {
	s, _ := openTemp(t)
	mustUnit(t, s, "SN-1", StatusPending)
	err := s.db.Update(func(tx *bolt.Tx) error {
		w := s.newWtx(tx, PrincipalStation)
		return w.tx.Bucket(bUnitStates).unindex([]byte("SN-1"))
	})
	if err == nil {
		t.Fatal("unindex removed a unit's state")
	}
	if _, err := s.Unit(context.Background(), "SN-1"); err != nil {
		t.Fatalf("the unit is gone: %v", err)
	}
}
