package workflow_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"testing"

	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
)

// lockedOutUnit is a soft unit whose TPM is in dictionary-attack lockout: the agent answers
// every signature ERROR_CODE_TPM_LOCKOUT with TPM_RC_LOCKOUT.
type lockedOutUnit struct{ *softUnit }

func (u lockedOutUnit) Do(ctx context.Context, cmd *agentv1.Command) (*agentv1.Result, error) {
	if cmd.GetSign() != nil {
		return &agentv1.Result{Id: cmd.GetId(), Error: &agentv1.Error{Code: agentv1.ErrorCode_ERROR_CODE_TPM_LOCKOUT,
			Message: "signing with 0x81020000: TPM_RC_LOCKOUT", TpmRc: 0x921}}, nil
	}
	return u.softUnit.Do(ctx, cmd)
}

// handshakeCA is an instant CA that authenticates an mTLS client as crypto/tls does: the client
// key signs the handshake, and a signer's failure reaches the caller as text only.
type handshakeCA struct{ *instantCA }

func (c handshakeCA) Enroll(ctx context.Context, req workflow.EnrollRequest) (*workflow.Issued, error) {
	if req.ClientCert != nil {
		digest := sha256.Sum256([]byte("handshake"))
		if _, err := req.ClientCert.Key.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
			return nil, errors.New("tls: failed to sign handshake: " + err.Error())
		}
	}
	return c.instantCA.Enroll(ctx, req)
}

// TestTPMLockout runs a unit whose TPM is in lockout: the LDevID enrollment's mTLS handshake
// signed by the IDevID (it was CA_UNAVAILABLE, retried as transient) and the verify step's
// nonce signatures (PROOF_FAILED, which held the unit) both end TPM_LOCKOUT, class other: the
// unit fails, neither held nor waiting for a CA.
func TestTPMLockout(t *testing.T) {
	for _, tc := range []struct {
		name string
		mtls bool
	}{{"idevid mtls handshake", true}, {"verify nonce signature", false}} {
		t.Run(tc.name, func(t *testing.T) {
			r, pki, st := newRunner(t, 1, func(c *workflow.Config) {
				if tc.mtls {
					c.Profiles["default"].LDevIDAuth = workflow.AuthIDevIDMTLS
					c.Issuers["customer"] = handshakeCA{c.Issuers["customer"].(*instantCA)}
				}
			})
			const serial = "SN-00000001"
			out := r.Run(context.Background(), lockedOutUnit{newSoftUnit(t, serial, pki.EKIssuing)})
			if out.Done || out.Code != workflow.CodeTPMLockout {
				t.Fatalf("outcome %+v, want %s", out, workflow.CodeTPMLockout)
			}
			if c := workflow.Class(out.Code); c != workflow.ClassOther {
				t.Errorf("class %s, want %s", c, workflow.ClassOther)
			}
			u, err := st.Unit(context.Background(), serial)
			if err != nil || u.Status != store.StatusFailed || u.ErrorCode != workflow.CodeTPMLockout {
				t.Errorf("unit %s %s, %v; want failed %s", u.Status, u.ErrorCode, err, workflow.CodeTPMLockout)
			}
			step := workflow.StepVerify
			if tc.mtls {
				step = workflow.StepLDevIDEnroll
			}
			if u.CurrentStep != step {
				t.Errorf("failed at %s, want %s", u.CurrentStep, step)
			}
		})
	}
}
