package store

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestPossiblyIssued(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	mustUnit(t, s, "SN1", StatusRunning)
	hash := strings.Repeat("ab", 32)
	p := PossiblyIssued{Serial: "SN1", Role: RoleLDevID, Step: "ldevid_enroll", Attempt: 2, CA: "customer",
		CSRSHA256: hash, PublicKeySHA256: strings.Repeat("cd", 32)}
	got, err := s.OpenPossiblyIssued(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "SN1/ldevid_enroll/2" || got.OpenedAt.IsZero() || got.Closed {
		t.Fatalf("opened %+v", got)
	}
	if a := lastAudit(t, s); a.Action != AuditActionPossiblyIssuedOpened || a.Serial != "SN1" {
		t.Errorf("audit %+v", a)
	}
	again, err := s.OpenPossiblyIssued(ctx, p)
	if err != nil || again.OpenedAt != got.OpenedAt {
		t.Fatalf("opening again: %+v, %v", again, err)
	}
	for _, tc := range []struct {
		name string
		p    PossiblyIssued
		want error
	}{
		{"unknown unit", PossiblyIssued{Serial: "SN2", Role: RoleLDevID, CA: "x", CSRSHA256: hash, PublicKeySHA256: hash}, ErrNotFound},
		{"no key", PossiblyIssued{Serial: "SN1", Role: RoleLDevID, CA: "x", CSRSHA256: hash}, ErrInvalidArgument},
		{"no CA", PossiblyIssued{Serial: "SN1", Role: RoleLDevID, CSRSHA256: hash, PublicKeySHA256: hash}, ErrInvalidArgument},
		{"bad role", PossiblyIssued{Serial: "SN1", Role: "EK", CA: "x", CSRSHA256: hash, PublicKeySHA256: hash}, ErrInvalidArgument},
	} {
		_, err := s.OpenPossiblyIssued(ctx, tc.p)
		wantErr(t, tc.name, err, tc.want)
	}
	open, err := s.PossiblyIssuedEntries(ctx, "", true)
	if err != nil || len(open) != 1 || open[0].ID != got.ID {
		t.Fatalf("open entries %+v, %v", open, err)
	}
	if err := s.ClosePossiblyIssued(ctx, got.ID, "reconciled", []string{hash}); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "closing again", s.ClosePossiblyIssued(ctx, got.ID, "reconciled", nil), ErrInvalidArgument)
	wantErr(t, "closing an unknown entry", s.ClosePossiblyIssued(ctx, "SN1/x/1", "reconciled", nil), ErrNotFound)
	if open, _ := s.PossiblyIssuedEntries(ctx, "SN1", true); len(open) != 0 {
		t.Errorf("open entries after closing: %+v", open)
	}
	all, err := s.PossiblyIssuedEntries(ctx, "SN1", false)
	if err != nil || len(all) != 1 || !all[0].Closed || all[0].Certificates[0] != hash {
		t.Fatalf("entries %+v, %v", all, err)
	}
	if _, err := s.VerifyChain(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestPossiblyIssuedEntriesOfUnit: a unit's entries are those of the whole list with its
// serial, whichever other units' serials begin with it or sort around it.
func TestPossiblyIssuedEntriesOfUnit(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	hash := strings.Repeat("ab", 32)
	serials := []string{"SN1", "SN10", "SN1.a", "SN0", "SN2", "SN1-"}
	for i, serial := range serials {
		mustUnit(t, s, serial, StatusRunning)
		for attempt := 1; attempt <= 1+i%3; attempt++ {
			p := PossiblyIssued{Serial: serial, Role: RoleLDevID, Step: fmt.Sprint("step", attempt%2), Attempt: uint64(attempt),
				CA: "ca", CSRSHA256: hash, PublicKeySHA256: hash}
			if _, err := s.OpenPossiblyIssued(ctx, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.ClosePossiblyIssued(ctx, "SN10/step1/1", "reconciled", nil); err != nil {
		t.Fatal(err)
	}
	for _, open := range []bool{false, true} {
		all, err := s.PossiblyIssuedEntries(ctx, "", open)
		if err != nil {
			t.Fatal(err)
		}
		for _, serial := range append(serials, "SN", "SN3", "S") {
			var want []PossiblyIssued
			for _, p := range all {
				if p.Serial == serial {
					want = append(want, p)
				}
			}
			got, err := s.PossiblyIssuedEntries(ctx, serial, open)
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Errorf("entries of %s (open %v) = %+v, %v; want %+v", serial, open, got, err, want)
			}
		}
	}
}
