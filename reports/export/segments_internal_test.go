package export

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/devid-station/devid/reports/traveler/travelertest"
	"github.com/devid-station/devid/station/store"
)

// TestSegments checks that reading the chain in segments on several cores gives the bundle
// one segment gives: the same audit.jsonl and range, units, principals and summary, for
// segments of 1, 7 and 64 records (units whose records span segments), and audit.jsonl's
// chunks as small as a line or smaller (a chunk that grows past its size); and that
// audit.jsonl is its range's records (AuditAfter) through encoding/json.
func TestSegments(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(t.TempDir(), "station.db"), store.Options{StationID: "st-seg",
		Checkpoints: store.CheckpointOptions{Signer: key, Every: 11, Interval: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := store.WithPrincipal(context.Background(), "mes:bob")
	if _, err := st.CreateWorkOrder(ctx, store.WorkOrder{ID: "WO-1", Profile: "default", Serials: []string{"SN-1", "SN-2", "SN-3"}}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"SN-1", "SN-2", "SN-3"} {
		travelertest.WriteUnit(t, st, travelertest.Unit{Serial: s, WorkOrder: "WO-1", Profile: "default"})
	}
	if _, err := st.AuthorizeRework(ctx, "SN-2", "mes:bob", "retest"); err != nil {
		t.Fatal(err)
	}
	export := func(seg uint64, chunk, slack int) (*Bundle, map[string][]byte) {
		t.Helper()
		defer func(old uint64, chunk, slack int) { auditSegment, auditChunk, auditChunkSlack = old, chunk, slack }(auditSegment, auditChunk, auditChunkSlack)
		auditSegment, auditChunk, auditChunkSlack = seg, chunk, slack
		b, err := Build(context.Background(), st, Selection{WorkOrder: "WO-1"}, Options{Version: "v"})
		if err != nil {
			t.Fatalf("segments of %d: %v", seg, err)
		}
		files := map[string][]byte{}
		for _, f := range b.Files {
			files[f.Path] = f.Data
		}
		return b, files
	}
	// One segment in one buffer that grows (slack 0).
	want, wantFiles := export(1<<20, 1<<16, 0)
	// The obvious audit.jsonl: the range's records as AuditAfter returns them, through
	// encoding/json (what audit.jsonl holds, byte for byte).
	r := want.Body.Audit
	recs, err := st.AuditAfter(ctx, r.First-1, int(r.Last-r.First+1))
	if err != nil {
		t.Fatal(err)
	}
	var obvious []byte
	for i := range recs {
		line, err := json.Marshal(&recs[i])
		if err != nil {
			t.Fatal(err)
		}
		obvious = append(append(obvious, line...), '\n')
	}
	if !bytes.Equal(wantFiles[AuditFile], obvious) {
		t.Error("audit.jsonl is not its records through encoding/json")
	}
	if last := recs[len(recs)-1]; uint64(len(recs)) != r.Last-r.First+1 || !bytes.Equal(r.Prev.Hash, recs[0].PrevHash) ||
		r.Prev.Seq != r.First-1 || r.Head.Seq != last.Seq || !bytes.Equal(r.Head.Hash, last.Hash) {
		t.Errorf("range %+v disagrees with its records", r)
	}
	for _, c := range []struct {
		seg          uint64
		chunk, slack int
	}{{1, 1 << 20, 16 << 10}, {7, 1 << 20, 16 << 10}, {64, 1 << 20, 16 << 10}, {1 << 20, 1 << 20, 16 << 10},
		{7, 64, 16}, {64, 2048, 1024}, {1 << 20, 1, 1}} {
		seg := c.seg
		got, gotFiles := export(seg, c.chunk, c.slack)
		// The chain head is already a checkpoint: each export covers the same records.
		if !bytes.Equal(gotFiles[AuditFile], wantFiles[AuditFile]) {
			t.Errorf("segments of %d, chunks of %d: audit.jsonl differs", seg, c.chunk)
		}
		if !reflect.DeepEqual(got.Body.Audit, want.Body.Audit) {
			t.Errorf("segments of %d: range %+v, want %+v", seg, got.Body.Audit, want.Body.Audit)
		}
		if !reflect.DeepEqual(got.Body.Units, want.Body.Units) || !bytes.Equal(gotFiles[SummaryFile], wantFiles[SummaryFile]) {
			t.Errorf("segments of %d: units or summary differ:\n%s\nwant\n%s", seg, gotFiles[SummaryFile], wantFiles[SummaryFile])
		}
		if !bytes.Contains(gotFiles[SummaryFile], []byte("mes:bob")) {
			t.Errorf("segments of %d: the summary lacks the principal", seg)
		}
	}
}
