package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// populated writes a store with enough units that the units bucket lives on pages of its
// own, closes it and returns the id of the units bucket's root page and the page size.
func populated(t *testing.T, path string) (root uint64, pageSize int) {
	t.Helper()
	s := openAt(t, path)
	ctx := context.Background()
	for i := range 200 {
		serial := fmt.Sprintf("SN-%04d", i)
		mustUnit(t, s, serial, StatusRunning)
		if _, err := s.AppendEvent(ctx, serial, "note", strings.Repeat("x", 200), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	pageSize = db.Info().PageSize
	if err := db.View(func(tx *bolt.Tx) error {
		root = uint64(tx.Bucket(bUnitStates).Root())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if root < 2 {
		t.Fatalf("unit_states bucket is inline (root %d)", root)
	}
	return root, pageSize
}

// overwrite writes data at off in the file at path (a store open elsewhere sees it through
// its shared mapping).
func overwrite(t *testing.T, path string, off int64, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
}

// pageFlagsOffset is where a bbolt page header keeps its 2-byte flags (after the 8-byte id).
const pageFlagsOffset = 8

// TestOpenRefusesCorruptStore damages bytes of a real store file and reopens it: Open fails
// with a *CorruptError carrying STORE_CORRUPT instead of panicking (now or at the first read).
func TestOpenRefusesCorruptStore(t *testing.T) {
	for _, tc := range []struct {
		name    string
		corrupt func(t *testing.T, path string, root uint64, pageSize int)
	}{
		{"units page of an unknown type", func(t *testing.T, path string, root uint64, pageSize int) {
			overwrite(t, path, int64(root)*int64(pageSize)+pageFlagsOffset, []byte{0, 0})
		}},
		{"units page zeroed", func(t *testing.T, path string, root uint64, pageSize int) {
			overwrite(t, path, int64(root)*int64(pageSize), make([]byte, pageSize))
		}},
		{"file truncated", func(t *testing.T, path string, _ uint64, pageSize int) {
			if err := os.Truncate(path, 4*int64(pageSize)); err != nil {
				t.Fatal(err)
			}
		}},
		{"both meta pages damaged", func(t *testing.T, path string, _ uint64, pageSize int) {
			for _, page := range []int64{0, 1} {
				overwrite(t, path, page*int64(pageSize)+32, []byte("garbage!"))
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "station.db")
			root, pageSize := populated(t, path)
			tc.corrupt(t, path, root, pageSize)
			var s *Store
			err := func() (err error) {
				defer func() {
					if p := recover(); p != nil {
						err = fmt.Errorf("panic: %v", p)
					}
				}()
				s, err = Open(path, Options{StationID: testStation})
				if err != nil {
					return err
				}
				defer s.Close()
				_, err = s.Unit(context.Background(), "SN-0100")
				return err
			}()
			var ce *CorruptError
			if !errors.Is(err, ErrCorrupt) || !errors.As(err, &ce) || !strings.HasPrefix(err.Error(), CodeStoreCorrupt+": ") {
				t.Fatalf("Open and read of a corrupt store: %v, want a %s error", err, CodeStoreCorrupt)
			}
			if s != nil {
				t.Fatalf("Open returned a store for a corrupt file")
			}
		})
	}
}

// TestCorruptPageAtRunTime damages a page under an open store: the read that meets it fails
// with STORE_CORRUPT instead of panicking, OnCorrupt is told, and every later write is refused.
func TestCorruptPageAtRunTime(t *testing.T) {
	path := filepath.Join(t.TempDir(), "station.db")
	root, pageSize := populated(t, path)
	told := make(chan error, 1)
	s, err := Open(path, Options{StationID: testStation, OnCorrupt: func(err error) { told <- err }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if _, err := s.Unit(ctx, "SN-0100"); err != nil {
		t.Fatalf("reading before the damage: %v", err)
	}
	overwrite(t, path, int64(root)*int64(pageSize)+pageFlagsOffset, []byte{0, 0})

	_, err = s.UnitEvents(ctx, "SN-0101", 0, 10)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read over the damaged page: %v, want ErrCorrupt", err)
	}
	select {
	case got := <-told:
		if !errors.Is(got, ErrCorrupt) {
			t.Errorf("OnCorrupt got %v", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("OnCorrupt was not called")
	}
	if err := s.Corrupt(); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Corrupt() = %v", err)
	}
	// A write that does not even touch the damaged page is refused: nothing more is recorded
	// or issued on a damaged file.
	if _, err := s.CreateWorkOrder(ctx, WorkOrder{ID: "WO-after", Profile: "default", Serials: []string{"SN-9999"}}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("write after the damage: %v, want ErrCorrupt", err)
	}
}

// TestTruncatedFileAtRunTime cuts the store file under an open store (a disk or a copy gone
// wrong): reading a page that is no longer backed by the file faults, and the fault becomes
// STORE_CORRUPT instead of killing the process.
func TestTruncatedFileAtRunTime(t *testing.T) {
	path := filepath.Join(t.TempDir(), "station.db")
	populated(t, path)
	s, err := Open(path, Options{StationID: testStation})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := os.Truncate(path, 4096*4); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UnitEvents(context.Background(), "SN-0150", 0, 10); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read of a page past the end of the file: %v, want ErrCorrupt", err)
	}
}

// TestOpenRefusesUndecodableStateWhileIndexing: a file without the unit index whose unit state
// does not decode is refused as corrupt when Open builds the index (found by FuzzOpen).
func TestOpenRefusesUndecodableStateWhileIndexing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	s := openAt(t, path)
	mustUnit(t, s, "SN-0001", StatusRunning)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bUnitIndex); err != nil {
			return err
		}
		return tx.Bucket(bUnitStates).Put([]byte("SN-0001"), []byte(`{"serial"`+"\x00"+`:1}`))
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	wantOpenCorrupt(t, path, `"SN-0001"`)
}
