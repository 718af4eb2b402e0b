package store

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// checkRecordEncoders fails when encodeStepRecord or encodeEvent writes other bytes than
// json.Marshal, or when plain says the value is plain and the fast encoder declines it.
func checkRecordEncoders(t testing.TB, rec *StepRecord, ev *Event, plain bool) {
	t.Helper()
	got, err := encodeStepRecord(rec)
	want, werr := json.Marshal(rec)
	if (err == nil) != (werr == nil) || !bytes.Equal(got, want) {
		t.Fatalf("step record %#v: encodeStepRecord %s (%v), json.Marshal %s (%v)", rec, got, err, want, werr)
	}
	if _, ok := appendStepRecordPlain(nil, rec); plain && !ok {
		t.Fatalf("step record %s: the fast encoder declines a plain record", want)
	}
	got, err = encodeEvent(ev)
	want, werr = json.Marshal(ev)
	if (err == nil) != (werr == nil) || !bytes.Equal(got, want) {
		t.Fatalf("event %#v: encodeEvent %s (%v), json.Marshal %s (%v)", ev, got, err, want, werr)
	}
	if _, ok := appendEventPlain(nil, ev); plain && !ok {
		t.Fatalf("event %s: the fast encoder declines a plain event", want)
	}
}

// TestRecordEncoders holds the step record and event encoders to json.Marshal on the values
// the store writes and on those the fast path must leave to it (escapes, zones, years).
func TestRecordEncoders(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	plain := []struct {
		rec StepRecord
		ev  Event
	}{
		{},
		{StepRecord{StepRef: StepRef{Serial: "SN-1", Step: "verify_ek", Attempt: 1}, Intent: []byte(`{"identify":"x"}`), BeganAt: t0},
			Event{Seq: 7, UnitSeq: 3, Time: t0, Serial: "SN-1", Type: "step", Principal: "station", Step: "verify", Attempt: 1,
				Status: StatusRunning, ErrorCode: "E", Message: "all fine", Data: map[string]string{"c": "x y", "a": "1", "b": ""}}},
		{StepRecord{StepRef: StepRef{Serial: "SN-1", Step: "enroll", Attempt: 2}, Intent: []byte{}, BeganAt: t0, Ended: true,
			Result: []byte{0, 1, 2, 255}, ErrorCode: "E_CA", EndedAt: t0.Add(time.Second)},
			Event{Seq: 8, Time: t0.Truncate(time.Second), Type: "rework", Principal: "mes:bob", Data: map[string]string{}}},
		{StepRecord{StepRef: StepRef{Serial: "SN-2", Step: "complete", Attempt: 1<<64 - 1}, BeganAt: t0, Ended: true, EndedAt: t0, Result: []byte("ab")},
			Event{Seq: 1<<64 - 1, UnitSeq: 1<<64 - 1, Time: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC), Serial: "x"}},
		{StepRecord{BeganAt: time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC), EndedAt: t0.In(time.FixedZone("z", 0))},
			Event{Time: t0.Local().In(time.UTC), Status: StatusDone}},
	}
	for _, p := range plain {
		checkRecordEncoders(t, &p.rec, &p.ev, true)
	}
	for _, p := range []struct {
		rec StepRecord
		ev  Event
	}{
		{StepRecord{StepRef: StepRef{Serial: "SN <&> \"q\" é", Step: "s\n"}, BeganAt: t0.In(time.FixedZone("x", 3600))},
			Event{Seq: 9, Time: t0, Serial: "SN-1", Type: "abort", Message: `he said "stop" <now>`, Data: map[string]string{"k\u00e9": "v"}}},
		{StepRecord{ErrorCode: "\x7f", BeganAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
			Event{Time: time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC), Data: map[string]string{"a": "\\"}}},
		{StepRecord{BeganAt: t0, EndedAt: t0.In(time.FixedZone("far", 25*3600))},
			Event{Time: t0.In(time.FixedZone("m", -90)), Principal: "\u2028"}},
	} {
		checkRecordEncoders(t, &p.rec, &p.ev, false)
	}
}

// FuzzRecordEncoders: whatever the fields, the step record and event encoders write what
// json.Marshal writes.
func FuzzRecordEncoders(f *testing.F) {
	f.Add("SN-1", "verify_ek", uint64(1), []byte(`{"a":1}`), int64(1772366400), uint32(123456789), int32(0), true, []byte{1, 2}, "E", "k", "v")
	f.Add("SN <&>", "s\n", uint64(0), []byte{}, int64(-62135596800), uint32(0), int32(3600), false, []byte(nil), "", "", "")
	f.Add("a\u00e9", "\"", uint64(1<<63), []byte(nil), int64(253402300799), uint32(999999999), int32(-60), true, []byte("x"), "\\", "<", ">")
	f.Fuzz(func(t *testing.T, serial, step string, n uint64, intent []byte, secs int64, nanos uint32, offset int32, ended bool, result []byte, code, k, v string) {
		tm := time.Unix(secs%(1<<40), int64(nanos%1e9)).UTC()
		if offset != 0 {
			tm = tm.In(time.FixedZone("f", int(offset%(48*3600))))
		}
		rec := StepRecord{StepRef: StepRef{Serial: serial, Step: step, Attempt: n}, Intent: intent, BeganAt: tm, Ended: ended,
			Result: result, ErrorCode: code}
		if ended {
			rec.EndedAt = tm.Add(time.Duration(n % 1e12))
		}
		ev := Event{Seq: n, UnitSeq: n / 3, Time: tm, Serial: serial, Type: step, Principal: code, Step: step, Attempt: n / 7,
			Status: Status(k), ErrorCode: code, Message: v}
		if k != "" || v != "" {
			ev.Data = map[string]string{k: v, k + "z": serial, "a" + v: code}
		}
		checkRecordEncoders(t, &rec, &ev, false)
	})
}
