package store

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devid-station/devid/fixture/devpki"
	bolt "go.etcd.io/bbolt"
)

// tamperBase writes a store with a unit (state, step records, events, EK,
// certificate), a work order and signed checkpoints, closes it (the last
// checkpoint), and returns its path and the audit key.
func tamperBase(t *testing.T) (string, *ecdsa.PrivateKey) {
	t.Helper()
	ctx := context.Background()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "station.db")
	s, err := Open(path, Options{StationID: testStation, Clock: newStepClock(),
		Checkpoints: CheckpointOptions{Signer: key, Every: 4}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateWorkOrder(ctx, WorkOrder{ID: "WO-1", Profile: "default", Serials: []string{"SN1"}}); err != nil {
		t.Fatal(err)
	}
	mustUnit(t, s, "SN1", StatusPending)
	if err := s.BindEK(ctx, strings.Repeat("ab", 32), "SN1"); err != nil {
		t.Fatal(err)
	}
	ref, err := s.BeginStep(ctx, "SN1", "enroll", []byte("intent"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EndStep(ctx, ref, []byte("result"), ""); err != nil {
		t.Fatal(err)
	}
	pki, err := devpki.New(devpki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RecordCertificate(ctx, "SN1", RoleIDevID, issueLeaf(t, pki.IDevIDIssuing, 7, "SN1")); err != nil {
		t.Fatal(err)
	}
	mustUnit(t, s, "SN1", StatusDone)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path, key
}

// copyStore copies the store file and its saved checkpoint into a new folder.
func copyStore(t *testing.T, path string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "station.db")
	for _, suffix := range []string{"", ".checkpoint"} {
		in, err := os.Open(path + suffix)
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.OpenFile(dst+suffix, os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			t.Fatal(err)
		}
		in.Close()
		out.Close()
	}
	return dst
}

// bucketAt returns the bucket at a "/"-joined path.
func bucketAt(tx *bolt.Tx, path string) *bolt.Bucket {
	names := strings.Split(path, "/")
	b := tx.Bucket([]byte(names[0]))
	for _, n := range names[1:] {
		b = b.Bucket([]byte(n))
	}
	return b
}

// flipByte changes one byte of the value under path/key.
func flipByte(path string, key []byte) func(tx *bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		b := bucketAt(tx, path)
		v := bytes.Clone(b.Get(key))
		if v == nil {
			return errors.New("no such record")
		}
		v[len(v)/2] ^= 0x01
		return b.Put(key, v)
	}
}

// rechain recomputes every audit record's links and hashes from seq on and
// moves the head, as someone who edited a record and knows the scheme would.
func rechain(tx *bolt.Tx, from uint64, edit func(a *AuditEvent)) error {
	ab := tx.Bucket(bAudit)
	var prev []byte
	if from == 1 {
		prev = make([]byte, 32)
	} else {
		p, err := decodeRecord(ab.Get(u64key(from - 1)))
		if err != nil {
			return err
		}
		prev = p.Hash
	}
	c := ab.Cursor()
	var head ChainHead
	for k, v := c.Seek(u64key(from)); k != nil; k, v = c.Next() {
		a, err := decodeRecord(v)
		if err != nil {
			return err
		}
		if a.Seq == from && edit != nil {
			edit(&a)
		}
		a.PrevHash = prev
		a.Hash = a.computeHash()
		if err := ab.Put(k, reencode(v, &a)); err != nil {
			return err
		}
		prev, head = a.Hash, ChainHead{Seq: a.Seq, Hash: a.Hash}
	}
	return tx.Bucket(bMeta).Put(kAuditHead, encodeHead(head))
}

// truncate cuts the last n audit records and moves the head back.
func truncate(n uint64) func(tx *bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		ab := tx.Bucket(bAudit)
		k, _ := ab.Cursor().Last()
		last := binary.BigEndian.Uint64(k)
		for seq := last - n + 1; seq <= last; seq++ {
			if err := ab.Delete(u64key(seq)); err != nil {
				return err
			}
		}
		a, err := decodeRecord(ab.Get(u64key(last - n)))
		if err != nil {
			return err
		}
		return tx.Bucket(bMeta).Put(kAuditHead, encodeHead(ChainHead{Seq: a.Seq, Hash: a.Hash}))
	}
}

// TestTamperIsDetected edits a real store file in every way the chain must
// catch and checks that Verify fails naming the record.
func TestTamperIsDetected(t *testing.T) {
	base, key := tamperBase(t)
	keySHA, err := KeySHA256(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	// The untouched store verifies, with checkpoints.
	verify := func(path string) (VerifyReport, error) {
		s, err := Open(path, Options{})
		if err != nil {
			return VerifyReport{}, err
		}
		defer s.Close()
		anchor, err := ReadAnchor(path + ".checkpoint")
		if err != nil {
			t.Fatal(err)
		}
		return s.Verify(context.Background(), VerifyOptions{KeySHA256: keySHA, Anchor: anchor})
	}
	rep, err := verify(copyStore(t, base))
	if err != nil {
		t.Fatalf("untouched store: %v", err)
	}
	if rep.Checkpoints < 2 || rep.Last == nil || rep.Last.Record != rep.Head.Seq {
		t.Fatalf("untouched store: %d checkpoints, last %+v, head %d; want several, the last at the head", rep.Checkpoints, rep.Last, rep.Head.Seq)
	}

	// Find the sequence of the record that wrote the work order, for the re-chain case.
	var woSeq uint64
	s, err := Open(copyStore(t, base), Options{})
	if err != nil {
		t.Fatal(err)
	}
	recs, err := s.AuditAfter(context.Background(), 0, 1000)
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range recs {
		if a.Action == EventWorkOrderCreated {
			woSeq = a.Seq
		}
	}
	certKey := func(tx *bolt.Tx) []byte {
		k, _ := tx.Bucket(bCertIndex).Cursor().First()
		return bytes.Clone(k)
	}

	tests := []struct {
		name   string
		tamper func(tx *bolt.Tx) error
		want   string // in the error
	}{
		{"unit state", flipByte("unit_states", []byte("SN1")), `bucket unit_states key "SN1": stored value differs`},
		{"step record", flipByte("step_records", stepKey("SN1", "enroll", 1)),
			fmt.Sprintf("bucket step_records key 0x%x: stored value differs", stepKey("SN1", "enroll", 1))},
		{"event log", flipByte("unit_events", []byte("SN1")), `bucket unit_events key "SN1": stored value differs`},
		{"outbox event", flipByte("outbox", u64key(1)), "bucket outbox key 0x0000000000000001: stored value differs"},
		{"cert reference", func(tx *bolt.Tx) error { return flipByte("cert_index", certKey(tx))(tx) }, "bucket cert_index key \"iss/"},
		{"cert record", func(tx *bolt.Tx) error {
			k, _ := tx.Bucket(bCertIndex).Cursor().Last()
			return flipByte("cert_index", bytes.Clone(k))(tx)
		}, "bucket cert_index key \"sha256/"},
		{"EK binding", flipByte("ek_index", []byte(strings.Repeat("ab", 32))), "bucket ek_index key"},
		{"work order", flipByte("work_orders", []byte("WO-1")), `bucket work_orders key "WO-1": stored value differs`},
		{"meta", flipByte("meta", kStationID), `checkpoint of station`},
		{"audit record", func(tx *bolt.Tx) error {
			v := bytes.Clone(tx.Bucket(bAudit).Get(u64key(woSeq)))
			v = bytes.Replace(v, []byte(`WO-1`), []byte(`WO-2`), 1)
			return tx.Bucket(bAudit).Put(u64key(woSeq), v)
		}, "hash does not match content"},
		{"deleted record", func(tx *bolt.Tx) error {
			return tx.Bucket(bUnitEvents).Delete([]byte("SN1"))
		},
			`bucket unit_events key "SN1": stored record missing`},
		{"added record", func(tx *bolt.Tx) error { return tx.Bucket(bWorkOrders).Put([]byte("WO-X"), []byte(`{}`)) },
			`bucket work_orders key "WO-X": stored record not covered by the chain`},
		{"re-chained after an edit", func(tx *bolt.Tx) error {
			return rechain(tx, woSeq, func(a *AuditEvent) { a.Principal = "mes:CN=someone-else" })
		}, "checkpoint signs seq"},
		{"truncated", truncate(3), "(truncated)"},
		{"truncated to before the last write", truncate(6), "truncated"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := copyStore(t, base)
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(tc.tamper); err != nil {
				t.Fatal(err)
			}
			db.Close()
			_, err = verify(path)
			var cb *ChainBrokenError
			if !errors.As(err, &cb) || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), CodeAuditChainBroken) || cb.Seq == 0 {
				t.Fatalf("Verify after tampering: %v; want a %s naming %q", err, CodeAuditChainBroken, tc.want)
			}
			t.Log(err)
		})
	}
}

// TestSchema1IsBaselined opens a schema 1 file (records outside the chain, as
// stations wrote them before) and checks that Open covers every record with
// audit.baseline records, so that it verifies and later edits are caught.
func TestSchema1IsBaselined(t *testing.T) {
	path := schema3File(t)
	// Make it a schema 1 file: no digests in the chain, records in JSON as
	// schema 1 wrote them, schema_version 1.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bMeta).Put(kSchemaVersion, u64key(1)); err != nil {
			return err
		}
		c := tx.Bucket(bAudit).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			a, err := decodeRecord(v)
			if err != nil {
				return err
			}
			a.Writes = nil
			data, _ := json.Marshal(&a)
			if err := tx.Bucket(bAudit).Put(k, data); err != nil {
				return err
			}
		}
		return rechain(tx, 1, nil)
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s := openAt(t, path)
	if _, err := s.VerifyChain(context.Background()); err != nil {
		t.Fatalf("baselined store: %v", err)
	}
	if a := lastAudit(t, s); a.Action != AuditActionWrite || a.Details["schema_version"] != fmt.Sprint(SchemaVersion) {
		t.Errorf("last record %+v, want the schema change", a)
	}
	s.Close()
	markTampered(path)
	db, err = bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(flipByte("unit_states", []byte("SN1"))); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s = openAt(t, path)
	if _, err := s.VerifyChain(context.Background()); err == nil || !strings.Contains(err.Error(), `bucket unit_states key "SN1"`) {
		t.Fatalf("edit after the baseline: %v, want it named", err)
	}
}

// TestCheckpointSigners plugs in Ed25519 and RSA signers and checks that their checkpoints
// verify, and that a chain whose last checkpoint another key signed does not.
func TestCheckpointSigners(t *testing.T) {
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for _, signer := range []crypto.Signer{edKey, rsaKey} {
		t.Run(fmt.Sprintf("%T", signer), func(t *testing.T) {
			ctx := context.Background()
			s, err := Open(filepath.Join(t.TempDir(), "station.db"), Options{StationID: testStation,
				Checkpoints: CheckpointOptions{Signer: signer, Every: 1000, Interval: time.Hour}})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			mustUnit(t, s, "SN1", StatusRunning)
			cp, err := s.Checkpoint(ctx)
			if err != nil || cp == nil {
				t.Fatalf("Checkpoint: %v, %v", cp, err)
			}
			rep, keySHA, err := s.VerifyStation(ctx, nil)
			if err != nil || rep.Checkpoints != 1 || rep.Last.Record != cp.Record {
				t.Fatalf("VerifyStation: %+v, %v", rep, err)
			}
			other := bytes.Clone(keySHA)
			other[0] ^= 1
			if _, err := s.Verify(ctx, VerifyOptions{KeySHA256: other}); !errors.Is(err, ErrChainBroken) || !strings.Contains(err.Error(), "not signed by the station's audit key") {
				t.Errorf("Verify with another key: %v", err)
			}
		})
	}
}

// TestVerifyRecords verifies exported audit records away from the store, and
// catches an edit, a re-chained edit, a dropped record and another signer.
func TestVerifyRecords(t *testing.T) {
	base, key := tamperBase(t)
	keySHA, err := KeySHA256(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(base, Options{})
	if err != nil {
		t.Fatal(err)
	}
	recs, err := s.AuditAfter(context.Background(), 0, 1000)
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	// What an export carries is JSON: verify what comes back from it.
	exported := func() []AuditEvent {
		data, err := json.Marshal(recs)
		if err != nil {
			t.Fatal(err)
		}
		var out []AuditEvent
		if err := json.Unmarshal(data, &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	head, cps, err := VerifyRecords(exported(), ChainHead{}, keySHA)
	if err != nil || head.Seq != recs[len(recs)-1].Seq || len(cps) < 2 {
		t.Fatalf("VerifyRecords: head %d, %d checkpoints, %v", head.Seq, len(cps), err)
	}
	// A range from the middle, given the head before it.
	mid := len(recs) / 2
	if _, _, err := VerifyRecords(exported()[mid:], ChainHead{Seq: recs[mid-1].Seq, Hash: recs[mid-1].Hash}, keySHA); err != nil {
		t.Errorf("a range from seq %d: %v", recs[mid].Seq, err)
	}
	rechained := func(rs []AuditEvent, from int) []AuditEvent {
		for i := from; i < len(rs); i++ {
			if i > 0 {
				rs[i].PrevHash = rs[i-1].Hash
			}
			rs[i].Hash = rs[i].computeHash()
		}
		return rs
	}
	other := bytes.Clone(keySHA)
	other[0] ^= 1
	for _, tc := range []struct {
		name    string
		records []AuditEvent
		key     []byte
		want    string
	}{
		{"edited", func() []AuditEvent { rs := exported(); rs[2].Principal = "admin:CN=mallory"; return rs }(), keySHA, "at seq 3: hash does not match content"},
		{"edited digest", func() []AuditEvent { rs := exported(); rs[1].Writes[0].SHA256[0] ^= 1; return rs }(), keySHA, "at seq 2: hash does not match content"},
		{"re-chained", func() []AuditEvent { rs := exported(); rs[2].Principal = "admin:CN=mallory"; return rechained(rs, 2) }(), keySHA, "checkpoint signs seq"},
		{"dropped", func() []AuditEvent { rs := exported(); return append(rs[:3:3], rs[4:]...) }(), keySHA, "at seq 4: record carries seq 5"},
		{"another signer", exported(), other, "checkpoint not signed by the station's audit key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := VerifyRecords(tc.records, ChainHead{}, tc.key)
			if !errors.Is(err, ErrChainBroken) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("VerifyRecords: %v, want %q", err, tc.want)
			}
		})
	}
}
