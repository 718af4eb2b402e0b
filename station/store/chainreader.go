package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"hash"
	"hash/maphash"
	"math/bits"
	"runtime"
	"runtime/debug"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// chainReader reads the audit log in order while worker goroutines, ahead of
// the reader, check each record's hash and compare every stored key/value its
// writes name with their digests, so that Verify uses every core. The workers
// read the same read-only transaction as the reader: bbolt keeps no caches in
// a read-only transaction (its bucket and node maps stay nil), so concurrent
// reads through it are safe. It must be closed before the transaction ends.
type chainReader struct {
	ordered chan *readBatch
	free    chan *readBatch // batches read, for the next ones
	stop    chan struct{}
	wg      sync.WaitGroup
	cur     *readBatch
	i       int
	err     error // why next returned nil early (a damaged page)
}

// readRecord is one checked record. Its slices point into the transaction's
// pages and its batch's buffers.
type readRecord struct {
	link
	key    []byte
	hash   []byte
	bad    bool // does not decode
	writes []writeCheck
}

// writeCheck is one write digest of a record and how the stored value
// compares with it.
type writeCheck struct {
	bucket, key []byte
	digest      []byte
	id          uint64 // hash of bucket and key (storedCache.seed)
	bucketID    int    // the bucket's in writeBuckets (0: none)
	deleted     bool   // the write deleted the key (no digest)
	had         bool   // the key held a value before the write
	present     bool   // the key holds a value now
	ok          bool   // the stored value has the digest (deleted: is absent)
}

type readBatch struct {
	raw  [][]byte // the stored records, until a worker checks them
	recs []readRecord
	// writes and keys hold the checks of the records' writes and copies of their keys: an
	// allocation every few hundred writes, not one or two a write.
	writes []writeCheck
	keys   []byte
	done   chan struct{}
	err    error // bbolt panicked reading the batch (a damaged page)
}

const readBatchSize = 256

// newChainReader starts reading the log of tx, whose head has sequence head.
// A panic of bbolt in one of its goroutines (a damaged page) is turned into
// an error by onPanic and returned by err.
func newChainReader(tx *bolt.Tx, head uint64, onPanic func(any) error) *chainReader {
	workers := max(1, runtime.GOMAXPROCS(0))
	r := &chainReader{ordered: make(chan *readBatch, 4*workers), free: make(chan *readBatch, 8*workers+2), stop: make(chan struct{})}
	work := make(chan *readBatch, 4*workers)
	// A unit's records name about three keys each.
	cache := newStoredCache(tx, int(min(head, maxCached))*3)
	for range workers {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			c := newStoredChecker(cache)
			for b := range work {
				guard(&b.err, onPanic, func() { c.check(b) })
				close(b.done)
			}
		}()
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(work)
		defer close(r.ordered)
		var err error
		defer func() {
			if err != nil {
				eb := &readBatch{err: err, done: make(chan struct{})}
				close(eb.done)
				select {
				case r.ordered <- eb:
				case <-r.stop:
				}
			}
		}()
		guard(&err, onPanic, func() { r.produce(tx, work) })
	}()
	return r
}

// produce reads the log into batches for the workers, in order.
func (r *chainReader) produce(tx *bolt.Tx, work chan<- *readBatch) {
	cur := tx.Bucket(bAudit).Cursor()
	b := r.newBatch()
	flush := func() bool {
		select {
		case work <- b:
		case <-r.stop:
			return false
		}
		select {
		case r.ordered <- b:
		case <-r.stop:
			return false
		}
		b = r.newBatch()
		return true
	}
	for k, v := cur.First(); k != nil; k, v = cur.Next() {
		b.recs = append(b.recs, readRecord{key: k})
		b.raw = append(b.raw, v)
		if len(b.recs) == readBatchSize && !flush() {
			return
		}
	}
	if len(b.recs) > 0 {
		flush()
	}
}

// guard runs fn, which reads a transaction in a goroutine of its own, and
// turns a panic of bbolt on a damaged page (or a fault reading the mapped
// file) into *errp through onPanic, as the store's calls do for theirs.
func guard(errp *error, onPanic func(any) error, fn func()) {
	defer func() {
		if p := recover(); p != nil {
			*errp = onPanic(p)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	fn()
}

// newBatch returns an empty batch: one read already, or a new one.
func (r *chainReader) newBatch() *readBatch {
	select {
	case b := <-r.free:
		return b
	default:
		return &readBatch{raw: make([][]byte, 0, readBatchSize), recs: make([]readRecord, 0, readBatchSize), done: make(chan struct{})}
	}
}

// recycle hands b, whose records next returned, back to newBatch. The keys its records'
// writes name may still be awaited (pendingKeys): their buffer is not reused.
func (r *chainReader) recycle(b *readBatch) {
	b.raw, b.recs, b.writes, b.keys = b.raw[:0], b.recs[:0], b.writes[:0], nil
	b.done = make(chan struct{})
	select {
	case r.free <- b:
	default:
	}
}

// next returns the next record, or nil at the end of the log.
func (r *chainReader) next() *readRecord {
	for r.cur == nil || r.i == len(r.cur.recs) {
		if r.err != nil {
			return nil
		}
		b, ok := <-r.ordered
		if !ok {
			return nil
		}
		<-b.done
		if b.err != nil {
			r.err = b.err
			return nil
		}
		if r.cur != nil {
			r.recycle(r.cur)
		}
		r.cur, r.i = b, 0
	}
	r.i++
	return &r.cur.recs[r.i-1]
}

// close stops the goroutines and waits for them.
func (r *chainReader) close() {
	close(r.stop)
	for b := range r.ordered {
		<-b.done
	}
	r.wg.Wait()
}

// storedChecker is one worker's state: a reused hash and buffers, a cursor a bucket, and the
// cache all workers share.
type storedChecker struct {
	h     hash.Hash
	sum   []byte
	id    []byte
	cache *storedCache
	// cursors are the worker's cursors over the buckets of writeBuckets, by id, made when
	// first needed.
	cursors [len(writeBuckets)]*bolt.Cursor
	// outboxKey is the outbox key the worker read last: a batch of records names the outbox's
	// keys in order, each once (nothing rewrites an outbox entry), so its cursor steps instead
	// of seeking, and the cache is no use for them.
	outboxKey []byte
	ahead     uint64 // the sum of storedCache.ahead's results
}

// storedCache remembers, for the whole transaction, the buckets opened and
// the SHA-256 of stored values by bucket path and key: a unit's state is
// written some twenty times over a few thousand records, and its value (the
// latest) only needs hashing once. The digests are in sets of a few entries,
// a key's set chosen by the hash of its bucket and key, guarded by striped
// locks so that the workers seldom wait for each other. It is bounded: a key
// takes the place of the least recently used key of its set, so that it
// holds the keys of the units in flight in little memory.
type storedCache struct {
	tx    *bolt.Tx
	seed  maphash.Seed
	sets  []cacheSet // len is a power of two
	locks [cacheLocks]struct {
		sync.Mutex
		_ [56]byte // one lock a cache line
	}
	mu      sync.Mutex // guards buckets
	buckets map[string]*bolt.Bucket
	// byID are the top-level buckets of writeBuckets, by id.
	byID [len(writeBuckets)]*bolt.Bucket
}

const (
	cacheLocks = 16
	cacheWays  = 4
	// maxCached bounds the buckets map and the digests of a storedCache
	// (128 bytes a digest).
	maxCached = 1 << 14
)

// storedSum is what a key holds: whether it holds a value and its SHA-256.
type storedSum struct {
	present bool
	sum     [sha256.Size]byte
}

// newStoredCache returns a cache sized for about hint keys.
func newStoredCache(tx *bolt.Tx, hint int) *storedCache {
	sets := 1 << bits.Len(uint(max(1, min(hint, maxCached)/cacheWays)-1))
	c := &storedCache{tx: tx, seed: maphash.MakeSeed(), sets: make([]cacheSet, sets), buckets: map[string]*bolt.Bucket{}}
	for id, name := range writeBucketNames {
		if name != nil {
			c.byID[id] = tx.Bucket(name)
		}
	}
	return c
}

func newStoredChecker(cache *storedCache) *storedChecker {
	return &storedChecker{h: sha256.New(), sum: make([]byte, 0, sha256.Size), cache: cache}
}

// outboxID is the outbox's id in writeBuckets.
const outboxID = 5

// cursor returns the worker's cursor over the bucket of writeBuckets id, or over the bucket
// at path for id 0; nil when there is no such bucket.
func (c *storedChecker) cursor(id int, path []byte) *bolt.Cursor {
	if id == 0 {
		if b := c.cache.bucket(path); b != nil {
			return b.Cursor()
		}
		return nil
	}
	if c.cursors[id] == nil && c.cache.byID[id] != nil {
		c.cursors[id] = c.cache.byID[id].Cursor()
	}
	return c.cursors[id]
}

// appended returns what the outbox holds under key, stepping the worker's cursor when key
// follows the last one read.
func (c *storedChecker) appended(cur *bolt.Cursor, key []byte) storedSum {
	var k, v []byte
	if c.outboxKey != nil && bytes.Compare(key, c.outboxKey) > 0 {
		k, v = cur.Next()
	}
	if k == nil || !bytes.Equal(k, key) {
		k, v = cur.Seek(key)
	}
	c.outboxKey = k
	var st storedSum
	if st.present = bytes.Equal(k, key) && (v != nil || cur.Bucket().Bucket(k) == nil); st.present {
		st.sum = sha256.Sum256(v)
	}
	return st
}

// check decodes and checks every record of b. The sets of the cache the batch's keys fall in
// are all read before the first is searched, so that the CPU fetches them together instead
// of one after the other.
func (c *storedChecker) check(b *readBatch) {
	for i := range b.recs {
		c.record(b, &b.recs[i], b.raw[i])
	}
	b.raw = nil
	for i := range b.recs {
		for j := range b.recs[i].writes {
			if w := &b.recs[i].writes[j]; cached(w.bucketID) {
				c.ahead += c.cache.ahead(w.id)
			}
		}
	}
	for i := range b.recs {
		for j := range b.recs[i].writes {
			c.compare(&b.recs[i].writes[j])
		}
	}
}

func (c *storedChecker) record(b *readBatch, rec *readRecord, v []byte) {
	if len(v) > 0 && v[0] == '{' {
		c.legacy(b, rec, v)
		return
	}
	r, err := parseHead(v)
	if err != nil {
		rec.bad = true
		return
	}
	start := b.room(r.nWrites)
	if !r.eachWrite(func(id int, bucket, key, digest []byte, had bool) {
		b.writes = append(b.writes, c.write(id, bucket, b.key(key), digest, had))
	}) {
		rec.bad = true
		return
	}
	rec.writes = b.writes[start:len(b.writes):len(b.writes)]
	rec.seq, rec.prevHash, rec.hash = r.seq, r.prevHash, r.hash
	rec.hashOK = r.hashOK(c.h, c.sum)
	if string(r.action()) == AuditActionCheckpoint {
		a := r.event()
		rec.cp = &a
	}
}

// room makes room for n more writes in the batch's buffer, returning where they start.
func (b *readBatch) room(n int) int {
	if cap(b.writes)-len(b.writes) < n {
		b.writes = make([]writeCheck, 0, max(5*readBatchSize, n))
	}
	return len(b.writes)
}

// key returns a copy of key in the batch's buffer.
func (b *readBatch) key(key []byte) []byte {
	start := len(b.keys)
	if cap(b.keys)-start < len(key) {
		b.keys = make([]byte, 0, max(4096, len(key)))
		start = 0
	}
	b.keys = append(b.keys, key...)
	return b.keys[start:len(b.keys):len(b.keys)]
}

// legacy checks a record stored as JSON.
func (c *storedChecker) legacy(b *readBatch, rec *readRecord, v []byte) {
	var a AuditEvent
	if err := json.Unmarshal(v, &a); err != nil {
		rec.bad = true
		return
	}
	rec.seq, rec.prevHash, rec.hash = a.Seq, a.PrevHash, a.Hash
	rec.hashOK = bytes.Equal(a.computeHash(), a.Hash)
	if a.Action == AuditActionCheckpoint {
		rec.cp = &a
	}
	start := b.room(len(a.Writes))
	for _, d := range a.Writes {
		bucket := []byte(d.Bucket)
		b.writes = append(b.writes, c.write(bucketID(bucket), bucket, d.Key, d.SHA256, d.Had))
	}
	rec.writes = b.writes[start:len(b.writes):len(b.writes)]
}

// write returns the check of a write of key in bucket (id: its id in writeBuckets, 0: none)
// with digest (empty: the write deleted the key), to compare.
func (c *storedChecker) write(id int, bucket, key, digest []byte, had bool) writeCheck {
	w := writeCheck{bucket: bucket, key: key, digest: digest, bucketID: id, deleted: len(digest) == 0, had: had}
	c.id = append(append(append(c.id[:0], bucket...), 0), key...)
	w.id = maphash.Bytes(c.cache.seed, c.id)
	return w
}

// cached reports whether the cache holds the keys of the bucket of writeBuckets id.
func cached(id int) bool { return id != 0 && id != outboxID && !uncached[id] }

// compare looks w's key up and compares its stored value with w's digest.
func (c *storedChecker) compare(w *writeCheck) {
	var st storedSum
	cur := c.cursor(w.bucketID, w.bucket)
	switch {
	case cur == nil:
	case w.bucketID == outboxID:
		st = c.appended(cur, w.key)
	case !cached(w.bucketID):
		st = lookup(cur, w.key)
	default:
		var ok bool
		if st, ok = c.cache.get(w.id, w.bucketID, w.key); !ok {
			st = lookup(cur, w.key)
			c.cache.put(w.id, w.bucketID, w.key, st)
		}
	}
	w.present = st.present
	if w.deleted {
		w.ok = !st.present
	} else {
		w.ok = st.present && bytes.Equal(st.sum[:], w.digest)
	}
}

// cacheSet is a set of cache entries: their hashes and when each was last used (the set's
// clock; 0: empty), then the entries. It holds no pointer: the collector does not scan the
// cache, and the cache keeps no record's memory alive.
type cacheSet struct {
	ids   [cacheWays]uint64
	used  [cacheWays]uint32
	clock uint32
	// line is never written: ahead reads it, without the lock, to fetch the set's first
	// 64 bytes (one cache line: a set takes 512 bytes and the table starts on a page).
	line    uint64
	entries [cacheWays]cachedSum
}

// cachedSum is a cache entry: the key it is for (the id of its bucket in writeBuckets and
// its bytes) and what it holds.
type cachedSum struct {
	st     storedSum
	bucket uint8
	n      uint8 // len(key)
	key    [maxCachedKey]byte
}

// maxCachedKey is the longest key the cache holds (an entry takes 112 bytes): a longer key,
// rare (a unit's serial is seldom longer than 50 bytes), is read each time.
const maxCachedKey = 112 - 33 - 2

// ahead reads the set of the hash id, so that the CPU starts fetching it; it returns what
// it read (0), for the caller to keep so that the read is not optimized away.
func (c *storedCache) ahead(id uint64) uint64 {
	return c.sets[id&uint64(len(c.sets)-1)].line
}

// get returns what the cache holds for the key of bucket bucketID (in writeBuckets) and
// whether it holds it; id is the hash of bucket and key.
func (c *storedCache) get(id uint64, bucketID int, key []byte) (storedSum, bool) {
	i := id & uint64(len(c.sets)-1)
	l := &c.locks[i%cacheLocks]
	l.Lock()
	defer l.Unlock()
	set := &c.sets[i]
	for w := range cacheWays {
		if e := &set.entries[w]; set.ids[w] == id && set.used[w] != 0 && int(e.bucket) == bucketID && string(e.key[:e.n]) == string(key) {
			set.clock++
			set.used[w] = set.clock
			return e.st, true
		}
	}
	return storedSum{}, false
}

// put remembers what the key of bucket bucketID holds, in place of the least recently used
// entry of the set of its hash id, unless the key is too long.
func (c *storedCache) put(id uint64, bucketID int, key []byte, st storedSum) {
	if len(key) > maxCachedKey {
		return
	}
	i := id & uint64(len(c.sets)-1)
	l := &c.locks[i%cacheLocks]
	l.Lock()
	defer l.Unlock()
	set := &c.sets[i]
	old := 0
	for w := 1; w < cacheWays; w++ {
		if set.used[w] < set.used[old] {
			old = w
		}
	}
	set.clock++
	set.ids[old], set.used[old] = id, set.clock
	e := &set.entries[old]
	e.st, e.bucket, e.n = st, uint8(bucketID), uint8(len(key))
	copy(e.key[:], key)
}

// lookup returns what the cursor's bucket holds under key.
func lookup(cur *bolt.Cursor, key []byte) storedSum {
	var st storedSum
	if v, present := seekStored(cur, key); present {
		st.present, st.sum = true, sha256.Sum256(v)
	}
	return st
}

// uncached are the buckets whose keys the chain names once (the EK and certificate indexes):
// the cache would only cost them.
var uncached = [len(writeBuckets)]bool{6: true, 7: true}

// bucket opens the bucket at path (names joined by "/"), or nil.
func (c *storedCache) bucket(path []byte) *bolt.Bucket {
	c.mu.Lock()
	b, ok := c.buckets[string(path)]
	c.mu.Unlock()
	if ok {
		return b
	}
	if i := bytes.LastIndexByte(path, '/'); i < 0 {
		b = c.tx.Bucket(path)
	} else if parent := c.bucket(path[:i]); parent != nil {
		b = parent.Bucket(path[i+1:])
	}
	c.mu.Lock()
	if len(c.buckets) >= maxCached {
		clear(c.buckets)
	}
	c.buckets[string(path)] = b
	c.mu.Unlock()
	return b
}
