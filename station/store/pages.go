package store

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"os"

	bolt "go.etcd.io/bbolt"
)

// bbolt's on-disk layout (go.etcd.io/bbolt internal/common, native byte order: little endian
// on every platform the station runs on): a page is a 16-byte header (id uint64, flags uint16,
// count uint16, overflow uint32) and count 16-byte elements; an element's key (and value) lie
// pos bytes after the element itself.
const (
	pageHeaderSize   = 16
	pageElementSize  = 16
	branchPageFlag   = 0x01
	leafPageFlag     = 0x02
	freelistPageFlag = 0x10
	bucketLeafFlag   = 0x01
	bucketHeaderLen  = 16 // root pgid uint64, sequence uint64; an inline page follows when root is 0
	metaRootOffset   = pageHeaderSize + 16
	metaFreeOffset   = pageHeaderSize + 32
	metaTxidOffset   = pageHeaderSize + 48
	maxPageDepth     = 64
)

// pageWalk checks the page tree of a store file before bbolt's own check reads it. That check
// runs on a goroutine of bbolt's, follows page ids without remembering the pages it saw and
// reads keys where the elements say they are: a page that refers to itself makes it recurse
// until the stack overflows, and an element pointing outside its page makes it fault; both
// kill the process instead of giving a CorruptError (found by FuzzOpen).
type pageWalk struct {
	f        io.ReaderAt
	pageSize int
	hwm      uint64 // pages the meta page counts
	seen     map[uint64]bool
}

// checkPages walks every page reachable from the meta page tx reads: each page lies within
// the file, is a branch or a leaf page, is reached once, and holds its elements.
func checkPages(f io.ReaderAt, tx *bolt.Tx, pageSize int) error {
	w := &pageWalk{f: f, pageSize: pageSize, hwm: uint64(tx.Size()) / uint64(pageSize), seen: map[uint64]bool{}}
	for id := range uint64(2) {
		meta := make([]byte, metaTxidOffset+8)
		if _, err := f.ReadAt(meta, int64(id)*int64(pageSize)); err != nil {
			return fmt.Errorf("reading meta page %d: %w", id, err)
		}
		if binary.LittleEndian.Uint64(meta[metaTxidOffset:]) != uint64(tx.ID()) {
			continue
		}
		if err := w.freelist(binary.LittleEndian.Uint64(meta[metaFreeOffset:])); err != nil {
			return err
		}
		return w.tree(binary.LittleEndian.Uint64(meta[metaRootOffset:]), 0)
	}
	return fmt.Errorf("no meta page of transaction %d", tx.ID())
}

// freelist checks the freelist page: it lies within the file with its overflow, is a freelist
// page, holds the ids it counts, and every id it lists is a page below the high water mark
// other than the meta pages. bbolt's check counts through the overflow (up to 2^32 pages) and
// never looks at the ids' range; a commit then allocates such an id and panics on a goroutine
// of bbolt's ("pgid above high water mark"), or writes over a meta page (found by FuzzOpen).
func (w *pageWalk) freelist(pgid uint64) error {
	if pgid == ^uint64(0) { // no freelist page
		return nil
	}
	if pgid < 2 || pgid >= w.hwm {
		return fmt.Errorf("freelist page %d outside pages 2-%d", pgid, w.hwm-1)
	}
	hdr := make([]byte, pageHeaderSize)
	if _, err := w.f.ReadAt(hdr, int64(pgid)*int64(w.pageSize)); err != nil {
		return fmt.Errorf("reading freelist page %d: %w", pgid, err)
	}
	overflow := uint64(binary.LittleEndian.Uint32(hdr[12:]))
	if pgid+overflow >= w.hwm {
		return fmt.Errorf("freelist page %d overflows past page %d", pgid, w.hwm-1)
	}
	if flags := binary.LittleEndian.Uint16(hdr[8:]); flags != freelistPageFlag {
		return fmt.Errorf("freelist page %d has type %#x", pgid, flags)
	}
	buf := make([]byte, (1+overflow)*uint64(w.pageSize))
	if _, err := w.f.ReadAt(buf, int64(pgid)*int64(w.pageSize)); err != nil {
		return fmt.Errorf("reading freelist page %d: %w", pgid, err)
	}
	ids, count := buf[pageHeaderSize:], uint64(binary.LittleEndian.Uint16(hdr[10:]))
	if count == 0xFFFF { // the count is in the first element
		if len(ids) < 8 {
			return fmt.Errorf("freelist page %d: no room for its count", pgid)
		}
		count, ids = binary.LittleEndian.Uint64(ids), ids[8:]
	}
	if count > uint64(len(ids))/8 {
		return fmt.Errorf("freelist page %d: %d ids do not fit", pgid, count)
	}
	for i := range count {
		if id := binary.LittleEndian.Uint64(ids[i*8:]); id < 2 || id >= w.hwm {
			return fmt.Errorf("freelist page %d lists page %d, outside pages 2-%d", pgid, id, w.hwm-1)
		}
	}
	return nil
}

// tree checks the page pgid and the pages below it.
func (w *pageWalk) tree(pgid uint64, depth int) error {
	if pgid < 2 || pgid >= w.hwm {
		return fmt.Errorf("page %d outside pages 2-%d", pgid, w.hwm-1)
	}
	if w.seen[pgid] {
		return fmt.Errorf("page %d reached twice", pgid)
	}
	w.seen[pgid] = true
	hdr := make([]byte, pageHeaderSize)
	if _, err := w.f.ReadAt(hdr, int64(pgid)*int64(w.pageSize)); err != nil {
		return fmt.Errorf("reading page %d: %w", pgid, err)
	}
	if id := binary.LittleEndian.Uint64(hdr); id != pgid {
		return fmt.Errorf("page %d says it is page %d", pgid, id)
	}
	overflow := uint64(binary.LittleEndian.Uint32(hdr[12:]))
	if pgid+overflow >= w.hwm {
		return fmt.Errorf("page %d overflows past page %d", pgid, w.hwm-1)
	}
	buf := make([]byte, (1+overflow)*uint64(w.pageSize))
	if _, err := w.f.ReadAt(buf, int64(pgid)*int64(w.pageSize)); err != nil {
		return fmt.Errorf("reading page %d: %w", pgid, err)
	}
	return w.page(pgid, buf, depth)
}

// page checks the elements of one page (buf, from its header on; an inline bucket's page is
// the rest of its value) and the pages they refer to.
func (w *pageWalk) page(pgid uint64, buf []byte, depth int) error {
	if depth > maxPageDepth {
		return fmt.Errorf("page %d lies deeper than %d pages", pgid, maxPageDepth)
	}
	if len(buf) < pageHeaderSize {
		return fmt.Errorf("inline page under page %d is %d bytes", pgid, len(buf))
	}
	flags, count := binary.LittleEndian.Uint16(buf[8:]), uint64(binary.LittleEndian.Uint16(buf[10:]))
	size := uint64(len(buf))
	if pageHeaderSize+count*pageElementSize > size {
		return fmt.Errorf("page %d: %d elements do not fit", pgid, count)
	}
	// bbolt never writes an empty branch page, and its cursor reads the first element of a
	// branch page whatever its count.
	if flags == branchPageFlag && count == 0 {
		return fmt.Errorf("page %d: a branch page without elements", pgid)
	}
	for i := range count {
		at := pageHeaderSize + i*pageElementSize
		e := buf[at : at+pageElementSize]
		switch flags {
		case branchPageFlag:
			pos, ksize := uint64(binary.LittleEndian.Uint32(e)), uint64(binary.LittleEndian.Uint32(e[4:]))
			if at+pos+ksize > size {
				return fmt.Errorf("page %d: element %d lies outside the page", pgid, i)
			}
			if err := w.tree(binary.LittleEndian.Uint64(e[8:]), depth+1); err != nil {
				return err
			}
		case leafPageFlag:
			eflags, pos := binary.LittleEndian.Uint32(e), uint64(binary.LittleEndian.Uint32(e[4:]))
			ksize, vsize := uint64(binary.LittleEndian.Uint32(e[8:])), uint64(binary.LittleEndian.Uint32(e[12:]))
			if at+pos+ksize+vsize > size {
				return fmt.Errorf("page %d: element %d lies outside the page", pgid, i)
			}
			if eflags&bucketLeafFlag == 0 {
				continue
			}
			v := buf[at+pos+ksize : at+pos+ksize+vsize]
			if len(v) < bucketHeaderLen {
				return fmt.Errorf("page %d: bucket %d has a %d-byte header", pgid, i, len(v))
			}
			var err error
			if root := binary.LittleEndian.Uint64(v); root == 0 {
				// An inline bucket's page is a leaf of id 0. bbolt's cursor takes a branch
				// there for one whose every child (page 0) is the inline page itself, and
				// descends forever, growing its stack until the process runs out of
				// memory; and a commit that moves the bucket to pages of its own frees the
				// page of the id it finds, panicking on bbolt's batch goroutine for an id
				// past the file (both found by FuzzOpen).
				inline := v[bucketHeaderLen:]
				if len(inline) >= pageHeaderSize && binary.LittleEndian.Uint16(inline[8:]) != leafPageFlag {
					return fmt.Errorf("page %d: inline bucket %d is not a leaf page", pgid, i)
				}
				if len(inline) >= pageHeaderSize && binary.LittleEndian.Uint64(inline) != 0 {
					return fmt.Errorf("page %d: inline bucket %d says it is page %d", pgid, i, binary.LittleEndian.Uint64(inline))
				}
				err = w.page(pgid, inline, depth+1)
			} else {
				err = w.tree(root, depth+1)
			}
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("page %d has type %#x, want a branch or leaf page", pgid, flags)
		}
	}
	return nil
}

// checkMetas checks what bbolt's Open reads of a store file before any check of ours can run
// on an open file, given the file's size, the way bbolt reads it: the page size of the first
// valid meta page (at byte 0, else at 1 KiB << i), else the OS's; then both meta pages at that
// page size, of which it uses the valid one (magic, version and checksum) with the higher
// transaction id. For that one:
//
//   - A meta page naming no freelist page is refused: bbolt's Open would then rebuild the
//     freelist by walking the page tree on a goroutine of its own, where a page cycle or an
//     element outside its page kills the process (found by FuzzOpen). The station always
//     writes its freelist.
//   - A freelist page outside the file, not exactly a freelist page, claiming more page ids
//     than the file could hold, or listing them past the file's end is refused: bbolt's Open
//     allocates the count it finds there (2^27 in a 64 KiB file made it allocate 1 GiB), or
//     panics after mapping the file, and the mapping keeps the file and its lock for the life
//     of the process (all found by FuzzOpen).
//
// A file on which no meta page is valid is left to bbolt, which refuses it.
func checkMetas(f io.ReaderAt, size int64) error {
	const (
		magicOffset    = pageHeaderSize
		versionOffset  = pageHeaderSize + 4
		pageSizeOffset = pageHeaderSize + 8
		txidOffset     = pageHeaderSize + 48
		checksumOffset = pageHeaderSize + 56
		magic          = 0xED0CDAED
		version        = 2
	)
	type meta struct {
		at       int64
		valid    bool
		pageSize int64
		freelist uint64
		txid     uint64
	}
	read := func(at int64) meta {
		b := make([]byte, checksumOffset+8)
		if _, err := f.ReadAt(b, at); err != nil {
			return meta{at: at}
		}
		h := fnv.New64a()
		h.Write(b[magicOffset:checksumOffset])
		return meta{
			at: at,
			valid: binary.LittleEndian.Uint32(b[magicOffset:]) == magic && binary.LittleEndian.Uint32(b[versionOffset:]) == version &&
				h.Sum64() == binary.LittleEndian.Uint64(b[checksumOffset:]),
			pageSize: int64(binary.LittleEndian.Uint32(b[pageSizeOffset:])),
			freelist: binary.LittleEndian.Uint64(b[metaFreeOffset:]),
			txid:     binary.LittleEndian.Uint64(b[txidOffset:]),
		}
	}
	ps := int64(os.Getpagesize())
	if m := read(0); m.valid {
		ps = m.pageSize
	} else {
		for i := range 15 {
			at := int64(1024) << i
			if at >= size-1024 {
				break
			}
			if m := read(at); m.valid {
				ps = m.pageSize
				break
			}
		}
	}
	// The meta page bbolt then uses: of the two at that page size, the one with the higher
	// transaction id when it is valid, else the other. Only that one: the other may name
	// pages a later transaction reused before a crash, and bbolt never reads them.
	m, other := read(0), read(ps)
	if other.txid > m.txid {
		m, other = other, m
	}
	if !m.valid {
		m = other
	}
	if !m.valid {
		return nil // bbolt refuses the file
	}
	metaAt := m.at
	if ps < 512 || ps > 1<<16 {
		return fmt.Errorf("meta page at byte %d: page size %d", metaAt, ps)
	}
	fl, pages := m.freelist, uint64(size/ps)
	if fl == ^uint64(0) {
		return fmt.Errorf("meta page at byte %d names no freelist page", metaAt)
	}
	if fl < 2 || fl >= pages {
		return fmt.Errorf("meta page at byte %d names freelist page %d, outside the file's %d pages", metaAt, fl, pages)
	}
	hdr := make([]byte, pageHeaderSize+8)
	if _, err := f.ReadAt(hdr, int64(fl)*ps); err != nil {
		return fmt.Errorf("freelist page %d: %w", fl, err)
	}
	if binary.LittleEndian.Uint16(hdr[8:]) != freelistPageFlag {
		return fmt.Errorf("meta page at byte %d names page %d as its freelist, which is not a freelist page", metaAt, fl)
	}
	n, ids := uint64(binary.LittleEndian.Uint16(hdr[10:])), uint64(int64(fl)*ps+pageHeaderSize)
	if n == 0xFFFF { // the count is in the first element
		n, ids = binary.LittleEndian.Uint64(hdr[pageHeaderSize:]), ids+8
	}
	if n > uint64(size/8) {
		return fmt.Errorf("freelist page %d claims %d free pages in a %d-byte file", fl, n, size)
	}
	if ids+n*8 > uint64(size) {
		return fmt.Errorf("freelist page %d lists %d free pages past the file's end", fl, n)
	}
	return nil
}
