package workflow_test

import (
	"context"
	"testing"

	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
)

// unreachedUnit is a soft unit whose agent answers its next fails credential activations with
// err (fails < 0: all of them), as an agent does when its TPM went away mid-command.
type unreachedUnit struct {
	*softUnit
	fails *int
	err   *agentv1.Error
}

func (u unreachedUnit) Do(ctx context.Context, cmd *agentv1.Command) (*agentv1.Result, error) {
	if cmd.GetActivateCredential() != nil && *u.fails != 0 {
		*u.fails--
		return &agentv1.Result{Id: cmd.GetId(), Error: u.err}, nil
	}
	return u.softUnit.Do(ctx, cmd)
}

// TestActivationTPMUnreached runs a unit whose agent answers credential activations with
// ERROR_CODE_TPM and no TPM response code (its TPM unreachable, as after a power loss): each
// such session fails AGENT_ERROR, class other, and the unit proves itself at its next
// connection; after maxUnreached (3) such answers the next is ACTIVATION_FAILED, and an answer
// with a TPM response code is ACTIVATION_FAILED at once.
func TestActivationTPMUnreached(t *testing.T) {
	unreached := &agentv1.Error{Code: agentv1.ErrorCode_ERROR_CODE_TPM, Message: "activate credential: TPM connection lost"}
	refused := &agentv1.Error{Code: agentv1.ErrorCode_ERROR_CODE_TPM, Message: "activate credential: TPM_RC_HANDLE", TpmRc: 0x18B}
	for _, tc := range []struct {
		name  string
		fails int
		err   *agentv1.Error
		want  []string // each session's code ("" for done)
	}{
		{"power loss, then recovered", 2, unreached, []string{workflow.CodeAgentError, workflow.CodeAgentError, ""}},
		{"always unreached", -1, unreached, []string{workflow.CodeAgentError, workflow.CodeAgentError, workflow.CodeAgentError, workflow.CodeActivationFailed}},
		{"TPM response code", -1, refused, []string{workflow.CodeActivationFailed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, pki, st := newRunner(t, 1)
			const serial = "SN-00000001"
			fails := tc.fails
			u := unreachedUnit{newSoftUnit(t, serial, pki.EKIssuing), &fails, tc.err}
			for i, want := range tc.want {
				out := r.Run(context.Background(), u)
				if want == "" {
					if !out.Done {
						t.Fatalf("session %d: %+v, want done", i+1, out)
					}
					continue
				}
				if out.Done || out.Code != want {
					t.Fatalf("session %d: %+v, want %s", i+1, out, want)
				}
				unit, err := st.Unit(context.Background(), serial)
				if err != nil || unit.Status != store.StatusFailed || unit.ErrorCode != want || unit.CurrentStep != workflow.StepIDevIDProof {
					t.Fatalf("session %d: unit %s %s at %s, %v; want failed %s at %s", i+1, unit.Status, unit.ErrorCode, unit.CurrentStep, err, want, workflow.StepIDevIDProof)
				}
			}
		})
	}
}
