package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzOpen opens arbitrary bytes as a store file (seeded with a real store, whole and cut):
// Open fails with an error or gives a store whose station id is the one asked for and on which
// reads and a write either work or fail with an error. Nothing panics.
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
		if _, err := s.Unit(ctx, "SN-0001"); err != nil && !errors.Is(err, ErrNotFound) {
			t.Logf("reading a unit: %v", err)
		}
		_, _ = s.VerifyChain(ctx)
		_, _, _ = s.OutboxAfter(ctx, 0, 10)
		_, _ = s.UpdateUnit(ctx, "SN-0003", func(u *UnitState) error {
			u.Status, u.Profile = StatusRunning, "default"
			return nil
		})
	})
}
