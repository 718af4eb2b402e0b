package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
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

// pageWalk checks the pages of a store file, read where bbolt maps them, in one walk: the
// checks of bbolt's Tx.Check and those bbolt's check itself needs first.
//
// bbolt's check runs on a goroutine of bbolt's, follows page ids without remembering the pages
// it saw and reads keys where the elements say they are: a page that refers to itself makes it
// recurse until the stack overflows, and an element pointing outside its page makes it fault;
// both kill the process instead of giving a CorruptError (found by FuzzOpen). It also keeps a
// map entry for every page and builds a bucket for every nested bucket, which at 100,000 units
// (750,000 pages) cost more CPU than the audit verification. So the walk does all of it:
// every page lies within the file, is a branch or a leaf page, is reached once and is not free;
// every page is reached or free; the freelist lists no page twice; and the keys of every page
// are in order, within the bounds of the branch elements above them. The test
// TestCheckPagesAgreesWithBbolt and FuzzOpen hold it to bbolt's check.
//
// The walk uses every core: a subtree goes to a goroutine of its own while one is free. With
// more than one problem, which one it reports depends on which goroutine meets its own first.
type pageWalk struct {
	data     []byte // the file's pages: hwm pages of pageSize bytes
	pageSize uint64
	hwm      uint64 // pages the meta page counts
	seen     bitmap // pages reached
	free     bitmap // pages the freelist lists
	idle     chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	err      error // the first problem found
	failed   atomic.Bool
}

// bitmap is a set of page ids.
type bitmap []uint64

func newBitmap(n uint64) bitmap     { return make(bitmap, (n+63)/64) }
func (m bitmap) has(id uint64) bool { return atomic.LoadUint64(&m[id/64])&(1<<(id%64)) != 0 }

// add adds id, reporting whether it was there already.
func (m bitmap) add(id uint64) bool {
	bit := uint64(1) << (id % 64)
	return atomic.OrUint64(&m[id/64], bit)&bit != 0
}

// checkPages walks every page reachable from the meta page of transaction txid in data, the
// file's pages.
func checkPages(data []byte, txid uint64, pageSize int) error {
	hwm := uint64(len(data)) / uint64(pageSize)
	if hwm < 2 {
		return fmt.Errorf("the meta page counts %d pages", hwm)
	}
	w := &pageWalk{data: data, pageSize: uint64(pageSize), hwm: hwm, seen: newBitmap(hwm), free: newBitmap(hwm),
		idle: make(chan struct{}, runtime.GOMAXPROCS(0)-1)}
	for range cap(w.idle) {
		w.idle <- struct{}{}
	}
	for id := range uint64(2) {
		meta := data[id*w.pageSize:]
		if binary.LittleEndian.Uint64(meta[metaTxidOffset:]) != txid {
			continue
		}
		w.seen.add(0)
		w.seen.add(1)
		if err := w.freelist(binary.LittleEndian.Uint64(meta[metaFreeOffset:])); err != nil {
			return err
		}
		w.subtree(binary.LittleEndian.Uint64(meta[metaRootOffset:]), nil, nil, 0)
		w.wg.Wait()
		if w.err != nil {
			return w.err
		}
		for id := range hwm {
			if !w.seen.has(id) && !w.free.has(id) {
				return fmt.Errorf("page %d is neither reached nor free", id)
			}
		}
		return nil
	}
	return fmt.Errorf("no meta page of transaction %d", txid)
}

// fail records err unless a problem was found already.
func (w *pageWalk) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
		w.failed.Store(true)
	}
}

// subtree checks the page pgid and the pages below it (see tree), on a goroutine of its own
// when one is idle.
func (w *pageWalk) subtree(pgid uint64, lo, hi []byte, depth int) {
	select {
	case <-w.idle:
	default:
		if err := w.tree(pgid, lo, hi, depth); err != nil {
			w.fail(err)
		}
		return
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer func() { w.idle <- struct{}{} }()
		var err error
		guard(&err, func(p any) error { return fmt.Errorf("reading page %d: %v", pgid, p) }, func() {
			err = w.tree(pgid, lo, hi, depth)
		})
		if err != nil {
			w.fail(err)
		}
	}()
}

// freelist checks the freelist page: it lies within the file with its overflow, says it is
// that page (bbolt frees the page by the id its header gives: another id leaks the page, or
// frees one above the high water mark; found by FuzzOpen), is a freelist page, holds the ids
// it counts, and every id it lists is a page below the high water mark
// other than the meta pages, listed once. bbolt's check counts through the overflow (up to
// 2^32 pages) and never looks at the ids' range; a commit then allocates such an id and panics
// on a goroutine of bbolt's ("pgid above high water mark"), or writes over a meta page (found
// by FuzzOpen).
func (w *pageWalk) freelist(pgid uint64) error {
	if pgid == ^uint64(0) { // no freelist page
		return nil
	}
	hdr, overflow, err := w.header("freelist page", pgid)
	if err != nil {
		return err
	}
	if flags := binary.LittleEndian.Uint16(hdr[8:]); flags != freelistPageFlag {
		return fmt.Errorf("freelist page %d has type %#x", pgid, flags)
	}
	for id := pgid; id <= pgid+overflow; id++ {
		w.seen.add(id)
	}
	buf := w.data[pgid*w.pageSize : (pgid+1+overflow)*w.pageSize]
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
		id := binary.LittleEndian.Uint64(ids[i*8:])
		if id < 2 || id >= w.hwm {
			return fmt.Errorf("freelist page %d lists page %d, outside pages 2-%d", pgid, id, w.hwm-1)
		}
		if w.free.add(id) {
			return fmt.Errorf("freelist page %d lists page %d twice", pgid, id)
		}
	}
	return nil
}

// header returns the header of page pgid and its overflow, once the page lies within the
// file with its overflow and its header says it is that page; kind names the page in errors.
func (w *pageWalk) header(kind string, pgid uint64) ([]byte, uint64, error) {
	if pgid < 2 || pgid >= w.hwm {
		return nil, 0, fmt.Errorf("%s %d outside pages 2-%d", kind, pgid, w.hwm-1)
	}
	hdr := w.data[pgid*w.pageSize:]
	if id := binary.LittleEndian.Uint64(hdr); id != pgid {
		return nil, 0, fmt.Errorf("%s %d says it is page %d", kind, pgid, id)
	}
	overflow := uint64(binary.LittleEndian.Uint32(hdr[12:]))
	if pgid+overflow >= w.hwm {
		return nil, 0, fmt.Errorf("%s %d overflows past page %d", kind, pgid, w.hwm-1)
	}
	return hdr, overflow, nil
}

// tree checks the page pgid and the pages below it, whose keys must lie in [lo, hi) (nil: no
// bound).
func (w *pageWalk) tree(pgid uint64, lo, hi []byte, depth int) error {
	if w.failed.Load() {
		return nil // the first problem is reported already
	}
	_, overflow, err := w.header("page", pgid)
	if err != nil {
		return err
	}
	for id := pgid; id <= pgid+overflow; id++ {
		if w.seen.add(id) {
			return fmt.Errorf("page %d reached twice", id)
		}
	}
	if w.free.has(pgid) {
		return fmt.Errorf("page %d is reached and free", pgid)
	}
	return w.page(pgid, w.data[pgid*w.pageSize:(pgid+1+overflow)*w.pageSize], lo, hi, depth)
}

// page checks the elements of one page (buf, from its header on; an inline bucket's page is
// the rest of its value), whose keys must lie in [lo, hi) and follow each other in order, and
// the pages they refer to.
func (w *pageWalk) page(pgid uint64, buf, lo, hi []byte, depth int) error {
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
	if flags != branchPageFlag && flags != leafPageFlag {
		return fmt.Errorf("page %d has type %#x, want a branch or leaf page", pgid, flags)
	}
	// element returns element i: its key and value (a branch element has none), each
	// within the page, and its first four bytes (a leaf's flags).
	element := func(i uint64) (k, v []byte, first uint32, err error) {
		at := pageHeaderSize + i*pageElementSize
		e := buf[at : at+pageElementSize]
		first = binary.LittleEndian.Uint32(e)
		pos, ksize, vsize := uint64(binary.LittleEndian.Uint32(e[4:])), uint64(binary.LittleEndian.Uint32(e[8:])), uint64(binary.LittleEndian.Uint32(e[12:]))
		if flags == branchPageFlag {
			pos, ksize, vsize = uint64(first), uint64(binary.LittleEndian.Uint32(e[4:])), 0
		}
		if at+pos+ksize+vsize > size {
			return nil, nil, 0, fmt.Errorf("page %d: element %d lies outside the page", pgid, i)
		}
		return buf[at+pos : at+pos+ksize], buf[at+pos+ksize : at+pos+ksize+vsize], first, nil
	}
	prev := lo
	for i := range count {
		k, v, first, err := element(i)
		if err != nil {
			return err
		}
		if prev != nil && (bytes.Compare(prev, k) > 0 || i > 0 && bytes.Equal(prev, k)) || hi != nil && bytes.Compare(k, hi) >= 0 {
			return fmt.Errorf("page %d: key %d out of order", pgid, i)
		}
		prev = k
		if flags == branchPageFlag {
			next := hi
			if i+1 < count {
				if next, _, _, err = element(i + 1); err != nil {
					return err
				}
			}
			w.subtree(binary.LittleEndian.Uint64(buf[pageHeaderSize+i*pageElementSize+8:]), k, next, depth+1)
			continue
		}
		if first&bucketLeafFlag == 0 {
			continue
		}
		if len(v) < bucketHeaderLen {
			return fmt.Errorf("page %d: bucket %d has a %d-byte header", pgid, i, len(v))
		}
		if root := binary.LittleEndian.Uint64(v); root != 0 {
			w.subtree(root, nil, nil, depth+1)
			continue
		}
		// An inline bucket's page is a leaf of id 0. bbolt's cursor takes a branch there for
		// one whose every child (page 0) is the inline page itself, and descends forever,
		// growing its stack until the process runs out of memory; and a commit that moves
		// the bucket to pages of its own frees the page of the id it finds, panicking on
		// bbolt's batch goroutine for an id past the file (both found by FuzzOpen).
		inline := v[bucketHeaderLen:]
		if len(inline) >= pageHeaderSize && binary.LittleEndian.Uint16(inline[8:]) != leafPageFlag {
			return fmt.Errorf("page %d: inline bucket %d is not a leaf page", pgid, i)
		}
		if len(inline) >= pageHeaderSize && binary.LittleEndian.Uint64(inline) != 0 {
			return fmt.Errorf("page %d: inline bucket %d says it is page %d", pgid, i, binary.LittleEndian.Uint64(inline))
		}
		if err := w.page(pgid, inline, nil, nil, depth+1); err != nil {
			return err
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
