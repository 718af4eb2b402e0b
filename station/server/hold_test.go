package server

import (
	"context"
	"testing"

	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/fixture/estca"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
)

// TestFailureClasses runs units through the real agent and station into a failure of each
// class. A security failure (the CA certifies another key: CERT_INVALID) puts the unit on hold:
// its next connection is refused without any step or issuance until QA decides; rework lets it
// provision, scrap refuses it for good, and the decision is in the audit trail. A transient
// failure (the CA unavailable) leaves the unit failed and it provisions on its next connection.
func TestFailureClasses(t *testing.T) {
	tests := []struct {
		name      string
		knobs     estca.Knobs
		code      string
		status    store.Status
		decision  string // for a unit on hold
		reconnect string // verdict code of the next connection ("" = passed)
	}{
		{"security, rework", estca.Knobs{MisissueOtherKey: true}, workflow.CodeCertInvalid, store.StatusHold, store.DecisionRework, ""},
		{"security, scrap", estca.Knobs{MisissueOtherKey: true}, workflow.CodeCertInvalid, store.StatusHold, store.DecisionScrap, workflow.CodeScrapped},
		{"transient", estca.Knobs{FailRate: 1}, workflow.CodeCAUnavailable, store.StatusFailed, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			l := newTestLine(t, lineOptions{knobs: tc.knobs})
			l.workOrder("WO-1", "SN-0001")
			sim := l.manufacture(nil, tpm.ECCP256)
			if v := l.runUnit(ctx, "SN-0001", sim); v.Passed || v.Code != tc.code {
				t.Fatalf("verdict %+v, want %s", v, tc.code)
			}
			u := l.unit("SN-0001")
			if u.Status != tc.status || u.ErrorCode != tc.code {
				t.Fatalf("unit %s %s, want %s %s", u.Status, u.ErrorCode, tc.status, tc.code)
			}
			if err := l.ca.SetKnobs("idevid", estca.Knobs{}); err != nil {
				t.Fatal(err)
			}
			if tc.status == store.StatusHold {
				issued := len(l.ca.Ledger())
				if v := l.runUnit(ctx, "SN-0001", sim); v.Passed || v.Code != workflow.CodeOnHold {
					t.Fatalf("held unit reconnecting: %+v, want %s", v, workflow.CodeOnHold)
				}
				again := l.unit("SN-0001")
				if again.Status != store.StatusHold || again.Attempts != u.Attempts || len(l.ca.Ledger()) != issued {
					t.Fatalf("held unit after reconnect: %s, %d step attempts (was %d), ledger %d (was %d)",
						again.Status, again.Attempts, u.Attempts, len(l.ca.Ledger()), issued)
				}
				qa := store.WithPrincipal(ctx, "qa:CN=qa")
				if _, err := l.srv.Store().DecideHold(qa, "SN-0001", "qa:CN=qa", tc.decision, "inspected"); err != nil {
					t.Fatal(err)
				}
				audit, err := l.srv.Store().AuditAfter(ctx, 0, 100000)
				if err != nil {
					t.Fatal(err)
				}
				found := false
				for _, a := range audit {
					found = found || (a.Action == store.EventHoldDecided && a.Serial == "SN-0001" && a.Principal == "qa:CN=qa" && a.Details["decision"] == tc.decision)
				}
				if !found {
					t.Fatal("the hold decision is not in the audit trail")
				}
			}
			v := l.runUnit(ctx, "SN-0001", sim)
			if (tc.reconnect == "") != v.Passed || v.Code != tc.reconnect {
				t.Fatalf("next connection: %+v, want code %q", v, tc.reconnect)
			}
			want := store.StatusDone
			if tc.reconnect == workflow.CodeScrapped {
				want = store.StatusScrapped
			}
			if u := l.unit("SN-0001"); u.Status != want {
				t.Fatalf("unit %s (%s), want %s", u.Status, u.ErrorCode, want)
			}
		})
	}
}
