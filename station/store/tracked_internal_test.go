package store

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestWbucketLookups checks the write path's lookups through a bucket's kept cursor
// (wbucket.seek, wbucket.Get) and its kept wrappers (wtx.wrapped) against the obvious ones,
// a new cursor (storedValue) and bolt.Bucket.Get, after every random Put, Delete and unindex
// in trees several pages deep, with empty values and nested buckets among the keys; and the
// Had of every recorded write against storedValue before it.
func TestWbucketLookups(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "t.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	names := [][]byte{[]byte("a"), bUnitIndex}
	key := func(i int) []byte { return fmt.Appendf(nil, "k%05d", i) }
	const keys = 3000
	// Deep trees: committed pages, then the test's writes on top of them in one transaction.
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, n := range names {
			b, err := tx.CreateBucket(n)
			if err != nil {
				return err
			}
			for i := 0; i < keys; i += 2 {
				if err := b.Put(key(i), bytes.Repeat([]byte{byte(i)}, i%97)); err != nil {
					return err
				}
			}
			for i := 1; i < keys; i += 302 {
				if _, err := b.CreateBucket(key(i)); err != nil {
					return err
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 4 {
		err := db.Update(func(tx *bolt.Tx) error {
			s := &Store{}
			nested := map[string]bool{}
			var w *wtx
			for op := range 3000 {
				if w == nil || rng.IntN(5) == 0 { // the next call of a group commit
					w = &wtx{s: s}
					w.tx = &wtxn{raw: tx, w: w}
				}
				n := names[rng.IntN(len(names))]
				wb := w.tx.Bucket(n)
				if wb == nil || wb.raw != tx.Bucket(n) || w.tx.Bucket(n) != wb || wb.w != w || wb.path != string(n) {
					return fmt.Errorf("bucket %s: wrapper %+v", n, wb)
				}
				k := key(rng.IntN(keys + 10))
				_, had := storedValue(wb.raw, k)
				writes := len(w.writes)
				switch rng.IntN(4) {
				case 0, 1:
					v := bytes.Repeat([]byte{byte(op)}, rng.IntN(3)*rng.IntN(200))
					if err := wb.Put(k, v); err != nil && !errors.Is(err, bolt.ErrIncompatibleValue) {
						return err
					}
				case 2:
					if string(n) == string(bUnitIndex) {
						if err := wb.unindex(k); err != nil {
							return err
						}
					} else if err := wb.raw.Delete(k); err != nil && !errors.Is(err, bolt.ErrIncompatibleValue) {
						return err
					}
				case 3:
					if nb := wb.Bucket(k); (nb == nil) != (wb.raw.Bucket(k) == nil) || nb != nil && (nb.path != string(n)+"/"+string(k) || nb.w != w) {
						return fmt.Errorf("nested bucket %s/%s: %v", n, k, nb)
					} else if nb != nil {
						nested[nb.path] = true
					}
				}
				if len(w.writes) > writes && w.writes[len(w.writes)-1].Had != had {
					return fmt.Errorf("round %d op %d: %s/%s recorded had=%v, stored before: %v", round, op, n, k, w.writes[len(w.writes)-1].Had, had)
				}
				for i := range 8 {
					if i > 0 { // first the key just used, then others
						k = key(rng.IntN(keys + 10))
					}
					want, wantOK := storedValue(wb.raw, k)
					got, gotOK := wb.seek(k)
					if gotOK != wantOK || !bytes.Equal(got, want) || (got == nil) != (want == nil) {
						return fmt.Errorf("round %d op %d: seek %s/%s = %q %v, want %q %v", round, op, n, k, got, gotOK, want, wantOK)
					}
					if got, want := wb.Get(k), wb.raw.Get(k); !bytes.Equal(got, want) || (got == nil) != (want == nil) {
						return fmt.Errorf("round %d op %d: Get %s/%s = %q, want %q", round, op, n, k, got, want)
					}
				}
			}
			if s.txb.tx != tx || len(s.txb.list) != len(names)+len(nested) {
				return fmt.Errorf("transaction's buckets: %d for %d buckets", len(s.txb.list), len(names)+len(nested))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
