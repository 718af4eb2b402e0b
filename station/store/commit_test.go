package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func openCommitter(t *testing.T, max int) *committer {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "c.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &committer{db: db, max: max, onPanic: func(p any) error { return fmt.Errorf("panicked: %v", p) }}
}

// waitPending blocks until n writes wait for the running commit (no sleeps: it polls the
// queue the committer itself reads).
func (c *committer) waitPending(n int) {
	for {
		c.mu.Lock()
		l := len(c.pending)
		c.mu.Unlock()
		if l >= n {
			return
		}
	}
}

// TestCommitterGroups: the writes that arrive while a commit runs commit together in the next
// transaction (at most max of them), each write's own failure comes back to it alone, and a
// panicking write panics in its caller's goroutine, while the others still commit.
func TestCommitterGroups(t *testing.T) {
	for _, tc := range []struct {
		name        string
		max, writes int
		failAt      int // -1: none
		panicAt     int // -1: none
		wantTxs     int // transactions the queued writes took (the failing ones run alone besides)
	}{
		{name: "one group", max: 64, writes: 10, failAt: -1, panicAt: -1, wantTxs: 1},
		{name: "split by max", max: 4, writes: 10, failAt: -1, panicAt: -1, wantTxs: 3},
		{name: "a write fails", max: 64, writes: 10, failAt: 3, panicAt: -1, wantTxs: 1},
		{name: "a write panics", max: 64, writes: 10, failAt: -1, panicAt: 5, wantTxs: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := openCommitter(t, tc.max)
			if err := c.db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err }); err != nil {
				t.Fatal(err)
			}
			// A first write holds the commit open until every other write is queued.
			release, holding := make(chan struct{}), make(chan struct{})
			first := make(chan error, 1)
			go func() {
				first <- c.do(func(tx *bolt.Tx) error {
					close(holding)
					<-release
					return tx.Bucket([]byte("b")).Put([]byte("first"), []byte("1"))
				})
			}()
			<-holding
			errFail := errors.New("refused by the test")
			var mu sync.Mutex
			txOf := map[int]int{} // write → the transaction that committed it
			errs := make([]error, tc.writes)
			panics := make([]any, tc.writes)
			var wg sync.WaitGroup
			for i := range tc.writes {
				wg.Go(func() {
					defer func() { panics[i] = recover() }()
					errs[i] = c.do(func(tx *bolt.Tx) error {
						switch i {
						case tc.failAt:
							return errFail
						case tc.panicAt:
							panic("test panic")
						}
						mu.Lock()
						txOf[i] = tx.ID()
						mu.Unlock()
						return tx.Bucket([]byte("b")).Put(fmt.Append(nil, "k", i), []byte("v"))
					})
				})
			}
			c.waitPending(tc.writes)
			close(release)
			wg.Wait()
			if err := <-first; err != nil {
				t.Fatal(err)
			}
			txs := map[int]bool{}
			for i := range tc.writes {
				switch i {
				case tc.failAt:
					if !errors.Is(errs[i], errFail) {
						t.Errorf("failing write: %v, want its own error", errs[i])
					}
					continue
				case tc.panicAt:
					if panics[i] != "test panic" {
						t.Errorf("panicking write: recovered %v in its caller, want its panic", panics[i])
					}
					continue
				}
				if errs[i] != nil || panics[i] != nil {
					t.Errorf("write %d: %v, %v", i, errs[i], panics[i])
				}
				txs[txOf[i]] = true
			}
			if len(txs) != tc.wantTxs {
				t.Errorf("queued writes committed in %d transactions, want %d", len(txs), tc.wantTxs)
			}
			if err := c.db.View(func(tx *bolt.Tx) error {
				for i := range tc.writes {
					got := tx.Bucket([]byte("b")).Get(fmt.Append(nil, "k", i))
					if want := i != tc.failAt && i != tc.panicAt; (got != nil) != want {
						t.Errorf("write %d stored: %v, want %v", i, got != nil, want)
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		})
	}
}
