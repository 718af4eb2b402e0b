package export

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/devid-station/devid/reports/traveler/travelertest"
	"github.com/devid-station/devid/station/store"
)

// referenceAudit is what Verify did with audit.jsonl before readAudit: decode the whole file
// (decodeAuditFile), check its chain (checkChain) and take the facts the unit checks read of
// each unit the manifest names.
func referenceAudit(data []byte, body *Body, keySHA []byte) (probs []string, ok bool, units map[string]*unitFacts) {
	fail := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }
	recs := decodeAuditFile(data, fail)
	if recs == nil {
		return probs, false, nil
	}
	if !checkChain(recs, body, keySHA, fail) {
		return probs, false, nil
	}
	units = map[string]*unitFacts{}
	for _, u := range body.Units {
		units[u.Serial] = &unitFacts{}
	}
	for i := range recs {
		if f := units[recs[i].Serial]; f != nil {
			f.add(&recs[i])
		}
	}
	return probs, true, units
}

// TestReadAudit holds readAudit, which decodes and checks audit.jsonl a batch at a time, to
// decoding the whole file then checking it: the same problems in the same words, the same
// verdict and the same facts of each unit, for an intact
// file and for every line deleted, doubled, swapped with the next or damaged, the file cut
// after every line (every line of a range starting at a checkpoint, every fifth of one
// starting at record 1), and manifests whose range disagrees, with batches of 1, 7 and more
// lines than the file.
func TestReadAudit(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(t.TempDir(), "station.db"), store.Options{StationID: "st-read",
		Checkpoints: store.CheckpointOptions{Signer: key, Every: 11, Interval: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := store.WithPrincipal(context.Background(), "mes:bob")
	if _, err := st.CreateWorkOrder(ctx, store.WorkOrder{ID: "WO-1", Profile: "default", Serials: []string{"SN-1", "SN-2", "SN-3"}}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"SN-1", "SN-2"} {
		travelertest.WriteUnit(t, st, travelertest.Unit{Serial: s, WorkOrder: "WO-1", Profile: "default"})
	}
	if _, err := st.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	travelertest.WriteUnit(t, st, travelertest.Unit{Serial: "SN-3", WorkOrder: "WO-1", Profile: "default"})
	// SN-3 only: the range starts at a checkpoint after record 1.
	b, err := Build(context.Background(), st, Selection{Serials: []string{"SN-3"}}, Options{Version: "v"})
	if err != nil {
		t.Fatal(err)
	}
	whole, err := Build(context.Background(), st, Selection{WorkOrder: "WO-1"}, Options{Version: "v"})
	if err != nil {
		t.Fatal(err)
	}
	keySHA, err := store.KeySHA256(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	type bundleCase struct {
		name string
		body *Body
		data []byte
	}
	var cases []bundleCase
	for _, bb := range []*Bundle{b, whole} {
		var data []byte
		for _, f := range bb.Files {
			if f.Path == AuditFile {
				data = f.Data
			}
		}
		if bb.Body.Audit.First == 1 && bb == b {
			t.Fatal("the serial's range starts at record 1: the test proves less")
		}
		name := fmt.Sprintf("range %d-%d", bb.Body.Audit.First, bb.Body.Audit.Last)
		cases = append(cases, bundleCase{name, bb.Body, data}, bundleCase{name + ", missing", bb.Body, nil},
			bundleCase{name + ", empty", bb.Body, []byte{}}, bundleCase{name + ", no newline at the end", bb.Body, bytes.TrimSuffix(data, []byte("\n"))},
			bundleCase{name + ", an empty line", bb.Body, append(bytes.Clone(data), '\n')})
		lines := bytes.SplitAfter(data, []byte("\n"))
		lines = lines[:len(lines)-1]
		join := func(ls ...[]byte) []byte { return bytes.Join(ls, nil) }
		for i := range lines {
			if bb == whole && i%5 != 0 {
				continue // every fifth line of the whole chain: the serial's range has every line
			}
			rest := func(from int) [][]byte { return lines[from:] }
			before := func() []byte { return join(lines[:i]...) }
			cases = append(cases,
				bundleCase{fmt.Sprintf("%s, line %d deleted", name, i+1), bb.Body, append(before(), join(rest(i+1)...)...)},
				bundleCase{fmt.Sprintf("%s, line %d twice", name, i+1), bb.Body, append(join(lines[:i+1]...), join(rest(i)...)...)},
				bundleCase{fmt.Sprintf("%s, cut after line %d", name, i), bb.Body, before()})
			if i+1 < len(lines) {
				cases = append(cases, bundleCase{fmt.Sprintf("%s, lines %d and %d swapped", name, i+1, i+2), bb.Body,
					append(append(append(before(), lines[i+1]...), lines[i]...), join(rest(i+2)...)...)})
			}
			for _, at := range []int{len(lines[i]) / 2, len(lines[i]) - 3} {
				d := bytes.Clone(data)
				off := len(before()) + at
				d[off] ^= 0x01
				cases = append(cases, bundleCase{fmt.Sprintf("%s, line %d byte %d flipped", name, i+1, at), bb.Body, d})
			}
		}
		for _, edit := range []func(r *Range){
			func(r *Range) { r.First++ }, func(r *Range) { r.Last++ }, func(r *Range) { r.Prev.Seq++ },
			func(r *Range) { r.Prev.Hash = bytes.Repeat([]byte{1}, 32) }, func(r *Range) { r.Head.Hash = bytes.Repeat([]byte{1}, 32) },
			func(r *Range) { r.Checkpoints = r.Checkpoints[1:] }, func(r *Range) { r.Checkpoints[0].Seq++ },
			func(r *Range) { r.First, r.Prev = 1, store.ChainHead{} },
		} {
			body := *bb.Body
			body.Audit.Checkpoints = append([]CheckpointEntry(nil), body.Audit.Checkpoints...)
			edit(&body.Audit)
			cases = append(cases, bundleCase{name + ", manifest range edited", &body, data})
		}
	}
	defer func(old int) { auditReadBatch = old }(auditReadBatch)
	passed := 0
	for _, c := range cases {
		wantProbs, wantOK, wantUnits := referenceAudit(c.data, c.body, keySHA)
		if wantOK {
			passed++
			for s, f := range wantUnits {
				if !f.hasStatus || len(f.certs) < 2 || len(f.eks) != 1 || f.certs[0].role == "" || f.certs[0].time.IsZero() {
					t.Fatalf("%s: unit %s: facts %+v: the test proves little", c.name, s, f)
				}
			}
		}
		for _, n := range []int{1, 7, 1 << 20} {
			auditReadBatch = n
			got := readAudit(c.data, c.body, keySHA)
			var probs []string
			if got.decodeErr != nil {
				probs = []string{got.decodeErr.Error()}
			} else if !got.chainOK {
				probs = got.chainProbs
			}
			ok := got.decodeErr == nil && got.chainOK
			if ok != wantOK || !reflect.DeepEqual(probs, wantProbs) {
				t.Fatalf("%s, batches of %d: ok %v %q, want %v %q", c.name, n, ok, probs, wantOK, wantProbs)
			}
			if !ok {
				continue
			}
			if len(got.units) != len(c.body.Units) {
				t.Fatalf("%s, batches of %d: %d units, want %d", c.name, n, len(got.units), len(c.body.Units))
			}
			for s, want := range wantUnits {
				if got := got.unit(s); !reflect.DeepEqual(got, want) {
					t.Fatalf("%s, batches of %d: unit %s: %+v, want %+v", c.name, n, s, got, want)
				}
			}
		}
	}
	if passed < 4 {
		t.Fatalf("only %d cases verify: the test proves little", passed)
	}
}
