package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The units' records are flat (schema 4): one bucket for all units' states, one for all step
// records and one for all unit event logs, keyed by serial, with no bucket per unit or per step
// (a bucket that is not inline takes whole pages, which was most of a unit's bytes):
//
//	unit_states   serial                               the unit's state (encodeState)
//	step_records  serial 0x00 step 0x00 attempt(u64)   StepRecord (JSON)
//	unit_events   serial                               the outbox seq (u64) of each of the
//	                                                   unit's events, in order (unit seq n is
//	                                                   the n-th): an event's bytes are stored
//	                                                   once, in outbox
//
// A unit's event log is one value, rewritten with each event, rather than a key per event: the
// chain's digests are as many either way, but the file holds one key a unit instead of some
// twenty, each of which Verify looks up and hashes.
//
// A serial or a step name never holds 0x00 (serialRE, stepRE), so one unit's keys (and one
// step's) are contiguous and in order. Files of schema 3 and older kept a bucket per unit under
// units; Open copies them into this layout (migrateUnits) and keeps the old bucket, read by
// nothing, still covered by the chain.
var (
	bUnitStates  = []byte("unit_states")
	bStepRecords = []byte("step_records")
	bUnitEvents  = []byte("unit_events")
)

// stepPrefix is the key prefix of the step records of serial's step ("" step: every step).
func stepPrefix(serial, step string) []byte {
	b := make([]byte, 0, len(serial)+len(step)+2+8)
	b = append(append(b, serial...), 0)
	if step != "" {
		b = append(append(b, step...), 0)
	}
	return b
}

func stepKey(serial, step string, attempt uint64) []byte {
	return binary.BigEndian.AppendUint64(stepPrefix(serial, step), attempt)
}

// lastSeq returns the sequence and value of the last key prefix+u64 of the cursor's bucket
// (0 and nil: none).
func lastSeq(c *bolt.Cursor, prefix []byte) (uint64, []byte) {
	end := append(bytes.Clone(prefix), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	k, v := c.Seek(end)
	switch {
	case k == nil:
		k, v = c.Last()
	case !bytes.Equal(k, end):
		k, v = c.Prev()
	}
	if len(k) != len(prefix)+8 || !bytes.HasPrefix(k, prefix) {
		return 0, nil
	}
	return binary.BigEndian.Uint64(k[len(prefix):]), v
}

// A unit's stored state is its listing row, then its JSON (UnitState):
//
//	stateRowFormat, uvarint length of the row, the row, the JSON
//
// The row holds what a listing shows (rowOf), so a page of units decodes no JSON. Both are
// written together by saveUnit, in one value, so one digest of the chain covers both.
const stateRowFormat byte = 0x01

// encodeState returns the stored value of u.
func encodeState(u *UnitState) ([]byte, error) {
	// The JSON is appended in place, after the row (no copy of it: a unit's state is kilobytes
	// and every journal write stores it); TestEncodeState compares with the parts put together.
	row := appendRow(make([]byte, 0, 256), u)
	b := make([]byte, 0, 1+binary.MaxVarintLen32+len(row)+unitSizeHint(u))
	b = append(b, stateRowFormat)
	b = binary.AppendUvarint(b, uint64(len(row)))
	b, err := appendUnit(append(b, row...), u)
	if err != nil {
		return nil, err
	}
	return b, nil
}

var errStateFormat = errors.New("stored unit state does not decode")

// splitState returns the row and the JSON of a stored state; a plain JSON state (as schema 3
// stored it) has no row.
func splitState(v []byte) (row, js []byte, err error) {
	if len(v) > 0 && v[0] == '{' {
		return nil, v, nil
	}
	if len(v) < 2 || v[0] != stateRowFormat {
		return nil, nil, errStateFormat
	}
	n, k := binary.Uvarint(v[1:])
	if k <= 0 || n > uint64(len(v)-1-k) {
		return nil, nil, errStateFormat
	}
	return v[1+k : 1+k+int(n)], v[1+k+int(n):], nil
}

// appendRow appends u's listing row: status, work order, profile, current step, error code,
// error message, EK certificate SHA-256, fixture slot (uvarint-length strings), attempts,
// created and updated (Unix nanoseconds, 0 for zero), then each step's name and attempts.
func appendRow(b []byte, u *UnitState) []byte {
	for _, s := range []string{string(u.Status), u.WorkOrderID, u.Profile, u.CurrentStep, u.ErrorCode,
		u.ErrorMessage, u.EKCertSHA256, u.FixtureSlot} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, u.Attempts)
	for _, t := range []time.Time{u.CreatedAt, u.UpdatedAt} {
		var n int64
		if !t.IsZero() {
			n = t.UnixNano()
		}
		b = binary.AppendVarint(b, n)
	}
	b = binary.AppendUvarint(b, uint64(len(u.Steps)))
	for _, name := range sortedKeys(u.Steps) {
		b = binary.AppendUvarint(b, uint64(len(name)))
		b = append(b, name...)
		b = binary.AppendUvarint(b, u.Steps[name].Attempts)
	}
	return b
}

// decodeRow decodes a listing row into the fields a brief UnitState holds.
func decodeRow(serial string, row []byte) (UnitState, error) {
	u := UnitState{Serial: serial}
	bad := false
	str := func() string {
		n, k := binary.Uvarint(row)
		if k <= 0 || n > uint64(len(row)-k) {
			bad, row = true, nil
			return ""
		}
		s := string(row[k : k+int(n)])
		row = row[k+int(n):]
		return s
	}
	uv := func() uint64 {
		n, k := binary.Uvarint(row)
		if k <= 0 {
			bad, row = true, nil
			return 0
		}
		row = row[k:]
		return n
	}
	tm := func() time.Time {
		n, k := binary.Varint(row)
		if k <= 0 {
			bad, row = true, nil
			return time.Time{}
		}
		row = row[k:]
		if n == 0 {
			return time.Time{}
		}
		return time.Unix(0, n).UTC()
	}
	u.Status = Status(str())
	u.WorkOrderID, u.Profile, u.CurrentStep, u.ErrorCode, u.ErrorMessage = str(), str(), str(), str(), str()
	u.EKCertSHA256, u.FixtureSlot = str(), str()
	u.Attempts = uv()
	u.CreatedAt, u.UpdatedAt = tm(), tm()
	n := uv()
	if n > uint64(len(row)) {
		bad = true
	}
	if n > 0 && !bad {
		u.Steps = make(map[string]StepSummary, n)
		for range n {
			name := str()
			u.Steps[name] = StepSummary{Attempts: uv()}
		}
	}
	if bad || len(row) > 0 {
		return UnitState{}, fmt.Errorf("unit %q: listing row: %w", serial, errStateFormat)
	}
	return u, nil
}

// migrateChunk is how many units one transaction (and one audit record) of a migration
// copies: a transaction holds what it writes in memory until it commits.
var migrateChunk = 1024

// migrateUnits copies the units of a file older than schema 4 (a bucket per unit under units)
// into the flat layout, as audited writes (store.write records, detail schema_4): each state
// with its listing row before its JSON bytes as they were, each step record as it was, and its
// events as references to the outbox entries that hold the same events. The units bucket
// stays as it was: nothing is ever deleted, and the chain still covers every value in it.
//
// It copies up to limit units (all: limit <= 0) after the serial after, skipping units already
// copied (by an earlier transaction of an open that did not finish), and returns the last
// serial it looked at, how many it copied and whether it reached the last unit. Open runs it
// in transactions of migrateChunk units before it brings the schema up (Store.migrate), so that
// no transaction holds a whole large file's copy.
func (w *wtx) migrateUnits(after []byte, limit int) (last []byte, n int, done bool, err error) {
	old := w.tx.raw.Bucket(bUnits)
	var states, steps, events *wbucket
	for _, p := range []struct {
		b    **wbucket
		name []byte
	}{{&states, bUnitStates}, {&steps, bStepRecords}, {&events, bUnitEvents}} {
		b, err := w.tx.CreateBucketIfNotExists(p.name)
		if err != nil {
			return nil, 0, false, err
		}
		*p.b = b
	}
	outbox := w.tx.raw.Bucket(bOutbox)
	c := old.Cursor()
	k, v := c.First()
	if after != nil {
		if k, v = c.Seek(after); k != nil && bytes.Equal(k, after) {
			k, v = c.Next()
		}
	}
	for ; k != nil; k, v = c.Next() {
		if limit > 0 && n == limit {
			return bytes.Clone(last), n, false, w.migrated(n)
		}
		last = k
		ub := old.Bucket(k)
		if v != nil || ub == nil {
			return nil, n, false, fmt.Errorf("units/%q is not a unit's bucket: %w", k, errStateFormat)
		}
		if states.Get(k) != nil {
			continue
		}
		serial := string(k)
		raw := ub.Get(kState)
		var u UnitState
		if err := json.Unmarshal(raw, &u); err != nil {
			return nil, n, false, fmt.Errorf("unit %q: decoding state: %w", serial, err)
		}
		row := appendRow(nil, &u)
		val := binary.AppendUvarint([]byte{stateRowFormat}, uint64(len(row)))
		if err := states.Put(k, append(append(val, row...), raw...)); err != nil {
			return nil, n, false, err
		}
		if sb := ub.Bucket(bSteps); sb != nil {
			err := sb.ForEachBucket(func(step []byte) error {
				return sb.Bucket(step).ForEach(func(ak, rec []byte) error {
					if len(ak) != 8 {
						return fmt.Errorf("unit %q step %q: attempt key %x: %w", serial, step, ak, errStateFormat)
					}
					return steps.Put(stepKey(serial, string(step), binary.BigEndian.Uint64(ak)), bytes.Clone(rec))
				})
			})
			if err != nil {
				return nil, n, false, err
			}
		}
		if eb := ub.Bucket(bEvents); eb != nil {
			var seqs []byte
			err := eb.ForEach(func(sk, data []byte) error {
				var ev struct {
					Seq uint64 `json:"seq"`
				}
				if err := json.Unmarshal(data, &ev); err != nil {
					return fmt.Errorf("unit %q event: %w", serial, err)
				}
				if len(sk) != 8 || binary.BigEndian.Uint64(sk) != uint64(len(seqs)/8+1) || outbox.Get(u64key(ev.Seq)) == nil {
					return fmt.Errorf("unit %q event %x (outbox entry %d): %w", serial, sk, ev.Seq, errStateFormat)
				}
				seqs = binary.BigEndian.AppendUint64(seqs, ev.Seq)
				return nil
			})
			if err != nil {
				return nil, n, false, err
			}
			if len(seqs) > 0 {
				if err := events.Put(k, seqs); err != nil {
					return nil, n, false, err
				}
			}
		}
		n++
	}
	return bytes.Clone(last), n, true, w.migrated(n)
}

// migrated audits the n units a migrateUnits call copied (nothing when none).
func (w *wtx) migrated(n int) error {
	if n == 0 {
		return nil
	}
	if err := w.audit(AuditEvent{Action: AuditActionWrite, Details: map[string]string{"schema_4": "units copied", "units": fmt.Sprint(n)}}); err != nil {
		return err
	}
	return w.flush()
}

// migrate copies the units of a file older than schema 4 into the flat layout, migrateChunk
// units a transaction, before Open brings the schema up (init, upgrade): a transaction holds
// what it writes in memory until it commits, and a large file's copy is gigabytes. An open
// that stops half-way leaves whole chunks, each with its audit record; the next one goes on.
// It leaves alone a file init refuses or creates (no schema, a damaged meta bucket or chain
// head, another station's file, schema 4 or newer) and a schema 1 file, whose stored values
// upgrade first covers with audit.baseline records, then copies in the same transaction.
func (s *Store) migrate(db *bolt.DB, stationID string) error {
	var after []byte
	total := 0
	for {
		done := true
		err := db.Update(func(tx *bolt.Tx) error {
			meta := tx.Bucket(bMeta)
			if meta == nil || len(meta.Get(kSchemaVersion)) != 8 || len(meta.Get(kAuditHead)) != 8+sha256.Size ||
				binary.BigEndian.Uint64(meta.Get(kSchemaVersion)) >= 4 ||
				binary.BigEndian.Uint64(meta.Get(kSchemaVersion)) < 2 || // baselined first, by upgrade
				tx.Bucket(bUnits) == nil || tx.Bucket(bOutbox) == nil || tx.Bucket(bAudit) == nil {
				return nil
			}
			stored := string(meta.Get(kStationID))
			if stationID != "" && stationID != stored || checkHead(tx) != nil {
				return nil
			}
			s.stationID = stored
			var n int
			var err error
			after, n, done, err = s.newWtx(tx, PrincipalStation).migrateUnits(after, migrateChunk)
			total += n
			return err
		})
		if err != nil {
			return fmt.Errorf("copying units into the schema 4 layout: %w", err)
		}
		if total > 0 {
			s.log.Info("store: units copied into the schema 4 layout", "units", total, "done", done)
		}
		if done {
			return nil
		}
	}
}
