package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// writeSome makes n audited writes on unit serial.
func writeSome(t *testing.T, s *Store, serial string, n int) {
	t.Helper()
	ctx := WithPrincipal(context.Background(), "operator-1")
	mustUnit(t, s, serial, StatusRunning)
	for i := 0; i < n; i++ {
		ref, err := s.BeginStep(ctx, serial, "step", []byte{byte(i)})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.EndStep(ctx, ref, []byte{byte(i)}, ""); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAuditChainAcrossReopen(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	writeSome(t, s, "SN-1", 5) // 1 + 10 records
	head1, err := s.VerifyChain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if head1.Seq != 1+1+10 {
		t.Fatalf("head seq = %d, want 12", head1.Seq)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, path)
	writeSome(t, s, "SN-2", 3)
	head2, err := s.VerifyChain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if head2.Seq != head1.Seq+1+6 {
		t.Fatalf("head seq after reopen = %d, want %d", head2.Seq, head1.Seq+7)
	}
	if got, _ := s.ChainHead(ctx); got.Seq != head2.Seq || !bytes.Equal(got.Hash, head2.Hash) {
		t.Fatalf("ChainHead = %+v, VerifyChain = %+v", got, head2)
	}
	recs, err := s.AuditAfter(ctx, 0, 1000)
	if err != nil || uint64(len(recs)) != head2.Seq {
		t.Fatalf("AuditAfter: %d records, %v", len(recs), err)
	}
	prev := make([]byte, 32)
	for i, a := range recs {
		if a.Seq != uint64(i+1) || !bytes.Equal(a.PrevHash, prev) || a.StationID != testStation {
			t.Fatalf("record %d: %+v", i, a)
		}
		prev = a.Hash
	}
	if recs[0].Action != auditActionStoreCreate || recs[0].Principal != "station" {
		t.Fatalf("genesis record = %+v", recs[0])
	}
	if last := recs[len(recs)-1]; last.Principal != "operator-1" || last.Serial != "SN-2" || last.Action != EventStepEnded {
		t.Fatalf("last record = %+v", last)
	}
}

func TestVerifyChainDetectsTampering(t *testing.T) {
	ctx := context.Background()
	// mutate edits record seq of the audit bucket.
	mutate := func(seq uint64, fn func(a *AuditEvent)) func(tx *bolt.Tx) error {
		return func(tx *bolt.Tx) error {
			b := tx.Bucket(bAudit)
			orig := b.Get(u64key(seq))
			a, err := decodeRecord(orig)
			if err != nil {
				return err
			}
			fn(&a)
			return b.Put(u64key(seq), reencode(orig, &a))
		}
	}
	tests := []struct {
		name       string
		edit       func(tx *bolt.Tx) error
		wantOpen   error  // error expected from Open
		wantSeq    uint64 // first broken seq expected from VerifyChain
		wantReason string
	}{
		{
			name:       "result flipped",
			edit:       mutate(5, func(a *AuditEvent) { a.Result = ResultError }),
			wantSeq:    5,
			wantReason: "hash does not match",
		},
		{
			name:       "details edited and hash recomputed",
			edit:       mutate(4, func(a *AuditEvent) { a.Details["step"] = "other"; a.Hash = a.computeHash() }),
			wantSeq:    5,
			wantReason: "previous hash",
		},
		{
			name: "record removed",
			edit: func(tx *bolt.Tx) error {
				return tx.Bucket(bAudit).Delete(u64key(7))
			},
			wantSeq:    7,
			wantReason: "record missing",
		},
		{
			name:       "principal rewritten in genesis",
			edit:       mutate(1, func(a *AuditEvent) { a.Principal = "intruder" }),
			wantSeq:    1,
			wantReason: "hash does not match",
		},
		{
			name: "last record dropped",
			edit: func(tx *bolt.Tx) error {
				k, _ := tx.Bucket(bAudit).Cursor().Last()
				return tx.Bucket(bAudit).Delete(k)
			},
			wantOpen: ErrChainBroken,
		},
		{
			name:     "last record rewritten",
			edit:     mutate(12, func(a *AuditEvent) { a.Serial = "SN-X"; a.Hash = a.computeHash() }),
			wantOpen: ErrChainBroken,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, path := openTemp(t)
			writeSome(t, s, "SN-T", 5) // records 1..12
			if _, err := s.VerifyChain(ctx); err != nil {
				t.Fatalf("VerifyChain before tampering: %v", err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			editBolt(t, path, tt.edit)
			s, err := Open(path, Options{StationID: testStation})
			if tt.wantOpen != nil {
				if !errors.Is(err, tt.wantOpen) {
					t.Fatalf("Open after tampering: %v, want %v", err, tt.wantOpen)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			_, err = s.VerifyChain(ctx)
			var cb *ChainBrokenError
			if !errors.As(err, &cb) || !errors.Is(err, ErrChainBroken) {
				t.Fatalf("VerifyChain = %v, want ChainBrokenError", err)
			}
			if cb.Seq != tt.wantSeq || !strings.Contains(cb.Reason, tt.wantReason) {
				t.Fatalf("broken at %d (%s), want %d (%s)", cb.Seq, cb.Reason, tt.wantSeq, tt.wantReason)
			}
		})
	}
}

var errBoom = errors.New("boom")

// TestConcurrentUnits runs 256 units at once, each writing 5 step records
// and events, with refusals and failing calls mixed into the same batches,
// then checks that the chain verifies and every count is exact. (With 20
// steps it spent minutes in fsync under -race on a loaded machine, close to
// go test's timeout, for no more coverage.)
func TestConcurrentUnits(t *testing.T) {
	const (
		units = 256
		steps = 5
	)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "station.db")
	s, err := Open(path, Options{StationID: testStation, MaxBatchSize: units})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	sharedEK := EKFingerprint([]byte("shared-ek"))

	var wg sync.WaitGroup
	errs := make(chan error, units)
	for i := 0; i < units; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			serial := fmt.Sprintf("SN%05d", i)
			fail := func(format string, a ...any) { errs <- fmt.Errorf(serial+": "+format, a...) }
			if _, err := s.UpdateUnit(ctx, serial, func(u *UnitState) error { u.Profile = "default"; return nil }); err != nil {
				fail("UpdateUnit: %v", err)
				return
			}
			for j := 0; j < steps; j++ {
				step := fmt.Sprintf("step-%02d", j)
				ref, err := s.BeginStep(ctx, serial, step, []byte(step))
				if err != nil {
					fail("BeginStep: %v", err)
					return
				}
				if _, err := s.AppendEvent(ctx, serial, "progress", step, nil); err != nil {
					fail("AppendEvent: %v", err)
					return
				}
				// A call refused before writing leaves its batch alone.
				if _, err := s.BeginStep(ctx, serial+"-missing", step, nil); !errors.Is(err, ErrNotFound) {
					fail("BeginStep on missing unit: %v", err)
					return
				}
				// A call failing after it wrote makes bbolt roll the batch
				// back and re-run the others: nothing may be written twice,
				// and the failed call leaves nothing.
				if _, err := s.UpdateUnit(ctx, serial+"-missing", func(*UnitState) error { return errBoom }); !errors.Is(err, errBoom) {
					fail("failing UpdateUnit: %v", err)
					return
				}
				if err := s.EndStep(ctx, ref, []byte("ok"), ""); err != nil {
					fail("EndStep: %v", err)
					return
				}
			}
			// Every unit tries the same EK: exactly one wins, the others
			// are refused and audited.
			if err := s.BindEK(ctx, sharedEK, serial); err != nil && !errors.Is(err, ErrEKBoundElsewhere) {
				fail("BindEK: %v", err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}

	head, err := s.VerifyChain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// genesis + per unit: update, steps × (begin, event, end), one BindEK
	// (bound or refused, audited either way).
	if want := uint64(1 + units*(1+steps*3+1)); head.Seq != want {
		t.Fatalf("audit records = %d, want %d", head.Seq, want)
	}
	// per unit: created, updated, steps × (begun, event, ended); one ek.bound.
	perUnit := 2 + steps*3
	evs, _, err := s.OutboxAfter(ctx, 0, units*perUnit+100)
	if err != nil {
		t.Fatal(err)
	}
	if want := units*perUnit + 1; len(evs) != want {
		t.Fatalf("outbox events = %d, want %d", len(evs), want)
	}
	for i, ev := range evs {
		if ev.Seq != uint64(i+1) {
			t.Fatalf("outbox event %d has seq %d", i, ev.Seq)
		}
	}
	winner, err := s.UnitByEK(ctx, sharedEK)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < units; i++ {
		serial := fmt.Sprintf("SN%05d", i)
		recs, err := s.StepRecords(ctx, serial)
		if err != nil || len(recs) != steps {
			t.Fatalf("%s: %d step records, %v", serial, len(recs), err)
		}
		for _, r := range recs {
			if r.Attempt != 1 || !r.Ended {
				t.Fatalf("%s: record %+v", serial, r)
			}
		}
		wantEvents := perUnit
		if serial == winner {
			wantEvents++
		}
		if evs, err := s.UnitEvents(ctx, serial, 0, 0); err != nil || len(evs) != wantEvents {
			t.Fatalf("%s: %d events, want %d (%v)", serial, len(evs), wantEvents, err)
		}
		u, err := s.Unit(ctx, serial)
		if err != nil || u.Attempts != steps || len(u.Steps) != steps {
			t.Fatalf("%s: unit %+v, %v", serial, u, err)
		}
		if _, err := s.Unit(ctx, serial+"-missing"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s-missing exists after failed calls: %v", serial, err)
		}
	}
}

// TestNothingIsDeleted checks that the Store offers no deleting call and
// that the package never deletes a key or bucket, but for the one removal of
// a unit index entry (wbucket.unindex in tracked.go, which refuses every
// other bucket).
func TestNothingIsDeleted(t *testing.T) {
	typ := reflect.TypeOf(&Store{})
	for i := 0; i < typ.NumMethod(); i++ {
		name := strings.ToLower(typ.Method(i).Name)
		for _, bad := range []string{"delete", "remove", "purge", "drop", "prune", "ack", "compact", "truncate"} {
			if strings.Contains(name, bad) {
				t.Errorf("Store has method %s", typ.Method(i).Name)
			}
		}
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked, unindexes := 0, 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		file, err := parser.ParseFile(fset, f, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		ast.Inspect(file, func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok && strings.HasPrefix(sel.Sel.Name, "Delete") {
				if f == "tracked.go" && unindexes == 0 {
					unindexes++
					return true
				}
				t.Errorf("%s: call to %s", fset.Position(sel.Pos()), sel.Sel.Name)
			}
			return true
		})
	}
	if checked == 0 {
		t.Fatal("no source files checked")
	}
}
