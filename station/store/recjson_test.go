package store

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

// recordJSONSamples are step records and events as the store writes them (plain and not),
// and hand-made forms the fast decoders must decline or read as encoding/json does.
func recordJSONSamples(t testing.TB) [][]byte {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	var out [][]byte
	add := func(v any) {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	for _, r := range []StepRecord{
		{},
		{StepRef: StepRef{Serial: "SN-1", Step: "verify_ek", Attempt: 1}, Intent: []byte(`{"identify":"x"}`), BeganAt: t0},
		{StepRef: StepRef{Serial: "SN-1", Step: "enroll", Attempt: 2}, Intent: []byte{}, BeganAt: t0, Ended: true,
			Result: []byte{0, 1, 2, 255}, ErrorCode: "E_CA", EndedAt: t0.Add(time.Second)},
		{StepRef: StepRef{Serial: "SN <&> \"q\" é", Step: "s\n"}, BeganAt: t0.In(time.FixedZone("x", 3600))},
		{StepRef: StepRef{Serial: "SN-2", Step: "complete", Attempt: 1<<64 - 1}, BeganAt: t0, Ended: true, EndedAt: t0},
	} {
		add(&r)
	}
	for _, e := range []Event{
		{},
		{Seq: 7, UnitSeq: 3, Time: t0, Serial: "SN-1", Type: "step", Principal: "station", Step: "verify", Attempt: 1,
			Status: StatusRunning, ErrorCode: "E", Message: "all fine", Data: map[string]string{"a": "1", "b": "", "c": "x y"}},
		{Seq: 8, Time: t0, Type: "rework", Principal: "mes:bob", Data: map[string]string{}},
		{Seq: 9, Time: t0, Serial: "SN-1", Type: "abort", Message: `he said "stop" <now>`, Data: map[string]string{"k\u00e9": "v"}},
	} {
		add(&e)
	}
	for _, c := range []CertRecord{
		{},
		{Serial: "SN-1", Role: RoleIDevID, SHA256: "ab", IssuerHash: "cd", SerialHex: "1f", DER: []byte{0x30, 1, 2},
			Chain: [][]byte{{0x30}, {}, nil, {1, 2, 3, 4}}, RecordedAt: t0, Duplicate: true},
		{Serial: "SN-1", Role: RoleLDevID, SHA256: "ab", DER: []byte{}, RecordedAt: t0.In(time.FixedZone("x", -7200))},
		{Serial: "SN <&> é", Role: RoleIAK, DER: []byte{0xff}, Chain: [][]byte{{9}}, RecordedAt: t0},
	} {
		add(&c)
	}
	for _, s := range []string{
		`{"der":"AAE=","chain":[]}`, `{"chain":null}`, `{"chain":[null,"AA=="]}`, `{"chain":["AA==",]}`, `{"chain":[,"AA=="]}`,
		`{"chain":["AA=="}`, `{"chain":"AA=="}`, `{"chain":[1]}`, `{"der":"AAE=","der":"AAE="}`, `{"duplicate":false}`,
		`{"recorded_at":"2026-03-01T12:00:00Z","duplicate":true}`, `{"chain":[["AA=="]]}`,
		`{"serial":"a","serial":"b"}`, `{"step":"a","serial":"b"}`, `{"serial":null}`, `{"intent":null,"began_at":null}`,
		`{"attempt":01}`, `{"attempt":1.0}`, `{"attempt":-1}`, `{"attempt":18446744073709551616}`, `{"attempt":1e2}`,
		`{"intent":"AAE"}`, `{"intent":"AA=="}`, `{"intent":""}`, `{"intent":"!!"}`, `{"ended":true}`, `{"ended":fals}`,
		`{"began_at":"2026-03-01T12:00:00Z"}`, `{"began_at":"2026-03-01 12:00:00"}`, `{"Serial":"x"}`, ` {"serial":"x"}`,
		`{"serial":"x"} `, `{"serial":"x"}{}`, `{}`, `{`, ``, `null`, `{"data":{"b":"1","a":"2"}}`, `{"data":{"a":"1","a":"2"}}`,
		`{"data":null}`, `{"data":{}}`, `{"data":{"a":1}}`, `{"seq":1,"unit_seq":0}`, `{"status":"done","other":1}`,
		`{"seq":1,}`, `{,"seq":1}`, `{"message":"a\u0041"}`, `{"data":{"a":"1",}}`,
		`{"serial":"a","steps":{"b":{"attempts":1},"a":{}}}`, `{"steps":{"a":{"attempts":1,"attempts":2}}}`,
		`{"steps":{"a":null}}`, `{"steps":{"a":{"x":1}}}`, `{"steps":{"a":{}},"keys":{"k":{"handle":4294967296}}}`,
		`{"keys":{"k":{"handle":4294967295,"name":null}}}`, `{"keys":{"k":{"name":"AA=="}}}`, `{"certificates":[{},{}]}`,
		`{"certificates":[{"duplicate":false}]}`, `{"certificates":[null]}`, `{"certificates":[{},]}`, `{"certificates":[]}`,
		`{"rework":null}`, `{"rework":{}}`, `{"rework":{"by":"a"},"reworks":[{"used_at":"2026-03-01T12:00:00Z"}]}`,
		`{"reworks":[{"by":"a"}],"created_at":"2026-03-01T12:00:00Z","updated_at":"x"}`, `{"steps":{}}`, `{"keys":{}}`,
	} {
		out = append(out, []byte(s))
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 40 {
		alphabet := unitAlphabet
		if i%2 == 0 {
			alphabet = "abcXYZ019-_ :/"
		}
		add(randomUnitOf(rng, alphabet))
	}
	return out
}

// checkRecordJSON fails when a fast decoder accepts data and json.Unmarshal does not, or
// decodes another value.
func checkRecordJSON(t testing.TB, data []byte) {
	var fastRec, slowRec StepRecord
	if decodeStepRecordFast(data, &fastRec) {
		if err := json.Unmarshal(data, &slowRec); err != nil {
			t.Fatalf("step record %q: the fast decoder accepts what encoding/json refuses: %v", data, err)
		}
		if !reflect.DeepEqual(fastRec, slowRec) {
			t.Fatalf("step record %q: fast %#v, encoding/json %#v", data, fastRec, slowRec)
		}
	}
	var fastEv, slowEv Event
	if decodeEventFast(data, &fastEv) {
		if err := json.Unmarshal(data, &slowEv); err != nil {
			t.Fatalf("event %q: the fast decoder accepts what encoding/json refuses: %v", data, err)
		}
		if !reflect.DeepEqual(fastEv, slowEv) {
			t.Fatalf("event %q: fast %#v, encoding/json %#v", data, fastEv, slowEv)
		}
	}
	if p, ok := eventPrincipal(data); ok {
		var ev Event
		if err := json.Unmarshal(data, &ev); err == nil && ev.Principal != string(p) {
			t.Fatalf("event %q: eventPrincipal %q, encoding/json %q", data, p, ev.Principal)
		}
	}
	var fastUnit, slowUnit UnitState
	if decodeUnitFast(data, &fastUnit) {
		if err := json.Unmarshal(data, &slowUnit); err != nil {
			t.Fatalf("unit state %q: the fast decoder accepts what encoding/json refuses: %v", data, err)
		}
		if !reflect.DeepEqual(fastUnit, slowUnit) {
			t.Fatalf("unit state %q: fast %#v, encoding/json %#v", data, fastUnit, slowUnit)
		}
	}
	var unit, wantUnit UnitState
	if errFast, errSlow := decodeUnitJSON(data, &unit), json.Unmarshal(data, &wantUnit); (errFast == nil) != (errSlow == nil) ||
		errSlow == nil && !reflect.DeepEqual(unit, wantUnit) {
		t.Fatalf("unit state %q: decodeUnitJSON %#v (%v), encoding/json %#v (%v)", data, unit, errFast, wantUnit, errSlow)
	}
	var fastCert, slowCert CertRecord
	if decodeCertRecordFast(data, &fastCert) {
		if err := json.Unmarshal(data, &slowCert); err != nil {
			t.Fatalf("certificate record %q: the fast decoder accepts what encoding/json refuses: %v", data, err)
		}
		if !reflect.DeepEqual(fastCert, slowCert) {
			t.Fatalf("certificate record %q: fast %#v, encoding/json %#v", data, fastCert, slowCert)
		}
	}
	// The decoders callers use agree with encoding/json on everything, error or not.
	var cert, wantCert CertRecord
	errFast, errSlow := decodeCertRecord(data, &cert), json.Unmarshal(data, &wantCert)
	if (errFast == nil) != (errSlow == nil) || errSlow == nil && !reflect.DeepEqual(cert, wantCert) {
		t.Fatalf("certificate record %q: decodeCertRecord %#v (%v), encoding/json %#v (%v)", data, cert, errFast, wantCert, errSlow)
	}
	var rec, wantRec StepRecord
	errFast, errSlow = decodeStepRecord(data, &rec), json.Unmarshal(data, &wantRec)
	if (errFast == nil) != (errSlow == nil) || errSlow == nil && !reflect.DeepEqual(rec, wantRec) {
		t.Fatalf("step record %q: decodeStepRecord %#v (%v), encoding/json %#v (%v)", data, rec, errFast, wantRec, errSlow)
	}
	var ev, wantEv Event
	errFast, errSlow = decodeEvent(data, &ev), json.Unmarshal(data, &wantEv)
	if (errFast == nil) != (errSlow == nil) || errSlow == nil && !reflect.DeepEqual(ev, wantEv) {
		t.Fatalf("event %q: decodeEvent %#v (%v), encoding/json %#v (%v)", data, ev, errFast, wantEv, errSlow)
	}
}

// TestRecordJSON holds the fast step record, event and certificate record decoders to
// encoding/json, and checks
// that they read the plain records the store writes (else they would only be slower).
func TestRecordJSON(t *testing.T) {
	samples := recordJSONSamples(t)
	for _, data := range samples {
		checkRecordJSON(t, data)
	}
	var rec StepRecord
	for _, i := range []int{0, 1, 2, 4} {
		if !decodeStepRecordFast(samples[i], &rec) {
			t.Errorf("step record %s: the fast decoder declines a plain record", samples[i])
		}
	}
	if decodeStepRecordFast(samples[3], &rec) {
		t.Errorf("step record %s: the fast decoder reads a record with escapes", samples[3])
	}
	var ev Event
	for _, i := range []int{5, 6, 7} {
		if !decodeEventFast(samples[i], &ev) {
			t.Errorf("event %s: the fast decoder declines a plain event", samples[i])
		}
	}
	if decodeEventFast(samples[8], &ev) || !strings.Contains(string(samples[8]), `\u003c`) {
		t.Errorf("event %s: the fast decoder reads an event with escapes", samples[8])
	}
	var cert CertRecord
	for _, i := range []int{9, 10, 11} {
		if !decodeCertRecordFast(samples[i], &cert) {
			t.Errorf("certificate record %s: the fast decoder declines a plain record", samples[i])
		}
	}
	if decodeCertRecordFast(samples[12], &cert) || !strings.Contains(string(samples[12]), `\u003c`) {
		t.Errorf("certificate record %s: the fast decoder reads a record with escapes", samples[12])
	}
	// The random units: the even ones plain, read by the fast decoder.
	var u UnitState
	for i, data := range samples[len(samples)-40:] {
		if i%2 == 0 && !decodeUnitFast(data, &u) {
			t.Errorf("unit state %s: the fast decoder declines a plain state", data)
		}
	}
}

// FuzzRecordJSON: whatever the input, a fast decoder that accepts it decodes what
// encoding/json decodes.
func FuzzRecordJSON(f *testing.F) {
	for _, data := range recordJSONSamples(f) {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkRecordJSON(t, data)
	})
}
