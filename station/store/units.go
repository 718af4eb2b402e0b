package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// loadUnit reads the unit's state; ErrNotFound if absent.
func (s *Store) loadUnit(tx *bolt.Tx, serial string) (UnitState, error) {
	return s.unitIn(tx.Bucket(bUnitStates), serial)
}

// loadUnit is Store.loadUnit in a write transaction.
func (w *wtx) loadUnit(serial string) (UnitState, error) {
	return w.s.unitIn(w.tx.Bucket(bUnitStates), serial)
}

// unitIn decodes serial's state from the unit_states bucket b; ErrNotFound if absent.
func (s *Store) unitIn(b interface{ Get([]byte) []byte }, serial string) (UnitState, error) {
	raw := b.Get([]byte(serial))
	if raw == nil {
		return UnitState{}, fmt.Errorf("unit %q: %w", serial, ErrNotFound)
	}
	u, err := s.decodeUnit(serial, raw)
	if err != nil {
		return u, fmt.Errorf("unit %q: %w", serial, err)
	}
	return u, nil
}

// unitExists returns ErrNotFound when serial has no state.
func unitExists(tx *bolt.Tx, serial string) error {
	if tx.Bucket(bUnitStates).Get([]byte(serial)) == nil {
		return fmt.Errorf("unit %q: %w", serial, ErrNotFound)
	}
	return nil
}

// saveUnit stamps and writes the unit's state (with its listing row) and its index entries.
func (w *wtx) saveUnit(u *UnitState) error { return w.storeUnit(u, false) }

// saveUnitLast is saveUnit for a caller that no longer uses u, nor anything u refers to:
// the memo of states keeps u itself, not a copy (Advance, every step's write, saves a copy of
// the unit's step summaries, keys and certificates that way).
func (w *wtx) saveUnitLast(u *UnitState) error { return w.storeUnit(u, true) }

func (w *wtx) storeUnit(u *UnitState, last bool) error {
	u.UpdatedAt = w.now
	data, err := encodeState(u)
	if err != nil {
		return fmt.Errorf("encoding unit %q: %w", u.Serial, err)
	}
	if err := w.tx.Bucket(bUnitStates).Put([]byte(u.Serial), data); err != nil {
		return err
	}
	if err := w.indexUnit(u); err != nil {
		return fmt.Errorf("indexing unit %q: %w", u.Serial, err)
	}
	if last {
		w.s.states.put(u.Serial, data, *u.normalize())
	} else {
		w.s.states.put(u.Serial, data, u.decoded())
	}
	return nil
}

// unitStates remembers the state this store last wrote for each unit, keyed by the stored
// bytes: every step reads the state its previous step wrote, and decoding it again would be
// most of the step's store work. An entry is used only when the bytes a transaction reads
// equal its key, so an entry from a transaction that rolled back is never used. Reads do not
// add entries, so listing many units does not push out the units in flight. It is safe for
// concurrent use.
type unitStates struct {
	mu sync.Mutex
	m  map[string]unitMemo
	// check, for tests, decodes on every hit too and panics when the entry differs.
	check bool
}

type unitMemo struct {
	raw []byte
	u   UnitState
}

// unitStatesMax bounds the memo; it starts over when full (units in flight are far fewer).
const unitStatesMax = 4096

func (c *unitStates) get(serial string, raw []byte) (UnitState, bool) {
	c.mu.Lock()
	m, ok := c.m[serial]
	c.mu.Unlock()
	if !ok || !bytes.Equal(m.raw, raw) {
		return UnitState{}, false
	}
	return m.u.clone(), true
}

// put remembers u as the state raw encodes. It keeps both as they are: the caller hands over
// a u it no longer changes (saveUnit passes a fresh decoded copy) and a raw nothing writes to
// (a fresh encoding, which bbolt only reads).
func (c *unitStates) put(serial string, raw []byte, u UnitState) {
	m := unitMemo{raw: raw, u: u}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= unitStatesMax {
		c.m = make(map[string]unitMemo)
	}
	c.m[serial] = m
}

// decodeUnit decodes a unit's stored state, from the memo when it holds these bytes.
func (s *Store) decodeUnit(serial string, raw []byte) (UnitState, error) {
	var u UnitState
	if raw == nil {
		return u, fmt.Errorf("state: %w", ErrNotFound)
	}
	m, ok := s.states.get(serial, raw)
	if ok && !s.states.check {
		return m, nil
	}
	_, js, err := splitState(raw)
	if err != nil {
		return u, fmt.Errorf("decoding state: %w", err)
	}
	if err := decodeUnitJSON(js, &u); err != nil {
		return u, fmt.Errorf("decoding state: %w", err)
	}
	if ok && !reflect.DeepEqual(u, m) {
		panic(fmt.Sprintf("store: remembered state of %q differs from its bytes:\n%+v\n%+v", serial, m, u))
	}
	return u, nil
}

// clone copies u deeply enough that changing the copy changes nothing in u.
func (u UnitState) clone() UnitState {
	u.Steps = maps.Clone(u.Steps)
	if u.Keys != nil {
		keys := make(map[string]KeyRef, len(u.Keys))
		for k, v := range u.Keys {
			v.Name = bytes.Clone(v.Name)
			keys[k] = v
		}
		u.Keys = keys
	}
	u.Certificates = slices.Clone(u.Certificates)
	if u.Rework != nil {
		r := *u.Rework
		u.Rework = &r
	}
	u.Reworks = slices.Clone(u.Reworks)
	return u
}

// decoded returns u as decoding its JSON encoding gives it: empty collections that the
// encoding omits become nil. (Times are the store's UTC clock readings and survive as they
// are.)
func (u *UnitState) decoded() UnitState {
	d := u.clone()
	return *d.normalize()
}

// normalize is decoded in place: it makes u what decoding its encoding gives and returns it.
func (u *UnitState) normalize() *UnitState {
	d := u
	if len(d.Steps) == 0 {
		d.Steps = nil
	}
	if len(d.Keys) == 0 {
		d.Keys = nil
	}
	for k, v := range d.Keys {
		if len(v.Name) == 0 {
			v.Name = nil
			d.Keys[k] = v
		}
	}
	if len(d.Certificates) == 0 {
		d.Certificates = nil
	}
	if len(d.Reworks) == 0 {
		d.Reworks = nil
	}
	return d
}

// event appends ev to the unit's log (when ev.Serial is set) and to the
// outbox, stamping its sequences and time.
func (w *wtx) event(ev Event) error {
	_, err := w.stampEvent(ev)
	return err
}

// stampEvent is event returning the stamped copy.
func (w *wtx) stampEvent(ev Event) (Event, error) {
	ev.Time, ev.Principal = w.now, w.principal
	ob := w.tx.Bucket(bOutbox)
	seq, err := ob.NextSequence()
	if err != nil {
		return ev, err
	}
	ev.Seq = seq
	if ev.Serial != "" {
		// The unit's log refers to the outbox, which holds the event's bytes.
		eb := w.tx.Bucket(bUnitEvents)
		seqs := eb.Get([]byte(ev.Serial))
		ev.UnitSeq = uint64(len(seqs)/8) + 1
		if err := eb.Put([]byte(ev.Serial), binary.BigEndian.AppendUint64(bytes.Clone(seqs), seq)); err != nil {
			return ev, err
		}
	}
	data, err := encodeEvent(&ev)
	if err != nil {
		return ev, fmt.Errorf("encoding event: %w", err)
	}
	return ev, ob.Put(u64key(seq), data)
}

// Unit returns the state of serial, or ErrNotFound.
func (s *Store) Unit(ctx context.Context, serial string) (UnitState, error) {
	var u UnitState
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var err error
		u, err = s.loadUnit(tx, serial)
		return err
	})
	return u, err
}

// UpdateUnit creates the unit if it does not exist (status pending) and
// applies fn to its state. fn may run more than once and must have no side
// effects. Fields managed by other calls (EKFingerprint, Steps, Attempts,
// Certificates, Rework, Reworks, timestamps) are kept as they were. Moving a
// done or aborted unit to another status consumes its rework authorization;
// without one the call is refused with ErrNotAuthorized. Such a reopening starts a new
// provisioning: the EK certificate digest and fixture slot of the previous one are cleared
// (reopenUnit) unless fn changed them.
func (s *Store) UpdateUnit(ctx context.Context, serial string, fn func(*UnitState) error) (UnitState, error) {
	if err := checkSerial(serial); err != nil {
		return UnitState{}, err
	}
	var out UnitState
	err := s.update(ctx, func(w *wtx) error {
		before, err := w.loadUnit(serial)
		created := errors.Is(err, ErrNotFound)
		if created {
			before = UnitState{Serial: serial, Status: StatusPending, CreatedAt: w.now}
		} else if err != nil {
			return err
		}
		u := before.clone()
		if err := fn(&u); err != nil {
			return fmt.Errorf("updating unit %q: %w", serial, err)
		}
		u.Serial, u.EKFingerprint, u.Attempts, u.Steps = before.Serial, before.EKFingerprint, before.Attempts, before.Steps
		u.Certificates, u.Rework, u.Reworks, u.CreatedAt = before.Certificates, before.Rework, before.Reworks, before.CreatedAt
		a := AuditEvent{Serial: serial, Action: EventUnitUpdated, Fingerprints: unitFingerprints(&before),
			Details: map[string]string{"status": string(u.Status), "current_step": u.CurrentStep, "error_code": u.ErrorCode}}
		if !u.Status.valid() {
			return fmt.Errorf("unit %q: status %q: %w", serial, u.Status, ErrInvalidArgument)
		}
		if before.Status.closed() && u.Status != before.Status {
			if before.Rework == nil || before.Status == StatusScrapped {
				return w.refuse(a, fmt.Errorf("reopening %s unit %q without rework: %w", before.Status, serial, ErrNotAuthorized))
			}
			r := *before.Rework
			r.UsedAt = w.now
			u.Reworks = append(append([]Rework(nil), before.Reworks...), r)
			u.Rework = nil
			a.Details["rework_by"] = r.By
			reopenUnit(&before, &u)
		}
		if created {
			a.Details["created"] = "true"
			if err := w.event(Event{Serial: serial, Type: EventUnitCreated, Status: StatusPending}); err != nil {
				return err
			}
		}
		if err := w.saveUnit(&u); err != nil {
			return err
		}
		if err := w.event(Event{Serial: serial, Type: EventUnitUpdated, Step: u.CurrentStep, Status: u.Status,
			ErrorCode: u.ErrorCode, Message: u.ErrorMessage}); err != nil {
			return err
		}
		out = u
		return w.audit(a)
	})
	if err != nil {
		return UnitState{}, err
	}
	return out, nil
}

// reopenUnit clears in u, the state of a unit a rework reopens, what belongs to the EK
// verification of its previous provisioning: EKCertSHA256 and FixtureSlot, each when
// UpdateUnit's fn left it as it was (before). The workflow records them again once the
// rework's verify_ek has passed (its authorize step); until then, and for good when the
// rework fails before that, the unit's state and its listing row name no EK certificate as
// the accepted one, rather than the superseded provisioning's. EKFingerprint, the EK binding
// (BindEK, ReleaseEK), is kept: the reworked unit must prove that same EK again.
func reopenUnit(before, u *UnitState) {
	if u.EKCertSHA256 == before.EKCertSHA256 {
		u.EKCertSHA256 = ""
	}
	if u.FixtureSlot == before.FixtureSlot {
		u.FixtureSlot = ""
	}
}

func unitFingerprints(u *UnitState) []string {
	if u.EKFingerprint == "" {
		return nil
	}
	return []string{u.EKFingerprint}
}

func checkStep(step string) error {
	if !stepRE.MatchString(step) {
		return fmt.Errorf("step %q: %w", step, ErrInvalidArgument)
	}
	return nil
}

func digest(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// BeginStep records the intent of a new attempt of step before its side
// effect, marks the unit running at that step, and logs and audits it, all in
// one transaction. Intents and results are stored as given and must not hold
// secrets; the audit log keeps only their SHA-256. The unit must exist and not be done or aborted, and the
// step's previous attempt must have a result (else ErrIntentOpen).
func (s *Store) BeginStep(ctx context.Context, serial, step string, intent []byte) (StepRef, error) {
	if err := checkSerial(serial); err != nil {
		return StepRef{}, err
	}
	if err := checkStep(step); err != nil {
		return StepRef{}, err
	}
	var ref StepRef
	err := s.update(ctx, func(w *wtx) error {
		u, err := w.loadUnit(serial)
		if err != nil {
			return skip(err)
		}
		if ref, err = w.beginStep(&u, step, intent); err != nil {
			return err
		}
		return w.saveUnit(&u)
	})
	if err != nil {
		return StepRef{}, err
	}
	return ref, nil
}

// beginStep is BeginStep inside a write transaction, for the unit whose state is u; the caller
// saves u.
func (w *wtx) beginStep(u *UnitState, step string, intent []byte) (StepRef, error) {
	serial := u.Serial
	a := AuditEvent{Serial: serial, Action: EventStepBegun, Fingerprints: unitFingerprints(u),
		Details: map[string]string{"step": step, "intent_sha256": digest(intent)}}
	if u.Status.closed() {
		return StepRef{}, w.refuse(a, fmt.Errorf("beginning step %q of %s unit %q: %w", step, u.Status, serial, ErrUnitClosed))
	}
	sb := w.tx.Bucket(bStepRecords)
	attempt, v := lastSeq(sb.Cursor(), stepPrefix(serial, step))
	if v != nil {
		var last StepRecord
		if err := decodeStepRecord(v, &last); err != nil {
			return StepRef{}, fmt.Errorf("decoding step %q: %w", step, err)
		}
		if !last.Ended {
			a.Details["open_attempt"] = fmt.Sprint(last.Attempt)
			return StepRef{}, w.refuse(a, fmt.Errorf("step %q attempt %d of unit %q: %w", step, last.Attempt, serial, ErrIntentOpen))
		}
	}
	attempt++
	ref := StepRef{Serial: serial, Step: step, Attempt: attempt}
	rec := StepRecord{StepRef: ref, Intent: intent, BeganAt: w.now}
	if err := put(sb, stepKey(serial, step, attempt), &rec); err != nil {
		return StepRef{}, err
	}
	if u.Status == StatusFailed {
		u.ErrorCode, u.ErrorMessage = "", ""
	}
	u.CurrentStep, u.Status = step, StatusRunning
	u.Attempts++
	if u.Steps == nil {
		u.Steps = map[string]StepSummary{}
	}
	sum := u.Steps[step]
	sum.Attempts++
	sum.StartedAt = w.now
	u.Steps[step] = sum
	if err := w.event(Event{Serial: serial, Type: EventStepBegun, Step: step, Attempt: attempt, Status: u.Status}); err != nil {
		return StepRef{}, err
	}
	a.Details["attempt"] = strconv.FormatUint(attempt, 10) // as fmt.Sprint writes it
	return ref, w.audit(a)
}

// EndStep records the result of the attempt ref after its side effect;
// errCode is empty on success. Ending an attempt again with the same result
// and code is a no-op; with another result it is refused with ErrStepEnded.
// It does not change the unit's status: that is the workflow's decision.
func (s *Store) EndStep(ctx context.Context, ref StepRef, result []byte, errCode string) error {
	if err := checkSerial(ref.Serial); err != nil {
		return err
	}
	if err := checkStep(ref.Step); err != nil {
		return err
	}
	return s.update(ctx, func(w *wtx) error {
		u, err := w.loadUnit(ref.Serial)
		if err != nil {
			return skip(err)
		}
		saved, err := w.endStep(&u, ref, result, errCode)
		if err != nil || !saved {
			return err
		}
		return w.saveUnit(&u)
	})
}

// Advance ends the attempt end with its successful result and begins step (of the same unit)
// with its intent, in one transaction: the result of one step and the intent of the next are
// both written after the first step's side effect and before the second's, as EndStep then
// BeginStep would, for one commit instead of two.
func (s *Store) Advance(ctx context.Context, end StepRef, result []byte, step string, intent []byte) (StepRef, error) {
	if err := checkSerial(end.Serial); err != nil {
		return StepRef{}, err
	}
	for _, st := range []string{end.Step, step} {
		if err := checkStep(st); err != nil {
			return StepRef{}, err
		}
	}
	var ref StepRef
	err := s.update(ctx, func(w *wtx) error {
		u, err := w.loadUnit(end.Serial)
		if err != nil {
			return skip(err)
		}
		ended, err := w.endStep(&u, end, result, "")
		if err != nil {
			return err
		}
		ref, err = w.beginStep(&u, step, intent)
		var r *refusal
		if err != nil && !(ended && errors.As(err, &r)) {
			return err
		}
		// A refused begin still commits the ended step: save the unit's summary of it.
		if serr := w.saveUnitLast(&u); serr != nil {
			return serr
		}
		return err
	})
	if err != nil {
		return StepRef{}, err
	}
	return ref, nil
}

// endStep is EndStep inside a write transaction, for the unit whose state is u. It reports
// whether it changed u, which the caller then saves.
func (w *wtx) endStep(u *UnitState, ref StepRef, result []byte, errCode string) (bool, error) {
	sb := w.tx.Bucket(bStepRecords)
	key := stepKey(ref.Serial, ref.Step, ref.Attempt)
	var rec StepRecord
	if ok, err := get(sb, key, &rec); err != nil {
		return false, err
	} else if !ok {
		return false, skip(fmt.Errorf("step %q attempt %d of unit %q: %w", ref.Step, ref.Attempt, ref.Serial, ErrNotFound))
	}
	a := AuditEvent{Serial: ref.Serial, Action: EventStepEnded, Fingerprints: unitFingerprints(u),
		Details: map[string]string{"step": ref.Step, "attempt": strconv.FormatUint(ref.Attempt, 10),
			"result_sha256": digest(result), "step_error_code": errCode}}
	if rec.Ended {
		if bytes.Equal(rec.Result, result) && rec.ErrorCode == errCode {
			return false, nil
		}
		return false, w.refuse(a, fmt.Errorf("step %q attempt %d of unit %q: %w", ref.Step, ref.Attempt, ref.Serial, ErrStepEnded))
	}
	rec.Ended, rec.Result, rec.ErrorCode, rec.EndedAt = true, result, errCode, w.now
	if err := put(sb, key, &rec); err != nil {
		return false, err
	}
	if u.Steps == nil {
		u.Steps = map[string]StepSummary{}
	}
	sum := u.Steps[ref.Step]
	sum.EndedAt, sum.ErrorCode = w.now, errCode
	u.Steps[ref.Step] = sum
	if err := w.event(Event{Serial: ref.Serial, Type: EventStepEnded, Step: ref.Step, Attempt: ref.Attempt,
		Status: u.Status, ErrorCode: errCode}); err != nil {
		return false, err
	}
	if errCode != "" {
		a.Result, a.ErrorCode = ResultError, errCode
	} else {
		a.Result = ResultOK
	}
	return true, w.audit(a)
}

// stepRecords returns the unit's step records accepted by keep, ordered by
// BeganAt, then step, then attempt.
func (s *Store) stepRecords(ctx context.Context, serial string, keep func(*StepRecord) bool) ([]StepRecord, error) {
	var out []StepRecord
	err := s.view(ctx, func(tx *bolt.Tx) error {
		if err := unitExists(tx, serial); err != nil {
			return err
		}
		prefix := stepPrefix(serial, "")
		c := tx.Bucket(bStepRecords).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var rec StepRecord
			if err := decodeStepRecord(v, &rec); err != nil {
				return fmt.Errorf("decoding step record %q: %w", k[len(prefix):], err)
			}
			if keep(&rec) {
				out = append(out, rec)
			}
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if !a.BeganAt.Equal(b.BeganAt) {
			return a.BeganAt.Before(b.BeganAt)
		}
		if a.Step != b.Step {
			return a.Step < b.Step
		}
		return a.Attempt < b.Attempt
	})
	return out, err
}

// OpenIntents returns the unit's step attempts that have an intent and no
// result: after a crash, the workflow resolves each before going on.
func (s *Store) OpenIntents(ctx context.Context, serial string) ([]StepRecord, error) {
	return s.stepRecords(ctx, serial, func(r *StepRecord) bool { return !r.Ended })
}

// StepRecords returns every step attempt of the unit.
func (s *Store) StepRecords(ctx context.Context, serial string) ([]StepRecord, error) {
	return s.stepRecords(ctx, serial, func(*StepRecord) bool { return true })
}

// AppendEvent appends an event of type typ to the unit's log and the outbox,
// audited as "unit.event" with the event's data and type. The unit must exist.
func (s *Store) AppendEvent(ctx context.Context, serial, typ, message string, data map[string]string) (Event, error) {
	if err := checkSerial(serial); err != nil {
		return Event{}, err
	}
	if typ == "" {
		return Event{}, fmt.Errorf("event type: %w", ErrInvalidArgument)
	}
	var out Event
	err := s.update(ctx, func(w *wtx) error {
		u, err := w.loadUnit(serial)
		if err != nil {
			return skip(err)
		}
		out, err = w.stampEvent(Event{Serial: serial, Type: typ, Step: u.CurrentStep, Status: u.Status,
			Message: message, Data: data})
		if err != nil {
			return err
		}
		details := maps.Clone(data)
		if details == nil {
			details = map[string]string{}
		}
		details["type"] = typ
		return w.audit(AuditEvent{Serial: serial, Action: auditActionUnitEvent, Result: ResultOK,
			Fingerprints: unitFingerprints(&u), Details: details})
	})
	if err != nil {
		return Event{}, err
	}
	return out, nil
}

// UnitActions returns the events of the unit's log that an API caller caused (a principal
// other than PrincipalStation, and not empty), in order: what a traveler lists as what people
// did to the unit. It reads the log as UnitEvents does, but decodes an event the station
// caused only as far as its principal.
func (s *Store) UnitActions(ctx context.Context, serial string) ([]Event, error) {
	var out []Event
	err := s.view(ctx, func(tx *bolt.Tx) error {
		if err := unitExists(tx, serial); err != nil {
			return err
		}
		outbox := outboxReader{c: tx.Bucket(bOutbox).Cursor()}
		seqs, err := unitLog(tx, serial)
		if err != nil {
			return err
		}
		for i := 0; i < len(seqs)/8; i++ {
			data := outbox.get(seqs[i*8 : i*8+8])
			if data == nil {
				return fmt.Errorf("event %d of unit %q: outbox entry missing: %w", i+1, serial, errStateFormat)
			}
			if p, ok := eventPrincipal(data); ok && (len(p) == 0 || string(p) == PrincipalStation) {
				continue
			}
			var ev Event
			if err := decodeEvent(data, &ev); err != nil {
				return fmt.Errorf("decoding event: %w", err)
			}
			if ev.Principal != "" && ev.Principal != PrincipalStation {
				out = append(out, ev)
			}
		}
		return nil
	})
	return out, err
}

// outboxReader reads outbox entries by key with one cursor: what Bucket.Get returns, without
// a cursor made for each (a unit's log reads some 23 entries).
type outboxReader struct{ c *bolt.Cursor }

// get returns the value under key, nil when there is none (or a bucket is there).
func (r outboxReader) get(key []byte) []byte {
	k, v := r.c.Seek(key)
	if !bytes.Equal(k, key) {
		return nil
	}
	return v
}

// unitLog returns the outbox keys of serial's events (8 bytes each), in order.
func unitLog(tx *bolt.Tx, serial string) ([]byte, error) {
	seqs := tx.Bucket(bUnitEvents).Get([]byte(serial))
	if len(seqs)%8 != 0 {
		return nil, fmt.Errorf("event log of unit %q: %w", serial, errStateFormat)
	}
	return seqs, nil
}

// UnitEvents returns up to limit events of the unit's log with UnitSeq >
// after, in order. limit <= 0 means all.
func (s *Store) UnitEvents(ctx context.Context, serial string, after uint64, limit int) ([]Event, error) {
	var out []Event
	err := s.view(ctx, func(tx *bolt.Tx) error {
		if err := unitExists(tx, serial); err != nil {
			return err
		}
		if after == math.MaxUint64 {
			return nil
		}
		outbox := outboxReader{c: tx.Bucket(bOutbox).Cursor()}
		seqs, err := unitLog(tx, serial)
		if err != nil {
			return err
		}
		n := uint64(len(seqs)/8) - min(after, uint64(len(seqs)/8))
		if limit > 0 {
			n = min(n, uint64(limit))
		}
		if n > 0 {
			out = make([]Event, 0, n)
		}
		for i := min(after, uint64(len(seqs)/8)); i < uint64(len(seqs)/8) && (limit <= 0 || len(out) < limit); i++ {
			data := outbox.get(seqs[i*8 : i*8+8])
			if data == nil {
				return fmt.Errorf("event %d of unit %q: outbox entry missing: %w", i+1, serial, errStateFormat)
			}
			var ev Event
			if err := decodeEvent(data, &ev); err != nil {
				return fmt.Errorf("decoding event: %w", err)
			}
			out = append(out, ev)
		}
		return nil
	})
	return out, err
}

func scanEvents(b *bolt.Bucket, after uint64, limit int) ([]Event, error) {
	var out []Event
	if after == math.MaxUint64 {
		return nil, nil
	}
	c := b.Cursor()
	for k, v := c.Seek(u64key(after + 1)); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Next() {
		var ev Event
		if err := decodeEvent(v, &ev); err != nil {
			return nil, fmt.Errorf("decoding event: %w", err)
		}
		out = append(out, ev)
	}
	return out, nil
}

// OutboxAfter returns up to limit events for the MES with Seq > token, in
// order, and the token to resume from (the last Seq returned, or token when
// none). limit <= 0 means 100. Nothing is removed: consumers keep their token.
func (s *Store) OutboxAfter(ctx context.Context, token uint64, limit int) ([]Event, uint64, error) {
	if limit <= 0 {
		limit = 100
	}
	var out []Event
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var err error
		out, err = scanEvents(tx.Bucket(bOutbox), token, limit)
		return err
	})
	if err != nil {
		return nil, token, err
	}
	if len(out) > 0 {
		token = out[len(out)-1].Seq
	}
	return out, token, nil
}

// OutboxHead returns the token of the newest outbox event (0 when there is none): a consumer
// that wants only what happens from now on starts there.
func (s *Store) OutboxHead(ctx context.Context) (uint64, error) {
	var head uint64
	err := s.view(ctx, func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bOutbox).Cursor().Last(); k != nil {
			head = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	return head, err
}
