package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	bolt "go.etcd.io/bbolt"
)

// VerifyOptions tune Verify.
type VerifyOptions struct {
	// Progress, when set, is called every few thousand records with the
	// records verified and the head's sequence.
	Progress func(done, total uint64)
	// KeySHA256 is the SHA-256 of the station's audit public key (DER
	// SubjectPublicKeyInfo): when set, the chain's last checkpoint must be
	// signed by it.
	KeySHA256 []byte
	// Anchor is the latest checkpoint kept outside the store: when set, the
	// chain must still hold it (a cut or re-chained log does not).
	Anchor *Checkpoint
}

// VerifyReport says what Verify checked.
type VerifyReport struct {
	// Head is the verified head of the chain.
	Head ChainHead
	// Records is the number of audit records verified.
	Records uint64
	// Values is the number of stored key/values checked against their digests.
	Values uint64
	// Checkpoints is the number of signed checkpoints verified; Last is the
	// latest of them (nil when none).
	Checkpoints int
	Last        *Checkpoint
}

// VerifyChain is Verify without options, returning the verified head.
func (s *Store) VerifyChain(ctx context.Context) (ChainHead, error) {
	r, err := s.Verify(ctx, VerifyOptions{})
	return r.Head, err
}

// Verify walks the audit chain from the genesis record in one read
// transaction and checks every link (sequence, previous hash, recomputed
// hash, the head in meta), every checkpoint's signature and the hash it
// signs, and that every stored key/value outside the chain itself has the
// SHA-256 of the latest write the chain records for it and that no stored
// key lacks one. A failure is a *ChainBrokenError (ErrChainBroken) naming the
// first bad record, and the bucket and key when a stored value is at fault.
// The read transaction holds the file's mapping: writers that grow the file
// wait until it ends.
func (s *Store) Verify(ctx context.Context, opts VerifyOptions) (VerifyReport, error) {
	var rep VerifyReport
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var err error
		rep, err = s.verify(ctx, tx, opts)
		return err
	})
	return rep, err
}

// storedRef is a key whose stored value does not (yet) match the chain. Its slices point into
// the read transaction or the records the chain reader decoded.
type storedRef struct {
	seq         uint64
	bucket, key []byte
	reason      string
}

// pendingKeys holds the keys whose stored value differs from the latest digest seen so far,
// by the hash of their bucket and key (writeCheck.id) that the workers computed; a key whose
// hash another key holds already goes in other, by name.
type pendingKeys struct {
	byID  map[uint64]storedRef
	other map[string]storedRef
}

func (p *pendingKeys) same(r storedRef, d *writeCheck) bool {
	return bytes.Equal(r.bucket, d.bucket) && bytes.Equal(r.key, d.key)
}

func (p *pendingKeys) name(d *writeCheck) string { return string(d.bucket) + "\x00" + string(d.key) }

// settle removes d's key.
func (p *pendingKeys) settle(d *writeCheck) {
	if r, ok := p.byID[d.id]; ok && p.same(r, d) {
		delete(p.byID, d.id)
	} else if len(p.other) > 0 {
		delete(p.other, p.name(d))
	}
}

// add records d's key as differing, for r.
func (p *pendingKeys) add(d *writeCheck, r storedRef) {
	if old, ok := p.byID[d.id]; ok && !p.same(old, d) {
		p.other[p.name(d)] = r
		return
	}
	p.byID[d.id] = r
}

func (p *pendingKeys) len() int { return len(p.byID) + len(p.other) }

func (s *Store) verify(ctx context.Context, tx *bolt.Tx, opts VerifyOptions) (VerifyReport, error) {
	want := readHead(tx.Bucket(bMeta))
	rep := VerifyReport{}
	prev := ChainHead{Hash: make([]byte, 32)}
	var live int64
	// pending holds keys whose stored value differs from the latest digest
	// seen so far; a later write of the same key may settle them.
	pending := pendingKeys{byID: map[uint64]storedRef{}, other: map[string]storedRef{}}
	// The stored keys are counted while the chain is walked; every return
	// waits for the count, which reads the transaction.
	var stored int64
	var storedErr error
	counted := make(chan struct{})
	go func() {
		defer close(counted)
		guard(&storedErr, s.markPanic, func() { stored, storedErr = countStored(tx) })
	}()
	defer func() { <-counted }()
	cr := newChainReader(tx, want.Seq, s.markPanic)
	defer cr.close()
	rec := cr.next()
	for prev.Seq < want.Seq {
		seq := prev.Seq + 1
		if seq%verifyChunk == 0 {
			if err := ctx.Err(); err != nil {
				return rep, err
			}
			if opts.Progress != nil {
				opts.Progress(prev.Seq, want.Seq)
			}
		}
		if cr.err != nil {
			return rep, cr.err
		}
		if rec == nil || binary.BigEndian.Uint64(rec.key) != seq {
			return rep, &ChainBrokenError{Seq: seq, Reason: "record missing"}
		}
		if rec.bad {
			return rep, &ChainBrokenError{Seq: seq, Reason: "record does not decode"}
		}
		cp, err := checkLink(rec.link, seq, prev, s.stationID)
		if err != nil {
			return rep, err
		}
		if opts.Anchor != nil && seq == opts.Anchor.Seq && !bytes.Equal(rec.hash, opts.Anchor.Hash) {
			return rep, &ChainBrokenError{Seq: seq, Reason: "hash differs from the one the saved checkpoint signed (re-chained)"}
		}
		if cp != nil {
			rep.Checkpoints++
			rep.Last = cp
		}
		for i := range rec.writes {
			d := &rec.writes[i]
			if d.had {
				live--
			}
			if !d.deleted {
				live++
			}
			if d.ok {
				if pending.len() > 0 {
					pending.settle(d)
				}
				continue
			}
			reason := "stored value differs from its digest"
			switch {
			case !d.present:
				reason = "stored record missing"
			case d.deleted:
				reason = "deleted record present"
			}
			pending.add(d, storedRef{seq: seq, bucket: d.bucket, key: d.key, reason: reason})
		}
		prev = ChainHead{Seq: seq, Hash: rec.hash}
		rep.Records++
		rec = cr.next()
	}
	if cr.err != nil {
		return rep, cr.err
	}
	if !bytes.Equal(prev.Hash, want.Hash) {
		return rep, &ChainBrokenError{Seq: want.Seq, Reason: "head in meta does not match the log"}
	}
	if rec != nil {
		return rep, &ChainBrokenError{Seq: binary.BigEndian.Uint64(rec.key), Reason: "record after the head"}
	}
	rep.Head = ChainHead{Seq: prev.Seq, Hash: bytes.Clone(prev.Hash)}
	if opts.Anchor != nil {
		if err := opts.Anchor.verify(); err != nil {
			return rep, &ChainBrokenError{Seq: opts.Anchor.Record, Reason: "saved checkpoint: " + err.Error()}
		}
		if opts.Anchor.Record > want.Seq {
			return rep, &ChainBrokenError{Seq: want.Seq + 1, Reason: fmt.Sprintf("chain ends at seq %d, before the saved checkpoint at seq %d (truncated)", want.Seq, opts.Anchor.Record)}
		}
	}
	if opts.KeySHA256 != nil && rep.Last != nil && !bytes.Equal(rep.Last.KeySHA256(), opts.KeySHA256) {
		return rep, &ChainBrokenError{Seq: rep.Last.Record, Reason: "last checkpoint is not signed by the station's audit key"}
	}
	if pending.len() > 0 {
		refs := make([]storedRef, 0, pending.len())
		for _, r := range pending.byID {
			refs = append(refs, r)
		}
		for _, r := range pending.other {
			refs = append(refs, r)
		}
		sort.Slice(refs, func(i, j int) bool { return refs[i].seq < refs[j].seq })
		r := refs[0]
		return rep, &ChainBrokenError{Seq: r.seq, Bucket: string(r.bucket), Key: string(r.key), Reason: r.reason}
	}
	<-counted
	if storedErr != nil {
		return rep, storedErr
	}
	rep.Values = uint64(stored)
	if stored != live {
		return rep, s.uncovered(tx, want.Seq, stored, live)
	}
	if opts.Progress != nil {
		opts.Progress(want.Seq, want.Seq)
	}
	return rep, nil
}

// walkStored calls fn for every stored key/value outside the chain itself.
func walkStored(tx *bolt.Tx, fn func(path string, k, v []byte) error) error {
	var walk func(path string, b *bolt.Bucket) error
	walk = func(path string, b *bolt.Bucket) error {
		return b.ForEach(func(k, v []byte) error {
			if v == nil {
				if nb := b.Bucket(k); nb != nil {
					return walk(path+"/"+string(k), nb)
				}
			}
			if chainKey(path, k) {
				return nil
			}
			return fn(path, k, v)
		})
	}
	return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
		if string(name) == string(bAudit) {
			return nil
		}
		return walk(string(name), b)
	})
}

func countStored(tx *bolt.Tx) (int64, error) {
	var n int64
	err := walkStored(tx, func(string, []byte, []byte) error { n++; return nil })
	return n, err
}

// uncovered names a stored key the chain holds no digest for (the slow path
// of Verify, taken only when the counts differ).
func (s *Store) uncovered(tx *bolt.Tx, head uint64, stored, live int64) error {
	covered := map[string]bool{}
	c := tx.Bucket(bAudit).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		a, err := decodeRecord(v)
		if err != nil {
			return &ChainBrokenError{Seq: binary.BigEndian.Uint64(k), Reason: "record does not decode"}
		}
		for _, d := range a.Writes {
			covered[d.Bucket+"\x00"+string(d.Key)] = d.SHA256 != nil
		}
	}
	var found *ChainBrokenError
	err := walkStored(tx, func(path string, k, _ []byte) error {
		if !covered[path+"\x00"+string(k)] {
			found = &ChainBrokenError{Seq: head, Bucket: path, Key: string(k), Reason: "stored record not covered by the chain"}
			return errStop
		}
		return nil
	})
	if found != nil {
		return found
	}
	if err != nil {
		return err
	}
	return &ChainBrokenError{Seq: head, Reason: fmt.Sprintf("%d stored records, the chain accounts for %d", stored, live)}
}

var errStop = errors.New("stop")

// VerifyStation is Verify as the station runs it: the last checkpoint must be
// signed by the store's audit key and the chain must hold the checkpoint
// saved beside the store. Without an audit key it checks the chain and the
// stored records only. It also returns the audit key's SHA-256 (nil without one).
func (s *Store) VerifyStation(ctx context.Context, progress func(done, total uint64)) (VerifyReport, []byte, error) {
	opts := VerifyOptions{Progress: progress}
	if s.cp != nil {
		var err error
		if opts.KeySHA256, err = KeySHA256(s.cp.opts.Signer.Public()); err != nil {
			return VerifyReport{}, nil, err
		}
		if opts.Anchor, err = ReadAnchor(s.cp.opts.AnchorPath); err != nil {
			return VerifyReport{}, opts.KeySHA256, err
		}
	}
	rep, err := s.Verify(ctx, opts)
	return rep, opts.KeySHA256, err
}

// TrailRecord is one audit record of a unit's trail and the first signed
// checkpoint that covers it (0: none yet).
type TrailRecord struct {
	AuditEvent
	Checkpoint uint64
}

// UnitTrail returns the audit records of serial in order, each with the
// first checkpoint covering it, and the head when it was read. It scans the
// whole log, decoding only the unit's records and the checkpoints.
func (s *Store) UnitTrail(ctx context.Context, serial string) ([]TrailRecord, ChainHead, error) {
	if err := checkSerial(serial); err != nil {
		return nil, ChainHead{}, err
	}
	quoted, _ := json.Marshal(serial)
	mark := append([]byte(`"serial":`), quoted...)
	cpMark := []byte(`"action":"` + AuditActionCheckpoint + `"`)
	// wanted reports whether a stored record may be the unit's or a
	// checkpoint, reading only what it must.
	wanted := func(v []byte) bool {
		if len(v) > 0 && v[0] == '{' {
			return bytes.Contains(v, mark) || bytes.Contains(v, cpMark)
		}
		r, err := parseRecord(v)
		return err != nil || string(r.serial()) == serial || string(r.action()) == AuditActionCheckpoint
	}
	var out []TrailRecord
	var head ChainHead
	err := s.view(ctx, func(tx *bolt.Tx) error {
		head = readHead(tx.Bucket(bMeta))
		open := 0 // out[open:] wait for a checkpoint
		c := tx.Bucket(bAudit).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if !wanted(v) {
				continue
			}
			a, err := decodeRecord(v)
			if err != nil {
				return fmt.Errorf("decoding audit record %d: %w", binary.BigEndian.Uint64(k), err)
			}
			if a.Action == AuditActionCheckpoint {
				for ; open < len(out); open++ {
					out[open].Checkpoint = a.Seq
				}
			} else if a.Serial == serial {
				out = append(out, TrailRecord{AuditEvent: a})
			}
		}
		return nil
	})
	if err == nil && len(out) == 0 {
		err = fmt.Errorf("audit trail of %q: %w", serial, ErrNotFound)
	}
	return out, head, err
}

// link is what checkLink needs of a record: the seq and previous hash it
// carries, whether its hash is the recomputed one, and the decoded record
// when it is a checkpoint (nil for any other).
type link struct {
	seq      uint64
	prevHash []byte
	hashOK   bool
	cp       *AuditEvent
}

// checkLink checks a record expected at seq right after prev: its seq, its
// link, its hash and, for a checkpoint, that it signs prev with a valid
// signature; it returns the checkpoint, if it is one.
func checkLink(r link, seq uint64, prev ChainHead, stationID string) (*Checkpoint, error) {
	switch {
	case r.seq != seq:
		return nil, &ChainBrokenError{Seq: seq, Reason: fmt.Sprintf("record carries seq %d", r.seq)}
	case !bytes.Equal(r.prevHash, prev.Hash):
		return nil, &ChainBrokenError{Seq: seq, Reason: "previous hash does not match"}
	case !r.hashOK:
		return nil, &ChainBrokenError{Seq: seq, Reason: "hash does not match content"}
	case r.cp == nil:
		return nil, nil
	}
	c, err := checkpointOf(r.cp)
	if err == nil {
		err = c.check(stationID, prev)
	}
	if err != nil {
		return nil, &ChainBrokenError{Seq: seq, Reason: err.Error()}
	}
	return &c, nil
}

// VerifyRecords verifies a contiguous run of audit records away from the
// store (an export): each record's hash and its link to the one before,
// starting after prev (the zero ChainHead with a 32-zero-byte hash for the
// first record), and every checkpoint among them, which must be signed by the
// key whose SHA-256 is keySHA256 (nil: any key). It returns the last
// record's head and the checkpoints found. Stored values are not checked:
// that needs the store (Verify).
func VerifyRecords(records []AuditEvent, prev ChainHead, keySHA256 []byte) (ChainHead, []Checkpoint, error) {
	if prev.Seq == 0 && prev.Hash == nil {
		prev.Hash = make([]byte, 32)
	}
	var cps []Checkpoint
	for i := range records {
		a := &records[i]
		r := link{seq: a.Seq, prevHash: a.PrevHash, hashOK: bytes.Equal(a.computeHash(), a.Hash)}
		if a.Action == AuditActionCheckpoint {
			r.cp = a
		}
		cp, err := checkLink(r, prev.Seq+1, prev, a.StationID)
		if err != nil {
			return prev, cps, err
		}
		if cp != nil {
			if keySHA256 != nil && !bytes.Equal(cp.KeySHA256(), keySHA256) {
				return prev, cps, &ChainBrokenError{Seq: a.Seq, Reason: "checkpoint not signed by the station's audit key"}
			}
			cps = append(cps, *cp)
		}
		prev = ChainHead{Seq: a.Seq, Hash: a.Hash}
	}
	return prev, cps, nil
}
