package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// FuzzOpen opens arbitrary bytes as a store file (seeded with a real store, whole and cut), then
// reads and writes it: Open fails with an error carrying one of the store's stable codes or
// gives a store of the station asked for, on which every read and write works or fails with
// such an error. Nothing panics, faults or hangs, in the caller's goroutine or in bbolt's commit
// (testdata/fuzz/FuzzOpen holds a file that made bbolt's check count to 2^32, one whose inline
// bucket page, a branch pointing at itself, sent bbolt's cursor down forever until the process
// ran out of memory, one whose inline page's id made a commit panic, and one without a meta
// bucket; the tests below hold the freelist and record damage FuzzOpen found once it wrote).
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
		// One write a transaction, and no fsync: the file is thrown away.
		s, err := Open(path, Options{StationID: testStation, Clock: newStepClock(), MaxBatchSize: 1, noSync: true})
		if err != nil {
			wantStableError(t, "Open", err, ErrSchemaTooNew, ErrStationMismatch)
			wantUnlocked(t, path, err)
			return
		}
		defer func() {
			if err := s.Close(); err != nil {
				wantStableError(t, "Close", err)
			}
		}()
		if s.StationID() != testStation {
			t.Fatalf("store of station %q opened for %q", s.StationID(), testStation)
		}
		// Open's page check replaces bbolt's: a file it accepts must pass bbolt's too.
		if err := s.db.View(func(tx *bolt.Tx) error {
			for err := range tx.Check() {
				t.Fatalf("Open accepted a file bbolt's Tx.Check refuses: %v", err)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		_, err = s.Unit(ctx, "SN-0001")
		wantStableError(t, "Unit", err, ErrNotFound)
		_, err = s.VerifyChain(ctx)
		wantStableError(t, "VerifyChain", err)
		_, _, err = s.OutboxAfter(ctx, 0, 10)
		wantStableError(t, "OutboxAfter", err)
		// Writes commit on bbolt's batch goroutine, where a panic cannot be recovered: Open
		// must have refused every file on which a commit would panic.
		_, err = s.UpdateUnit(ctx, "SN-0001", func(u *UnitState) error {
			u.CurrentStep = "fuzz"
			return nil
		})
		// A record that decodes but says what the store never writes (a unit without a status,
		// closed) is refused like a caller's: the chain's digests, not the write, catch it.
		refusals := []error{ErrNotAuthorized, ErrInvalidArgument, ErrUnitClosed, ErrNotFound}
		wantStableError(t, "UpdateUnit", err, refusals...)
		_, err = s.UpdateUnit(ctx, "SN-0003", func(u *UnitState) error {
			u.Status = StatusRunning
			return nil
		})
		wantStableError(t, "UpdateUnit (new unit)", err, refusals...)
		_, err = s.AppendEvent(ctx, "SN-0002", "note", "fuzz", nil)
		wantStableError(t, "AppendEvent", err, refusals...)
	})
}

// wantOpenCorrupt fails t unless opening the store file at path is refused with a
// *CorruptError whose message starts with CodeStoreCorrupt and contains want.
func wantOpenCorrupt(t *testing.T, path, want string) {
	t.Helper()
	_, err := Open(path, Options{StationID: testStation, Clock: newStepClock()})
	var ce *CorruptError
	if !errors.Is(err, ErrCorrupt) || !errors.As(err, &ce) || !strings.HasPrefix(ce.Error(), CodeStoreCorrupt+": ") || !strings.Contains(ce.Error(), want) {
		t.Fatalf("Open = %v, want a %s error naming %q", err, CodeStoreCorrupt, want)
	}
}

// wantUnlocked fails t unless the file at path can be locked again: a refused store file must
// not stay open (a panic inside bolt.Open left its descriptor and lock behind).
func wantUnlocked(t *testing.T, path string, openErr error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatalf("refused store file still locked: %v (%v)", err, openErr)
	}
}

// wantStableError fails t unless err is nil, a damaged store (ErrCorrupt, its message starting
// with CodeStoreCorrupt), a broken audit chain (ErrChainBroken, CodeAuditChainBroken), or one of
// the sentinel errors also allowed.
func wantStableError(t *testing.T, op string, err error, also ...error) {
	t.Helper()
	var ce *CorruptError
	var cb *ChainBrokenError
	switch {
	case err == nil:
	case errors.As(err, &ce):
		if !errors.Is(err, ErrCorrupt) || !strings.HasPrefix(ce.Error(), CodeStoreCorrupt+": ") {
			t.Fatalf("%s: corrupt store error without its code: %v", op, err)
		}
	case errors.As(err, &cb):
		if !errors.Is(err, ErrChainBroken) || !strings.HasPrefix(cb.Error(), CodeAuditChainBroken+": ") {
			t.Fatalf("%s: broken chain error without its code: %v", op, err)
		}
	default:
		for _, e := range also {
			if errors.Is(err, e) {
				return
			}
		}
		t.Fatalf("%s: error without a stable code: %v", op, err)
	}
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
	wantOpenCorrupt(t, path, "claims 134217728 free pages")
}

// TestOpenRefusesFreelistBeyondPages: a freelist listing a page beyond the file's last (and
// passing bbolt's check, which never looks at the ids' range) is refused at Open. Before, the
// store opened and a later commit allocated that page and panicked on bbolt's batch goroutine,
// killing the process (found by FuzzOpen with writes).
func TestOpenRefusesFreelistBeyondPages(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	s := openAt(t, path)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const metaPgidOffset = pageHeaderSize + 40
	ps := uint64(binary.LittleEndian.Uint32(data[pageHeaderSize+8:]))
	for _, m := range []uint64{0, ps} { // the freelist page each meta page names
		off := binary.LittleEndian.Uint64(data[m+metaFreeOffset:]) * ps
		hwm := binary.LittleEndian.Uint64(data[m+metaPgidOffset:])
		n := uint64(binary.LittleEndian.Uint16(data[off+10:]))
		binary.LittleEndian.PutUint16(data[off+10:], uint16(n+1))
		binary.LittleEndian.PutUint64(data[off+pageHeaderSize+8*n:], hwm+10)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, Options{StationID: testStation, Clock: newStepClock()})
	if err == nil {
		// The old behaviour: the file opened; a few writes reach the bad page.
		defer s.Close()
		for i := range 8 {
			if _, err := s.AppendEvent(context.Background(), "SN-0001", "note", fmt.Sprint(i), nil); err != nil && !errors.Is(err, ErrNotFound) {
				t.Fatalf("write %d: %v", i, err)
			}
			if _, err := s.UpdateUnit(context.Background(), fmt.Sprintf("SN-%04d", i), func(u *UnitState) error { return nil }); err != nil {
				t.Fatalf("write %d: %v", i, err)
			}
		}
		t.Fatal("Open accepted a freelist listing a page beyond the file")
	}
	var ce *CorruptError
	if !errors.As(err, &ce) || !strings.HasPrefix(err.Error(), CodeStoreCorrupt+": ") || !strings.Contains(ce.Reason, "outside pages") {
		t.Fatalf("Open = %v, want a CorruptError naming the freelist's page", err)
	}
}

// TestOpenRefusesMetaWithoutFreelist: the valid meta page bbolt uses naming no freelist page is refused
// before bbolt opens the file, which would otherwise rebuild the freelist by walking pages
// nothing has checked yet on a goroutine of its own.
func TestOpenRefusesMetaWithoutFreelist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	s := openAt(t, path)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The meta page bbolt uses: the one with the higher transaction id.
	const txidOffset, checksumOffset = pageHeaderSize + 48, pageHeaderSize + 56
	ps := int(binary.LittleEndian.Uint32(data[pageHeaderSize+8:]))
	meta := data[:ps]
	if binary.LittleEndian.Uint64(data[ps+txidOffset:]) > binary.LittleEndian.Uint64(data[txidOffset:]) {
		meta = data[ps : 2*ps]
	}
	binary.LittleEndian.PutUint64(meta[metaFreeOffset:], ^uint64(0))
	h := fnv.New64a()
	h.Write(meta[pageHeaderSize:checksumOffset])
	binary.LittleEndian.PutUint64(meta[checksumOffset:], h.Sum64())
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	wantOpenCorrupt(t, path, "names no freelist page")
}

// TestUndecodableRecordIsCorrupt damages a unit's stored state so that it is no longer JSON
// (bbolt keeps no checksum of values: the file opens): reading it gives the store's
// CorruptError with its code instead of a bare decoding error, and the store then refuses
// every write and calls OnCorrupt once (found by FuzzOpen with writes).
func TestUndecodableRecordIsCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	s := openAt(t, path)
	mustUnit(t, s, "SN-0001", StatusRunning)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	state := []byte(`{"serial":"SN-0001"`)
	if !bytes.Contains(data, state) {
		t.Fatal("the unit's state is not in the file")
	}
	data = bytes.ReplaceAll(data, state, []byte(`{"serial":!SN-0001"`))
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	corrupt := make(chan error, 2)
	s, err = Open(path, Options{StationID: testStation, Clock: newStepClock(), OnCorrupt: func(err error) { corrupt <- err }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.Unit(context.Background(), "SN-0001")
	var ce *CorruptError
	if !errors.As(err, &ce) || !strings.HasPrefix(err.Error(), CodeStoreCorrupt+": ") || !strings.Contains(ce.Reason, "does not decode") {
		t.Fatalf("Unit = %v, want the CorruptError of a record that does not decode", err)
	}
	if _, err := s.AppendEvent(context.Background(), "SN-0002", "note", "x", nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a write after the damage was met = %v, want ErrCorrupt", err)
	}
	select {
	case err := <-corrupt:
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("OnCorrupt(%v)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("OnCorrupt was not called")
	}
}

// TestOpenIgnoresOlderMeta: the meta page bbolt does not use (the lower transaction id) may
// name a freelist page that a later transaction reused before a crash; such a file opens
// (stationd refused a store after a SIGKILL when every valid meta page was checked).
func TestOpenIgnoresOlderMeta(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	s := openAt(t, path)
	mustUnit(t, s, "SN-0001", StatusRunning)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const txidOffset, checksumOffset = pageHeaderSize + 48, pageHeaderSize + 56
	ps := int(binary.LittleEndian.Uint32(data[pageHeaderSize+8:]))
	older := data[:ps]
	if binary.LittleEndian.Uint64(data[txidOffset:]) > binary.LittleEndian.Uint64(data[ps+txidOffset:]) {
		older = data[ps : 2*ps]
	}
	binary.LittleEndian.PutUint64(older[metaFreeOffset:], 2) // page 2 is no freelist page
	h := fnv.New64a()
	h.Write(older[pageHeaderSize:checksumOffset])
	binary.LittleEndian.PutUint64(older[checksumOffset:], h.Sum64())
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, Options{StationID: testStation, Clock: newStepClock()})
	if err != nil {
		t.Fatalf("Open: %v, want the file opened on its newer meta page", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
