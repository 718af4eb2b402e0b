package printable

import (
	"fmt"
	"slices"
	"testing"

	"github.com/devid-station/devid/reports/traveler"
)

// A record that gains fields (history, attempts, ...) still prints them: otherFacts lays out
// every JSON key the traveler does not lay out itself.
func TestOtherFactsPrintsUnknownFields(t *testing.T) {
	type attempt struct {
		Session int    `json:"session"`
		Code    string `json:"code,omitempty"`
	}
	rec := struct {
		traveler.Record
		AttemptHistory []attempt         `json:"attempt_history"`
		Station        map[string]string `json:"station_build"`
		Operator       string            `json:"operator"`
		Empty          *traveler.TPMInfo `json:"empty"`
	}{
		Record:         traveler.Record{Serial: "SN-1", Result: "done", StationID: "st"},
		AttemptHistory: []attempt{{1, "CA_TIMEOUT"}, {Session: 2}},
		Station:        map[string]string{"version": "1.2.3"},
		Operator:       "operator:jane",
	}
	blocks, err := otherFacts(rec, travelerFields)
	if err != nil {
		t.Fatal(err)
	}
	want := []block{
		note("attempt history"),
		table{head: []string{"code", "session"}, rows: [][]string{{"CA_TIMEOUT", "1"}, {"", "2"}}},
		kv{{k: "operator", v: "operator:jane"}},
		note("station build"),
		kv{{k: "version", v: "1.2.3"}},
	}
	if len(blocks) != len(want) {
		t.Fatalf("otherFacts gave %d blocks %#v, want %#v", len(blocks), blocks, want)
	}
	for i := range want {
		if !sameBlock(blocks[i], want[i]) {
			t.Errorf("block %d = %#v, want %#v", i, blocks[i], want[i])
		}
	}
}

func sameBlock(a, b block) bool {
	switch x := a.(type) {
	case note:
		return x == b
	case kv:
		y, ok := b.(kv)
		return ok && slices.Equal(x, y)
	case table:
		y, ok := b.(table)
		return ok && slices.Equal(x.head, y.head) && slices.EqualFunc(x.rows, y.rows, slices.Equal)
	}
	return false
}

// Every field the traveler record has today is laid out by the traveler itself.
func TestTravelerLaysOutEveryRecordField(t *testing.T) {
	rec := traveler.Record{Schema: traveler.Schema, Serial: "SN-1", WorkOrder: "WO", Profile: "p", StationID: "st",
		Result: "failed", ErrorCode: "X", ErrorMessage: "m", Attempts: 1, CycleTimeSeconds: 1,
		Steps: []traveler.Step{{Name: "verify_ek"}}, TPM: &traveler.TPMInfo{}, EK: &traveler.EKCertificate{},
		IDevID: &traveler.Certificate{}, LDevID: &traveler.Certificate{}, Certificates: []traveler.CertificateRef{{}},
		Verification: map[string]string{"a": "ok"}}
	blocks, err := otherFacts(rec, travelerFields)
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 0 {
		t.Errorf("fields of the record the traveler does not lay out: %#v", blocks)
	}
}

// A histogram's bins hold their values and its markers sit inside the bars, also when the
// values lie on bin edges that floating point misses (0.94 - 0.88 = 0.0599...).
func TestHistogramBins(t *testing.T) {
	cases := []struct {
		name   string
		vs     []float64
		labels []string
		counts []float64
	}{
		{"edges", []float64{0.88, 0.90, 0.91, 0.94}, []string{"0.88-0.89", "0.89-0.9", "0.9-0.91", "0.91-0.92", "0.92-0.93", "0.93-0.94", "0.94-0.95"},
			[]float64{1, 0, 1, 1, 0, 0, 1}},
		{"one value", []float64{5, 5}, []string{"5-5.5"}, []float64{2}},
		{"none", nil, nil, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := histogram("h", "s", "units", c.vs)
			if !slices.Equal(h.labels, c.labels) || !slices.Equal(h.values, c.counts) {
				t.Errorf("bins %v %v, want %v %v", h.labels, h.values, c.labels, c.counts)
			}
			for _, m := range h.markers {
				if m.at < 0 || m.at > float64(len(h.values)) {
					t.Errorf("marker %s at %v, outside the %d bins", m.label, m.at, len(h.values))
				}
			}
		})
	}
}

func TestListedUnits(t *testing.T) {
	var recs []*traveler.Record
	for i := range maxUnitRows + 10 {
		r := &traveler.Record{Serial: fmt.Sprintf("SN-%05d", i), Result: "done"}
		if i%100 == 99 {
			r.Result = "failed"
		}
		recs = append(recs, r)
	}
	got := listedUnits(recs)
	if len(got) != maxUnitRows {
		t.Fatalf("%d units listed, want %d", len(got), maxUnitRows)
	}
	failed := 0
	for i, r := range got {
		if r.Result == "failed" {
			failed++
			if i >= 12 {
				t.Errorf("failed unit %s listed at %d, after passed ones", r.Serial, i)
			}
		}
	}
	if failed != 12 {
		t.Errorf("%d failed units listed, want all 12", failed)
	}
	if got := listedUnits(recs[:10]); len(got) != 10 || got[0].Serial != "SN-00000" {
		t.Errorf("a small lot is not listed whole and in order: %d units", len(got))
	}
}
