package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// storeFile is a store file's bytes, with what the tests damage in it.
type storeFile struct {
	data     []byte
	pageSize int
	freelist int      // offset of the freelist page
	free     []uint64 // the ids it lists
	root     uint64   // a page of the unit_states bucket's tree
}

func readStoreFile(t *testing.T, path string, root uint64, pageSize int) *storeFile {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f := &storeFile{data: data, pageSize: pageSize, root: root}
	// The meta page of the later transaction names the freelist page.
	meta := data[:pageSize]
	if other := data[pageSize : 2*pageSize]; binary.LittleEndian.Uint64(other[metaTxidOffset:]) > binary.LittleEndian.Uint64(meta[metaTxidOffset:]) {
		meta = other
	}
	f.freelist = int(binary.LittleEndian.Uint64(meta[metaFreeOffset:])) * pageSize
	page := data[f.freelist:]
	n := int(binary.LittleEndian.Uint16(page[10:]))
	if n == 0xFFFF {
		t.Fatal("freelist with an overflowing count: make the test store smaller")
	}
	for i := range n {
		f.free = append(f.free, binary.LittleEndian.Uint64(page[pageHeaderSize+8*i:]))
	}
	return f
}

// setFree rewrites the freelist page to list ids.
func (f *storeFile) setFree(ids []uint64) {
	page := f.data[f.freelist:]
	binary.LittleEndian.PutUint16(page[10:], uint16(len(ids)))
	for i, id := range ids {
		binary.LittleEndian.PutUint64(page[pageHeaderSize+8*i:], id)
	}
}

// leafKeys returns the offsets of the keys of the first leaf page under page id (following
// first children), which must be a branch page, and their length, which the test store makes
// equal.
func (f *storeFile) leafKeys(t *testing.T, id uint64) (keys []int, n int) {
	t.Helper()
	for depth := 0; ; depth++ {
		page := f.data[int(id)*f.pageSize:]
		flags, count := binary.LittleEndian.Uint16(page[8:]), int(binary.LittleEndian.Uint16(page[10:]))
		if flags == branchPageFlag {
			id = binary.LittleEndian.Uint64(page[pageHeaderSize+8:])
			continue
		}
		if flags != leafPageFlag || count < 2 || depth == 0 {
			t.Fatalf("page %d at depth %d: flags %#x, %d elements", id, depth, flags, count)
		}
		for i := range count {
			e := page[pageHeaderSize+i*pageElementSize:]
			keys = append(keys, int(id)*f.pageSize+pageHeaderSize+i*pageElementSize+int(binary.LittleEndian.Uint32(e[4:])))
			if size := int(binary.LittleEndian.Uint32(e[8:])); i > 0 && size != n {
				t.Fatalf("page %d: keys of %d and %d bytes", id, n, size)
			} else {
				n = size
			}
		}
		return keys, n
	}
}

// TestCheckPagesAgreesWithBbolt damages a store file in the ways bbolt's own consistency check
// (Tx.Check) looks for, confirms that Tx.Check reports each, and that Open refuses each with a
// CorruptError naming the problem: checkPages replaces Tx.Check at Open and must find all it
// finds.
func TestCheckPagesAgreesWithBbolt(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, f *storeFile)
		want   string
	}{
		{"a reached page listed free", func(t *testing.T, f *storeFile) {
			f.setFree(append(slices.Clone(f.free[1:]), f.root))
		}, "is reached and free"},
		{"a page listed free twice", func(t *testing.T, f *storeFile) {
			f.setFree(append(slices.Clone(f.free[1:]), f.free[1]))
		}, "twice"},
		{"a free page missing from the freelist", func(t *testing.T, f *storeFile) {
			f.setFree(f.free[1:])
		}, "neither reached nor free"},
		{"the freelist page naming another page in its header", func(t *testing.T, f *storeFile) {
			// bbolt frees the old freelist page by this id when it commits: page 2 would be
			// freed while reached, and the freelist page would leak (found by FuzzOpen).
			binary.LittleEndian.PutUint64(f.data[f.freelist:], 2)
		}, "freelist page"},
		{"two keys of a leaf page swapped", func(t *testing.T, f *storeFile) {
			keys, n := f.leafKeys(t, f.root)
			a, b := keys[0], keys[1]
			ka, kb := slices.Clone(f.data[a:a+n]), slices.Clone(f.data[b:b+n])
			copy(f.data[a:], kb)
			copy(f.data[b:], ka)
		}, "out of order"},
		{"a leaf key past its branch element's bound", func(t *testing.T, f *storeFile) {
			keys, n := f.leafKeys(t, f.root)
			last := keys[len(keys)-1] // still the page's last key, now past the next page's first
			copy(f.data[last:last+n], bytes.Repeat([]byte{0xFF}, n))
		}, "out of order"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "station.db")
			root, pageSize := populated(t, path)
			f := readStoreFile(t, path, root, pageSize)
			if len(f.free) < 2 {
				t.Fatalf("the test store has %d free pages, want 2 or more", len(f.free))
			}
			tc.damage(t, f)
			if err := os.WriteFile(path, f.data, 0o600); err != nil {
				t.Fatal(err)
			}
			if problems := bboltCheck(t, path); len(problems) == 0 {
				t.Fatal("bbolt's Tx.Check finds nothing wrong: the damage is not one it looks for")
			}
			_, err := Open(path, Options{StationID: testStation})
			var ce *CorruptError
			if !errors.As(err, &ce) || !strings.Contains(ce.Reason, tc.want) {
				t.Fatalf("Open = %v, want a CorruptError naming %q", err, tc.want)
			}
		})
	}
}

// bboltCheck runs bbolt's Tx.Check over the file at path.
func bboltCheck(t *testing.T, path string) []string {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var problems []string
	if err := db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			problems = append(problems, err.Error())
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return problems
}
