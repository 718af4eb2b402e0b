package export

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/devid-station/devid/station/store"
)

// auditSamples are records of every shape audit.jsonl carries, plain and not.
func auditSamples() []store.AuditEvent {
	t0 := time.Date(2026, 12, 1, 5, 6, 7, 890123000, time.UTC)
	h := bytes.Repeat([]byte{0xfb}, 32)
	return []store.AuditEvent{
		{Seq: 1, Time: t0, StationID: "st-1", Principal: "station", Action: "checkpoint", Result: "ok",
			Details:  map[string]string{"signed_seq": "7", "signed_hash": "ab", "key_sha256": "cd", "sig": "AQID+/=="},
			PrevHash: make([]byte, 32), Hash: h, Encoding: store.AuditEncodingV2},
		{Seq: 18446744073709551615, Time: t0.Truncate(time.Second), StationID: "st-1", Principal: "mes:alice", Serial: "SN-000001",
			Action: "unit_updated", Result: "error", ErrorCode: "CA_REFUSED", Fingerprints: []string{"ab", "cd"},
			Writes: []store.WriteDigest{{Bucket: "units/SN-1/steps", Key: []byte{0, 1, 0xff}, SHA256: h, Had: true},
				{Bucket: "units", Key: []byte("SN-1")}, {Bucket: "", Key: []byte{}, SHA256: []byte{}}},
			PrevHash: h, Hash: nil},
		{Seq: 0, Time: time.Time{}},
		// Not plain: encoding/json escapes or rejects these; the encoder must defer to it.
		{Seq: 3, Time: t0, StationID: "st<&>", Principal: "a\"b\\c", Action: "x\n", Result: "ü"},
		{Seq: 4, Time: t0, Details: map[string]string{"k\u2028": "v", "a": "\x00"}},
		{Seq: 5, Time: t0.In(time.FixedZone("X", 3600))},
		{Seq: 6, Time: t0, Details: map[string]string{}, Fingerprints: []string{}, Writes: []store.WriteDigest{}},
		{Seq: 7, Time: t0, Fingerprints: []string{"<"}, Writes: []store.WriteDigest{{Bucket: "&"}}},
	}
}

func TestAuditJSONIsEncodingJSON(t *testing.T) {
	for i, a := range auditSamples() {
		want, err := json.Marshal(&a)
		if err != nil {
			t.Fatal(err)
		}
		got, err := appendAuditJSON([]byte("prefix"), &a)
		if err != nil || !bytes.Equal(got, append([]byte("prefix"), want...)) {
			t.Errorf("record %d:\n got %s (%v)\nwant prefix%s", i, got, err, want)
		}
		var fromJSON, fromLine store.AuditEvent
		if err := json.Unmarshal(want, &fromJSON); err != nil {
			t.Fatal(err)
		}
		if err := decodeAuditLine(want, &fromLine); err != nil || !reflect.DeepEqual(fromLine, fromJSON) {
			t.Errorf("record %d: decoded %+v (%v), encoding/json decodes %+v", i, fromLine, err, fromJSON)
		}
		// The plain ones (the first three, and the empty lists encoding/json omits) take the
		// fast path both ways.
		plain := i < 3 || i == 6
		if _, ok := appendAuditPlain(nil, &a); ok != plain {
			t.Errorf("record %d: plain encoding %v, want %v", i, ok, plain)
		}
		// A time with an offset is written by encoding/json and read fast.
		if err := decodeAuditFast(want, &fromLine); (err == nil) != (plain || i == 5) {
			t.Errorf("record %d: fast decoding: %v", i, err)
		}
	}
}

func TestDecodeAuditLineRefuses(t *testing.T) {
	for _, line := range []string{
		`{"seq":1,"bogus":2}`,
		`{"seq":1}{"seq":2}`,
		`{"seq":1,"time":"2026-12-01T05:06:07Z","station_id":"s","principal":"p","action":"a","result":"ok","prev_hash":null,"hash":"!!"}`,
		`{"seq":01}`,
		``,
	} {
		var a store.AuditEvent
		if err := decodeAuditLine([]byte(line), &a); err == nil {
			t.Errorf("%q decodes: %+v", line, a)
		}
	}
}

// TestDecodeAuditShared checks decodeAudit, whose records share digest buffers, against
// decoding each line alone: the same records, and changing one record's digests (within their
// length, or by appending) leaves every other as it was.
func TestDecodeAuditShared(t *testing.T) {
	var file []byte
	var want []store.AuditEvent
	for range 300 { // more lines than a batch
		for _, a := range auditSamples() {
			line, err := json.Marshal(&a)
			if err != nil {
				t.Fatal(err)
			}
			file = append(append(file, line...), '\n')
			var alone store.AuditEvent
			if err := decodeAuditLine(line, &alone); err != nil {
				t.Fatal(err)
			}
			want = append(want, alone)
		}
	}
	got, err := decodeAudit(file)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatal("decodeAudit's records differ from the lines' decoded alone")
	}
	// Appending to a digest writes nothing another record sees, and no two digests share a
	// byte: flipping every digest's bytes flips each once.
	digests := func(a *store.AuditEvent) [][]byte {
		out := [][]byte{a.PrevHash, a.Hash}
		for j := range a.Writes {
			out = append(out, a.Writes[j].Key, a.Writes[j].SHA256)
		}
		return out
	}
	for i := range got {
		for _, d := range digests(&got[i]) {
			_ = append(d, 0xee, 0xee, 0xee)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatal("appending to a record's digest changed another record")
	}
	for i := range got {
		for _, d := range digests(&got[i]) {
			for k := range d {
				d[k] ^= 0xff
			}
		}
	}
	for i := range got {
		w := digests(&want[i])
		for j, d := range digests(&got[i]) {
			for k := range d {
				if d[k] != w[j][k]^0xff {
					t.Fatalf("record %d: a digest shares bytes with another", i)
				}
			}
		}
	}
}

// FuzzAuditLine checks that the fast decoder reads a line only into what encoding/json reads
// from it, and that encoding the record again gives encoding/json's bytes.
func FuzzAuditLine(f *testing.F) {
	for _, a := range auditSamples() {
		line, _ := json.Marshal(&a)
		f.Add(line)
	}
	f.Add([]byte(`{"seq":2,"time":"2026-12-01T05:06:07Z","station_id":"s","principal":"p","action":"a","result":"ok","details":{"b":"1","a":"2"},"prev_hash":null,"hash":""}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		var fast store.AuditEvent
		if decodeAuditFast(line, &fast) != nil {
			return
		}
		var want store.AuditEvent
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&want); err != nil || dec.InputOffset() != int64(len(line)) {
			t.Fatalf("fast path read %q, encoding/json refuses it: %v", line, err)
		}
		if !reflect.DeepEqual(fast, want) {
			t.Fatalf("fast path read %+v, encoding/json %+v", fast, want)
		}
		// The same into a shared arena, used and almost full, and shared names, then again
		// after it: the first record is left as it was.
		sc := &auditScratch{arena: make([]byte, 3, 8)}
		var shared, again store.AuditEvent
		if err := decodeAuditFastIn(line, &shared, sc); err != nil || !reflect.DeepEqual(shared, want) {
			t.Fatalf("fast path into an arena read %+v (%v), encoding/json %+v", shared, err, want)
		}
		if err := decodeAuditFastIn(line, &again, sc); err != nil || !reflect.DeepEqual(shared, want) || !reflect.DeepEqual(again, want) {
			t.Fatalf("fast path into a shared arena read %+v then %+v (%v), encoding/json %+v", shared, again, err, want)
		}
		enc, err := json.Marshal(&want)
		if err != nil {
			return
		}
		got, err := appendAuditJSON(nil, &want)
		if err != nil || !bytes.Equal(got, enc) {
			t.Fatalf("encoded %s (%v), encoding/json %s", got, err, enc)
		}
	})
}
