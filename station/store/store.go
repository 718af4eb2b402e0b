// Package store is the station's durable record: one bbolt file per station
// holding every unit's state, step records (intent before a side effect,
// result after), event log, the EK and certificate indexes, work orders, the
// MES outbox and a hash-chained audit log.
//
// Nothing is ever deleted: an EK binding an admin releases is emptied (and audited), and
// refused sessions live in a ring of fixed slots (RecordRefusal). Every mutating call commits its effect, its events
// and its audit record in one transaction, committed in groups (committer), so
// that many concurrent units share each fsync; reads use DB.View. Refusals (an EK
// bound elsewhere, an open intent, ...) are audited too. A call's context is
// checked before its write is queued; once queued, the write completes.
//
// Store is safe for concurrent use; every other type is a plain value.
package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/devid-station/devid/ca-client/clock"
)

// SchemaVersion is the schema this package writes. Open refuses newer files.
// Schema 2 puts the digest of every stored key/value in the audit chain; Open
// brings a schema 1 file up with audit.baseline records (baseline). Schema 3
// stores new audit records in their canonical encoding (recordCanonical),
// which older stations cannot read; the JSON records of an older file stay
// as they are and verify. Schema 4 keeps the units' records flat (layout.go) and
// names a write's bucket by a short id in the audit records; Open copies an
// older file's units into it (migrateUnits).
const SchemaVersion = 4

const (
	defaultMaxBatchSize = 256
	lockTimeout         = 5 * time.Second
)

// Bucket and key names.
var (
	bMeta = []byte("meta")
	// bUnits held a bucket per unit (its state, and buckets steps and events) up to schema
	// 3; a migrated file keeps it, read by nothing.
	bUnits      = []byte("units")
	bEKIndex    = []byte("ek_index")
	bCertIndex  = []byte("cert_index")
	bWorkOrders = []byte("work_orders")
	bOutbox     = []byte("outbox")
	bAudit      = []byte("audit")

	bSteps  = []byte("steps")
	bEvents = []byte("events")
	kState  = []byte("state")

	kSchemaVersion = []byte("schema_version")
	kStationID     = []byte("station_id")
	kCreatedAt     = []byte("created_at")
	kAuditHead     = []byte("audit_head")
)

// Clock gives the current time. It must be safe for concurrent use.
type Clock = clock.Clock

// Options configure Open.
type Options struct {
	// StationID names the station. Required when the file is created; when
	// opening an existing file it must be empty or equal the stored id.
	StationID string
	// Clock stamps records; nil means the system clock.
	Clock Clock
	// MaxBatchSize is the most writes committed in one transaction; set it
	// near the number of concurrent writers. 0 means 256.
	MaxBatchSize int
	// Logger receives debug logs (open, refused writes); nil means silence.
	Logger *slog.Logger
	// OnCorrupt, when set, is called once (in its own goroutine) when a
	// damaged page or a record that does not decode is met after Open; from
	// then on every write is refused.
	OnCorrupt func(error)
	// RefusalsKept is how many refused sessions RecordRefusal keeps; 0 means
	// DefaultRefusalsKept.
	RefusalsKept int
	// Checkpoints, with a Signer, make the store sign its chain head every
	// N records, every T and at Close.
	Checkpoints CheckpointOptions
	// Commits observes, in seconds, each write's time from the call to its durable commit
	// (waiting for its batch included); nil discards.
	Commits prometheus.Observer

	// noSync skips fdatasync on commit (bbolt's NoSync): for FuzzOpen only, whose thousands of
	// throwaway stores would otherwise wait on the disk for most of their time.
	noSync bool
}

// Store is a station's store. It is safe for concurrent use.
type Store struct {
	db        *bolt.DB
	path      string
	clock     Clock
	log       *slog.Logger
	stationID string
	states    unitStates
	// txb holds what the calls of the running write transaction share (txBuckets).
	txb       txBuckets
	onCorrupt func(error)
	corrupt   atomic.Pointer[CorruptError] // set once a damaged page was met
	// refusalsKept bounds the ring of refused sessions.
	refusalsKept int
	commits      prometheus.Observer
	cp           *checkpointer // nil without an audit key
	committer    *committer
}

// Open opens or creates the store file at path. A file whose pages do not
// pass the page check (checkPages: bbolt's consistency check and more), or on
// which bbolt panics, is refused with a *CorruptError; the check reads every
// page once, which is cheap next to a station's lifetime and the only way to
// find damage before a unit depends on it.
func Open(path string, opts Options) (s *Store, err error) {
	s = &Store{path: path, clock: opts.Clock, log: opts.Logger, onCorrupt: opts.OnCorrupt, refusalsKept: opts.RefusalsKept, commits: opts.Commits}
	if s.refusalsKept <= 0 {
		s.refusalsKept = DefaultRefusalsKept
	}
	if s.clock == nil {
		s.clock = clock.System{}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.commits == nil {
		s.commits = prometheus.ObserverFunc(func(float64) {})
	}
	var db *bolt.DB
	defer func() {
		if p := recover(); p != nil {
			if db != nil {
				db.Close()
			}
			s, err = nil, &CorruptError{Path: path, Reason: fmt.Sprintf("bbolt panicked: %v", p)}
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	if f, ferr := os.Open(path); ferr == nil {
		st, serr := f.Stat()
		if serr == nil {
			ferr = checkMetas(f, st.Size())
		}
		f.Close()
		if ferr != nil {
			return nil, &CorruptError{Path: path, Reason: ferr.Error()}
		}
	}
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
	if corruptOnOpen(err) {
		return nil, &CorruptError{Path: path, Reason: err.Error()}
	}
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	if err := check(db, path); err != nil {
		db.Close()
		return nil, err
	}
	s.committer = &committer{db: db, max: opts.MaxBatchSize, onPanic: s.markPanic}
	if s.committer.max <= 0 {
		s.committer.max = defaultMaxBatchSize
	}
	db.NoSync = opts.noSync
	s.db = db
	if err := s.undecodable(s.migrate(db, opts.StationID)); err != nil {
		db.Close()
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	if err := s.undecodable(db.Update(func(tx *bolt.Tx) error { return s.init(tx, opts.StationID) })); err != nil {
		db.Close()
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	if opts.Checkpoints.Signer != nil {
		var head ChainHead
		if err := db.View(func(tx *bolt.Tx) error { head = readHead(tx.Bucket(bMeta)); return nil }); err != nil {
			db.Close()
			return nil, err
		}
		s.startCheckpoints(opts.Checkpoints, head.Seq)
	}
	s.log.Debug("store opened", "path", path, "station_id", s.stationID,
		"max_batch_size", s.committer.max)
	return s, nil
}

// corruptOnOpen says whether bbolt's Open refused the file for what it holds (not for an I/O
// error or the lock).
func corruptOnOpen(err error) bool {
	return errors.Is(err, bolterrors.ErrInvalid) || errors.Is(err, bolterrors.ErrChecksum) ||
		errors.Is(err, bolterrors.ErrVersionMismatch) || errors.Is(err, bolterrors.ErrInvalidMapping) ||
		// bbolt's error for a file shorter than two pages has no sentinel.
		err != nil && strings.HasPrefix(err.Error(), "file size too small")
}

// check checks every page of the store file before anything reads or writes it (checkPages:
// bbolt's consistency check and more), after making sure the file holds every page its meta
// page counts. It reads the pages where bbolt maps them: copying 750,000 pages out of the file
// at 100,000 units cost more CPU than reading them, and the first read of each page through a
// mapping is most of the cost of reading it, which the audit verification at start then does
// not pay again.
func check(db *bolt.DB, path string) error {
	var problem string
	err := db.View(func(tx *bolt.Tx) error {
		st, err := os.Stat(path)
		if err != nil {
			return err
		}
		if st.Size() < tx.Size() {
			problem = fmt.Sprintf("file has %d bytes, its pages need %d (truncated)", st.Size(), tx.Size())
			return nil
		}
		if err := checkPages(mapped(db, tx.Size()), uint64(tx.ID()), db.Info().PageSize); err != nil {
			problem = err.Error()
		}
		return nil
	})
	if err != nil {
		return &CorruptError{Path: path, Reason: err.Error()}
	}
	if problem != "" {
		return &CorruptError{Path: path, Reason: problem}
	}
	return nil
}

// mapped returns the first n bytes of bbolt's mapping of the file, whose address bbolt's Info
// gives. The mapping is not memory of Go's (the collector neither moves nor frees it) and stays
// in place while a transaction is open: bbolt remaps the file only with none open.
func mapped(db *bolt.DB, n int64) []byte {
	return unsafe.Slice((*byte)(unsafe.Add(nil, db.Info().Data)), n)
}

// markCorrupt latches the store as corrupt for reason (bbolt panicked on a page, a stored
// record does not decode) and returns the error every later write gets.
func (s *Store) markCorrupt(reason string) error {
	return s.latchCorrupt(&CorruptError{Path: s.path, Reason: reason})
}

// markPanic latches the store as corrupt after bbolt panicked with p (on any goroutine of
// the store's) and returns the error every later write gets.
func (s *Store) markPanic(p any) error { return s.markCorrupt(fmt.Sprintf("bbolt panicked: %v", p)) }

// latchCorrupt latches the store as corrupt with ce (the first error stays) and returns the
// error every later write gets.
func (s *Store) latchCorrupt(ce *CorruptError) error {
	if s.corrupt.CompareAndSwap(nil, ce) {
		s.log.Error("store corrupt: refusing every write", "code", CodeStoreCorrupt, "path", s.path, "reason", ce.Reason)
		if s.onCorrupt != nil {
			go s.onCorrupt(ce)
		}
	}
	return s.corrupt.Load()
}

// Corrupt returns the *CorruptError once a damaged page was met, else nil.
func (s *Store) Corrupt() error {
	if ce := s.corrupt.Load(); ce != nil {
		return ce
	}
	return nil
}

// init checks or creates the schema and checks the audit chain head.
func (s *Store) init(tx *bolt.Tx, stationID string) error {
	meta := tx.Bucket(bMeta)
	if meta == nil || meta.Get(kSchemaVersion) == nil {
		// create writes everything in one transaction: a file holding anything without a
		// schema version is a damaged store, not a new one.
		if k, _ := tx.Cursor().First(); k != nil {
			return &CorruptError{Path: s.path, Reason: "no schema version in a file that holds buckets"}
		}
		if stationID == "" {
			return fmt.Errorf("creating store: station id: %w", ErrInvalidArgument)
		}
		return s.create(tx, stationID)
	}
	if len(meta.Get(kSchemaVersion)) != 8 || len(meta.Get(kAuditHead)) != 8+sha256.Size {
		return &CorruptError{Path: s.path, Reason: "meta bucket damaged"}
	}
	if v := binary.BigEndian.Uint64(meta.Get(kSchemaVersion)); v > SchemaVersion {
		return fmt.Errorf("schema version %d (supported %d): %w", v, SchemaVersion, ErrSchemaTooNew)
	}
	stored := string(meta.Get(kStationID))
	if stationID != "" && stationID != stored {
		return fmt.Errorf("store of station %q opened as %q: %w", stored, stationID, ErrStationMismatch)
	}
	s.stationID = stored
	version := binary.BigEndian.Uint64(meta.Get(kSchemaVersion))
	required := [][]byte{bUnitStates, bStepRecords, bUnitEvents, bEKIndex, bCertIndex, bWorkOrders, bOutbox, bAudit}
	if version < 4 {
		required = [][]byte{bUnits, bEKIndex, bCertIndex, bWorkOrders, bOutbox, bAudit}
	}
	for _, name := range required {
		if tx.Bucket(name) == nil {
			return &CorruptError{Path: s.path, Reason: fmt.Sprintf("bucket %s missing", name)}
		}
	}
	if err := checkHead(tx); err != nil {
		return err
	}
	if version < SchemaVersion {
		if err := s.upgrade(tx, version); err != nil {
			return err
		}
	}
	return s.indexUnits(tx)
}

// checkHead checks in O(1) that the head in meta is the last audit record; Verify walks the
// whole log.
func checkHead(tx *bolt.Tx) error {
	head := readHead(tx.Bucket(bMeta))
	k, v := tx.Bucket(bAudit).Cursor().Last()
	if k == nil || binary.BigEndian.Uint64(k) != head.Seq {
		return &ChainBrokenError{Seq: head.Seq, Reason: "head in meta is not the last record"}
	}
	last, err := decodeRecord(v)
	if err != nil || !bytes.Equal(last.Hash, head.Hash) {
		return &ChainBrokenError{Seq: head.Seq, Reason: "head hash in meta differs from the last record"}
	}
	return nil
}

// baselineChunk is how many digests one audit.baseline record carries.
const baselineChunk = 4096

// upgrade brings a file of schema from up to SchemaVersion, with an audited
// write of the new version. A schema 1 file is first covered by
// audit.baseline records carrying the digest of every key/value it holds; the
// units of a file older than schema 4 are then copied into the flat layout.
func (s *Store) upgrade(tx *bolt.Tx, from uint64) error {
	w := s.newWtx(tx, PrincipalStation)
	var baselined int
	if from < 2 {
		var digests []WriteDigest
		if err := walkStored(tx, func(path string, k, v []byte) error {
			h := sha256.Sum256(v)
			digests = append(digests, WriteDigest{Bucket: path, Key: bytes.Clone(k), SHA256: h[:]})
			return nil
		}); err != nil {
			return fmt.Errorf("audit baseline: %w", err)
		}
		for i := 0; i < len(digests); i += baselineChunk {
			a := AuditEvent{Action: AuditActionBaseline, Details: map[string]string{"from_schema": "1"},
				Writes: digests[i:min(i+baselineChunk, len(digests))], Encoding: AuditEncodingV2}
			if err := w.appendRecord(a); err != nil {
				return fmt.Errorf("audit baseline: %w", err)
			}
		}
		baselined = len(digests)
	}
	migrated := 0
	if from < 4 {
		var err error
		// Store.migrate copied them before, a chunk a transaction: this copies what is left
		// (nothing, unless the file changed since).
		if _, migrated, _, err = w.migrateUnits(nil, 0); err != nil {
			return fmt.Errorf("copying units into the schema 4 layout: %w", err)
		}
	}
	if err := w.tx.Bucket(bMeta).Put(kSchemaVersion, u64key(SchemaVersion)); err != nil {
		return err
	}
	if err := w.audit(AuditEvent{Action: AuditActionWrite, Details: map[string]string{"schema_version": fmt.Sprint(SchemaVersion)}}); err != nil {
		return err
	}
	s.log.Info("store brought to the current schema", "from", from, "schema_version", SchemaVersion,
		"baselined_records", baselined, "units_copied", migrated)
	return w.flush()
}

func (s *Store) create(tx *bolt.Tx, stationID string) error {
	s.stationID = stationID
	w := s.newWtx(tx, PrincipalStation)
	meta, err := w.tx.CreateBucketIfNotExists(bMeta)
	if err != nil {
		return err
	}
	for _, name := range [][]byte{bUnitStates, bStepRecords, bUnitEvents, bEKIndex, bCertIndex, bWorkOrders, bOutbox, bAudit, bUnitIndex} {
		if _, err := w.tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("creating bucket %s: %w", name, err)
		}
	}
	puts := []struct{ k, v []byte }{
		{kSchemaVersion, u64key(SchemaVersion)},
		{kStationID, []byte(stationID)},
		{kCreatedAt, []byte(w.now.Format(time.RFC3339Nano))},
		{kAuditHead, encodeHead(ChainHead{Hash: make([]byte, 32)})},
	}
	for _, p := range puts {
		if err := meta.Put(p.k, p.v); err != nil {
			return err
		}
	}
	if err := w.audit(AuditEvent{Action: auditActionStoreCreate, Result: ResultOK,
		Details: map[string]string{"schema_version": fmt.Sprint(SchemaVersion)}}); err != nil {
		return err
	}
	return w.flush()
}

// Close signs a last checkpoint (with an audit key) and closes the file;
// later calls fail.
func (s *Store) Close() error {
	var cpErr error
	if s.cp != nil {
		first := false
		s.cp.once.Do(func() { first = true; close(s.cp.stop) })
		<-s.cp.done
		if !first {
			return s.db.Close()
		}
		if _, err := s.Checkpoint(context.Background()); err != nil {
			cpErr = fmt.Errorf("closing store: %w", err)
		}
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("closing store: %w", err)
	}
	return cpErr
}

// StationID returns the id of the station that owns the store.
func (s *Store) StationID() string { return s.stationID }

// CreatedAt returns when the store file was created.
func (s *Store) CreatedAt(ctx context.Context) (time.Time, error) {
	var t time.Time
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var err error
		t, err = time.Parse(time.RFC3339Nano, string(tx.Bucket(bMeta).Get(kCreatedAt)))
		return err
	})
	return t, err
}

func (s *Store) now() time.Time { return s.clock.Now().UTC().Round(0) }

type principalKey struct{}

// WithPrincipal returns a context whose writes are audited as made by
// principal (the authenticated caller of the station API).
func WithPrincipal(ctx context.Context, principal string) context.Context {
	return context.WithValue(ctx, principalKey{}, principal)
}

// PrincipalStation is the principal of the station's own writes (no WithPrincipal).
const PrincipalStation = "station"

// principal returns the caller recorded in ctx, or PrincipalStation.
func principal(ctx context.Context) string {
	if p, ok := ctx.Value(principalKey{}).(string); ok && p != "" {
		return p
	}
	return PrincipalStation
}

// wtx is one mutating call inside a (possibly shared) write transaction.
type wtx struct {
	tx        *wtxn
	s         *Store
	now       time.Time
	principal string
	// writes are the digests of what the call wrote, pending its audit
	// records; flush appends them.
	writes  []WriteDigest
	pending []AuditEvent
	// buckets are the wrappers of the buckets the call used (wtx.wrapped); the first
	// len(inline) are in inline, and bucketsArr backs the slice.
	buckets    []*wbucket
	inline     [6]wbucket
	nInline    int
	bucketsArr [8]*wbucket
	// digests back writes for a call's first few writes (a step's call makes about ten).
	digests [12]WriteDigest
}

// newWtx starts a mutating call in tx.
func (s *Store) newWtx(tx *bolt.Tx, principal string) *wtx {
	w := &wtx{s: s, now: s.now(), principal: principal}
	w.tx = &wtxn{raw: tx, w: w}
	w.writes = w.digests[:0]
	w.buckets = w.bucketsArr[:0]
	return w
}

// refusal is an error returned to the caller while the transaction commits:
// either a refusal whose audit record is written, or a skip that wrote
// nothing.
type refusal struct{ err error }

func (r *refusal) Error() string { return r.err.Error() }

// skip returns err to the caller without rolling back the batch. Use it only
// for errors found before the call wrote anything: other calls in the batch
// then commit without being re-run.
func skip(err error) error { return &refusal{err: err} }

// refuse writes an "error" audit record for a and returns a refusal of err.
func (w *wtx) refuse(a AuditEvent, err error) error {
	a.Result = ResultError
	a.ErrorCode = errorCode(err)
	if aerr := w.audit(a); aerr != nil {
		return aerr
	}
	return &refusal{err: err}
}

// update runs fn in a write transaction committed with others (committer). fn may run more
// than once (a group is re-run without a write that failed); it must only touch the transaction and values it
// resets itself. A refusal from fn commits the transaction and is returned.
func (s *Store) update(ctx context.Context, fn func(w *wtx) error) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.Corrupt(); err != nil {
		return err
	}
	// A panic of fn in a group is re-run alone by the committer in this goroutine.
	defer s.recoverCorrupt(&err)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	p := principal(ctx)
	var refused error
	start := time.Now()
	err = s.committer.do(func(tx *bolt.Tx) error {
		refused = nil
		w := s.newWtx(tx, p)
		err := fn(w)
		var r *refusal
		if errors.As(err, &r) {
			refused = r.err
		} else if err != nil {
			return err
		}
		return w.flush()
	})
	if err != nil {
		return s.undecodable(err)
	}
	s.commits.Observe(time.Since(start).Seconds())
	if s.cp != nil {
		s.afterCommit(s.headSeq())
	}
	if refused != nil {
		s.log.Debug("store write refused", "principal", p, "error", refused)
	}
	return s.undecodable(refused)
}

// headSeq returns the chain head's sequence (0 when it cannot be read).
func (s *Store) headSeq() uint64 {
	h, _ := s.ChainHead(context.Background())
	return h.Seq
}

// view runs fn in a read transaction. A bbolt panic on a damaged page (or a
// memory fault on the mapped file) marks the store corrupt and returns the
// *CorruptError.
func (s *Store) view(ctx context.Context, fn func(tx *bolt.Tx) error) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	defer s.recoverCorrupt(&err)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return s.undecodable(s.db.View(fn))
}

// undecodable turns err, when it is a stored record that does not decode as what the store
// wrote there, into the store's *CorruptError: the file is damaged as surely as when a page is
// (bbolt keeps no checksum of values), and the store latches as corrupt. Any other error
// passes.
func (s *Store) undecodable(err error) error {
	if err == nil {
		return nil // before the targets below, which escape: no allocation on success
	}
	var (
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
		b64    base64.CorruptInputError
		tm     *time.ParseError
		cb     *ChainBrokenError
	)
	if err == nil || errors.As(err, &cb) {
		return err
	}
	if errors.As(err, &syntax) || errors.As(err, &typ) || errors.As(err, &b64) || errors.As(err, &tm) || errors.Is(err, errStateFormat) {
		return s.markCorrupt("a stored record does not decode: " + err.Error())
	}
	return err
}

// recoverCorrupt, deferred at the store boundary, turns a bbolt panic on a
// damaged page, or a fault reading a page no longer backed by the file
// (SetPanicOnFault), into the store's *CorruptError in *err.
func (s *Store) recoverCorrupt(err *error) {
	if p := recover(); p != nil {
		*err = s.markPanic(p)
	}
}

// put marshals v as JSON under key.
func put(b *wbucket, key []byte, v any) error {
	var data []byte
	var err error
	if rec, ok := v.(*StepRecord); ok {
		data, err = encodeStepRecord(rec) // json.Marshal's bytes, without its reflection
	} else {
		data, err = json.Marshal(v)
	}
	if err != nil {
		return fmt.Errorf("encoding %s: %w", key, err)
	}
	return b.Put(key, data)
}

// get unmarshals the JSON under key into v; false if absent.
func get(b interface{ Get([]byte) []byte }, key []byte, v any) (bool, error) {
	data := b.Get(key)
	if data == nil {
		return false, nil
	}
	if rec, ok := v.(*StepRecord); ok && isZero(rec) {
		// encoding/json's value (its errors too), without its reflection (recjson.go).
		if err := decodeStepRecord(data, rec); err != nil {
			return true, fmt.Errorf("decoding %s: %w", key, err)
		}
		return true, nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return true, fmt.Errorf("decoding %s: %w", key, err)
	}
	return true, nil
}

// isZero says rec is the zero StepRecord, which json.Unmarshal fills as decodeStepRecord does.
func isZero(rec *StepRecord) bool {
	return rec.Serial == "" && rec.Step == "" && rec.Attempt == 0 && rec.Intent == nil && rec.BeganAt.IsZero() && !rec.Ended &&
		rec.Result == nil && rec.ErrorCode == "" && rec.EndedAt.IsZero()
}

func u64key(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

var (
	serialRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)
	stepRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)
	hex256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

func checkSerial(serial string) error {
	if !serialRE.MatchString(serial) {
		return fmt.Errorf("serial %q: %w", serial, ErrInvalidArgument)
	}
	return nil
}
