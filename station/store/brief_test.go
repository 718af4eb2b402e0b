package store

import (
	"context"
	"encoding/json"
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
