package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"hash"
	"sort"
	"time"
)

// recordCanonical marks an audit record stored in its canonical encoding:
// this byte, the canonical body (appendBody: the bytes the hash covers after
// auditDomain), then the 32-byte hash. Verifying such a record is one SHA-256
// over what is stored, and reading it needs no JSON. Records written before
// it are JSON objects (they start with '{'), hashed the same way; a chain may
// hold both.
const recordCanonical byte = 0x01

// recordV2 marks an audit record stored in the v2 encoding (AuditEncodingV2): this byte, the
// body appendBodyV2 writes, then the 32-byte hash (over auditDomainV2 and the body).
const recordV2 byte = 0x02

// seal sets a's Hash and returns the bytes stored for it.
func (a *AuditEvent) seal() []byte {
	format := recordCanonical
	if a.Encoding == AuditEncodingV2 {
		format = recordV2
	}
	b := a.appendBody(append(make([]byte, 0, 512), format))
	h := sha256.New()
	h.Write([]byte(a.domain()))
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
	v2     bool   // encoding v2 (recordV2)
	body   []byte // what the hash covers after the domain string
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

// canonReader reads the canonical encoding; a read past the end sets bad. In
// v2, lengths and counts are minimal uvarints.
type canonReader struct {
	b   []byte
	bad bool
	v2  bool
}

// uvarint reads a minimal uvarint.
func (r *canonReader) uvarint() uint64 {
	n, k := binary.Uvarint(r.b)
	if k <= 0 || k != uvarintLen(n) {
		r.bad, r.b = true, nil
		return 0
	}
	r.b = r.b[k:]
	return n
}

func uvarintLen(n uint64) int {
	k := 1
	for ; n >= 0x80; n >>= 7 {
		k++
	}
	return k
}

// length reads a length or a count: a u32 in v1, a uvarint in v2.
func (r *canonReader) length() uint64 {
	if r.v2 {
		return r.uvarint()
	}
	return uint64(r.u32())
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
	n := r.length()
	if n > uint64(len(r.b)) {
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
	n := r.length()
	if n > uint64(len(r.b)) || n*uint64(size) > uint64(len(r.b)) {
		r.bad, r.b = true, nil
		return 0
	}
	return int(n)
}

// text reads a string of Details or Fingerprints: in v1 a str; in v2 a uvarint x, then
// x>>1 bytes: the string itself when x is even, else the bytes whose lowercase hex is the
// string (appendText). With decode false it returns the stored bytes as they are.
func (r *canonReader) text(decode bool) []byte {
	if !r.v2 {
		return r.str()
	}
	x := r.uvarint()
	n := x >> 1
	if n > uint64(len(r.b)) {
		r.bad, r.b = true, nil
		return nil
	}
	raw := r.b[:n:n]
	r.b = r.b[n:]
	switch {
	case x&1 == 1 && n == 0, x&1 == 0 && hexText(raw): // not what appendText writes
		r.bad, r.b = true, nil
		return nil
	case x&1 == 0 || !decode:
		return raw
	}
	return hex.AppendEncode(make([]byte, 0, 2*n), raw)
}

// hexText reports a string appendText stores as the bytes it spells: non-empty lowercase hex
// (digests and fingerprints).
func hexText[T string | []byte](s T) bool {
	if len(s) == 0 || len(s)%2 != 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// appendText appends s as canonReader.text reads it in v2.
func appendText(b []byte, s string) []byte {
	if hexText(s) {
		b = binary.AppendUvarint(b, uint64(len(s)/2)<<1|1)
		out, _ := hex.AppendDecode(b, []byte(s)) // hexText: it decodes
		return out
	}
	b = binary.AppendUvarint(b, uint64(len(s))<<1)
	return append(b, s...)
}

// section reads n entries of strs strings each (texts when text; and one flag
// byte each when flag), returning the bytes they take.
func (r *canonReader) section(n, strs int, flag, text bool) []byte {
	start := r.b
	for i := 0; i < n && !r.bad; i++ {
		for j := 0; j < strs; j++ {
			if text {
				r.text(false)
			} else {
				r.str()
			}
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
	r, err := parseHead(v)
	if err == nil && r.v2 && !r.eachWrite(nil) {
		return r, errRecordFormat
	}
	return r, err
}

// parseHead is parseRecord without reading a v2 record's writes: the record is malformed
// if eachWrite then reports they do not decode.
func parseHead(v []byte) (recordView, error) {
	var r recordView
	if len(v) < 1+sha256.Size || (v[0] != recordCanonical && v[0] != recordV2) {
		return r, errRecordFormat
	}
	r.v2 = v[0] == recordV2
	r.body, r.hash = v[1:len(v)-sha256.Size], v[len(v)-sha256.Size:]
	c := canonReader{b: r.body, v2: r.v2}
	r.seq = c.u64()
	r.time = int64(c.u64())
	for i := range r.fields {
		r.fields[i] = c.str()
	}
	r.nDetails = c.count(2)
	r.details = c.section(r.nDetails, 2, false, true)
	r.nFingerprints = c.count(1)
	r.fingerprints = c.section(r.nFingerprints, 1, false, true)
	r.prevHash = c.str()
	if r.v2 {
		r.nWrites = c.count(4)
		r.writes = c.b
		if c.bad {
			return r, errRecordFormat
		}
		return r, nil
	}
	if !c.bad && len(c.b) > 0 {
		if c.b[0] != 'W' {
			return r, errRecordFormat
		}
		c.b = c.b[1:]
		r.nWrites = c.count(13)
		if r.nWrites == 0 {
			return r, errRecordFormat // an empty write list is not encoded
		}
		r.writes = c.section(r.nWrites, 3, true, false)
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
	if r.v2 {
		h.Write([]byte(auditDomainV2))
	} else {
		h.Write([]byte(auditDomain))
	}
	h.Write(r.body)
	return bytes.Equal(h.Sum(sum[:0]), r.hash)
}

func (r *recordView) serial() []byte { return r.fields[2] }
func (r *recordView) action() []byte { return r.fields[3] }

// eachWrite calls fn (when not nil) for every write digest, in order, with the bucket's id in
// writeBuckets (0: none) and name, and reports whether the writes decode (always, for a
// record parseRecord accepted). A v2 key with the record's serial elided is rebuilt, in a
// buffer the next write reuses: fn must copy a key it keeps.
func (r *recordView) eachWrite(fn func(id int, bucket, key, digest []byte, had bool)) bool {
	c := canonReader{b: r.writes, v2: r.v2}
	if !r.v2 {
		for range r.nWrites {
			b, k, d := c.str(), c.str(), c.str()
			had := c.b[0] == 1
			c.b = c.b[1:]
			if fn != nil {
				fn(bucketID(b), b, k, d, had)
			}
		}
		return true
	}
	serial := r.serial()
	var rebuilt []byte
	for range r.nWrites {
		if len(c.b) < 1 {
			return false
		}
		id := int(c.b[0])
		c.b = c.b[1:]
		var bucket []byte
		switch {
		case id == 0:
			bucket = c.str()
			if bucketID(bucket) != 0 { // a named bucket of the table has its id
				return false
			}
		case id < len(writeBuckets) && writeBuckets[id] != "":
			bucket = writeBucketNames[id]
		default:
			return false
		}
		if len(c.b) < 1 || c.b[0] > writeHad|writeSerial {
			return false
		}
		flags := c.b[0]
		c.b = c.b[1:]
		off := -1
		if flags&writeSerial != 0 {
			off = int(min(c.uvarint(), uint64(len(c.b))+1))
		}
		rest, d := c.str(), c.str()
		if c.bad {
			return false
		}
		key := rest
		switch {
		case off > len(rest) || off >= 0 && len(serial) == 0:
			return false
		case off >= 0:
			rebuilt = append(append(append(rebuilt[:0], rest[:off]...), serial...), rest[off:]...)
			key = rebuilt
			if bytes.Index(key, serial) != off { // the encoder elides the first occurrence
				return false
			}
		case len(serial) > 0 && bytes.Contains(rest, serial):
			return false
		}
		if fn != nil {
			fn(id, bucket, key, d, flags&writeHad != 0)
		}
	}
	return !c.bad && len(c.b) == 0
}

// event copies the record out as an AuditEvent.
func (r *recordView) event() AuditEvent {
	a := AuditEvent{Seq: r.seq, Time: time.Unix(0, r.time).UTC(),
		StationID: string(r.fields[0]), Principal: string(r.fields[1]), Serial: string(r.fields[2]),
		Action: string(r.fields[3]), Result: string(r.fields[4]), ErrorCode: string(r.fields[5]),
		PrevHash: bytes.Clone(r.prevHash), Hash: bytes.Clone(r.hash)}
	if r.v2 {
		a.Encoding = AuditEncodingV2
	}
	c := canonReader{b: r.details, v2: r.v2}
	if r.nDetails > 0 {
		a.Details = make(map[string]string, r.nDetails)
		for range r.nDetails {
			k := c.text(true)
			a.Details[string(k)] = string(c.text(true))
		}
	}
	c = canonReader{b: r.fingerprints, v2: r.v2}
	for range r.nFingerprints {
		a.Fingerprints = append(a.Fingerprints, string(c.text(true)))
	}
	if r.nWrites > 0 {
		a.Writes = make([]WriteDigest, 0, r.nWrites)
		r.eachWrite(func(_ int, bucket, key, digest []byte, had bool) {
			d := WriteDigest{Bucket: string(bucket), Key: bytes.Clone(key), Had: had}
			if len(digest) > 0 {
				d.SHA256 = bytes.Clone(digest)
			}
			a.Writes = append(a.Writes, d)
		})
	}
	return a
}

// eventInto is event reusing a's room: its details map, fingerprint and write lists, and
// *arena for the writes' keys. a's byte slices but the keys (the digests) point into the
// record's bytes; the keys point into *arena, which the next call reuses.
func (r *recordView) eventInto(a *AuditEvent, arena *[]byte) {
	details, fps, writes := a.Details, a.Fingerprints[:0], a.Writes[:0]
	clear(details)
	*a = AuditEvent{Seq: r.seq, Time: time.Unix(0, r.time).UTC(),
		StationID: string(r.fields[0]), Principal: string(r.fields[1]), Serial: string(r.fields[2]),
		Action: string(r.fields[3]), Result: string(r.fields[4]), ErrorCode: string(r.fields[5]),
		PrevHash: r.prevHash, Hash: r.hash}
	if r.v2 {
		a.Encoding = AuditEncodingV2
	}
	c := canonReader{b: r.details, v2: r.v2}
	if r.nDetails > 0 {
		if details == nil {
			details = make(map[string]string, r.nDetails)
		}
		for range r.nDetails {
			k := c.text(true)
			details[string(k)] = string(c.text(true))
		}
		a.Details = details
	}
	c = canonReader{b: r.fingerprints, v2: r.v2}
	for range r.nFingerprints {
		fps = append(fps, string(c.text(true)))
	}
	if len(fps) > 0 {
		a.Fingerprints = fps
	}
	if r.nWrites > 0 {
		keys := (*arena)[:0]
		r.eachWrite(func(id int, bucket, key, digest []byte, had bool) {
			d := WriteDigest{Had: had}
			if id > 0 && id < len(writeBuckets) {
				d.Bucket = writeBuckets[id]
			} else {
				d.Bucket = string(bucket)
			}
			if len(digest) > 0 {
				d.SHA256 = digest
			}
			// The key is copied: eachWrite rebuilds a v2 key in a buffer of its own. A grown
			// arena leaves the keys before in the old one, which stays theirs.
			if key != nil { // as bytes.Clone: nil stays nil, empty stays empty
				if keys == nil {
					keys = make([]byte, 0, 512)
				}
				start := len(keys)
				keys = append(keys, key...)
				d.Key = keys[start:len(keys):len(keys)]
			}
			writes = append(writes, d)
		})
		*arena = keys
		a.Writes = writes
	}
}

// writeBuckets names, by id, the buckets a v2 record's write digests refer to without
// spelling their names. Ids are fixed: a new bucket takes a new id, none is ever reused. A
// bucket outside the table (a nested bucket of a file older than schema 4, baselined) is
// named in full after id 0.
var writeBuckets = [...]string{
	1:  "meta",
	2:  "unit_states",
	3:  "step_records",
	4:  "unit_events",
	5:  "outbox",
	6:  "ek_index",
	7:  "cert_index",
	8:  "work_orders",
	9:  "unit_index",
	10: "possibly_issued",
	11: "units",
}

// writeBucketNames are writeBuckets as bytes.
var writeBucketNames = func() [len(writeBuckets)][]byte {
	var out [len(writeBuckets)][]byte
	for i, n := range writeBuckets {
		if n != "" {
			out[i] = []byte(n)
		}
	}
	return out
}()

// bucketID returns the id of the bucket named name in writeBuckets, 0 when it has none.
func bucketID(name []byte) int {
	for i, n := range writeBuckets {
		if n != "" && n == string(name) {
			return i
		}
	}
	return 0
}

// Flags of a v2 write digest.
const (
	writeHad    byte = 1 << 0 // the key held a value before
	writeSerial byte = 1 << 1 // the record's serial was elided from the key (at the offset that follows)
)

// appendBodyV2 appends the v2 body (AuditEncodingV2): seq and time as in v1, then every
// length and count as a uvarint: the six strings, Details sorted by key and Fingerprints
// (as texts: a digest or fingerprint in lowercase hex is stored as its bytes, appendText),
// PrevHash, then the number of writes (0 included) and each write: its bucket's id (0: the
// name follows), a flags byte (writeHad, writeSerial), with writeSerial the offset at which
// the key held the first occurrence of the record's serial, the key without it, and the
// digest.
func (a *AuditEvent) appendBodyV2(b []byte) []byte {
	str := func(s []byte) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.BigEndian.AppendUint64(b, a.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(a.Time.UnixNano()))
	for _, s := range []string{a.StationID, a.Principal, a.Serial, a.Action, a.Result, a.ErrorCode} {
		str([]byte(s))
	}
	keys := make([]string, 0, len(a.Details))
	for k := range a.Details {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = appendText(b, k)
		b = appendText(b, a.Details[k])
	}
	b = binary.AppendUvarint(b, uint64(len(a.Fingerprints)))
	for _, f := range a.Fingerprints {
		b = appendText(b, f)
	}
	str(a.PrevHash)
	b = binary.AppendUvarint(b, uint64(len(a.Writes)))
	serial := []byte(a.Serial)
	for _, d := range a.Writes {
		id := bucketID([]byte(d.Bucket))
		b = append(b, byte(id))
		if id == 0 {
			str([]byte(d.Bucket))
		}
		var flags byte
		if d.Had {
			flags |= writeHad
		}
		key, off := d.Key, -1
		if len(serial) > 0 {
			off = bytes.Index(key, serial)
		}
		if off >= 0 {
			flags |= writeSerial
			b = append(b, flags)
			b = binary.AppendUvarint(b, uint64(off))
			b = binary.AppendUvarint(b, uint64(len(key)-len(serial)))
			b = append(append(b, key[:off]...), key[off+len(serial):]...)
		} else {
			b = append(b, flags)
			str(key)
		}
		str(d.SHA256)
	}
	return b
}
