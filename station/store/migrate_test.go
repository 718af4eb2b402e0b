package store

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// schema3File copies testdata/schema3.db, a file the schema 3 code wrote (a bucket per unit),
// into a new folder and returns its path. Station testStation; work order WO-1; unit SN1 done
// (EK bound, step enroll failed once then ended, step install begun and ended by Advance, an
// IDevID certificate with its chain, a unit.done event) and unit SN2 with step enroll's
// intent open.
func schema3File(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "schema3.db"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "station.db")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// oldUnit is what a schema 3 file holds for a unit: its state, step records and events, read
// from its bucket.
type oldUnit struct {
	state  UnitState
	steps  []StepRecord
	events []Event
}

func readOldUnits(t *testing.T, path string) map[string]oldUnit {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out := map[string]oldUnit{}
	err = db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bUnits).ForEachBucket(func(serial []byte) error {
			ub := tx.Bucket(bUnits).Bucket(serial)
			var u oldUnit
			if err := json.Unmarshal(ub.Get(kState), &u.state); err != nil {
				return err
			}
			steps := ub.Bucket(bSteps)
			if err := steps.ForEachBucket(func(step []byte) error {
				return steps.Bucket(step).ForEach(func(_, v []byte) error {
					var rec StepRecord
					err := json.Unmarshal(v, &rec)
					u.steps = append(u.steps, rec)
					return err
				})
			}); err != nil {
				return err
			}
			if err := ub.Bucket(bEvents).ForEach(func(_, v []byte) error {
				var ev Event
				err := json.Unmarshal(v, &ev)
				u.events = append(u.events, ev)
				return err
			}); err != nil {
				return err
			}
			out[string(serial)] = u
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSchema3IsMigrated opens a file the schema 3 code wrote: Open copies its units into the
// flat layout as audited writes, keeps the old buckets (still covered by the chain), and every
// read gives what the old file held; the units go on from where they were.
func TestSchema3IsMigrated(t *testing.T) {
	ctx := context.Background()
	path := schema3File(t)
	old := readOldUnits(t, path)
	if len(old) != 2 || len(old["SN1"].steps) != 3 || len(old["SN1"].events) < 8 {
		t.Fatalf("fixture: %d units, SN1 has %d step records and %d events", len(old), len(old["SN1"].steps), len(old["SN1"].events))
	}
	s := openAt(t, path)
	rep, err := s.Verify(ctx, VerifyOptions{})
	if err != nil {
		t.Fatalf("migrated store: %v", err)
	}
	if a := lastAudit(t, s); a.Details["schema_version"] != "4" {
		t.Errorf("last record %+v, want the schema change", a)
	}
	recs, err := s.AuditAfter(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	copied := 0
	for _, a := range recs {
		if a.Details["schema_4"] == "units copied" {
			for _, d := range a.Writes {
				if d.Had {
					t.Errorf("the migration overwrote %s %q", d.Bucket, d.Key)
				}
				copied++
			}
		}
	}
	// Two states, four step records (SN2's open one included) and two event logs.
	if want := 2 + 4 + 2; copied != want {
		t.Errorf("the migration's records carry %d writes, want %d", copied, want)
	}

	for serial, o := range old {
		u, err := s.Unit(ctx, serial)
		if err != nil || !reflect.DeepEqual(u, o.state) {
			t.Errorf("Unit(%s) = %+v, %v; want %+v", serial, u, err, o.state)
		}
		steps, err := s.StepRecords(ctx, serial)
		if err != nil || len(steps) != len(o.steps) {
			t.Fatalf("StepRecords(%s) = %v, %v; want %d", serial, steps, err, len(o.steps))
		}
		for _, want := range o.steps {
			found := false
			for _, got := range steps {
				found = found || reflect.DeepEqual(got, want)
			}
			if !found {
				t.Errorf("StepRecords(%s) lacks %+v", serial, want)
			}
		}
		events, err := s.UnitEvents(ctx, serial, 0, 0)
		if err != nil || !reflect.DeepEqual(events, o.events) {
			t.Errorf("UnitEvents(%s) = %+v, %v; want %+v", serial, events, err, o.events)
		}
		checkUnitActions(t, s, serial)
		listed, _, err := s.ListUnits(ctx, UnitQuery{WorkOrder: o.state.WorkOrderID, Brief: true})
		i := slices.IndexFunc(listed, func(l ListedUnit) bool { return l.Unit.Serial == serial })
		if err != nil || i < 0 || listed[i].Unit.Status != o.state.Status || !listed[i].Unit.UpdatedAt.Equal(o.state.UpdatedAt) {
			t.Errorf("brief listing of %s: %+v, %v", serial, listed, err)
		}
	}
	sha := old["SN1"].state.Certificates[0].SHA256
	bySHA, err := s.CertificateBySHA256(ctx, sha)
	if err != nil || bySHA.Serial != "SN1" || len(bySHA.Chain) != 1 {
		t.Fatalf("CertificateBySHA256: %+v, %v", bySHA, err)
	}
	byIss, err := s.CertificateByIssuerSerial(ctx, mustParse(t, bySHA.DER).RawIssuer, mustParse(t, bySHA.DER).SerialNumber)
	if err != nil || !reflect.DeepEqual(byIss, bySHA) {
		t.Fatalf("CertificateByIssuerSerial: %+v, %v", byIss, err)
	}
	if open, err := s.OpenIntents(ctx, "SN2"); err != nil || len(open) != 1 || open[0].Step != "enroll" {
		t.Fatalf("OpenIntents(SN2) = %+v, %v", open, err)
	}
	if got, err := s.InFlight(ctx); err != nil || len(got) != 1 || got[0].Serial != "SN2" {
		t.Fatalf("InFlight = %+v, %v", got, err)
	}

	// The units go on where they were: attempts and unit sequences continue.
	if _, err := s.AuthorizeRework(ctx, "SN1", "qa:CN=q", "retest"); err != nil {
		t.Fatal(err)
	}
	mustUnit(t, s, "SN1", StatusRunning)
	ref, err := s.BeginStep(ctx, "SN1", "enroll", []byte("intent-4"))
	if err != nil || ref.Attempt != 3 {
		t.Fatalf("BeginStep after the migration: %+v, %v; want attempt 3", ref, err)
	}
	events, err := s.UnitEvents(ctx, "SN1", uint64(len(old["SN1"].events)), 0)
	if err != nil || len(events) == 0 || events[0].UnitSeq != uint64(len(old["SN1"].events))+1 {
		t.Fatalf("events after the migration: %+v, %v", events, err)
	}
	if _, err := s.Verify(ctx, VerifyOptions{}); err != nil {
		t.Fatalf("after more writes: %v", err)
	}
	head := lastAudit(t, s).Seq
	s.Close()

	// Opening it again migrates nothing.
	s = openAt(t, path)
	if got := lastAudit(t, s).Seq; got != head {
		t.Errorf("reopening appended records: head %d, was %d", got, head)
	}
	s.Close()

	// The old buckets stay, read by nothing, and the chain still covers them.
	markTampered(path)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(flipByte("units/SN1", kState)); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s = openAt(t, path)
	if _, err := s.Verify(ctx, VerifyOptions{}); err == nil || !strings.Contains(err.Error(), `bucket units/SN1 key "state": stored value differs`) {
		t.Fatalf("Verify after editing the old bucket: %v", err)
	}
	if rep.Values == 0 {
		t.Error("no values checked")
	}
}

// TestSchema3MigratesInChunks: Open copies the units a chunk a transaction, each chunk with its
// audit record, and goes on after an open that stopped half-way (here: a first chunk copied by
// hand, then Open).
func TestSchema3MigratesInChunks(t *testing.T) {
	defer func(n int) { migrateChunk = n }(migrateChunk)
	migrateChunk = 1
	path := schema3File(t)
	old := readOldUnits(t, path)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	half := &Store{stationID: testStation, clock: newStepClock()}
	err = db.Update(func(tx *bolt.Tx) error {
		last, n, done, err := half.newWtx(tx, PrincipalStation).migrateUnits(nil, 1)
		if err == nil && (string(last) != "SN1" || n != 1 || done) {
			err = fmt.Errorf("first chunk: last %q, %d copied, done %v", last, n, done)
		}
		return err
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	s := openAt(t, path)
	if _, err := s.Verify(context.Background(), VerifyOptions{}); err != nil {
		t.Fatalf("migrated store: %v", err)
	}
	recs, err := s.AuditAfter(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var chunks []string
	for _, a := range recs {
		if a.Details["schema_4"] != "" {
			chunks = append(chunks, a.Details["units"])
		}
	}
	if !slices.Equal(chunks, []string{"1", "1"}) {
		t.Errorf("chunks of the migration copied %v units, want [1 1]", chunks)
	}
	for serial, o := range old {
		if u, err := s.Unit(context.Background(), serial); err != nil || !reflect.DeepEqual(u, o.state) {
			t.Errorf("Unit(%s) = %+v, %v; want %+v", serial, u, err, o.state)
		}
	}
}
