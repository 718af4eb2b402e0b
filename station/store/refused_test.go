package store

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// TestRefusalsAreABoundedRing records more refused sessions than the ring keeps, with oversized
// claims: the store keeps the most recent ones, each cut to its bounds, and writes no unit,
// event or audit record for them.
func TestRefusalsAreABoundedRing(t *testing.T) {
	ctx := context.Background()
	s, err := Open(filepath.Join(t.TempDir(), "station.db"), Options{StationID: testStation, Clock: newStepClock(), RefusalsKept: 5})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	head, _ := s.ChainHead(ctx)
	_, outboxToken, _ := s.OutboxAfter(ctx, 0, 0)
	long := strings.Repeat("é", 5000)
	fps := []string{"a", "b", "c", "d", "e", "f"}
	for i := range 12 {
		if err := s.RecordRefusal(ctx, Refusal{Peer: long, Serial: "SN-" + string(rune('A'+i)), BootID: long, Code: "NOT_AUTHORIZED", Message: long, Fingerprints: fps}); err != nil {
			t.Fatal(err)
		}
	}
	got, total, err := s.Refusals(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if total != 12 || len(got) != 5 {
		t.Fatalf("%d refusals kept of %d, want 5 of 12", len(got), total)
	}
	for i, r := range got {
		if r.Seq != uint64(8+i) || r.Serial != "SN-"+string(rune('A'+7+i)) {
			t.Errorf("refusal %d is seq %d serial %s, want the most recent ones in order", i, r.Seq, r.Serial)
		}
		if len(r.Peer) > refusalFieldMax || len(r.BootID) > refusalFieldMax || len(r.Message) > refusalMessageMax || len(r.Fingerprints) != refusalFPsMax {
			t.Errorf("refusal %d not bounded: peer %d, boot id %d, message %d bytes, %d fingerprints", i, len(r.Peer), len(r.BootID), len(r.Message), len(r.Fingerprints))
		}
		if !strings.HasPrefix(long, r.Message) {
			t.Errorf("refusal %d message is not a valid UTF-8 prefix of the original", i)
		}
	}
	if after, _ := s.ChainHead(ctx); after.Seq != head.Seq {
		t.Errorf("refusals wrote %d audit records", after.Seq-head.Seq)
	}
	if evs, _, _ := s.OutboxAfter(ctx, outboxToken, 0); len(evs) != 0 {
		t.Errorf("refusals wrote %d outbox events", len(evs))
	}
	if _, err := s.Unit(ctx, "SN-L"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a refusal created its unit: %v", err)
	}
	if err := s.RecordRefusal(ctx, Refusal{Serial: "SN-X"}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("refusal without a code: %v", err)
	}
}

// TestReleaseEK releases a unit's EK binding: the EK can then be bound to another serial, and
// the release is in the unit's events and the audit chain with its reason and principal.
func TestReleaseEK(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	mustUnit(t, s, "SN-A", StatusDone)
	mustUnit(t, s, "SN-B", StatusPending)
	fp := EKFingerprint([]byte("ek-a"))
	if err := s.BindEK(ctx, fp, "SN-A"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReleaseEK(ctx, "SN-A", ""); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("release without a reason: %v", err)
	}
	if _, err := s.ReleaseEK(ctx, "SN-B", "rma"); !errors.Is(err, ErrNotFound) {
		t.Errorf("release of an unbound unit: %v", err)
	}
	head, _ := s.ChainHead(ctx)
	u, err := s.ReleaseEK(WithPrincipal(ctx, "admin:CN=alice"), "SN-A", "RMA 42: TPM replaced")
	if err != nil {
		t.Fatal(err)
	}
	if u.EKFingerprint != "" || u.Status != StatusDone {
		t.Errorf("released unit %+v", u)
	}
	if _, err := s.UnitByEK(ctx, fp); !errors.Is(err, ErrNotFound) {
		t.Errorf("EK still indexed after its release: %v", err)
	}
	recs, err := s.AuditAfter(ctx, head.Seq, 0)
	if err != nil || len(recs) != 1 {
		t.Fatalf("audit after release: %d records, %v", len(recs), err)
	}
	a := recs[0]
	if a.Action != EventEKReleased || a.Principal != "admin:CN=alice" || a.Details["reason"] != "RMA 42: TPM replaced" || len(a.Fingerprints) != 1 || a.Fingerprints[0] != fp {
		t.Errorf("audit record %+v", a)
	}
	evs, _ := s.UnitEvents(ctx, "SN-A", 0, 0)
	if last := evs[len(evs)-1]; last.Type != EventEKReleased || last.Data["reason"] == "" {
		t.Errorf("last event %+v, want %s with its reason", last, EventEKReleased)
	}
	if err := s.BindEK(ctx, fp, "SN-B"); err != nil {
		t.Errorf("binding the released EK to another serial: %v", err)
	}
}
