package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// The unit index (bucket unit_index) lets listings and the start of the station read the units
// they want without decoding every unit. saveUnit keeps it in the same transaction as the state
// it indexes, through the tracked buckets, so the audit chain covers it like every other value
// (its removals included). Keys:
//
//	's' len(status) status serial       a unit of that status (empty value)
//	'w' len(work order) work order serial  a unit of that work order
//	'e' len(error code) error code serial  a unit with that error code
//	'u' serial                          the unit's indexed fields (status, work order, error
//	                                    code, each length-prefixed): what to remove when they change
//
// Lengths are 2-byte big-endian, so one field's entries are contiguous and in serial order.

var bUnitIndex = []byte("unit_index")

const (
	ixStatus    = 's'
	ixWorkOrder = 'w'
	ixErrorCode = 'e'
	ixUnit      = 'u'
)

// InFlightStatuses are the statuses of a unit the station has not finished: it resumes when
// its agent reconnects.
var InFlightStatuses = []Status{StatusPending, StatusRunning}

// ixPrefix is the key prefix of the entries of one indexed value.
func ixPrefix(kind byte, value string) []byte {
	b := make([]byte, 0, 3+len(value))
	b = append(b, kind)
	b = binary.BigEndian.AppendUint16(b, uint16(len(value)))
	return append(b, value...)
}

// indexed is what the unit index holds for a unit.
type indexed struct{ status, workOrder, errorCode string }

func (x indexed) encode() []byte {
	var b []byte
	for _, f := range []string{x.status, x.workOrder, x.errorCode} {
		b = binary.BigEndian.AppendUint16(b, uint16(len(f)))
		b = append(b, f...)
	}
	return b
}

func decodeIndexed(b []byte) (indexed, error) {
	var f [3]string
	for i := range f {
		if len(b) < 2 || len(b) < 2+int(binary.BigEndian.Uint16(b)) {
			return indexed{}, errors.New("unit index entry does not decode")
		}
		n := int(binary.BigEndian.Uint16(b))
		f[i], b = string(b[2:2+n]), b[2+n:]
	}
	return indexed{f[0], f[1], f[2]}, nil
}

// keys returns the index entries of serial for x (none for an empty value).
func (x indexed) keys(serial string) [][]byte {
	var out [][]byte
	for _, e := range []struct {
		kind  byte
		value string
	}{{ixStatus, x.status}, {ixWorkOrder, x.workOrder}, {ixErrorCode, x.errorCode}} {
		if e.value != "" {
			out = append(out, append(ixPrefix(e.kind, e.value), serial...))
		}
	}
	return out
}

// indexUnit brings the unit index up to u's state; it writes only what changed.
func (w *wtx) indexUnit(u *UnitState) error {
	ix := w.tx.Bucket(bUnitIndex)
	if ix == nil {
		return errors.New("unit index missing")
	}
	now := indexed{string(u.Status), u.WorkOrderID, u.ErrorCode}
	enc := now.encode()
	uk := append([]byte{ixUnit}, u.Serial...)
	old := ix.Get(uk)
	if bytes.Equal(old, enc) {
		return nil
	}
	keep := map[string]bool{}
	for _, k := range now.keys(u.Serial) {
		keep[string(k)] = true
	}
	if old != nil {
		was, err := decodeIndexed(old)
		if err != nil {
			return fmt.Errorf("unit %q: %w", u.Serial, err)
		}
		for _, k := range was.keys(u.Serial) {
			if keep[string(k)] {
				delete(keep, string(k))
				continue
			}
			if err := ix.unindex(k); err != nil {
				return err
			}
		}
	}
	for k := range keep {
		if err := ix.Put([]byte(k), []byte{}); err != nil {
			return err
		}
	}
	return ix.Put(uk, enc)
}

// indexChunk is how many units one audit record of the index's first build covers.
const indexChunk = 4096

// indexUnits builds the unit index of a file written before it existed (once, at Open), audited
// as store.write records.
func (s *Store) indexUnits(tx *bolt.Tx) error {
	if tx.Bucket(bUnitIndex) != nil {
		return nil
	}
	w := s.newWtx(tx, PrincipalStation)
	if _, err := w.tx.CreateBucketIfNotExists(bUnitIndex); err != nil {
		return fmt.Errorf("creating the unit index: %w", err)
	}
	n := 0
	c := tx.Bucket(bUnitStates).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		u, err := s.decodeUnit(string(k), v)
		if err != nil {
			return fmt.Errorf("indexing unit %q: %w", k, err)
		}
		if err := w.indexUnit(&u); err != nil {
			return fmt.Errorf("indexing unit %q: %w", k, err)
		}
		if n++; n%indexChunk == 0 {
			if err := w.audit(AuditEvent{Action: AuditActionWrite, Details: map[string]string{"unit_index": "built"}}); err != nil {
				return err
			}
			if err := w.flush(); err != nil {
				return err
			}
		}
	}
	if err := w.audit(AuditEvent{Action: AuditActionWrite, Details: map[string]string{"unit_index": "built", "units": fmt.Sprint(n)}}); err != nil {
		return err
	}
	if n > 0 {
		s.log.Info("store: unit index built", "units", n)
	}
	return w.flush()
}

// UnitQuery selects units for ListUnits. Units come in serial order (byte order), which is
// stable under concurrent inserts: a listing resumed after a serial never repeats or skips a
// unit that existed throughout.
type UnitQuery struct {
	// After lists only serials greater than After ("" from the start).
	After string
	// Limit bounds the answer; <= 0 means 100.
	Limit int
	// Statuses keeps units in any of these statuses (empty: any).
	Statuses []Status
	// WorkOrder keeps the units of this work order when set.
	WorkOrder string
	// ErrorCode keeps the units with this error code when set.
	ErrorCode string
	// Keep, when set, is a further filter applied while walking (in the read transaction: it
	// must not call the store).
	Keep func(*UnitState) bool
	// Step, when set, makes each ListedUnit carry the latest attempt of this step.
	Step string
	// Brief, when set, makes each ListedUnit carry only the unit's listing row, read without
	// decoding its state: Serial, Status, WorkOrderID, Profile, CurrentStep, ErrorCode,
	// ErrorMessage, EKCertSHA256, FixtureSlot, Attempts, CreatedAt, UpdatedAt, and Steps with
	// each step's Attempts only. Keep sees the same. A unit stored before rows existed (a
	// migrated file's, until it is written again) is decoded in full.
	Brief bool
}

// ListedUnit is one unit of a listing.
type ListedUnit struct {
	Unit UnitState
	// Step is the latest attempt of UnitQuery.Step, nil when the unit has none.
	Step *StepRecord
}

// ListUnits returns up to q.Limit units matching q after q.After, in serial order, and whether
// more follow. It walks the index of the most selective filter given (work order, error code,
// status), else the units themselves, so a page costs its own units plus those the other
// filters drop, never a pass over the store.
func (s *Store) ListUnits(ctx context.Context, q UnitQuery) ([]ListedUnit, bool, error) {
	if q.Limit <= 0 {
		q.Limit = 100
	}
	var out []ListedUnit
	more := false
	err := s.view(ctx, func(tx *bolt.Tx) error {
		out, more = nil, false
		return s.walkUnits(tx, q, func(l ListedUnit) bool {
			if len(out) == q.Limit {
				more = true
				return false
			}
			out = append(out, l)
			return true
		})
	})
	if err != nil {
		return nil, false, err
	}
	return out, more, nil
}

// InFlight returns every unit the station has not finished (pending or running), from the unit
// index: it reads those units only.
func (s *Store) InFlight(ctx context.Context) ([]UnitState, error) {
	var out []UnitState
	err := s.view(ctx, func(tx *bolt.Tx) error {
		out = nil
		return s.walkUnits(tx, UnitQuery{Statuses: InFlightStatuses}, func(l ListedUnit) bool {
			out = append(out, l.Unit)
			return true
		})
	})
	return out, err
}

// walkUnits calls fn with each unit matching q after q.After, in serial order, until fn
// returns false.
func (s *Store) walkUnits(tx *bolt.Tx, q UnitQuery, fn func(ListedUnit) bool) error {
	ix, units := tx.Bucket(bUnitIndex), tx.Bucket(bUnitStates)
	var srcs []*serialCursor
	switch {
	case q.WorkOrder != "":
		srcs = append(srcs, newSerialCursor(ix, ixPrefix(ixWorkOrder, q.WorkOrder)))
	case q.ErrorCode != "":
		srcs = append(srcs, newSerialCursor(ix, ixPrefix(ixErrorCode, q.ErrorCode)))
	case len(q.Statuses) > 0:
		for _, st := range q.Statuses {
			srcs = append(srcs, newSerialCursor(ix, ixPrefix(ixStatus, string(st))))
		}
	default:
		srcs = append(srcs, newSerialCursor(units, nil))
	}
	for _, c := range srcs {
		c.seekAfter(q.After)
	}
	for {
		// The next serial is the least of the sources' (their union, in order).
		var serial []byte
		for _, c := range srcs {
			if c.serial != nil && (serial == nil || bytes.Compare(c.serial, serial) < 0) {
				serial = c.serial
			}
		}
		if serial == nil {
			return nil
		}
		serial = bytes.Clone(serial)
		for _, c := range srcs {
			if bytes.Equal(c.serial, serial) {
				c.next()
			}
		}
		raw := units.Get(serial)
		if raw == nil {
			return fmt.Errorf("unit index names unit %q, which is not stored", serial)
		}
		u, err := s.listedUnit(string(serial), raw, q.Brief)
		if err != nil {
			return fmt.Errorf("unit %q: %w", serial, err)
		}
		if !q.matches(&u) {
			continue
		}
		l := ListedUnit{Unit: u}
		if q.Step != "" {
			if l.Step, err = latestStep(tx, string(serial), q.Step); err != nil {
				return fmt.Errorf("unit %q: %w", serial, err)
			}
		}
		if !fn(l) {
			return nil
		}
	}
}

// matches applies every filter of q to u (the index chose the candidates; the state decides).
func (q *UnitQuery) matches(u *UnitState) bool {
	if q.WorkOrder != "" && u.WorkOrderID != q.WorkOrder || q.ErrorCode != "" && u.ErrorCode != q.ErrorCode {
		return false
	}
	if len(q.Statuses) > 0 {
		found := false
		for _, st := range q.Statuses {
			found = found || u.Status == st
		}
		if !found {
			return false
		}
	}
	return q.Keep == nil || q.Keep(u)
}

// listedUnit decodes a unit's stored state, only its listing row when brief (and it has one).
func (s *Store) listedUnit(serial string, raw []byte, brief bool) (UnitState, error) {
	if brief {
		row, _, err := splitState(raw)
		if err != nil {
			return UnitState{}, err
		}
		if row != nil {
			return decodeRow(serial, row)
		}
	}
	return s.decodeUnit(serial, raw)
}

// latestStep returns the latest attempt of the unit's step, nil when none.
func latestStep(tx *bolt.Tx, serial, step string) (*StepRecord, error) {
	_, v := lastSeq(tx.Bucket(bStepRecords).Cursor(), stepPrefix(serial, step))
	if v == nil {
		return nil, nil
	}
	var rec StepRecord
	if err := decodeStepRecord(v, &rec); err != nil {
		return nil, fmt.Errorf("decoding step %q: %w", step, err)
	}
	return &rec, nil
}

// LatestStep returns the latest attempt of the unit's step, or false when it has none.
func (s *Store) LatestStep(ctx context.Context, serial, step string) (StepRecord, bool, error) {
	var rec *StepRecord
	err := s.view(ctx, func(tx *bolt.Tx) error {
		if err := unitExists(tx, serial); err != nil {
			return err
		}
		var err error
		rec, err = latestStep(tx, serial, step)
		return err
	})
	if err != nil || rec == nil {
		return StepRecord{}, false, err
	}
	return *rec, true, nil
}

// serialCursor walks the serials of one bucket's keys under a prefix, in order.
type serialCursor struct {
	c      *bolt.Cursor
	prefix []byte
	serial []byte // nil at the end
}

func newSerialCursor(b *bolt.Bucket, prefix []byte) *serialCursor {
	return &serialCursor{c: b.Cursor(), prefix: prefix}
}

func (c *serialCursor) set(k []byte) {
	if k == nil || !bytes.HasPrefix(k, c.prefix) {
		c.serial = nil
		return
	}
	c.serial = k[len(c.prefix):]
}

// seekAfter moves to the first serial greater than after.
func (c *serialCursor) seekAfter(after string) {
	k, _ := c.c.Seek(append(bytes.Clone(c.prefix), after...))
	c.set(k)
	if c.serial != nil && after != "" && string(c.serial) == after {
		c.next()
	}
}

func (c *serialCursor) next() {
	k, _ := c.c.Next()
	c.set(k)
}
