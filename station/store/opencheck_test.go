package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

// TestCheckInBackground opens a sound store and a damaged one with the page check in the
// background: Open returns for both; the sound one's check ends without error, the damaged
// one's latches the store corrupt (OnCorrupt called, writes refused) with STORE_CORRUPT.
func TestCheckInBackground(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, damaged := range []bool{false, true} {
		path := filepath.Join(t.TempDir(), "station.db")
		root, pageSize := populated(t, path)
		if damaged {
			overwrite(t, path, int64(root)*int64(pageSize)+pageFlagsOffset, []byte{0, 0})
		}
		called := make(chan error, 1)
		s, err := Open(path, Options{CheckInBackground: true, OnCorrupt: func(err error) { called <- err }})
		if err != nil {
			t.Fatalf("damaged %v: Open: %v", damaged, err)
		}
		err = s.CheckDone(ctx)
		if !damaged {
			if err != nil || s.Corrupt() != nil {
				t.Errorf("sound store: check %v, corrupt %v", err, s.Corrupt())
			}
			s.Close()
			continue
		}
		var ce *CorruptError
		if !errors.As(err, &ce) || !errors.Is(s.Corrupt(), ErrCorrupt) {
			t.Fatalf("damaged store: check %v, corrupt %v; want a *CorruptError", err, s.Corrupt())
		}
		select {
		case <-called:
		case <-ctx.Done():
			t.Fatal("OnCorrupt was not called")
		}
		if _, err := s.UpdateUnit(ctx, "SN-NEW", func(*UnitState) error { return nil }); !errors.Is(err, ErrCorrupt) {
			t.Errorf("write after the check found damage: %v", err)
		}
		markTampered(path)
		s.Close()
	}
}
