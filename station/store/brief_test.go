package store

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// TestAuditBriefs checks AuditBriefsAfter against AuditAfter, the records it abridges: the same
// records for every start and limit, with the same seq, time, principal, serial and action;
// and decodeBrief against decodeRecord on every stored form (JSON, v1, v2) and on damaged
// records (an error exactly when decodeRecord fails).
func TestAuditBriefs(t *testing.T) {
	ctx := WithPrincipal(context.Background(), "operator-1")
	s, _ := openTemp(t)
	writeSome(t, s, "SN-1", 5)
	writeSome(t, s, "SN-2", 3)
	head, err := s.ChainHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	brief := func(a *AuditEvent) AuditBrief {
		return AuditBrief{Seq: a.Seq, Time: a.Time, Principal: a.Principal, Serial: a.Serial, Action: a.Action}
	}
	for after := uint64(0); after <= head.Seq+1; after++ {
		for _, limit := range []int{0, 1, 3, 1000} {
			full, err := s.AuditAfter(ctx, after, limit)
			if err != nil {
				t.Fatal(err)
			}
			briefs, err := s.AuditBriefsAfter(ctx, after, limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(briefs) != len(full) {
				t.Fatalf("after %d, limit %d: %d briefs, %d records", after, limit, len(briefs), len(full))
			}
			for i := range full {
				if want := brief(&full[i]); briefs[i] != want || !briefs[i].Time.Equal(want.Time) || briefs[i].Time.Location() != want.Time.Location() {
					t.Fatalf("after %d: brief %+v, record %+v", after, briefs[i], want)
				}
			}
		}
	}
	recs, err := s.AuditAfter(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	sawSerial := false
	for i := range recs {
		a := &recs[i]
		sawSerial = sawSerial || a.Serial != ""
		js, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		v1 := *a
		v1.Encoding = 0
		for _, stored := range [][]byte{js, a.seal(), v1.seal()} {
			for cut := 0; cut <= len(stored); cut++ {
				v := stored[:cut]
				want, errRec := decodeRecord(v)
				got, errBrief := decodeBrief(v)
				if (errRec == nil) != (errBrief == nil) {
					t.Fatalf("record %d cut at %d of %d: decodeBrief error %v, decodeRecord %v", a.Seq, cut, len(stored), errBrief, errRec)
				}
				if errRec == nil && got != brief(&want) {
					t.Fatalf("record %d cut at %d: brief %+v, record %+v", a.Seq, cut, got, brief(&want))
				}
			}
		}
	}
	if !sawSerial {
		t.Fatal("no record names a unit: the test proves little")
	}
}

// TestAuditEach checks AuditEach, which reuses one record, against AuditAfter: for every start
// and limit the same records, equal while fn holds them (the reused details, lists and keys
// of the record before leave nothing behind), a write's key extended by fn changes no other
// key, and fn's error stops it and is returned as it is (the store is not taken for corrupt).
func TestAuditEach(t *testing.T) {
	ctx := WithPrincipal(context.Background(), "operator-1")
	s, _ := openTemp(t)
	writeSome(t, s, "SN-1", 5)
	writeSome(t, s, "SN-2", 3)
	head, err := s.ChainHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sawWrites, sawDetails := false, false
	for after := uint64(0); after <= head.Seq+1; after++ {
		for _, limit := range []int{0, 1, 3, 1000} {
			want, err := s.AuditAfter(ctx, after, limit)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			err = s.AuditEach(ctx, after, limit, func(a *AuditEvent) error {
				if n >= len(want) {
					t.Fatalf("after %d, limit %d: more than %d records", after, limit, len(want))
				}
				if !reflect.DeepEqual(*a, want[n]) {
					t.Fatalf("after %d, limit %d: record %+v, AuditAfter's %+v", after, limit, *a, want[n])
				}
				sawWrites, sawDetails = sawWrites || len(a.Writes) > 1, sawDetails || len(a.Details) > 0
				for i := range a.Writes {
					_ = append(a.Writes[i].Key, 0xff, 0xff)
				}
				if !reflect.DeepEqual(*a, want[n]) {
					t.Fatalf("after %d: extending a write's key changed the record: %+v", after, *a)
				}
				n++
				return nil
			})
			if err != nil || n != len(want) {
				t.Fatalf("after %d, limit %d: %d records (%v), want %d", after, limit, n, err, len(want))
			}
		}
	}
	if !sawWrites || !sawDetails {
		t.Fatal("no record with details and writes: the test proves little")
	}
	// eventInto against event on both canonical encodings, one record reused throughout.
	recs, err := s.AuditAfter(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var reused AuditEvent
	var arena []byte
	for i := range recs {
		for _, enc := range []int{0, AuditEncodingV2} {
			a := recs[i]
			a.Encoding = enc
			r, err := parseRecord(a.seal())
			if err != nil {
				t.Fatal(err)
			}
			r.eventInto(&reused, &arena)
			if want := r.event(); !reflect.DeepEqual(reused, want) {
				t.Fatalf("record %d, encoding %d: eventInto %+v, event %+v", a.Seq, enc, reused, want)
			}
		}
	}
	stop := errors.New("stop")
	n := 0
	if err := s.AuditEach(ctx, 0, 1000, func(*AuditEvent) error { n++; return stop }); err != stop || n != 1 {
		t.Fatalf("fn's error: %v after %d records, want it after 1", err, n)
	}
	// fn's error is fn's, even of a kind a record that does not decode makes: the store is
	// not taken for corrupt.
	syntax := &json.SyntaxError{}
	if err := s.AuditEach(ctx, 0, 1000, func(*AuditEvent) error { return syntax }); err != syntax {
		t.Fatalf("fn's error: %v, want it as it is", err)
	}
	if _, err := s.AuditAfter(ctx, 0, 1); err != nil {
		t.Fatalf("after fn's error: %v", err)
	}
}
