package server

import (
	"context"
	"testing"

	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/reports/traveler"
	"github.com/devid-station/devid/station/store"
)

// TestAbortAfterReworkKeepsHistory provisions a unit through the real agent and station,
// authorizes a rework and aborts the unit before it reconnects: its traveler still holds the
// whole history (start, cycle time, TPM, EK, verification, both provisionings).
func TestAbortAfterReworkKeepsHistory(t *testing.T) {
	ctx := context.Background()
	l := newTestLine(t, lineOptions{})
	l.workOrder("WO-1", "SN-0001")
	sim := l.manufacture(nil, tpm.ECCP256)
	if v := l.runUnit(ctx, "SN-0001", sim); !v.Passed {
		t.Fatalf("verdict %+v", v)
	}
	before, err := traveler.Build(ctx, l.srv.Store(), "SN-0001")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.srv.Store().AuthorizeRework(ctx, "SN-0001", "admin:CN=test", "retest"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.srv.runner.Abort(ctx, "SN-0001", "operator:CN=test", "unit pulled from the line"); err != nil {
		t.Fatal(err)
	}
	rec, err := traveler.Build(ctx, l.srv.Store(), "SN-0001")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Result != string(store.StatusAborted) || rec.StartedAt == nil || !rec.StartedAt.Equal(*before.StartedAt) ||
		rec.CycleTimeSeconds != before.CycleTimeSeconds || rec.CycleTimeSeconds <= 0 {
		t.Fatalf("traveler after the abort: result %s, started %v, cycle %vs; before: started %v, cycle %vs",
			rec.Result, rec.StartedAt, rec.CycleTimeSeconds, before.StartedAt, before.CycleTimeSeconds)
	}
	if rec.TPM == nil || rec.EK == nil || rec.EK.SHA256 != before.EK.SHA256 || len(rec.Verification) == 0 || len(rec.Steps) != len(before.Steps) {
		t.Fatalf("traveler after the abort lost history: tpm %v, ek %v, verification %v, %d steps (was %d)",
			rec.TPM, rec.EK, rec.Verification, len(rec.Steps), len(before.Steps))
	}
	if len(rec.Provisionings) != 2 || rec.Provisionings[0].Result != string(store.StatusDone) || rec.Provisionings[0].CycleTimeSeconds <= 0 ||
		rec.Provisionings[1].Result != string(store.StatusAborted) || rec.Provisionings[1].Rework == nil {
		t.Fatalf("provisionings %+v", rec.Provisionings)
	}
}
