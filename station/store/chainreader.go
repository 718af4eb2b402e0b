package store

import (
	"bytes"
	"encoding/json"
	"runtime"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// chainReader reads the audit log in order while worker goroutines decode
// records and recompute their hashes ahead of the reader, so that Verify
// uses every core. It must be closed before the transaction ends.
type chainReader struct {
	ordered chan *readBatch
	stop    chan struct{}
	wg      sync.WaitGroup
	cur     *readBatch
	i       int
}

// readRecord is one decoded record.
type readRecord struct {
	key    []byte
	a      AuditEvent
	bad    bool // does not decode
	hashOK bool
}

type readBatch struct {
	recs []readRecord
	done chan struct{}
}

const readBatchSize = 256

func newChainReader(tx *bolt.Tx) *chainReader {
	workers := max(1, runtime.GOMAXPROCS(0))
	r := &chainReader{ordered: make(chan *readBatch, 4*workers), stop: make(chan struct{})}
	work := make(chan *readBatch, 4*workers)
	for range workers {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			for b := range work {
				for i := range b.recs {
					rec := &b.recs[i]
					v := rec.a.Hash // the raw value, parked here by the producer
					rec.a = AuditEvent{}
					if err := json.Unmarshal(v, &rec.a); err != nil {
						rec.bad = true
						continue
					}
					rec.hashOK = bytes.Equal(rec.a.computeHash(), rec.a.Hash)
				}
				close(b.done)
			}
		}()
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(work)
		defer close(r.ordered)
		c := tx.Bucket(bAudit).Cursor()
		b := &readBatch{done: make(chan struct{})}
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
			b = &readBatch{done: make(chan struct{})}
			return true
		}
		for k, v := c.First(); k != nil; k, v = c.Next() {
			b.recs = append(b.recs, readRecord{key: k, a: AuditEvent{Hash: v}})
			if len(b.recs) == readBatchSize && !flush() {
				return
			}
		}
		if len(b.recs) > 0 {
			flush()
		}
	}()
	return r
}

// next returns the next record, or nil at the end of the log.
func (r *chainReader) next() *readRecord {
	for r.cur == nil || r.i == len(r.cur.recs) {
		b, ok := <-r.ordered
		if !ok {
			return nil
		}
		<-b.done
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
