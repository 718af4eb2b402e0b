package server

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/reports/traveler"
	"github.com/devid-station/devid/station/store"
)

// TestReworkKeepsValidIDevID provisions a unit, reworks it, removes its IDevID NV index and
// reworks it again, through the real agent and station. The first rework verifies and keeps the
// IDevID (issued once) and issues the LDevID again, after removing the LDevID file and the
// onboarding configuration from the unit; the second issues the IDevID again. Every certificate
// stays in the unit's history with its status and reason, and the superseded ones are the
// traveler's revocation candidates.
func TestReworkKeepsValidIDevID(t *testing.T) {
	ctx := context.Background()
	l := newTestLine(t, lineOptions{})
	l.workOrder("WO-1", "SN-0001")
	sim := l.manufacture(nil, tpm.ECCP256)
	st := l.srv.Store()
	issued := func(label string) (n int) {
		for _, e := range l.ca.Ledger() {
			if e.Label == label {
				n++
			}
		}
		return n
	}
	rework := func() *traveler.Record {
		t.Helper()
		if _, err := st.AuthorizeRework(ctx, "SN-0001", "admin:CN=test", "retest"); err != nil {
			t.Fatal(err)
		}
		if v := l.runUnit(ctx, "SN-0001", sim); !v.Passed {
			t.Fatalf("reworked unit: %+v", v)
		}
		rec, err := traveler.Build(ctx, st, "SN-0001")
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	statuses := func(rec *traveler.Record) string {
		var b strings.Builder
		for _, c := range rec.Certificates {
			b.WriteString(c.Role + ":" + c.Status + " ")
		}
		return strings.TrimSpace(b.String())
	}

	if v := l.runUnit(ctx, "SN-0001", sim); !v.Passed {
		t.Fatalf("first provisioning: %+v", v)
	}
	first, err := traveler.Build(ctx, st, "SN-0001")
	if err != nil {
		t.Fatal(err)
	}
	ldevidPath, onboardingPath := l.file.Profiles[0].LDevIDCertPath, l.file.Profiles[0].Onboarding.Path

	rec := rework()
	if n, m := issued("idevid"), issued("ldevid"); n != 1 || m != 2 {
		t.Fatalf("after a rework of an intact unit the CAs issued %d IDevIDs and %d LDevIDs, want 1 and 2", n, m)
	}
	if rec.IDevID == nil || rec.IDevID.SHA256 != first.IDevID.SHA256 || rec.LDevID.SHA256 == first.LDevID.SHA256 {
		t.Fatalf("traveler IDevID %v LDevID %v after the rework", rec.IDevID, rec.LDevID)
	}
	if got := statuses(rec); got != "IDevID:active LDevID:superseded LDevID:active" {
		t.Fatalf("certificate history %q", got)
	}
	if len(rec.RevocationCandidates) != 1 || rec.RevocationCandidates[0].SHA256 != first.LDevID.SHA256 || rec.RevocationCandidates[0].Reason == "" {
		t.Fatalf("revocation candidates %+v, want the first LDevID with a reason", rec.RevocationCandidates)
	}
	removed := reworkDone(t, st)
	if removed["remove_"+ldevidPath] != "true" || removed["remove_"+onboardingPath] != "true" || removed["idevid"] != "kept" {
		t.Fatalf("rework result %v: want the LDevID file and onboarding configuration removed, the IDevID kept", removed)
	}
	if b, err := os.ReadFile(ldevidPath); err != nil || !strings.Contains(rec.LDevID.PEM, strings.SplitN(string(b), "\n", 3)[1]) {
		t.Errorf("the LDevID file does not hold the new LDevID (%v)", err)
	}

	if _, err := sim.NVUndefine(0x01C90000, tpm.Platform); err != nil {
		t.Fatal(err)
	}
	rec = rework()
	if n := issued("idevid"); n != 2 {
		t.Fatalf("after a rework of a unit without its IDevID NV index the CA issued %d IDevIDs, want 2", n)
	}
	if got := statuses(rec); got != "IDevID:superseded LDevID:superseded LDevID:superseded IDevID:active LDevID:active" {
		t.Fatalf("certificate history %q", got)
	}
	if rec.IDevID.SHA256 == first.IDevID.SHA256 || len(rec.RevocationCandidates) != 3 ||
		!strings.Contains(rec.Certificates[0].Reason, "NV index is gone") {
		t.Fatalf("traveler IDevID %s, revocation candidates %+v", rec.IDevID.SHA256, rec.RevocationCandidates)
	}
	if r := reworkDone(t, st); r["idevid"] != "reissued" {
		t.Fatalf("rework result %v, want the IDevID reissued", r)
	}
}

// reworkDone returns the last rework step's result, flattened: "idevid", "reason" and what
// was removed.
func reworkDone(t *testing.T, st *store.Store) map[string]string {
	t.Helper()
	recs, err := st.StepRecords(context.Background(), "SN-0001")
	if err != nil {
		t.Fatal(err)
	}
	var last []byte
	for _, r := range recs {
		if r.Step == "rework" {
			last = r.Result
		}
	}
	var res struct {
		IDevID string            `json:"idevid"`
		Reason string            `json:"reason"`
		Done   map[string]string `json:"done"`
	}
	if err := json.Unmarshal(last, &res); err != nil {
		t.Fatalf("rework result %s: %v", last, err)
	}
	out := res.Done
	if out == nil {
		out = map[string]string{}
	}
	out["idevid"], out["reason"] = res.IDevID, res.Reason
	return out
}
