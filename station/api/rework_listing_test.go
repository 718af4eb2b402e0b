package api_test

import (
	"encoding/json"
	"path/filepath"
	"sync"
	"testing"
	"time"

	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/station/api"
	"github.com/devid-station/devid/station/api/apitest"
	"github.com/devid-station/devid/station/journal"
	"github.com/devid-station/devid/station/store"
)

// tickClock is a store clock that advances 1 ms at every reading.
type tickClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *tickClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Millisecond)
	return c.t
}

// TestReworkListing: the API's unit (ListUnits and GetUnit) never shows the EK certificate of
// a unit's provisioning that a rework superseded as the unit's EK, whether the unit's state
// recorded it (a unit this station authorized) or the API reads it from the unit's verify_ek
// record (a unit written before the state recorded it). Until the rework's own verify_ek has
// passed the unit shows none; a failed verify_ek of the rework shows the slot its agent
// reported and no EK, as for any failed EK verification.
func TestReworkListing(t *testing.T) {
	const oldSlot, newSlot = "slot-1", "slot-7"
	oldSHA, newSHA := sha([]byte("old EK certificate")), sha([]byte("new EK certificate"))
	// recorded: the first provisioning recorded the EK certificate and slot on the unit (as this
	// station's authorize step does); otherwise only its verify_ek record holds them.
	type want struct{ sha, slot string }
	cases := []struct {
		serial   string
		recorded bool
		// rework: the unit is reworked, then its rework step fails (reworkFails), or then
		// verify_ek runs and ends with verifyCode ("" passes: the unit is then done again,
		// with the new EK recorded only when recorded is set).
		rework, reworkFails bool
		verifyCode          string
		want                want
	}{
		{serial: "SN-10", recorded: true, want: want{oldSHA, oldSlot}},
		{serial: "SN-11", recorded: false, want: want{oldSHA, oldSlot}},
		{serial: "SN-12", recorded: true, rework: true, reworkFails: true, want: want{}},
		{serial: "SN-13", recorded: false, rework: true, reworkFails: true, want: want{}},
		{serial: "SN-14", recorded: true, rework: true, verifyCode: "EK_UNTRUSTED", want: want{"", newSlot}},
		{serial: "SN-15", recorded: false, rework: true, verifyCode: "EK_UNTRUSTED", want: want{"", newSlot}},
		{serial: "SN-16", recorded: true, rework: true, want: want{newSHA, newSlot}},
		{serial: "SN-17", recorded: false, rework: true, want: want{newSHA, newSlot}},
	}
	st, err := store.Open(filepath.Join(t.TempDir(), "station.db"), store.Options{StationID: "st-test",
		Clock: &tickClock{t: time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	env := apitest.Start(t, api.Config{Store: st, Version: "v-test"})
	ctx := t.Context()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	update := func(serial string, fn func(*store.UnitState)) {
		t.Helper()
		_, err := st.UpdateUnit(ctx, serial, func(u *store.UnitState) error { fn(u); return nil })
		must(err)
	}
	// provision journals identify, verify_ek (passed, or failed with code) and, when it passes,
	// authorize and completion.
	provision := func(serial, slot, certSHA, code string, record bool) {
		t.Helper()
		identify, err := journal.Identify{Hello: &agentv1.Hello{HardwareSerial: serial, FixtureSlot: slot}}.MarshalJSON()
		must(err)
		intent, err := json.Marshal(journal.Intent{Step: journal.StepVerifyEK, Identify: string(identify)})
		must(err)
		for _, step := range []string{journal.StepIdentify, journal.StepVerifyEK} {
			in := []byte(`{"step":"identify"}`)
			if step == journal.StepVerifyEK {
				in = intent
			}
			ref, err := st.BeginStep(ctx, serial, step, in)
			must(err)
			var result []byte
			if step == journal.StepVerifyEK && code == "" {
				result, err = json.Marshal(journal.VerifyEKResult{CertSHA256: certSHA})
				must(err)
			}
			if step == journal.StepVerifyEK && code != "" {
				must(st.EndStep(ctx, ref, nil, code))
				update(serial, func(u *store.UnitState) {
					u.Status, u.ErrorCode, u.ErrorMessage = store.StatusFailed, code, "failed"
				})
				return
			}
			if result == nil {
				result = []byte(`{}`)
			}
			must(st.EndStep(ctx, ref, result, ""))
		}
		update(serial, func(u *store.UnitState) {
			u.WorkOrderID, u.Profile = "WO-1", "default"
			if record {
				u.EKCertSHA256, u.FixtureSlot = certSHA, slot
			}
		})
		update(serial, func(u *store.UnitState) { u.Status, u.CurrentStep = store.StatusDone, journal.StepComplete })
	}
	for _, c := range cases {
		update(c.serial, func(u *store.UnitState) { u.Status = store.StatusRunning })
		provision(c.serial, oldSlot, oldSHA, "", c.recorded)
		if !c.rework {
			continue
		}
		_, err := st.AuthorizeRework(ctx, c.serial, "admin", "new CA")
		must(err)
		update(c.serial, func(u *store.UnitState) { u.Status, u.ErrorCode, u.ErrorMessage = store.StatusRunning, "", "" })
		ref, err := st.BeginStep(ctx, c.serial, journal.StepRework, []byte(`{"step":"rework"}`))
		must(err)
		if c.reworkFails {
			must(st.EndStep(ctx, ref, nil, "INSTALL_FAILED"))
			update(c.serial, func(u *store.UnitState) {
				u.Status, u.ErrorCode, u.ErrorMessage = store.StatusFailed, "INSTALL_FAILED", "removing a file"
			})
			continue
		}
		must(st.EndStep(ctx, ref, []byte(`{"idevid":"kept"}`), ""))
		provision(c.serial, newSlot, newSHA, c.verifyCode, c.recorded)
	}

	qa := env.Client(t, apitest.QA)
	list, err := qa.ListUnits(ctx, &stationv1.ListUnitsRequest{})
	must(err)
	listed := map[string]*stationv1.Unit{}
	for _, u := range list.GetUnits() {
		listed[u.GetSerial()] = u
	}
	for _, c := range cases {
		got, err := qa.GetUnit(ctx, &stationv1.GetUnitRequest{Serial: c.serial})
		must(err)
		for name, u := range map[string]*stationv1.Unit{"ListUnits": listed[c.serial], "GetUnit": got} {
			if u.GetEkSha256() != c.want.sha || u.GetFixtureSlot() != c.want.slot {
				t.Errorf("%s %s (recorded %v, rework %v, its step fails %v, its verify_ek code %q): EK certificate %q, slot %q; want %q, %q",
					name, c.serial, c.recorded, c.rework, c.reworkFails, c.verifyCode, u.GetEkSha256(), u.GetFixtureSlot(), c.want.sha, c.want.slot)
			}
		}
	}
}
