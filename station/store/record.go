package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash"
	"time"
)

// recordCanonical marks an audit record stored in its canonical encoding:
// this byte, the canonical body (appendBody: the bytes the hash covers after
// auditDomain), then the 32-byte hash. Verifying such a record is one SHA-256
// over what is stored, and reading it needs no JSON. Records written before
// it are JSON objects (they start with '{'), hashed the same way; a chain may
// hold both.
const recordCanonical byte = 0x01

// seal sets a's Hash and returns the bytes stored for it.
func (a *AuditEvent) seal() []byte {
	b := a.appendBody(append(make([]byte, 0, 512), recordCanonical))
	h := sha256.New()
	h.Write([]byte(auditDomain))
	h.Write(b[1:])
	a.Hash = h.Sum(nil)
	return append(b, a.Hash...)
}

// decodeRecord decodes a stored audit record of either form. It does not
// check the hash.
func decodeRecord(v []byte) (AuditEvent, error) {
	if len(v) > 0 && v[0] == '{' {
		var a AuditEvent
		err := json.Unmarshal(v, &a)
		return a, err
	}
	r, err := parseRecord(v)
	if err != nil {
		return AuditEvent{}, err
	}
	return r.event(), nil
}

// recordView is a stored canonical record, parsed without copying: its
// slices point into the stored bytes.
type recordView struct {
	body   []byte // what the hash covers after auditDomain
	hash   []byte
	seq    uint64
	time   int64
	fields [6][]byte // station id, principal, serial, action, result, error code
	// details, fingerprints and writes: count and encoded entries
	nDetails, nFingerprints, nWrites int
	details, fingerprints, writes    []byte
	prevHash                         []byte
}

var errRecordFormat = errors.New("malformed audit record")

// canonReader reads the canonical encoding; a read past the end sets bad.
type canonReader struct {
	b   []byte
	bad bool
}

func (r *canonReader) u64() uint64 {
	if len(r.b) < 8 {
		r.bad, r.b = true, nil
		return 0
	}
	n := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return n
}

func (r *canonReader) u32() uint32 {
	if len(r.b) < 4 {
		r.bad, r.b = true, nil
		return 0
	}
	n := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return n
}

func (r *canonReader) str() []byte {
	n := r.u32()
	if uint64(n) > uint64(len(r.b)) {
		r.bad, r.b = true, nil
		return nil
	}
	s := r.b[:n:n]
	r.b = r.b[n:]
	return s
}

// count reads an entry count, bounded by the bytes left (each entry takes at
// least size bytes).
func (r *canonReader) count(size int) int {
	n := r.u32()
	if uint64(n)*uint64(size) > uint64(len(r.b)) {
		r.bad, r.b = true, nil
		return 0
	}
	return int(n)
}

// section reads n entries of strs strings each (and one flag byte each when
// flag), returning the bytes they take.
func (r *canonReader) section(n, strs int, flag bool) []byte {
	start := r.b
	for i := 0; i < n && !r.bad; i++ {
		for j := 0; j < strs; j++ {
			r.str()
		}
		if flag {
			if len(r.b) < 1 || r.b[0] > 1 {
				r.bad, r.b = true, nil
				break
			}
			r.b = r.b[1:]
		}
	}
	if r.bad {
		return nil
	}
	return start[:len(start)-len(r.b)]
}

// parseRecord parses a stored canonical record: every byte between the
// format byte and the hash must belong to it.
func parseRecord(v []byte) (recordView, error) {
	var r recordView
	if len(v) < 1+sha256.Size || v[0] != recordCanonical {
		return r, errRecordFormat
	}
	r.body, r.hash = v[1:len(v)-sha256.Size], v[len(v)-sha256.Size:]
	c := canonReader{b: r.body}
	r.seq = c.u64()
	r.time = int64(c.u64())
	for i := range r.fields {
		r.fields[i] = c.str()
	}
	r.nDetails = c.count(8)
	r.details = c.section(r.nDetails, 2, false)
	r.nFingerprints = c.count(4)
	r.fingerprints = c.section(r.nFingerprints, 1, false)
	r.prevHash = c.str()
	if !c.bad && len(c.b) > 0 {
		if c.b[0] != 'W' {
			return r, errRecordFormat
		}
		c.b = c.b[1:]
		r.nWrites = c.count(13)
		if r.nWrites == 0 {
			return r, errRecordFormat // an empty write list is not encoded
		}
		r.writes = c.section(r.nWrites, 3, true)
	}
	if c.bad || len(c.b) > 0 {
		return r, errRecordFormat
	}
	return r, nil
}

// hashOK reports whether the stored hash is the SHA-256 of the body; h is
// reused (nil: a new one).
func (r *recordView) hashOK(h hash.Hash, sum []byte) bool {
	if h == nil {
		h = sha256.New()
	}
	h.Reset()
	h.Write([]byte(auditDomain))
	h.Write(r.body)
	return bytes.Equal(h.Sum(sum[:0]), r.hash)
}

func (r *recordView) serial() []byte { return r.fields[2] }
func (r *recordView) action() []byte { return r.fields[3] }

// eachWrite calls fn for every write digest, in order.
func (r *recordView) eachWrite(fn func(bucket, key, digest []byte, had bool)) {
	c := canonReader{b: r.writes}
	for range r.nWrites {
		b, k, d := c.str(), c.str(), c.str()
		had := c.b[0] == 1
		c.b = c.b[1:]
		fn(b, k, d, had)
	}
}

// event copies the record out as an AuditEvent.
func (r *recordView) event() AuditEvent {
	a := AuditEvent{Seq: r.seq, Time: time.Unix(0, r.time).UTC(),
		StationID: string(r.fields[0]), Principal: string(r.fields[1]), Serial: string(r.fields[2]),
		Action: string(r.fields[3]), Result: string(r.fields[4]), ErrorCode: string(r.fields[5]),
		PrevHash: bytes.Clone(r.prevHash), Hash: bytes.Clone(r.hash)}
	c := canonReader{b: r.details}
	if r.nDetails > 0 {
		a.Details = make(map[string]string, r.nDetails)
		for range r.nDetails {
			k := c.str()
			a.Details[string(k)] = string(c.str())
		}
	}
	c = canonReader{b: r.fingerprints}
	for range r.nFingerprints {
		a.Fingerprints = append(a.Fingerprints, string(c.str()))
	}
	if r.nWrites > 0 {
		a.Writes = make([]WriteDigest, 0, r.nWrites)
		r.eachWrite(func(bucket, key, digest []byte, had bool) {
			d := WriteDigest{Bucket: string(bucket), Key: bytes.Clone(key), Had: had}
			if len(digest) > 0 {
				d.SHA256 = bytes.Clone(digest)
			}
			a.Writes = append(a.Writes, d)
		})
	}
	return a
}
