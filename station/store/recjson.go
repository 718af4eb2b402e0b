package store

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"time"
)

// Step records and events are stored as encoding/json writes them, and reading a unit's
// (a traveler, a QA export) spent most of its time in encoding/json's reflection. The
// decoders here read the form encoding/json writes when every string in the value is plain
// (printable ASCII it does not escape): the fields in their declared order, each at most once,
// no whitespace, a map's keys in increasing order. They decline anything else (ok false), and
// their callers then decode with encoding/json, so that the value read is always the one
// encoding/json reads; TestRecordJSON and FuzzRecordJSON hold them to it.

// decodeStepRecord decodes a stored step record as json.Unmarshal does.
func decodeStepRecord(data []byte, rec *StepRecord) error {
	return decodePlain(data, rec, decodeStepRecordFast)
}

// decodeEvent decodes a stored event as json.Unmarshal does.
func decodeEvent(data []byte, ev *Event) error {
	return decodePlain(data, ev, decodeEventFast)
}

// decodeCertRecord decodes a stored certificate record as json.Unmarshal does into a zero
// CertRecord.
func decodeCertRecord(data []byte, rec *CertRecord) error {
	return decodePlain(data, rec, decodeCertRecordFast)
}

// decodePlain decodes data into *v with fast, the decoder of the plain form; when fast
// declines, into a zero *v with json.Unmarshal.
func decodePlain[T any](data []byte, v *T, fast func([]byte, *T) bool) error {
	if fast(data, v) {
		return nil
	}
	var zero T
	*v = zero
	return json.Unmarshal(data, v)
}

// decodeCertRecordFast decodes data when it is in the plain form (see above) into exactly the
// value json.Unmarshal decodes from it; ok false leaves *rec undefined.
func decodeCertRecordFast(data []byte, rec *CertRecord) (ok bool) {
	*rec = CertRecord{}
	r := objReader{b: data}
	if !r.open() {
		return false
	}
	if r.key("serial") {
		rec.Serial = r.str()
	}
	if r.key("role") {
		rec.Role = Role(r.str())
	}
	if r.key("sha256") {
		rec.SHA256 = r.str()
	}
	if r.key("issuer_hash") {
		rec.IssuerHash = r.str()
	}
	if r.key("serial_hex") {
		rec.SerialHex = r.str()
	}
	if r.key("der") {
		rec.DER = r.bin()
	}
	if r.key("chain") {
		rec.Chain = r.binList()
	}
	if r.key("recorded_at") {
		rec.RecordedAt = r.time()
	}
	if r.key("duplicate") {
		rec.Duplicate = r.bool()
	}
	return r.close()
}

// decodeStepRecordFast decodes data when it is in the plain form (see above) into exactly the
// value json.Unmarshal decodes from it; ok false leaves *rec undefined.
func decodeStepRecordFast(data []byte, rec *StepRecord) (ok bool) {
	*rec = StepRecord{}
	r := objReader{b: data}
	if !r.open() {
		return false
	}
	if r.key("serial") {
		rec.Serial = r.str()
	}
	if r.key("step") {
		rec.Step = r.str()
	}
	if r.key("attempt") {
		rec.Attempt = r.uint()
	}
	if r.key("intent") {
		rec.Intent = r.bin()
	}
	if r.key("began_at") {
		rec.BeganAt = r.time()
	}
	if r.key("ended") {
		rec.Ended = r.bool()
	}
	if r.key("result") {
		rec.Result = r.bin()
	}
	if r.key("error_code") {
		rec.ErrorCode = r.str()
	}
	if r.key("ended_at") {
		rec.EndedAt = r.time()
	}
	return r.close()
}

// decodeEventFast decodes data when it is in the plain form (see above) into exactly the
// value json.Unmarshal decodes from it; ok false leaves *ev undefined.
func decodeEventFast(data []byte, ev *Event) (ok bool) {
	*ev = Event{}
	r := objReader{b: data}
	if !r.open() {
		return false
	}
	if r.key("seq") {
		ev.Seq = r.uint()
	}
	if r.key("unit_seq") {
		ev.UnitSeq = r.uint()
	}
	if r.key("time") {
		ev.Time = r.time()
	}
	if r.key("serial") {
		ev.Serial = r.str()
	}
	if r.key("type") {
		ev.Type = r.str()
	}
	if r.key("principal") {
		ev.Principal = r.str()
	}
	if r.key("step") {
		ev.Step = r.str()
	}
	if r.key("attempt") {
		ev.Attempt = r.uint()
	}
	if r.key("status") {
		ev.Status = Status(r.str())
	}
	if r.key("error_code") {
		ev.ErrorCode = r.str()
	}
	if r.key("message") {
		ev.Message = r.str()
	}
	if r.key("data") {
		ev.Data = r.strMap()
	}
	return r.close()
}

// eventPrincipal returns the principal of a stored event whose members up to "principal" are
// in the plain form, reading no further (the bytes are data's); ok false when they are not, or
// the event names no principal: decodeEvent then says what it holds.
func eventPrincipal(data []byte) (principal []byte, ok bool) {
	r := objReader{b: data}
	if !r.open() || !r.key("seq") {
		return nil, false
	}
	r.uint()
	if r.key("unit_seq") {
		r.uint()
	}
	if !r.key("time") {
		return nil, false
	}
	r.raw()
	if r.key("serial") {
		r.raw()
	}
	if !r.key("type") {
		return nil, false
	}
	r.raw()
	if !r.key("principal") {
		return nil, false
	}
	p := r.raw()
	return p, !r.bad
}

// objReader reads one JSON object of the plain form; any other input makes it bad.
type objReader struct {
	b     []byte
	bad   bool
	first bool // no member read yet
}

func (r *objReader) open() bool {
	if len(r.b) == 0 || r.b[0] != '{' {
		return false
	}
	r.b, r.first = r.b[1:], true
	return true
}

// key consumes the member name `"name":` (after a comma unless it is the first member) when
// the object continues with it.
func (r *objReader) key(name string) bool {
	if r.bad {
		return false
	}
	b := r.b
	if !r.first {
		if len(b) == 0 || b[0] != ',' {
			return false
		}
		b = b[1:]
	}
	if len(b) < len(name)+3 || b[0] != '"' || string(b[1:1+len(name)]) != name || b[1+len(name)] != '"' || b[2+len(name)] != ':' {
		return false
	}
	r.b, r.first = b[len(name)+3:], false
	return true
}

// close consumes the object's end and says the whole input was read and plain.
func (r *objReader) close() bool {
	return !r.bad && len(r.b) == 1 && r.b[0] == '}'
}

// raw reads a quoted plain string and returns its bytes (no copy).
func (r *objReader) raw() []byte {
	if r.bad || len(r.b) == 0 || r.b[0] != '"' {
		r.bad = true
		return nil
	}
	i := bytes.IndexByte(r.b[1:], '"')
	if i < 0 || !plainJSON(r.b[1:1+i]) {
		r.bad = true
		return nil
	}
	s := r.b[1 : 1+i]
	r.b = r.b[2+i:]
	return s
}

func (r *objReader) str() string { return string(r.raw()) }

// uint reads a decimal number as encoding/json writes an unsigned integer.
func (r *objReader) uint() uint64 {
	i := 0
	for i < len(r.b) && r.b[i] >= '0' && r.b[i] <= '9' {
		i++
	}
	if r.bad || i == 0 || (i > 1 && r.b[0] == '0') {
		r.bad = true
		return 0
	}
	n, err := strconv.ParseUint(string(r.b[:i]), 10, 64)
	if err != nil {
		r.bad = true
		return 0
	}
	r.b = r.b[i:]
	return n
}

func (r *objReader) bool() bool {
	switch {
	case r.bad:
	case bytes.HasPrefix(r.b, []byte("true")):
		r.b = r.b[4:]
		return true
	case bytes.HasPrefix(r.b, []byte("false")):
		r.b = r.b[5:]
		return false
	}
	r.bad = true
	return false
}

// bin reads null or a quoted base64 string as encoding/json decodes a []byte.
func (r *objReader) bin() []byte {
	if !r.bad && bytes.HasPrefix(r.b, []byte("null")) {
		r.b = r.b[4:]
		return nil
	}
	s := r.raw()
	if r.bad {
		return nil
	}
	out := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
	n, err := base64.StdEncoding.Decode(out, s)
	if err != nil {
		r.bad = true
		return nil
	}
	return out[:n]
}

// object reads an object whose members fn reads (with key and the value readers), as
// encoding/json decodes a struct: fn must read every member there is.
func (r *objReader) object(fn func()) {
	if r.bad || len(r.b) == 0 || r.b[0] != '{' {
		r.bad = true
		return
	}
	r.b, r.first = r.b[1:], true
	fn()
	if r.bad || len(r.b) == 0 || r.b[0] != '}' {
		r.bad = true
		return
	}
	r.b, r.first = r.b[1:], false
}

// objMap reads an object of objects, its keys plain and in increasing order (as encoding/json
// writes a map), each value read by fn as object reads it.
func objMap[V any](r *objReader, fn func(*V)) map[string]V {
	if r.bad || len(r.b) == 0 || r.b[0] != '{' {
		r.bad = true
		return nil
	}
	r.b = r.b[1:]
	m := map[string]V{}
	var last []byte
	for i := 0; !r.bad; i++ {
		if len(r.b) > 0 && r.b[0] == '}' {
			r.b, r.first = r.b[1:], false
			return m
		}
		if i > 0 {
			if len(r.b) == 0 || r.b[0] != ',' {
				break
			}
			r.b = r.b[1:]
		}
		k := r.raw()
		if r.bad || (i > 0 && bytes.Compare(k, last) <= 0) || len(r.b) == 0 || r.b[0] != ':' {
			break // a duplicate key, or not in encoding/json's order
		}
		r.b = r.b[1:]
		var v V
		r.object(func() { fn(&v) })
		m[string(k)] = v
		last = k
	}
	r.bad = true
	return nil
}

// objList reads an array of objects, each read by fn as object reads it.
func objList[V any](r *objReader, fn func(*V)) []V {
	if r.bad || len(r.b) == 0 || r.b[0] != '[' {
		r.bad = true
		return nil
	}
	r.b = r.b[1:]
	out := []V{}
	for i := 0; !r.bad; i++ {
		if len(r.b) > 0 && r.b[0] == ']' {
			r.b, r.first = r.b[1:], false
			return out
		}
		if i > 0 {
			if len(r.b) == 0 || r.b[0] != ',' {
				break
			}
			r.b = r.b[1:]
		}
		var v V
		r.object(func() { fn(&v) })
		out = append(out, v)
	}
	r.bad = true
	return nil
}

// binList reads null or an array of what bin reads, as encoding/json decodes a [][]byte.
func (r *objReader) binList() [][]byte {
	if !r.bad && bytes.HasPrefix(r.b, []byte("null")) {
		r.b = r.b[4:]
		return nil
	}
	if r.bad || len(r.b) == 0 || r.b[0] != '[' {
		r.bad = true
		return nil
	}
	r.b = r.b[1:]
	out := [][]byte{}
	for i := 0; !r.bad; i++ {
		if len(r.b) > 0 && r.b[0] == ']' {
			r.b = r.b[1:]
			return out
		}
		if i > 0 {
			if len(r.b) == 0 || r.b[0] != ',' {
				break
			}
			r.b = r.b[1:]
		}
		out = append(out, r.bin())
	}
	r.bad = true
	return nil
}

// time reads a quoted RFC 3339 time as time.Time's UnmarshalJSON does.
func (r *objReader) time() time.Time {
	if r.bad || len(r.b) == 0 || r.b[0] != '"' {
		r.bad = true
		return time.Time{}
	}
	i := bytes.IndexByte(r.b[1:], '"')
	if i < 0 || !plainJSON(r.b[1:1+i]) {
		r.bad = true
		return time.Time{}
	}
	var t time.Time
	if err := t.UnmarshalJSON(r.b[:2+i]); err != nil {
		r.bad = true
		return time.Time{}
	}
	r.b = r.b[2+i:]
	return t
}

// strMap reads an object of plain strings, its keys in increasing order (as encoding/json
// writes a map), or null.
func (r *objReader) strMap() map[string]string {
	if !r.bad && bytes.HasPrefix(r.b, []byte("null")) {
		r.b = r.b[4:]
		return nil
	}
	if r.bad || len(r.b) == 0 || r.b[0] != '{' {
		r.bad = true
		return nil
	}
	r.b = r.b[1:]
	m := map[string]string{}
	var last []byte
	for i := 0; !r.bad; i++ {
		if len(r.b) > 0 && r.b[0] == '}' {
			r.b = r.b[1:]
			return m
		}
		if i > 0 {
			if len(r.b) == 0 || r.b[0] != ',' {
				break
			}
			r.b = r.b[1:]
		}
		k := r.raw()
		if i > 0 && bytes.Compare(k, last) <= 0 {
			break // a duplicate key, or not in encoding/json's order
		}
		if r.bad || len(r.b) == 0 || r.b[0] != ':' {
			break
		}
		r.b = r.b[1:]
		m[string(k)] = r.str()
		last = k
	}
	r.bad = true
	return nil
}

// plainJSON says encoding/json writes s as itself between quotes: printable ASCII without the
// characters it escapes (", \ and the HTML-sensitive <, >, &).
func plainJSON[T string | []byte](s T) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}
