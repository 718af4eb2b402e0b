package store

import (
	"reflect"
	"testing"
	"time"
)

// TestRecordCanonical checks that a stored record decodes to what was sealed, and that
// changing, cutting or extending any stored byte either fails to parse or fails its hash.
func TestRecordCanonical(t *testing.T) {
	tests := []struct {
		name string
		a    AuditEvent
	}{
		{"bare", AuditEvent{Seq: 1, StationID: "st", Principal: PrincipalStation, Action: "store.created", Result: ResultOK, PrevHash: make([]byte, 32)}},
		{"full", AuditEvent{Seq: 42, StationID: "st-1", Principal: "qa:CN=x", Serial: "SN1", Action: EventCertRecorded,
			Result: ResultError, ErrorCode: "cert_bound_elsewhere", Details: map[string]string{"role": "IDevID", "b": ""},
			Fingerprints: []string{"ab", "cd"}, PrevHash: make([]byte, 32),
			Writes: []WriteDigest{{Bucket: "units/SN1", Key: []byte("state"), SHA256: make([]byte, 32), Had: true},
				{Bucket: "ek_index", Key: []byte("k"), Had: true}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := tc.a
			a.Time = time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
			stored := a.seal()
			if !reflect.DeepEqual(a.Hash, a.computeHash()) {
				t.Fatalf("sealed hash %x, canonical hash %x", a.Hash, a.computeHash())
			}
			got, err := decodeRecord(stored)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, a) {
				t.Fatalf("decoded %+v, want %+v", got, a)
			}
			r, err := parseRecord(stored)
			if err != nil || !r.hashOK(nil, nil) {
				t.Fatalf("intact record: parse %v, hash ok %v", err, err == nil && r.hashOK(nil, nil))
			}
			intact := func(v []byte) bool {
				r, err := parseRecord(v)
				return err == nil && r.hashOK(nil, nil)
			}
			for i := range stored {
				v := append([]byte(nil), stored...)
				v[i] ^= 0x01
				if intact(v) {
					t.Errorf("byte %d of %d changed: the record still verifies", i, len(stored))
				}
			}
			for _, v := range [][]byte{stored[:len(stored)-1], append(append([]byte(nil), stored...), 0), stored[1:]} {
				if intact(v) {
					t.Errorf("record of %d bytes (stored %d) verifies", len(v), len(stored))
				}
			}
		})
	}
}
