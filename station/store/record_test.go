package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
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
		{"v2", AuditEvent{Seq: 43, StationID: "st-1", Principal: PrincipalStation, Serial: "SN1", Action: EventStepBegun,
			Result: ResultOK, Details: map[string]string{"step": "enroll", "intent_sha256": strings.Repeat("0f", 32), "odd": "abc",
				"upper": "AB", "empty": "", "ab": "cd"}, Fingerprints: []string{"ab", "a", ""}, PrevHash: make([]byte, 32),
			Encoding: AuditEncodingV2,
			Writes: []WriteDigest{
				{Bucket: "unit_states", Key: []byte("SN1"), SHA256: make([]byte, 32), Had: true},     // serial elided, empty rest
				{Bucket: "step_records", Key: stepKey("SN1", "enroll", 1), SHA256: make([]byte, 32)}, // serial at 0
				{Bucket: "unit_index", Key: append(ixPrefix(ixStatus, "running"), "SN1"...)},         // serial at the end
				{Bucket: "unit_index", Key: []byte("uSN1xSN1"), Had: true},                           // removed, serial twice
				{Bucket: "outbox", Key: u64key(7), SHA256: make([]byte, 32)},                         // no serial
				{Bucket: "units/SN1/steps/enroll", Key: u64key(1), SHA256: make([]byte, 32)},         // named in full
			}}},
		{"v2 bare", AuditEvent{Seq: 1, StationID: "st", Principal: PrincipalStation, Action: "store.created", Result: ResultOK,
			PrevHash: make([]byte, 32), Encoding: AuditEncodingV2}},
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
			// A record whose body is cut or extended, its hash recomputed, does not parse.
			for _, body := range [][]byte{stored[1 : len(stored)-33], append(bytes.Clone(stored[1:len(stored)-32]), 0)} {
				v := append(append([]byte{stored[0]}, body...), make([]byte, 32)...)
				if _, err := parseRecord(v); err == nil {
					t.Errorf("a body of %d bytes (intact %d) parses", len(body), len(stored)-33)
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

// TestJSONRecordsStillVerify rewrites every audit record of a store as JSON, as stations
// stored them before the canonical encoding, and checks that the store still verifies (with
// its checkpoints and anchor), that the store appends canonical records after them, and that
// an edit of a stored value or of a JSON record is still caught.
func TestJSONRecordsStillVerify(t *testing.T) {
	base, key := tamperBase(t)
	keySHA, err := KeySHA256(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	toJSON := func(tx *bolt.Tx) error {
		ab := tx.Bucket(bAudit)
		c := ab.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			a, err := decodeRecord(v)
			if err != nil {
				return err
			}
			data, err := json.Marshal(&a)
			if err != nil {
				return err
			}
			if err := ab.Put(k, data); err != nil {
				return err
			}
		}
		return nil
	}
	verify := func(path string) error {
		s, err := Open(path, Options{})
		if err != nil {
			return err
		}
		defer s.Close()
		anchor, err := ReadAnchor(path + ".checkpoint")
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Verify(context.Background(), VerifyOptions{KeySHA256: keySHA, Anchor: anchor})
		return err
	}
	edit := func(path string, fns ...func(tx *bolt.Tx) error) {
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		for _, fn := range fns {
			if err := db.Update(fn); err != nil {
				t.Fatal(err)
			}
		}
	}

	path := copyStore(t, base)
	edit(path, toJSON)
	if err := verify(path); err != nil {
		t.Fatalf("store of JSON records: %v", err)
	}
	s := openAt(t, path)
	mustUnit(t, s, "SN2", StatusRunning)
	if a := lastAudit(t, s); a.Serial != "SN2" {
		t.Fatalf("last record %+v, want SN2's", a)
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		k, v := tx.Bucket(bAudit).Cursor().Last()
		if v[0] != recordV2 {
			return fmt.Errorf("record %x appended after JSON records is not in the v2 encoding: %q", k, v[:1])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifyChain(context.Background()); err != nil {
		t.Fatalf("JSON records, then canonical ones: %v", err)
	}

	tests := []struct {
		name   string
		tamper func(tx *bolt.Tx) error
		want   string
	}{
		{"stored value", flipByte("unit_states", []byte("SN1")), `bucket unit_states key "SN1": stored value differs`},
		{"JSON record", func(tx *bolt.Tx) error {
			ab := tx.Bucket(bAudit)
			v := bytes.Clone(ab.Get(u64key(3)))
			if v[0] != '{' {
				return errors.New("record 3 is not JSON")
			}
			return ab.Put(u64key(3), bytes.Replace(v, []byte(`"principal":"station"`), []byte(`"principal":"stationX"`), 1))
		}, "hash does not match content"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := copyStore(t, base)
			edit(path, toJSON, tc.tamper)
			err := verify(path)
			if err == nil || !errors.Is(err, ErrChainBroken) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Verify after tampering: %v; want %q", err, tc.want)
			}
		})
	}
}

// TestSchema2IsUpgraded opens a schema 2 file (JSON audit records, as stations wrote them
// before the canonical encoding) and checks that Open moves it to the current schema with an
// audited write, keeps its JSON records, and that it verifies.
func TestSchema2IsUpgraded(t *testing.T) {
	path := schema3File(t)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	old := u64key(2)
	h := sha256.Sum256(old)
	err = db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bMeta).Put(kSchemaVersion, old); err != nil {
			return err
		}
		// The chain as a schema 2 station wrote it: JSON records, schema_version 2.
		err := rechain(tx, 1, func(a *AuditEvent) {
			for i, d := range a.Writes {
				if d.Bucket == string(bMeta) && string(d.Key) == string(kSchemaVersion) {
					a.Writes[i].SHA256 = h[:]
				}
			}
		})
		if err != nil {
			return err
		}
		ab := tx.Bucket(bAudit)
		c := ab.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			a, err := decodeRecord(v)
			if err != nil {
				return err
			}
			data, _ := json.Marshal(&a)
			if err := ab.Put(k, data); err != nil {
				return err
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	s := openAt(t, path)
	if _, err := s.VerifyChain(context.Background()); err != nil {
		t.Fatalf("upgraded store: %v", err)
	}
	if a := lastAudit(t, s); a.Action != AuditActionWrite || a.Details["schema_version"] != fmt.Sprint(SchemaVersion) {
		t.Errorf("last record %+v, want the schema change", a)
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		if v := binary.BigEndian.Uint64(tx.Bucket(bMeta).Get(kSchemaVersion)); v != SchemaVersion {
			return fmt.Errorf("schema_version %d, want %d", v, SchemaVersion)
		}
		if v := tx.Bucket(bAudit).Get(u64key(1)); v[0] != '{' {
			return fmt.Errorf("record 1 is no longer JSON: %q", v[:1])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
