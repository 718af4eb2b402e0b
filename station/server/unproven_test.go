package server

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/station/config"
	"github.com/devid-station/devid/station/workflow"
)

// TestUnprovenSessionsCountAgainstPeer: EK certificates are public, so a client without the
// TPM passes the first checks, takes a slot and is journaled before its credential activation
// fails. Such sessions used to be unlimited (each wrote some 30 records); now a security
// failure counts against the peer's refusal limit, and past it the peer is turned away.
func TestUnprovenSessionsCountAgainstPeer(t *testing.T) {
	const limit = 2
	l := newTestLine(t, lineOptions{configure: func(f *config.File) { f.Agents.MaxRefusalsPerPeer = limit }})
	l.workOrder("WO-1", "SN-0001", "SN-0002")
	sim := l.manufacture(nil, tpm.ECCP256)
	forged := &lyingTPM{TPM: sim, activate: func(uint32, tpm.Algorithm, []byte, []byte) ([]byte, error) {
		return make([]byte, 32), nil // not the credential's secret
	}}
	for range limit {
		if v := l.runUnit(context.Background(), "SN-0001", forged); v.Passed || v.Code != workflow.CodeActivationFailed {
			t.Fatalf("forged session: %+v, want failed with %s", v, workflow.CodeActivationFailed)
		}
	}
	if msg, _, err := l.rawSession("SN-0002"); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("session after %d failed activations: %v, %v, want ResourceExhausted", limit, msg, err)
	}
}
