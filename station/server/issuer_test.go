package server

import (
	"context"
	"testing"

	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/station/workflow"
)

// TestUnitEnrollmentThroughBatcher: an LDevID enrollment authenticated by the unit's IDevID
// (its own TLS connection) goes through the CA's batcher like the IDevID one, so the CA's
// in-flight bound, rate limit and breaker see both.
func TestUnitEnrollmentThroughBatcher(t *testing.T) {
	l := newTestLine(t, lineOptions{ldevidAuth: workflow.AuthIDevIDMTLS})
	l.workOrder("WO-1", "SN-0001")
	if v := l.runUnit(context.Background(), "SN-0001", l.manufacture(nil, tpm.ECCP256)); !v.Passed {
		t.Fatalf("verdict %+v", v)
	}
	var requests, succeeded int64
	for _, is := range l.srv.issuers {
		m := is.batcher.Metrics()
		requests += m.Requests
		succeeded += m.Succeeded
	}
	if requests != 2 || succeeded != 2 {
		t.Fatalf("the CA batchers sent %d requests (%d succeeded), want both enrollments: 2", requests, succeeded)
	}
}
