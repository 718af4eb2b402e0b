package store

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// FuzzOpen opens arbitrary bytes as a store file (seeded with a real store, whole and cut):
// Open fails with an error or gives a store whose station id is the one asked for and on which
// reads work or fail with an error. Nothing panics, faults or hangs (testdata/fuzz/FuzzOpen
// holds files that made bbolt's check fault or count to 2^32 before checkPages).
func FuzzOpen(f *testing.F) {
	ctx := context.Background()
	seedPath := filepath.Join(f.TempDir(), "seed.db")
	s, err := Open(seedPath, Options{StationID: testStation, Clock: newStepClock()})
	if err != nil {
		f.Fatal(err)
	}
	for _, serial := range []string{"SN-0001", "SN-0002"} {
		if _, err := s.UpdateUnit(ctx, serial, func(u *UnitState) error {
			u.Status, u.Profile = StatusRunning, "default"
			return nil
		}); err != nil {
			f.Fatal(err)
		}
		if _, err := s.AppendEvent(ctx, serial, "note", "seed", map[string]string{"k": "v"}); err != nil {
			f.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		f.Fatal(err)
	}
	seed, err := os.ReadFile(seedPath)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add(seed[:len(seed)/2])
	f.Add(seed[:4096])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "store.db")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(path, Options{StationID: testStation, Clock: newStepClock()})
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		defer s.Close()
		if s.StationID() != testStation {
			t.Fatalf("store of station %q opened for %q", s.StationID(), testStation)
		}
		// Reads of a store that opened work or fail with an error. (Writes are left out: a
		// damaged store that passes bbolt's check can still fault in bbolt's commit.)
		_, _ = s.Unit(ctx, "SN-0001")
		_, _ = s.VerifyChain(ctx)
		_, _, _ = s.OutboxAfter(ctx, 0, 10)
	})
}
