package server

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
)

// TestActivationTPMUnreachedOnLine runs a unit of the simulator TPM through the real agent and
// station whose LDevID credential activation fails as a TPM gone mid-command does (an error
// with no TPM response code, which the agent answers ERROR_CODE_TPM): after its IDevID proof,
// so the session has proven the EK, as in the chaos run that put such a unit on hold. The unit
// fails AGENT_ERROR, not on hold, and its next session, with the TPM back, provisions it.
func TestActivationTPMUnreachedOnLine(t *testing.T) {
	l := newTestLine(t, lineOptions{})
	l.workOrder("WO-1", "SN-LOST")
	var lost atomic.Int32
	lost.Store(1)
	w := &tamperTPM{TPM: l.manufacture(nil, tpm.ECCP256), activate: func(handle uint32) error {
		if handle == tpm.LDevIDHandle && lost.Add(-1) >= 0 {
			return errors.New("reading TPM response header: connection reset by peer")
		}
		return nil
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if v := l.runUnit(ctx, "SN-LOST", w); v.Passed || v.Code != workflow.CodeAgentError {
		t.Fatalf("first session: verdict %+v, want %s", v, workflow.CodeAgentError)
	}
	u := l.unit("SN-LOST")
	if u.Status != store.StatusFailed || u.ErrorCode != workflow.CodeAgentError || u.CurrentStep != workflow.StepLDevIDProof {
		t.Fatalf("after the lost activation: unit %s %s at %s, want failed %s at %s", u.Status, u.ErrorCode, u.CurrentStep, workflow.CodeAgentError, workflow.StepLDevIDProof)
	}
	if v := l.runUnit(ctx, "SN-LOST", w); !v.Passed {
		t.Fatalf("second session: verdict %+v, want passed", v)
	}
	if u := l.unit("SN-LOST"); u.Status != store.StatusDone {
		t.Fatalf("after the second session: unit %s %s, want done", u.Status, u.ErrorCode)
	}
}
