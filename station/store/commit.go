package store

import (
	"errors"
	"fmt"
	"runtime/debug"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// committer commits writes in groups (group commit): a write that arrives while no commit is
// running starts one at once; the writes that arrive while it runs wait and commit together
// in the next transaction, as soon as it ends, at most max a transaction. So a lone write
// pays no delay, and under load one fsync carries as many writes as arrived during the last
// one. (bbolt's DB.Batch closes a batch on a timer instead: at a line's load its batches
// carried about four writes, and each still paid its own fsync.)
//
// As in DB.Batch, a write whose function fails or panics is taken out of its group, the
// group is run again without it, and the write runs alone in its caller's goroutine
// (errRunAlone), where the caller sees its error or its panic; so a function may run more
// than once. A panic while committing a group (bbolt on a damaged page) is handed to
// onPanic, and every write of the group gets the error it returns.
type committer struct {
	db      *bolt.DB
	max     int
	onPanic func(p any) error

	mu      sync.Mutex
	pending []*commitCall
	running bool // a goroutine is committing groups
}

type commitCall struct {
	fn   func(*bolt.Tx) error
	done chan error
}

// errRunAlone tells a caller of committer.do to run its write alone.
var errRunAlone = errors.New("store: run the write alone")

// do commits fn with the writes pending beside it and returns its error.
func (c *committer) do(fn func(*bolt.Tx) error) error {
	call := &commitCall{fn: fn, done: make(chan error, 1)}
	c.mu.Lock()
	c.pending = append(c.pending, call)
	if !c.running {
		c.running = true
		go c.run()
	}
	c.mu.Unlock()
	if err := <-call.done; err != errRunAlone {
		return err
	}
	return c.db.Update(fn)
}

// run commits groups of pending writes until none is left.
func (c *committer) run() {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	for {
		c.mu.Lock()
		n := min(len(c.pending), c.max)
		if n == 0 {
			c.running = false
			c.mu.Unlock()
			return
		}
		group := make([]*commitCall, n)
		copy(group, c.pending)
		c.pending = c.pending[n:]
		if len(c.pending) == 0 {
			c.pending = nil // let the backing array go
		}
		c.mu.Unlock()
		c.commit(group)
	}
}

// commit runs group in one transaction, taking out each write that fails.
func (c *committer) commit(group []*commitCall) {
	for len(group) > 0 {
		failed := -1
		err := c.update(func(tx *bolt.Tx) error {
			for i, call := range group {
				if err := callSafely(call.fn, tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed < 0 {
			for _, call := range group {
				call.done <- err
			}
			return
		}
		group[failed].done <- errRunAlone
		group = append(group[:failed:failed], group[failed+1:]...)
	}
}

// update is db.Update with a panic turned into onPanic's error.
func (c *committer) update(fn func(*bolt.Tx) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = c.onPanic(p)
		}
	}()
	return c.db.Update(fn)
}

// callSafely runs fn, turning a panic into an error.
func callSafely(fn func(*bolt.Tx) error, tx *bolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("write panicked: %v", p)
		}
	}()
	return fn(tx)
}
