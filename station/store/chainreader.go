package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"hash"
	"hash/maphash"
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
	stop    chan struct{}
	wg      sync.WaitGroup
	cur     *readBatch
	i       int
	err     error // why next returned nil early (a damaged page)
}

// readRecord is one checked record. Its slices point into the transaction's
// pages.
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
	id          uint64 // hash of bucket and key (storedCache.seed)
	deleted     bool   // the write deleted the key (no digest)
	had         bool   // the key held a value before the write
	present     bool   // the key holds a value now
	ok          bool   // the stored value has the digest (deleted: is absent)
}

type readBatch struct {
	raw  [][]byte // the stored records, until a worker checks them
	recs []readRecord
	done chan struct{}
	err  error // bbolt panicked reading the batch (a damaged page)
}

const readBatchSize = 256

// newChainReader starts reading the log of tx, whose head has sequence head.
// A panic of bbolt in one of its goroutines (a damaged page) is turned into
// an error by onPanic and returned by err.
func newChainReader(tx *bolt.Tx, head uint64, onPanic func(any) error) *chainReader {
	workers := max(1, runtime.GOMAXPROCS(0))
	r := &chainReader{ordered: make(chan *readBatch, 4*workers), stop: make(chan struct{})}
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
	b := newReadBatch()
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
		b = newReadBatch()
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

func newReadBatch() *readBatch {
	return &readBatch{raw: make([][]byte, 0, readBatchSize), recs: make([]readRecord, 0, readBatchSize), done: make(chan struct{})}
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

// storedChecker is one worker's state: a reused hash and buffer, and the
// cache all workers share.
type storedChecker struct {
	h     hash.Hash
	sum   []byte
	id    []byte
	cache *storedCache
	// outbox is the worker's cursor over the outbox, whose keys a batch of records names in
	// order, each once (nothing rewrites an outbox entry): it steps instead of seeking, and
	// the cache is no use for them.
	outbox    *bolt.Cursor
	outboxKey []byte
}

// storedCache remembers, for the whole transaction, the buckets opened and
// the SHA-256 of stored values by bucket path and key: a unit's state is
// written some twenty times over a few thousand records, and its value (the
// latest) only needs hashing once. The digests are in shards, each with its
// lock, so that the workers seldom wait for each other. It is bounded: a
// full map starts over.
type storedCache struct {
	tx      *bolt.Tx
	seed    maphash.Seed
	shards  [cacheShards]sumShard
	mu      sync.Mutex // guards buckets
	buckets map[string]*bolt.Bucket
	// byID are the top-level buckets of writeBuckets, by id.
	byID [len(writeBuckets)]*bolt.Bucket
}

type sumShard struct {
	mu   sync.Mutex
	sums map[uint64]cachedSum
}

const (
	cacheShards = 16
	// maxCached bounds the buckets map and the digests of a storedCache
	// (about 100 bytes an entry).
	maxCached = 1 << 17
)

// storedSum is what a key holds: whether it holds a value and its SHA-256.
type storedSum struct {
	present bool
	sum     [sha256.Size]byte
}

// newStoredCache returns a cache sized for about hint keys.
func newStoredCache(tx *bolt.Tx, hint int) *storedCache {
	c := &storedCache{tx: tx, seed: maphash.MakeSeed(), buckets: map[string]*bolt.Bucket{}}
	for id, name := range writeBucketNames {
		if name != nil {
			c.byID[id] = tx.Bucket(name)
		}
	}
	for i := range c.shards {
		c.shards[i].sums = make(map[uint64]cachedSum, min(hint, maxCached)/cacheShards)
	}
	return c
}

func newStoredChecker(cache *storedCache) *storedChecker {
	c := &storedChecker{h: sha256.New(), sum: make([]byte, 0, sha256.Size), cache: cache}
	if b := cache.byID[outboxID]; b != nil {
		c.outbox = b.Cursor()
	}
	return c
}

// outboxID is the outbox's id in writeBuckets.
const outboxID = 5

// appended returns what the outbox holds under key, stepping the worker's cursor when key
// follows the last one read.
func (c *storedChecker) appended(key []byte) storedSum {
	var k, v []byte
	if c.outboxKey != nil && bytes.Compare(key, c.outboxKey) > 0 {
		k, v = c.outbox.Next()
	}
	if k == nil || !bytes.Equal(k, key) {
		k, v = c.outbox.Seek(key)
	}
	c.outboxKey = k
	var st storedSum
	if st.present = bytes.Equal(k, key) && (v != nil || c.cache.byID[outboxID].Bucket(k) == nil); st.present {
		st.sum = sha256.Sum256(v)
	}
	return st
}

// check decodes and checks every record of b.
func (c *storedChecker) check(b *readBatch) {
	for i := range b.recs {
		c.record(&b.recs[i], b.raw[i])
	}
	b.raw = nil
}

func (c *storedChecker) record(rec *readRecord, v []byte) {
	if len(v) > 0 && v[0] == '{' {
		c.legacy(rec, v)
		return
	}
	r, err := parseRecord(v)
	if err != nil {
		rec.bad = true
		return
	}
	rec.seq, rec.prevHash, rec.hash = r.seq, r.prevHash, r.hash
	rec.hashOK = r.hashOK(c.h, c.sum)
	if string(r.action()) == AuditActionCheckpoint {
		a := r.event()
		rec.cp = &a
	}
	if r.nWrites > 0 {
		rec.writes = make([]writeCheck, 0, r.nWrites)
		r.eachWrite(func(id int, bucket, key, digest []byte, had bool) {
			rec.writes = append(rec.writes, c.compare(id, bucket, key, digest, had))
		})
	}
}

// legacy checks a record stored as JSON.
func (c *storedChecker) legacy(rec *readRecord, v []byte) {
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
	for _, d := range a.Writes {
		rec.writes = append(rec.writes, c.compare(0, []byte(d.Bucket), d.Key, d.SHA256, d.Had))
	}
}

// compare looks the key up and compares its stored value with digest
// (empty: the write deleted it). id is the bucket's in writeBuckets (0: none).
func (c *storedChecker) compare(id int, bucket, key, digest []byte, had bool) writeCheck {
	w := writeCheck{bucket: bucket, key: key, deleted: len(digest) == 0, had: had}
	c.id = append(append(append(c.id[:0], bucket...), 0), key...)
	w.id = maphash.Bytes(c.cache.seed, c.id)
	var st storedSum
	switch {
	case id == outboxID && c.outbox != nil:
		st = c.appended(key)
	case uncached[id]:
		st = c.cache.lookup(id, bucket, key)
	default:
		st = c.cache.stored(w.id, id, bucket, key)
	}
	w.present = st.present
	if w.deleted {
		w.ok = !st.present
	} else {
		w.ok = st.present && bytes.Equal(st.sum[:], digest)
	}
	return w
}

// cachedSum is a cache entry: the key it is for (slices into the transaction's pages or the
// records decoded, which live as long as the cache) and what it holds.
type cachedSum struct {
	bucket, key []byte
	st          storedSum
}

// stored returns what bucket/key holds; idHash is the hash of both, which keys the cache (an
// entry for another key under the same hash is a miss, and stays); bucketID is the bucket's
// in writeBuckets (0: none).
func (c *storedCache) stored(idHash uint64, bucketID int, bucket, key []byte) storedSum {
	sh := &c.shards[idHash%cacheShards]
	sh.mu.Lock()
	e, ok := sh.sums[idHash]
	sh.mu.Unlock()
	if ok && bytes.Equal(e.key, key) && bytes.Equal(e.bucket, bucket) {
		return e.st
	}
	st := c.lookup(bucketID, bucket, key)
	if ok { // another key has this hash: keep it
		return st
	}
	sh.mu.Lock()
	if len(sh.sums) >= maxCached/cacheShards {
		clear(sh.sums)
	}
	sh.sums[idHash] = cachedSum{bucket: bucket, key: key, st: st}
	sh.mu.Unlock()
	return st
}

// lookup reads what bucket/key holds and hashes it.
func (c *storedCache) lookup(bucketID int, bucket, key []byte) storedSum {
	var st storedSum
	b := c.byID[bucketID]
	if bucketID == 0 {
		b = c.bucket(bucket)
	}
	if b != nil {
		var v []byte
		if v, st.present = storedValue(b, key); st.present {
			st.sum = sha256.Sum256(v)
		}
	}
	return st
}

// uncached are the buckets whose keys the chain names once (the certificate index): the cache
// would only cost them.
var uncached = [len(writeBuckets)]bool{7: true}

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
