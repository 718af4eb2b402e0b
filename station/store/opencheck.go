package store

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
)

// checkLater runs the consistency check of every page (check) in its own goroutine
// (Options.CheckInBackground); a damage it finds latches the store corrupt.
func (s *Store) checkLater(db *bolt.DB, path string) {
	s.checked = make(chan struct{})
	go func() {
		defer close(s.checked)
		start := time.Now()
		err := checkRecovered(db, path)
		if s.closing.Load() {
			return // the file closed under the check: nothing was found
		}
		var ce *CorruptError
		if errors.As(err, &ce) {
			s.checkErr = s.latchCorrupt(ce)
			return
		}
		s.checkErr = err
		s.log.Info("store pages checked", "path", path, "seconds", time.Since(start).Seconds())
	}()
}

// checkRecovered is check on a goroutine of its own: a bbolt panic, or a fault reading the
// mapped file, is a *CorruptError.
func checkRecovered(db *bolt.DB, path string) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &CorruptError{Path: path, Reason: fmt.Sprintf("bbolt panicked: %v", p)}
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return check(db, path)
}

// CheckDone waits until the consistency check of every page has ended and returns its
// result: nil, or the *CorruptError that latched the store corrupt. Without
// Options.CheckInBackground the check ended in Open.
func (s *Store) CheckDone(ctx context.Context) error {
	if s.checked == nil {
		return nil
	}
	select {
	case <-s.checked:
		return s.checkErr
	case <-ctx.Done():
		return ctx.Err()
	}
}
