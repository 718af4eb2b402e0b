// Package store is the station's durable record: one bbolt file per station
// holding every unit's state, step records (intent before a side effect,
// result after), event log, the EK and certificate indexes, work orders, the
// MES outbox and a hash-chained audit log.
//
// Nothing is ever deleted. Every mutating call commits its effect, its events
// and its audit record in one transaction through bbolt's DB.Batch, so that
// many concurrent units share each fsync; reads use DB.View. Refusals (an EK
// bound elsewhere, an open intent, ...) are audited too. A call's context is
// checked before its write is queued; once queued, the write completes.
//
// Store is safe for concurrent use; every other type is a plain value.
package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is the schema this package writes. Open refuses newer files.
const SchemaVersion = 1

const (
	defaultMaxBatchSize  = 256
	defaultMaxBatchDelay = 2 * time.Millisecond
	lockTimeout          = 5 * time.Second
)

// Bucket and key names.
var (
	bMeta       = []byte("meta")
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
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

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
	// MaxBatchDelay is how long a batch waits for more writers before it
	// commits. 0 means 2ms (bbolt's own default is 10ms).
	MaxBatchDelay time.Duration
	// Logger receives debug logs (open, refused writes); nil means silence.
	Logger *slog.Logger
}

// Store is a station's store. It is safe for concurrent use.
type Store struct {
	db        *bolt.DB
	clock     Clock
	log       *slog.Logger
	stationID string
	states    unitStates
}

// Open opens or creates the store file at path.
func Open(path string, opts Options) (*Store, error) {
	s := &Store{clock: opts.Clock, log: opts.Logger}
	if s.clock == nil {
		s.clock = systemClock{}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	db.MaxBatchSize = opts.MaxBatchSize
	if db.MaxBatchSize <= 0 {
		db.MaxBatchSize = defaultMaxBatchSize
	}
	db.MaxBatchDelay = opts.MaxBatchDelay
	if db.MaxBatchDelay <= 0 {
		db.MaxBatchDelay = defaultMaxBatchDelay
	}
	s.db = db
	if err := db.Update(func(tx *bolt.Tx) error { return s.init(tx, opts.StationID) }); err != nil {
		db.Close()
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	s.log.Debug("store opened", "path", path, "station_id", s.stationID,
		"max_batch_size", db.MaxBatchSize, "max_batch_delay", db.MaxBatchDelay)
	return s, nil
}

// init checks or creates the schema and checks the audit chain head.
func (s *Store) init(tx *bolt.Tx, stationID string) error {
	meta := tx.Bucket(bMeta)
	if meta == nil || meta.Get(kSchemaVersion) == nil {
		if stationID == "" {
			return fmt.Errorf("creating store: station id: %w", ErrInvalidArgument)
		}
		return s.create(tx, stationID)
	}
	if len(meta.Get(kSchemaVersion)) != 8 || len(meta.Get(kAuditHead)) != 8+sha256.Size {
		return errors.New("meta bucket corrupt")
	}
	if v := binary.BigEndian.Uint64(meta.Get(kSchemaVersion)); v > SchemaVersion {
		return fmt.Errorf("schema version %d (supported %d): %w", v, SchemaVersion, ErrSchemaTooNew)
	}
	stored := string(meta.Get(kStationID))
	if stationID != "" && stationID != stored {
		return fmt.Errorf("store of station %q opened as %q: %w", stored, stationID, ErrStationMismatch)
	}
	s.stationID = stored
	for _, name := range [][]byte{bUnits, bEKIndex, bCertIndex, bWorkOrders, bOutbox, bAudit} {
		if tx.Bucket(name) == nil {
			return fmt.Errorf("bucket %s missing", name)
		}
	}
	// O(1) check that the head in meta is the last record; VerifyChain
	// walks the whole log.
	head := readHead(meta)
	k, v := tx.Bucket(bAudit).Cursor().Last()
	if k == nil || binary.BigEndian.Uint64(k) != head.Seq {
		return &ChainBrokenError{Seq: head.Seq, Reason: "head in meta is not the last record"}
	}
	var last AuditEvent
	if err := json.Unmarshal(v, &last); err != nil || !bytes.Equal(last.Hash, head.Hash) {
		return &ChainBrokenError{Seq: head.Seq, Reason: "head hash in meta differs from the last record"}
	}
	return nil
}

func (s *Store) create(tx *bolt.Tx, stationID string) error {
	meta, err := tx.CreateBucketIfNotExists(bMeta)
	if err != nil {
		return err
	}
	for _, name := range [][]byte{bUnits, bEKIndex, bCertIndex, bWorkOrders, bOutbox, bAudit} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("creating bucket %s: %w", name, err)
		}
	}
	now := s.now()
	puts := []struct{ k, v []byte }{
		{kSchemaVersion, u64key(SchemaVersion)},
		{kStationID, []byte(stationID)},
		{kCreatedAt, []byte(now.Format(time.RFC3339Nano))},
		{kAuditHead, encodeHead(ChainHead{Hash: make([]byte, 32)})},
	}
	for _, p := range puts {
		if err := meta.Put(p.k, p.v); err != nil {
			return err
		}
	}
	s.stationID = stationID
	w := &wtx{tx: tx, s: s, now: now, principal: PrincipalStation}
	return w.audit(AuditEvent{Action: auditActionStoreCreate, Result: ResultOK,
		Details: map[string]string{"schema_version": fmt.Sprint(SchemaVersion)}})
}

// Close closes the file; later calls fail.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("closing store: %w", err)
	}
	return nil
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
	tx        *bolt.Tx
	s         *Store
	now       time.Time
	principal string
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

// update runs fn in a batched write transaction. fn may run more than once
// (bbolt re-runs batches); it must only touch the transaction and values it
// resets itself. A refusal from fn commits the transaction and is returned.
func (s *Store) update(ctx context.Context, fn func(w *wtx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p := principal(ctx)
	var refused error
	err := s.db.Batch(func(tx *bolt.Tx) error {
		refused = nil
		err := fn(&wtx{tx: tx, s: s, now: s.now(), principal: p})
		var r *refusal
		if errors.As(err, &r) {
			refused = r.err
			return nil
		}
		return err
	})
	if err != nil {
		return err
	}
	if refused != nil {
		s.log.Debug("store write refused", "principal", p, "error", refused)
	}
	return refused
}

// view runs fn in a read transaction.
func (s *Store) view(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.View(fn)
}

// put marshals v as JSON under key.
func put(b *bolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", key, err)
	}
	return b.Put(key, data)
}

// get unmarshals the JSON under key into v; false if absent.
func get(b *bolt.Bucket, key []byte, v any) (bool, error) {
	data := b.Get(key)
	if data == nil {
		return false, nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return true, fmt.Errorf("decoding %s: %w", key, err)
	}
	return true, nil
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
