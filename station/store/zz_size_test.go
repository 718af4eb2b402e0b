package store

import (
	"fmt"
	"os"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func BenchmarkZZSize(b *testing.B) {
	s := buildUnits(b, 2000)
	st, _ := os.Stat(s.path)
	fmt.Println("file", st.Size(), "free pages", s.db.Stats().FreePageN, "pending", s.db.Stats().PendingPageN, "freelist bytes", s.db.Stats().FreelistInuse)
	s.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, bk *bolt.Bucket) error {
			x := bk.Stats()
			fmt.Printf("%-16s keys %8d depth %d branchPages %6d leafPages %7d leafInuse %10d buckets %6d inline %6d inlineInuse %9d\n", name, x.KeyN, x.Depth, x.BranchPageN, x.LeafPageN, x.LeafInuse, x.BucketN, x.InlineBucketN, x.InlineBucketInuse)
			return nil
		})
	})
	c := s.db
	c.View(func(tx *bolt.Tx) error {
		u := tx.Bucket(bUnits).Bucket([]byte("SN0000007"))
		fmt.Println("state bytes", len(u.Get(kState)))
		u.Bucket(bEvents).ForEach(func(k, v []byte) error { fmt.Println("event", len(v)); return nil })
		u.Bucket(bSteps).ForEach(func(k, v []byte) error {
			u.Bucket(bSteps).Bucket(k).ForEach(func(k2, v2 []byte) error { fmt.Println("step", string(k), len(v2)); return nil })
			return nil
		})
		n, sz := 0, 0
		tx.Bucket(bAudit).ForEach(func(k, v []byte) error { n++; sz += len(v); return nil })
		fmt.Println("audit records", n, "bytes", sz)
		n, sz = 0, 0
		tx.Bucket(bCertIndex).ForEach(func(k, v []byte) error { n++; sz += len(v); return nil })
		fmt.Println("cert", n, "bytes", sz)
		return nil
	})
}
