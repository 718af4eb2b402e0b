package export

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/devid-station/devid/station/store"
)

// audit.jsonl holds one store.AuditEvent a line, as encoding/json writes it. Most of an
// export's records are plain (ASCII names, base64 digests), and encoding/json's reflection was
// most of the export's and the verifier's CPU: appendAuditJSON writes a plain record directly
// and decodeAuditFast reads one, each falling back to encoding/json for anything else, so
// that the bytes written and the values read are encoding/json's exactly (the tests compare
// both ways).

// appendAuditJSON appends a's JSON encoding, byte for byte what json.Marshal(a) returns.
func appendAuditJSON(b []byte, a *store.AuditEvent) ([]byte, error) {
	if out, ok := appendAuditPlain(b, a); ok {
		return out, nil
	}
	line, err := json.Marshal(a)
	if err != nil {
		return b, err
	}
	return append(b, line...), nil
}

// appendAuditPlain encodes a when every string in it is plain (see plain) and its time is
// within the years JSON times allow; ok is false otherwise and b is then unchanged.
func appendAuditPlain(b []byte, a *store.AuditEvent) (out []byte, ok bool) {
	start := len(b)
	defer func() {
		if !ok {
			out = b[:start]
		}
	}()
	str := func(key, s string) bool {
		if !plain(s) {
			return false
		}
		b = append(b, key...)
		b = append(b, '"')
		b = append(b, s...)
		b = append(b, '"')
		return true
	}
	bin := func(key string, v []byte) {
		b = append(b, key...)
		if v == nil {
			b = append(b, "null"...)
			return
		}
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, v)
		b = append(b, '"')
	}
	if y := a.Time.Year(); y < 0 || y > 9999 {
		return b, false // encoding/json refuses it
	}
	if _, off := a.Time.Zone(); off != 0 {
		return b, false // encoding/json checks an offset's range: left to it
	}
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, a.Seq, 10)
	b = append(b, `,"time":"`...)
	b = a.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	if !str(`,"station_id":`, a.StationID) || !str(`,"principal":`, a.Principal) ||
		(a.Serial != "" && !str(`,"serial":`, a.Serial)) || !str(`,"action":`, a.Action) ||
		!str(`,"result":`, a.Result) || (a.ErrorCode != "" && !str(`,"error_code":`, a.ErrorCode)) {
		return b, false
	}
	if len(a.Details) > 0 {
		keys := make([]string, 0, len(a.Details))
		for k := range a.Details {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, `,"details":{`...)
		for i, k := range keys {
			sep := `"`
			if i > 0 {
				sep = `,"`
			}
			if !plain(k) {
				return b, false
			}
			b = append(b, sep...)
			b = append(b, k...)
			if !str(`":`, a.Details[k]) {
				return b, false
			}
		}
		b = append(b, '}')
	}
	if len(a.Fingerprints) > 0 {
		b = append(b, `,"fingerprints":[`...)
		for i, f := range a.Fingerprints {
			sep := ""
			if i > 0 {
				sep = ","
			}
			if !str(sep, f) {
				return b, false
			}
		}
		b = append(b, ']')
	}
	if len(a.Writes) > 0 {
		b = append(b, `,"writes":[`...)
		for i := range a.Writes {
			w := &a.Writes[i]
			sep := `{"b":`
			if i > 0 {
				sep = `,{"b":`
			}
			if !str(sep, w.Bucket) {
				return b, false
			}
			bin(`,"k":`, w.Key)
			if len(w.SHA256) > 0 {
				bin(`,"h":`, w.SHA256)
			}
			if w.Had {
				b = append(b, `,"had":true`...)
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	bin(`,"prev_hash":`, a.PrevHash)
	bin(`,"hash":`, a.Hash)
	if a.Encoding != 0 {
		b = append(b, `,"encoding":`...)
		b = strconv.AppendInt(b, int64(a.Encoding), 10)
	}
	return append(b, '}'), true
}

// plain says s is encoded by encoding/json as itself between quotes: printable ASCII without
// the characters it escapes (", \ and the HTML-sensitive <, >, &).
func plain[T string | []byte](s T) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// auditArena is the size of the buffers decoded digests go into.
const auditArena = 16 << 10

// errNotPlain makes decodeAuditFast decline a line.
var errNotPlain = errors.New("not a plain record")

// decodeAuditLine decodes one line of audit.jsonl as the verifier always has: strictly (no
// unknown field, one JSON value), with encoding/json unless decodeAuditFast reads it.
func decodeAuditLine(line []byte, a *store.AuditEvent) error {
	return decodeAuditLineIn(line, a, nil)
}

// decodeAuditLineIn is decodeAuditLine decoding into what sc holds (see decodeAuditFastIn).
func decodeAuditLineIn(line []byte, a *store.AuditEvent, sc *auditScratch) error {
	if decodeAuditFastIn(line, a, sc) == nil {
		return nil
	}
	*a = store.AuditEvent{}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	err := dec.Decode(a)
	if err == nil && dec.InputOffset() != int64(len(line)) {
		err = errors.New("more than one JSON record on the line")
	}
	return err
}

// auditReader reads the form appendAuditPlain writes, and nothing else.
type auditReader struct {
	b   []byte
	bad bool
	// arena holds the decoded bytes of the record's digests, one allocation for many.
	arena []byte
	// names holds one copy of each short name, nil: none.
	names map[string]string
}

// auditScratch is what the records of a batch of lines share as they are decoded: the buffer
// their digests go into and one copy of each name (actions, results, principals, detail keys,
// buckets: the same few strings in every record), so that a record's names cost no allocation.
type auditScratch struct {
	arena []byte
	names map[string]string
}

// Bounds of auditScratch.names: the names kept, and the longest value kept (a digest is not a
// name).
const (
	auditNames    = 1024
	auditNameSize = 24
)

// lit consumes s, or marks the line bad.
func (r *auditReader) lit(s string) {
	if r.bad || len(r.b) < len(s) || string(r.b[:len(s)]) != s {
		r.bad = true
		return
	}
	r.b = r.b[len(s):]
}

// has consumes s when the line continues with it.
func (r *auditReader) has(s string) bool {
	if r.bad || len(r.b) < len(s) || string(r.b[:len(s)]) != s {
		return false
	}
	r.b = r.b[len(s):]
	return true
}

// uint reads a decimal number as encoding/json writes it (no sign, no leading zero).
func (r *auditReader) uint() uint64 {
	i := 0
	for i < len(r.b) && r.b[i] >= '0' && r.b[i] <= '9' {
		i++
	}
	n, err := strconv.ParseUint(string(r.b[:i]), 10, 64)
	if r.bad || err != nil || (i > 1 && r.b[0] == '0') {
		r.bad = true
		return 0
	}
	r.b = r.b[i:]
	return n
}

// raw reads a quoted plain string and returns its bytes (no copy).
func (r *auditReader) raw() []byte {
	r.lit(`"`)
	if r.bad {
		return nil
	}
	i := bytes.IndexByte(r.b, '"')
	if i < 0 || !plain(r.b[:i]) {
		r.bad = true
		return nil
	}
	s := r.b[:i]
	r.b = r.b[i+1:]
	return s
}

func (r *auditReader) str() string { return string(r.raw()) }

// intern returns b as a string, the copy in r.names when there is one (see name).
func (r *auditReader) intern(b []byte) string {
	if r.names == nil || len(b) > auditNameSize {
		return string(b)
	}
	if s, ok := r.names[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(r.names) < auditNames {
		r.names[s] = s
	}
	return s
}

// name is str, returning the copy in r.names when there is one (and keeping one there when
// there is room and the string is short).
func (r *auditReader) name() string {
	b := r.raw()
	if r.bad {
		return ""
	}
	return r.intern(b)
}

// bin reads null or a quoted base64 string, as encoding/json decodes a []byte.
func (r *auditReader) bin() []byte {
	if r.has("null") {
		return nil
	}
	s := r.raw()
	if r.bad {
		return nil
	}
	if len(s) == 0 {
		return []byte{} // as encoding/json decodes "": empty, not nil
	}
	need := base64.StdEncoding.DecodedLen(len(s))
	if r.arena == nil || cap(r.arena)-len(r.arena) < need {
		r.arena = make([]byte, 0, max(need, auditArena))
	}
	out := r.arena[len(r.arena) : len(r.arena)+need]
	n, err := base64.StdEncoding.Decode(out, s)
	if err != nil {
		r.bad = true
		return nil
	}
	r.arena = r.arena[:len(r.arena)+n]
	return out[:n:n]
}

// decodeAuditFast decodes line when it is in the form appendAuditPlain writes (the fields in
// their order, nothing empty that encoding/json omits, no whitespace, details sorted by key),
// into exactly the value encoding/json decodes from it; otherwise it returns errNotPlain and
// leaves *a undefined.
func decodeAuditFast(line []byte, a *store.AuditEvent) error {
	return decodeAuditFastIn(line, a, nil)
}

// decodeAuditFastIn is decodeAuditFast decoding the record's digests into the free room of
// sc.arena, which it leaves holding them, and taking its names from sc.names (sc nil: an arena
// of the record's own, no names shared): the records of a batch of lines then share a few
// allocations. A digest's slice is capped at its end, so an append to one never writes over
// another; a shared name is a string, never written.
func decodeAuditFastIn(line []byte, a *store.AuditEvent, sc *auditScratch) error {
	*a = store.AuditEvent{}
	r := auditReader{b: line}
	if sc != nil {
		if sc.names == nil {
			sc.names = map[string]string{}
		}
		r.arena, r.names = sc.arena, sc.names
		defer func() { sc.arena = r.arena }()
	}
	r.lit(`{"seq":`)
	if r.bad {
		return errNotPlain
	}
	a.Seq = r.uint()
	r.lit(`,"time":`)
	if r.bad {
		return errNotPlain
	}
	j := bytes.IndexByte(r.b[min(1, len(r.b)):], '"') + 2 // the closing quote's end
	if j < 2 || !plain(r.b[1:j-1]) || a.Time.UnmarshalJSON(r.b[:j]) != nil {
		return errNotPlain
	}
	r.b = r.b[j:]
	r.lit(`,"station_id":`)
	a.StationID = r.name()
	r.lit(`,"principal":`)
	a.Principal = r.name()
	if r.has(`,"serial":`) {
		a.Serial = r.name()
	}
	r.lit(`,"action":`)
	a.Action = r.name()
	r.lit(`,"result":`)
	a.Result = r.name()
	if r.has(`,"error_code":`) {
		a.ErrorCode = r.name()
	}
	if r.has(`,"details":{`) {
		a.Details = map[string]string{}
		var last []byte
		for first := true; !r.bad; first = false {
			if !first && !r.has(",") {
				break
			}
			k := r.raw()
			if !first && bytes.Compare(k, last) <= 0 {
				r.bad = true // a duplicate key or not in encoding/json's order
			}
			r.lit(":")
			a.Details[r.intern(k)] = r.name()
			last = k
		}
		r.lit("}")
	}
	if r.has(`,"fingerprints":[`) {
		for first := true; !r.bad; first = false {
			if !first && !r.has(",") {
				break
			}
			a.Fingerprints = append(a.Fingerprints, r.str())
		}
		r.lit("]")
	}
	if r.has(`,"writes":[`) {
		// Each write opens so (a plain string holds no quote): room for all at once.
		a.Writes = make([]store.WriteDigest, 0, bytes.Count(r.b, []byte(`{"b":`)))
		for first := true; !r.bad; first = false {
			if !first && !r.has(",") {
				break
			}
			var w store.WriteDigest
			r.lit(`{"b":`)
			w.Bucket = r.name()
			r.lit(`,"k":`)
			w.Key = r.bin()
			if r.has(`,"h":`) {
				w.SHA256 = r.bin()
			}
			w.Had = r.has(`,"had":true`)
			r.lit("}")
			a.Writes = append(a.Writes, w)
		}
		r.lit("]")
	}
	r.lit(`,"prev_hash":`)
	a.PrevHash = r.bin()
	r.lit(`,"hash":`)
	a.Hash = r.bin()
	if r.has(`,"encoding":`) {
		// encoding/json leaves out 0 (omitempty) and writes no sign for a positive number.
		if n := r.uint(); n == 0 || n > math.MaxInt32 {
			r.bad = true
		} else {
			a.Encoding = int(n)
		}
	}
	r.lit("}")
	if r.bad || len(r.b) > 0 {
		return errNotPlain
	}
	return nil
}
