package store

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
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

// TestOpenHugeFreelistCount: a freelist page claiming 2^27 free pages in a small file is
// refused before bbolt reads it (bbolt allocated 1 GiB for it; FuzzOpen stalled on such files).
func TestOpenHugeFreelistCount(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	s := openAt(t, path)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ps := binary.LittleEndian.Uint32(data[pageHeaderSize+8:])
	for _, m := range []uint64{0, uint64(ps)} { // the freelist page each meta page names
		off := binary.LittleEndian.Uint64(data[m+metaFreeOffset:]) * uint64(ps)
		binary.LittleEndian.PutUint16(data[off+10:], 0xFFFF)
		binary.LittleEndian.PutUint64(data[off+pageHeaderSize:], 1<<27)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Open(path, Options{StationID: testStation, Clock: newStepClock()})
	var ce *CorruptError
	if !errors.As(err, &ce) || !strings.Contains(ce.Reason, "claims 134217728 free pages") {
		t.Fatalf("Open = %v, want a CorruptError naming the freelist count", err)
	}
}
