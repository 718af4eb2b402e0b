package store

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"strconv"
	"time"
)

// Every step a unit runs writes two step records and two events, and encoding/json's
// reflection was most of what writing them cost (a score of allocations each). The encoders
// here write exactly the bytes json.Marshal writes, for the values whose every string is plain
// (plainJSON: written as itself between quotes) and whose times are UTC within years 0 to
// 9999, as the store's clock makes them (Store.now); any other value is encoded by
// json.Marshal itself. TestRecordEncoders and FuzzRecordEncoders hold them to json.Marshal.

// encodeStepRecord returns json.Marshal(rec).
func encodeStepRecord(rec *StepRecord) ([]byte, error) {
	if b, ok := appendStepRecordPlain(make([]byte, 0, 192+base64.StdEncoding.EncodedLen(len(rec.Intent)+len(rec.Result))), rec); ok {
		return b, nil
	}
	return json.Marshal(rec)
}

// encodeEvent returns json.Marshal(ev).
func encodeEvent(ev *Event) ([]byte, error) {
	if b, ok := appendEventPlain(make([]byte, 0, 256), ev); ok {
		return b, nil
	}
	return json.Marshal(ev)
}

// appendStepRecordPlain appends rec as json.Marshal writes it; ok false when rec is not plain
// (see above).
func appendStepRecordPlain(b []byte, rec *StepRecord) (_ []byte, ok bool) {
	w := objWriter{b: b, ok: true}
	w.str("serial", rec.Serial)
	w.str("step", rec.Step)
	w.uint("attempt", rec.Attempt)
	if len(rec.Intent) > 0 {
		w.bin("intent", rec.Intent)
	}
	w.time("began_at", rec.BeganAt)
	w.key("ended")
	w.b = strconv.AppendBool(w.b, rec.Ended)
	if len(rec.Result) > 0 {
		w.bin("result", rec.Result)
	}
	if rec.ErrorCode != "" {
		w.str("error_code", rec.ErrorCode)
	}
	if !rec.EndedAt.IsZero() {
		w.time("ended_at", rec.EndedAt)
	}
	return w.close()
}

// appendEventPlain appends ev as json.Marshal writes it; ok false when ev is not plain (see
// above).
func appendEventPlain(b []byte, ev *Event) (_ []byte, ok bool) {
	w := objWriter{b: b, ok: true}
	w.uint("seq", ev.Seq)
	if ev.UnitSeq != 0 {
		w.uint("unit_seq", ev.UnitSeq)
	}
	w.time("time", ev.Time)
	if ev.Serial != "" {
		w.str("serial", ev.Serial)
	}
	w.str("type", ev.Type)
	if ev.Principal != "" {
		w.str("principal", ev.Principal)
	}
	if ev.Step != "" {
		w.str("step", ev.Step)
	}
	if ev.Attempt != 0 {
		w.uint("attempt", ev.Attempt)
	}
	if ev.Status != "" {
		w.str("status", string(ev.Status))
	}
	if ev.ErrorCode != "" {
		w.str("error_code", ev.ErrorCode)
	}
	if ev.Message != "" {
		w.str("message", ev.Message)
	}
	if len(ev.Data) > 0 {
		w.key("data")
		keys := make([]string, 0, len(ev.Data))
		for k := range ev.Data {
			keys = append(keys, k)
		}
		slices.Sort(keys) // encoding/json sorts a map's string keys
		inner := objWriter{b: w.b, ok: w.ok}
		for _, k := range keys {
			inner.str(k, ev.Data[k])
		}
		w.b, w.ok = inner.close()
	}
	return w.close()
}

// objWriter appends one JSON object as encoding/json writes it; ok turns false at the first
// value it cannot write as encoding/json does.
type objWriter struct {
	b      []byte
	ok     bool
	fields int
}

// key appends the member name (plain, as every name above is) and its colon.
func (w *objWriter) key(name string) {
	if w.fields == 0 {
		w.b = append(w.b, '{')
	} else {
		w.b = append(w.b, ',')
	}
	w.fields++
	if !plainJSON(name) {
		w.ok = false
	}
	w.b = append(w.b, '"')
	w.b = append(w.b, name...)
	w.b = append(w.b, '"', ':')
}

func (w *objWriter) str(name, v string) {
	w.key(name)
	if !plainJSON(v) {
		w.ok = false
	}
	w.b = append(w.b, '"')
	w.b = append(w.b, v...)
	w.b = append(w.b, '"')
}

func (w *objWriter) uint(name string, v uint64) {
	w.key(name)
	w.b = strconv.AppendUint(w.b, v, 10)
}

// bin writes v as encoding/json writes a []byte: standard base64 between quotes.
func (w *objWriter) bin(name string, v []byte) {
	w.key(name)
	w.b = append(w.b, '"')
	w.b = base64.StdEncoding.AppendEncode(w.b, v)
	w.b = append(w.b, '"')
}

// time writes v as time.Time's MarshalJSON does (RFC 3339 with nanoseconds), for a UTC time
// (offset zero, written Z) within years 0 to 9999; any other is left to encoding/json.
func (w *objWriter) time(name string, v time.Time) {
	w.key(name)
	if _, off := v.Zone(); off != 0 || v.Year() < 0 || v.Year() > 9999 {
		w.ok = false
	}
	w.b = append(w.b, '"')
	w.b = v.AppendFormat(w.b, time.RFC3339Nano)
	w.b = append(w.b, '"')
}

// close ends the object ({} when it has no member).
func (w *objWriter) close() ([]byte, bool) {
	if w.fields == 0 {
		w.b = append(w.b, '{')
	}
	w.b = append(w.b, '}')
	return w.b, w.ok
}
