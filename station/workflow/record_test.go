package workflow_test

import (
	"context"
	"slices"
	"testing"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
)

// cutAtDone is a journal whose unit's session ends (its agent went away) right after the
// complete step marked the unit done: the writes that record what already happened must not
// fail with the session's context.
type cutAtDone struct {
	*store.Store
	cancel context.CancelFunc
}

func (j *cutAtDone) UpdateUnit(ctx context.Context, serial string, fn func(*store.UnitState) error) (store.UnitState, error) {
	st, err := j.Store.UpdateUnit(ctx, serial, fn)
	if err == nil && st.Status == store.StatusDone {
		j.cancel()
	}
	return st, err
}

// TestSessionEndAtCompleteKeepsRecords ends the session right after the unit was marked done:
// the unit.done event, the complete step's result and the outcome still say done.
func TestSessionEndAtCompleteKeepsRecords(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, pki, st := newRunner(t, 1, func(c *workflow.Config) {
		c.Journal = &cutAtDone{Store: c.Journal.(*store.Store), cancel: cancel}
	})
	u := newSoftUnit(t, "SN-00000001", pki.EKIssuing)
	if out := r.Run(ctx, u); !out.Done {
		t.Errorf("outcome %+v, want done", out)
	}
	bg := context.Background()
	if state, err := st.Unit(bg, "SN-00000001"); err != nil || state.Status != store.StatusDone {
		t.Errorf("unit %+v, %v; want done", state, err)
	}
	evs, err := st.UnitEvents(bg, "SN-00000001", 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	done := false
	for _, e := range evs {
		done = done || e.Type == stationv1.KindUnitDone
		if e.Type == stationv1.KindUnitFailed {
			t.Errorf("event %+v after the unit was done", e)
		}
	}
	if !done {
		t.Error("no unit.done event")
	}
	recs, err := st.StepRecords(bg, "SN-00000001")
	if err != nil {
		t.Fatal(err)
	}
	complete := false
	for _, rec := range recs {
		if rec.Step == workflow.StepComplete {
			complete = rec.Ended && rec.ErrorCode == ""
		}
	}
	if !complete {
		t.Error("the complete step's result was not recorded")
	}
}

// cutAtAdvance is a journal whose unit's session ends just before the result of the step before
// complete is written with the complete step's intent.
type cutAtAdvance struct {
	*store.Store
	cancel context.CancelFunc
}

func (j *cutAtAdvance) Advance(ctx context.Context, end store.StepRef, result []byte, step string, intent []byte) (store.StepRef, error) {
	if step == workflow.StepComplete {
		j.cancel()
	}
	return j.Store.Advance(ctx, end, result, step, intent)
}

// TestSessionEndKeepsLastResult ends the session when the result of the step before complete
// goes to the store with complete's intent: the result is still recorded (the unit resumes
// after it).
func TestSessionEndKeepsLastResult(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, pki, st := newRunner(t, 1, func(c *workflow.Config) {
		c.Journal = &cutAtAdvance{Store: c.Journal.(*store.Store), cancel: cancel}
	})
	if out := r.Run(ctx, newSoftUnit(t, "SN-00000001", pki.EKIssuing)); !out.Interrupted {
		t.Errorf("outcome %+v, want interrupted", out)
	}
	recs, err := st.StepRecords(context.Background(), "SN-00000001")
	if err != nil {
		t.Fatal(err)
	}
	last := workflow.Steps[slices.Index(workflow.Steps, workflow.StepComplete)-1]
	recorded := false
	for _, rec := range recs {
		if rec.Step == last {
			recorded = rec.Ended && rec.ErrorCode == "" && len(rec.Result) > 0
		}
		if rec.Step == workflow.StepComplete {
			t.Errorf("complete step began: %+v", rec)
		}
	}
	if !recorded {
		t.Errorf("the result of %s was not recorded", last)
	}
}

// TestWorkOrderRecordedOnlyForUnitsThatTakeTheFiles checks where the work order is recorded
// now that opening the unit writes it: a unit that can take the profile's files has its work
// order and profile (and the authorize step's result names them); a unit whose agent announced
// no file roots fails the authorize step with FILE_ROOTS_UNSUITABLE and has none recorded.
func TestWorkOrderRecordedOnlyForUnitsThatTakeTheFiles(t *testing.T) {
	r, pki, st := newRunner(t, 1)
	bg := context.Background()
	good := newSoftUnit(t, "SN-00000001", pki.EKIssuing)
	if out := r.Run(bg, good); !out.Done {
		t.Fatalf("outcome %+v, want done", out)
	}
	if state, err := st.Unit(bg, "SN-00000001"); err != nil || state.WorkOrderID != "WO-B" || state.Profile != "default" {
		t.Errorf("unit %+v, %v; want work order WO-B, profile default", state, err)
	}
	rec, ok, err := st.LatestStep(bg, "SN-00000001", workflow.StepAuthorize)
	if err != nil || !ok || string(rec.Result) != `{"work_order":"WO-B","profile":"default"}` {
		t.Errorf("authorize step %s, %v, %v", rec.Result, ok, err)
	}

	rootless := newSoftUnit(t, "SN-00000002", pki.EKIssuing)
	rootless.hello.FileRoots = nil
	if out := r.Run(bg, rootless); out.Done || out.Code != workflow.CodeFileRootsUnsuitable {
		t.Fatalf("outcome %+v, want %s", out, workflow.CodeFileRootsUnsuitable)
	}
	state, err := st.Unit(bg, "SN-00000002")
	if err != nil || state.Status != store.StatusFailed || state.CurrentStep != workflow.StepAuthorize {
		t.Fatalf("unit %+v, %v; want failed at %s", state, err, workflow.StepAuthorize)
	}
	if state.WorkOrderID != "" || state.Profile != "" {
		t.Errorf("unit that cannot take the profile's files has work order %q, profile %q", state.WorkOrderID, state.Profile)
	}
}

// TestNoIAKStepsJournaled checks that a profile without an IAK journals its steps but the IAK
// ones: each step once, in workflow order, ended without an error code.
func TestNoIAKStepsJournaled(t *testing.T) {
	r, pki, st := newRunner(t, 1)
	if out := r.Run(context.Background(), newSoftUnit(t, "SN-00000001", pki.EKIssuing)); !out.Done {
		t.Fatalf("outcome %+v, want done", out)
	}
	recs, err := st.StepRecords(context.Background(), "SN-00000001")
	if err != nil {
		t.Fatal(err)
	}
	var want, got []string
	for _, d := range workflow.Table {
		if d.Role != string(store.RoleIAK) {
			want = append(want, d.Name)
		}
	}
	for _, rec := range recs {
		got = append(got, rec.Step)
		if !rec.Ended || rec.ErrorCode != "" || rec.Attempt != 1 {
			t.Errorf("step record %+v", rec)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("steps journaled %v, want %v", got, want)
	}
}

// earlierStation is a journal that writes, once, what stations before this one journaled for
// a profile without an IAK (each IAK step begun and ended with journal.SkipResult) between
// idevid_residency and idevid_csr, but stops there: the last IAK step's intent stays open (the
// earlier station stopped) and the session ends.
type earlierStation struct {
	*store.Store
	cancel context.CancelFunc
	done   bool
}

func (j *earlierStation) Advance(ctx context.Context, end store.StepRef, result []byte, step string, intent []byte) (store.StepRef, error) {
	if step != workflow.StepIDevIDCSR || j.done {
		return j.Store.Advance(ctx, end, result, step, intent)
	}
	j.done = true
	for _, d := range workflow.Table {
		if d.Role != string(store.RoleIAK) {
			continue
		}
		ref, err := j.Store.Advance(ctx, end, result, d.Name, []byte(`{"step":"`+d.Name+`"}`))
		if err != nil {
			return ref, err
		}
		end, result = ref, []byte(`{"skipped":"the profile has no IAK"}`)
	}
	j.cancel()
	return store.StepRef{}, context.Canceled
}

// TestResumeOverSkippedIAKRecords resumes a unit whose records come from an earlier station
// that recorded the IAK steps skipped and stopped with the last one's intent open: the unit
// completes, that intent is closed INTERRUPTED, the other records stay as they were and no IAK
// step is journaled again.
func TestResumeOverSkippedIAKRecords(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	j := &earlierStation{cancel: cancel}
	r, pki, st := newRunner(t, 1, func(c *workflow.Config) {
		j.Store = c.Journal.(*store.Store)
		c.Journal = j
	})
	u := newSoftUnit(t, "SN-00000001", pki.EKIssuing)
	if out := r.Run(ctx, u); !out.Interrupted {
		t.Fatalf("first session %+v, want interrupted", out)
	}
	if out := r.Run(context.Background(), u); !out.Done {
		t.Fatalf("second session %+v, want done", out)
	}
	recs, err := st.StepRecords(context.Background(), "SN-00000001")
	if err != nil {
		t.Fatal(err)
	}
	iak := 0
	for _, rec := range recs {
		if stepRole(rec.Step) != string(store.RoleIAK) {
			continue
		}
		iak++
		switch {
		case rec.Step == workflow.StepIAKEnroll:
			if !rec.Ended || rec.ErrorCode != "INTERRUPTED" {
				t.Errorf("the open IAK intent was not closed: %+v", rec)
			}
		case !rec.Ended || rec.ErrorCode != "" || string(rec.Result) != `{"skipped":"the profile has no IAK"}`:
			t.Errorf("IAK step record %+v", rec)
		}
	}
	if iak != 5 {
		t.Errorf("%d IAK step records, want the 5 the earlier station wrote", iak)
	}
}

func stepRole(step string) string {
	for _, d := range workflow.Table {
		if d.Name == step {
			return d.Role
		}
	}
	return ""
}
