package store

import (
	"crypto/sha256"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Every write of a mutating call goes through wtxn and wbucket, which record
// the SHA-256 of each key/value written (WriteDigest) for the call's audit
// record: a bucket added later is covered without code of its own. The audit
// log itself (bucket audit) and the chain head (meta/audit_head) are the
// chain and are not recorded. VerifyChain checks every stored key against the
// latest digest the chain holds for it, so a write that bypasses these types
// fails verification.

// wtxn is the write transaction as mutating calls see it.
type wtxn struct {
	raw *bolt.Tx
	w   *wtx
}

// Bucket returns the top-level bucket name, or nil.
func (t *wtxn) Bucket(name []byte) *wbucket {
	raw := t.raw.Bucket(name)
	if wb := t.w.wrapped(raw); wb != nil {
		return wb
	}
	return t.w.wrap(raw, string(name))
}

// CreateBucketIfNotExists returns the top-level bucket name, creating it.
func (t *wtxn) CreateBucketIfNotExists(name []byte) (*wbucket, error) {
	b, err := t.raw.CreateBucketIfNotExists(name)
	if err != nil {
		return nil, err
	}
	return t.w.wrap(b, string(name)), nil
}

// wbucket is a bucket of a write transaction that records what it writes.
// Cursor is for reading only.
type wbucket struct {
	raw  *bolt.Bucket
	path string // bucket names from the top, joined by "/"
	w    *wtx
	tb   *txBucket
}

// txBucket is what the calls of one write transaction share about one of its buckets: its
// path and the cursor Get and Put look keys up with (seek). The calls of a group commit
// (committer) ask for the same few buckets, each for a key or two: made once a transaction,
// they save each call a path string and, at every lookup, a cursor and its stack.
type txBucket struct {
	raw  *bolt.Bucket
	path string
	cur  *bolt.Cursor
}

// txBuckets are the txBuckets of the write transaction tx. Only the goroutine holding bbolt's
// writer lock touches them (wtx.shared), one transaction after another; the list of a
// transaction that ended is dropped by the next one.
type txBuckets struct {
	tx   *bolt.Tx
	list []*txBucket
}

// shared returns the list of the call's transaction's txBuckets, or nil for a transaction
// that is not writable (or a wtx made without a store, in tests).
func (w *wtx) shared() *[]*txBucket {
	if w.s == nil || !w.tx.raw.Writable() {
		return nil
	}
	if w.s.txb.tx != w.tx.raw {
		w.s.txb = txBuckets{tx: w.tx.raw}
	}
	return &w.s.txb.list
}

// wrapped returns the wbucket of raw this call already made, or one over the txBucket another
// call of the transaction made, or nil.
func (w *wtx) wrapped(raw *bolt.Bucket) *wbucket {
	if raw == nil {
		return nil
	}
	for _, wb := range w.buckets {
		if wb.raw == raw {
			return wb
		}
	}
	if list := w.shared(); list != nil {
		for _, tb := range *list {
			if tb.raw == raw {
				return w.newWbucket(tb)
			}
		}
	}
	return nil
}

func (w *wtx) wrap(b *bolt.Bucket, path string) *wbucket {
	if b == nil {
		return nil
	}
	if wb := w.wrapped(b); wb != nil {
		return wb
	}
	if f := fillPercent(path); f > 0 {
		b.FillPercent = f
	}
	tb := &txBucket{raw: b, path: path}
	if list := w.shared(); list != nil {
		*list = append(*list, tb)
	}
	return w.newWbucket(tb)
}

// newWbucket makes the call's wbucket over tb, from the room the wtx carries for its first
// few (a call uses up to about six buckets), and adds it to w.buckets.
func (w *wtx) newWbucket(tb *txBucket) *wbucket {
	var wb *wbucket
	if w.nInline < len(w.inline) {
		wb = &w.inline[w.nInline]
		w.nInline++
	} else {
		wb = new(wbucket)
	}
	*wb = wbucket{raw: tb.raw, path: tb.path, w: w, tb: tb}
	w.buckets = append(w.buckets, wb)
	return wb
}

// seek is storedValue(b.raw, key) through the transaction's cursor of the bucket, made once:
// Cursor.Seek starts every search afresh from the bucket's root (it keeps nothing of its last
// position but its stack's memory), so the answer is that of a new cursor, also after writes
// to the bucket (TestWbucketLookups compares the two). A call runs to its end before the next
// call of its transaction starts, and nothing holds the cursor between two seeks.
func (b *wbucket) seek(key []byte) ([]byte, bool) {
	if b.tb.cur == nil {
		b.tb.cur = b.raw.Cursor()
	}
	return seekStored(b.tb.cur, key)
}

// Get returns the value of key, or nil (as bolt.Bucket.Get: nil for a nested bucket).
func (b *wbucket) Get(key []byte) []byte {
	v, _ := b.seek(key)
	return v
}

// Cursor returns a cursor for reading the bucket.
func (b *wbucket) Cursor() *bolt.Cursor { return b.raw.Cursor() }

// NextSequence returns the bucket's next sequence number.
func (b *wbucket) NextSequence() (uint64, error) { return b.raw.NextSequence() }

// Bucket returns the nested bucket name, or nil.
func (b *wbucket) Bucket(name []byte) *wbucket {
	raw := b.raw.Bucket(name)
	if wb := b.w.wrapped(raw); wb != nil {
		return wb
	}
	return b.w.wrap(raw, b.path+"/"+string(name))
}

// CreateBucket creates the nested bucket name.
func (b *wbucket) CreateBucket(name []byte) (*wbucket, error) {
	nb, err := b.raw.CreateBucket(name)
	if err != nil {
		return nil, err
	}
	return b.w.wrap(nb, b.path+"/"+string(name)), nil
}

// CreateBucketIfNotExists returns the nested bucket name, creating it.
func (b *wbucket) CreateBucketIfNotExists(name []byte) (*wbucket, error) {
	nb, err := b.raw.CreateBucketIfNotExists(name)
	if err != nil {
		return nil, err
	}
	return b.w.wrap(nb, b.path+"/"+string(name)), nil
}

// Put writes key = value and records its digest.
func (b *wbucket) Put(key, value []byte) error {
	_, had := b.seek(key)
	if err := b.raw.Put(key, value); err != nil {
		return err
	}
	if !b.exempt(key) {
		// The key's copy and the digest share one allocation; each is capped at its length.
		buf := make([]byte, len(key)+sha256.Size)
		n := copy(buf, key)
		h := sha256.Sum256(value)
		copy(buf[n:], h[:])
		b.w.writes = append(b.w.writes, WriteDigest{Bucket: b.path, Key: buf[:n:n], SHA256: buf[n:], Had: had})
	}
	return nil
}

// unindex removes key from the unit index and records the removal (a digest
// without a hash) when the key held a value. Records are never deleted: the
// unit index, derived from the units' states, is the only bucket that removes
// keys, and unindex refuses any other.
func (b *wbucket) unindex(key []byte) error {
	if b.path != string(bUnitIndex) {
		return fmt.Errorf("removing key %q of bucket %s: only the unit index removes keys", key, b.path)
	}
	if _, had := b.seek(key); !had {
		return nil
	}
	if err := b.raw.Delete(key); err != nil {
		return err
	}
	b.w.writes = append(b.w.writes, WriteDigest{Bucket: b.path, Key: append([]byte(nil), key...), Had: true})
	return nil
}

func (b *wbucket) exempt(key []byte) bool {
	return chainKey(b.path, key)
}

// fillPercent returns the fill percent of a bucket whose keys are mostly
// written in order (0: bbolt's default, half). bbolt splits a page at the
// bucket's fill percent, which leaves every page of a bucket appended to half
// empty. The outbox (sequence numbers in order) is filled; the step records
// and the unit index, keyed by serial (or a status then serial), mostly grow
// at the serials of the units in flight (a line's serials mostly rise) and are
// filled to 90%. (The unit states and event logs, one value a unit rewritten as
// it grows, keep the default, which leaves room for the growth.)
func fillPercent(path string) float64 {
	switch path {
	case string(bOutbox):
		return 1
	case string(bStepRecords), string(bUnitIndex):
		return 0.9
	}
	return 0
}

// chainKey reports whether path/key is outside the chain's coverage: the
// chain itself, and the bounded ring of refused sessions, which is overwritten
// by design and writes no audit record (so a flood of refusals cannot grow
// the log).
func chainKey(path string, key []byte) bool {
	return path == string(bAudit) || path == string(bRefused) || (path == string(bMeta) && string(key) == string(kAuditHead))
}

// storedValue returns the value under key and whether the key holds one (an
// empty value included; a nested bucket is no value).
func storedValue(b *bolt.Bucket, key []byte) ([]byte, bool) {
	return seekStored(b.Cursor(), key)
}

// seekStored is storedValue through a cursor of the bucket.
func seekStored(c *bolt.Cursor, key []byte) ([]byte, bool) {
	k, v := c.Seek(key)
	if k == nil || string(k) != string(key) || (v == nil && c.Bucket().Bucket(key) != nil) {
		return nil, false
	}
	return v, true
}
