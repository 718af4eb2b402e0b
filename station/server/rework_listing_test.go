package server

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/devid-station/devid/device-agent/tpm"
	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/station/api"
	"github.com/devid-station/devid/station/api/apitest"
	"github.com/devid-station/devid/station/journal"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
)

// verifyEKFailJournal refuses, while armed, to journal the intent of verify_ek: the unit's
// verify_ek fails (INTERNAL) before it verified anything.
type verifyEKFailJournal struct {
	workflow.Journal
	armed atomic.Bool
}

var errInjected = errors.New("injected: the store refused the verify_ek intent")

func (j *verifyEKFailJournal) BeginStep(ctx context.Context, serial, step string, intent []byte) (store.StepRef, error) {
	if step == journal.StepVerifyEK && j.armed.Load() {
		return store.StepRef{}, errInjected
	}
	return j.Journal.BeginStep(ctx, serial, step, intent)
}

func (j *verifyEKFailJournal) Advance(ctx context.Context, end store.StepRef, result []byte, step string, intent []byte) (store.StepRef, error) {
	if step == journal.StepVerifyEK && j.armed.Load() {
		return store.StepRef{}, errInjected
	}
	return j.Journal.Advance(ctx, end, result, step, intent)
}

// TestReworkFailedVerifyEKListing provisions a unit through the real agent, TPM simulator and
// station, reworks it and fails the rework at verify_ek: the unit's listing row and the API's
// unit (ListUnits, GetUnit) no longer show the EK certificate of the provisioning the rework
// superseded as the unit's. The unit's next session, which passes, records it again.
func TestReworkFailedVerifyEKListing(t *testing.T) {
	ctx := context.Background()
	j := &verifyEKFailJournal{}
	l := newTestLine(t, lineOptions{wrap: func(inner workflow.Journal) workflow.Journal { j.Journal = inner; return j }})
	l.workOrder("WO-1", "SN-0001")
	sim := l.manufacture(nil, tpm.ECCP256)
	st := l.srv.Store()
	ekSHA := func() string {
		t.Helper()
		rec, ok, err := st.LatestStep(ctx, "SN-0001", journal.StepVerifyEK)
		if err != nil || !ok || rec.ErrorCode != "" {
			t.Fatalf("latest verify_ek: %+v, %v, %v", rec, ok, err)
		}
		var res journal.VerifyEKResult
		if err := json.Unmarshal(rec.Result, &res); err != nil || len(res.CertSHA256) != 2*sha256.Size {
			t.Fatalf("verify_ek result %s: %v", rec.Result, err)
		}
		return res.CertSHA256
	}
	qa := apitest.Start(t, api.Config{Store: st, Version: "test"}).Client(t, apitest.QA)
	// check compares the unit's EK certificate digest with want in its listing row and in the
	// API's unit, listed and read.
	check := func(when, want string) {
		t.Helper()
		rows, _, err := st.ListUnits(ctx, store.UnitQuery{Brief: true})
		if err != nil || len(rows) != 1 {
			t.Fatalf("listing rows: %v, %v", rows, err)
		}
		listed, err := qa.ListUnits(ctx, &stationv1.ListUnitsRequest{})
		if err != nil || len(listed.GetUnits()) != 1 {
			t.Fatalf("ListUnits: %v, %v", listed, err)
		}
		got, err := qa.GetUnit(ctx, &stationv1.GetUnitRequest{Serial: "SN-0001"})
		if err != nil {
			t.Fatal(err)
		}
		for name, sha := range map[string]string{"listing row": rows[0].Unit.EKCertSHA256,
			"ListUnits": listed.GetUnits()[0].GetEkSha256(), "GetUnit": got.GetEkSha256()} {
			if sha != want {
				t.Errorf("%s: %s shows EK certificate %q, want %q", when, name, sha, want)
			}
		}
	}

	if v := l.runUnit(ctx, "SN-0001", sim); !v.Passed {
		t.Fatalf("first provisioning: %+v", v)
	}
	first := ekSHA()
	check("provisioned", first)

	if _, err := st.AuthorizeRework(ctx, "SN-0001", "admin:CN=test", "retest"); err != nil {
		t.Fatal(err)
	}
	check("rework authorized, not begun", first)
	j.armed.Store(true)
	if v := l.runUnit(ctx, "SN-0001", sim); v.Passed || v.Code != workflow.CodeInternal {
		t.Fatalf("rework with a failing verify_ek: %+v, want failed INTERNAL", v)
	}
	if u := l.unit("SN-0001"); u.Status != store.StatusFailed || u.CurrentStep != journal.StepVerifyEK || len(u.Reworks) != 1 {
		t.Fatalf("after the failed rework: status %s at %s, %d reworks; want failed at verify_ek after one rework", u.Status, u.CurrentStep, len(u.Reworks))
	}
	check("rework failed at verify_ek", "")

	j.armed.Store(false)
	if v := l.runUnit(ctx, "SN-0001", sim); !v.Passed {
		t.Fatalf("provisioning after the failed rework: %+v", v)
	}
	check("provisioned again", ekSHA())
}
