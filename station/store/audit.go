package store

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// auditDomain separates audit hashes from every other SHA-256 use; auditDomainV2 is the
// domain of records in the v2 encoding (AuditEncodingV2), so that no v1 body hashes as a v2
// one.
const (
	auditDomain   = "devid-station/audit/v1\x00"
	auditDomainV2 = "devid-station/audit/v2\x00"
)

// domain returns the hash domain of a's encoding.
func (a *AuditEvent) domain() string {
	if a.Encoding == AuditEncodingV2 {
		return auditDomainV2
	}
	return auditDomain
}

// verifyChunk is how many audit records Verify checks between looks at its
// context and calls of its progress function.
const verifyChunk = 4096

// canonical returns the encoding that Hash covers: the domain string, then
// the record's body (appendBody).
func (a *AuditEvent) canonical() []byte {
	return a.appendBody(append(make([]byte, 0, 512), a.domain()...))
}

// appendBody appends the record's canonical body to b: a fixed field order,
// length-prefixed strings, Details sorted by key, time as Unix nanoseconds,
// PrevHash, then the writes when there are any (marker 'W'). A record of
// encoding v2 is appendBodyV2.
func (a *AuditEvent) appendBody(b []byte) []byte {
	if a.Encoding == AuditEncodingV2 {
		return a.appendBodyV2(b)
	}
	str := func(s string) []byte {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		return append(b, s...)
	}
	b = binary.BigEndian.AppendUint64(b, a.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(a.Time.UnixNano()))
	for _, s := range []string{a.StationID, a.Principal, a.Serial, a.Action, a.Result, a.ErrorCode} {
		b = str(s)
	}
	keys := make([]string, 0, len(a.Details))
	for k := range a.Details {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b = binary.BigEndian.AppendUint32(b, uint32(len(keys)))
	for _, k := range keys {
		b = str(k)
		b = str(a.Details[k])
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(a.Fingerprints)))
	for _, f := range a.Fingerprints {
		b = str(f)
	}
	b = str(string(a.PrevHash))
	// Records without writes hash as before the writes were covered.
	if len(a.Writes) > 0 {
		b = append(b, 'W')
		b = binary.BigEndian.AppendUint32(b, uint32(len(a.Writes)))
		for _, d := range a.Writes {
			b = str(d.Bucket)
			b = str(string(d.Key))
			b = str(string(d.SHA256))
			if d.Had {
				b = append(b, 1)
			} else {
				b = append(b, 0)
			}
		}
	}
	return b
}

// computeHash returns SHA-256 over the canonical encoding.
func (a *AuditEvent) computeHash() []byte {
	h := sha256.Sum256(a.canonical())
	return h[:]
}

func encodeHead(h ChainHead) []byte {
	return append(u64key(h.Seq), h.Hash...)
}

func readHead(meta *bolt.Bucket) ChainHead {
	v := meta.Get(kAuditHead)
	return ChainHead{Seq: binary.BigEndian.Uint64(v[:8]), Hash: append([]byte(nil), v[8:]...)}
}

// audit queues a for the chain; the call's records are appended when it
// returns (flush). It fills Seq, Time, StationID, Principal, PrevHash and
// Hash then; an empty Result means ResultOK.
func (w *wtx) audit(a AuditEvent) error {
	w.pending = append(w.pending, a)
	return nil
}

// flush appends the call's audit records to the chain, the digests of every
// key/value it wrote on the last one (on a store.write record when it queued
// none), in the v2 encoding.
func (w *wtx) flush() error {
	if len(w.writes) > 0 {
		if len(w.pending) == 0 {
			w.pending = append(w.pending, AuditEvent{Action: AuditActionWrite})
		}
		w.pending[len(w.pending)-1].Writes = w.writes
	}
	for _, a := range w.pending {
		a.Encoding = AuditEncodingV2
		if err := w.appendRecord(a); err != nil {
			return err
		}
	}
	w.pending, w.writes = nil, nil
	return nil
}

// appendRecord links a to the head and writes it.
func (w *wtx) appendRecord(a AuditEvent) error {
	if a.Result == "" {
		a.Result = ResultOK
	}
	meta := w.tx.raw.Bucket(bMeta)
	head := readHead(meta)
	a.Seq = head.Seq + 1
	a.Time = w.now
	a.StationID = w.s.stationID
	a.Principal = w.principal
	a.PrevHash = head.Hash
	ab := w.tx.raw.Bucket(bAudit)
	ab.FillPercent = 1 // appended in order: fill its pages (see fillPercent)
	if err := ab.Put(u64key(a.Seq), a.seal()); err != nil {
		return fmt.Errorf("writing audit record %d: %w", a.Seq, err)
	}
	return meta.Put(kAuditHead, encodeHead(ChainHead{Seq: a.Seq, Hash: a.Hash}))
}

// Bounds of an AuditAPIRefusal record, so that a caller cannot grow the store
// with large refusals.
const (
	maxRefusalDetails     = 16
	maxRefusalDetailBytes = 512
)

// AuditAPIRefusal appends an error audit record (action AuditActionAPIRefused)
// for an API call refused before it reached the store: the principal is the
// refused caller from ctx (WithPrincipal), code says why, details what
// (method, peer, certificate fingerprint, how many refusals a summary
// covers). Details are bounded in number and size; longer values are cut.
// Rate limiting is the caller's.
func (s *Store) AuditAPIRefusal(ctx context.Context, code string, details map[string]string) error {
	if code == "" || len(details) > maxRefusalDetails {
		return fmt.Errorf("API refusal record: code %q with %d details: %w", code, len(details), ErrInvalidArgument)
	}
	// Cut, then keep valid UTF-8 only: JSON would rewrite other bytes and the
	// stored record would no longer match its hash.
	bound := func(v string) string {
		if len(v) > maxRefusalDetailBytes {
			v = v[:maxRefusalDetailBytes]
		}
		return strings.ToValidUTF8(v, "")
	}
	d := make(map[string]string, len(details))
	for k, v := range details {
		d[bound(k)] = bound(v)
	}
	return s.update(ctx, func(w *wtx) error {
		return w.audit(AuditEvent{Action: AuditActionAPIRefused, Result: ResultError, ErrorCode: code, Details: d})
	})
}

// ChainHead returns the current head of the audit chain.
func (s *Store) ChainHead(ctx context.Context) (ChainHead, error) {
	var h ChainHead
	err := s.view(ctx, func(tx *bolt.Tx) error {
		h = readHead(tx.Bucket(bMeta))
		return nil
	})
	return h, err
}

// auditPage bounds the room AuditAfter and AuditBriefsAfter make for their answer before
// reading it: a page of records at most, so that a large limit past the head costs nothing.
const auditPage = 4096

// AuditEach calls fn with each audit record with Seq > after, in order, up to limit of them
// (limit <= 0 means 100), in one read transaction, and stops at fn's first error, which it
// returns. The record fn is given holds what AuditAfter returns of it, but it and everything
// in it are fn's only until fn returns: the next record reuses them, and its byte slices
// point into the store's pages, which fn must not write. It spares a reader that encodes each
// record (a QA export) building every record anew.
func (s *Store) AuditEach(ctx context.Context, after uint64, limit int, fn func(a *AuditEvent) error) error {
	if limit <= 0 {
		limit = 100
	}
	if after == math.MaxUint64 {
		return nil
	}
	var a AuditEvent
	var arena []byte
	// fn's error is returned as it is, not taken for the store's (a record that does not
	// decode marks the store corrupt).
	var fnErr error
	err := s.view(ctx, func(tx *bolt.Tx) error {
		c := tx.Bucket(bAudit).Cursor()
		n := 0
		for k, v := c.Seek(u64key(after + 1)); k != nil && n < limit; k, v = c.Next() {
			n++
			rec := &a
			if len(v) > 0 && v[0] == '{' {
				js, err := decodeRecord(v)
				if err != nil {
					return fmt.Errorf("decoding audit record %d: %w", binary.BigEndian.Uint64(k), err)
				}
				rec = &js
			} else {
				r, err := parseRecord(v)
				if err != nil {
					return fmt.Errorf("decoding audit record %d: %w", binary.BigEndian.Uint64(k), err)
				}
				r.eventInto(&a, &arena)
			}
			if fnErr = fn(rec); fnErr != nil {
				return errAuditEachStopped
			}
		}
		return nil
	})
	if fnErr != nil {
		return fnErr
	}
	return err
}

// errAuditEachStopped ends AuditEach's transaction when fn fails.
var errAuditEachStopped = errors.New("stopped by the reader")

// AuditBrief is what an audit record says of when, who and which unit: AuditEvent's Seq,
// Time, Principal, Serial and Action.
type AuditBrief struct {
	Seq       uint64
	Time      time.Time
	Principal string
	Serial    string
	Action    string
}

// AuditBriefsAfter is AuditAfter returning each record's AuditBrief only: it does not build
// the records' details, fingerprints, writes and digests (a QA export reads the whole chain
// so to find its units' records). A record that does not decode is an error, as in
// AuditAfter.
func (s *Store) AuditBriefsAfter(ctx context.Context, after uint64, limit int) ([]AuditBrief, error) {
	return auditPageOf(ctx, s, after, limit, decodeBrief)
}

// auditPageOf returns up to limit audit records with Seq > after, in order, each decoded by
// decode (limit <= 0 means 100).
func auditPageOf[T any](ctx context.Context, s *Store, after uint64, limit int, decode func([]byte) (T, error)) ([]T, error) {
	if limit <= 0 {
		limit = 100
	}
	var out []T
	if after == math.MaxUint64 {
		return nil, nil
	}
	err := s.view(ctx, func(tx *bolt.Tx) error {
		c := tx.Bucket(bAudit).Cursor()
		for k, v := c.Seek(u64key(after + 1)); k != nil && len(out) < limit; k, v = c.Next() {
			if out == nil {
				out = make([]T, 0, min(limit, auditPage))
			}
			a, err := decode(v)
			if err != nil {
				return fmt.Errorf("decoding audit record %d: %w", binary.BigEndian.Uint64(k), err)
			}
			out = append(out, a)
		}
		return nil
	})
	return out, err
}

// decodeBrief decodes the AuditBrief of a stored audit record of either form, as
// decodeRecord would decode the record.
func decodeBrief(v []byte) (AuditBrief, error) {
	if len(v) > 0 && v[0] == '{' {
		a, err := decodeRecord(v)
		return AuditBrief{Seq: a.Seq, Time: a.Time, Principal: a.Principal, Serial: a.Serial, Action: a.Action}, err
	}
	r, err := parseRecord(v)
	if err != nil {
		return AuditBrief{}, err
	}
	return AuditBrief{Seq: r.seq, Time: time.Unix(0, r.time).UTC(), Principal: string(r.fields[1]),
		Serial: string(r.fields[2]), Action: string(r.fields[3])}, nil
}

// AuditAfter returns up to limit audit records with Seq > after, in order.
// limit <= 0 means 100.
func (s *Store) AuditAfter(ctx context.Context, after uint64, limit int) ([]AuditEvent, error) {
	return auditPageOf(ctx, s, after, limit, decodeRecord)
}
