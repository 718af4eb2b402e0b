package api_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/station/api"
	"github.com/devid-station/devid/station/api/apitest"
	"github.com/devid-station/devid/station/store"
)

// refusalsSince returns the api.refused audit records after seq.
func refusalsSince(t *testing.T, st *store.Store, seq uint64) []store.AuditEvent {
	t.Helper()
	recs, err := st.AuditAfter(context.Background(), seq, 100000)
	if err != nil {
		t.Fatal(err)
	}
	var out []store.AuditEvent
	for _, r := range recs {
		if r.Action == store.AuditActionAPIRefused {
			out = append(out, r)
		}
	}
	return out
}

// TestRefusedCallsAudited: calls refused for authentication or role reach the audit trail with
// who, what and why, and a flood of them adds a bounded number of records whose counts still
// account for every refused call.
func TestRefusedCallsAudited(t *testing.T) {
	e := apitest.Start(t, api.Config{RefusalWindow: time.Hour}) // one window for the whole test
	head, err := e.Store.ChainHead(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	anonymous := stationv1.NewStationClient(e.Conn(t, nil))
	visitorCert := e.PKI.Client(t, apitest.NoRole)
	visitor := stationv1.NewStationClient(e.Conn(t, &visitorCert))
	qa := e.Client(t, apitest.QA)
	refused := 0
	call := func(what string, err error, want codes.Code) {
		t.Helper()
		if code(err) != want {
			t.Fatalf("%s: %v, want %v", what, err, want)
		}
		refused++
	}
	call("GetStatus without a certificate", func() error {
		_, err := anonymous.GetStatus(t.Context(), &stationv1.GetStatusRequest{})
		return err
	}(), codes.Unauthenticated)
	call("GetStatus without a role", func() error {
		_, err := visitor.GetStatus(t.Context(), &stationv1.GetStatusRequest{})
		return err
	}(), codes.PermissionDenied)
	call("CreateWorkOrder by QA", func() error {
		_, err := qa.CreateWorkOrder(t.Context(), &stationv1.CreateWorkOrderRequest{Id: "WO-1", Profile: "default", Serials: []string{"SN-1"}})
		return err
	}(), codes.PermissionDenied)

	recs := refusalsSince(t, e.Store, head.Seq)
	want := []struct{ principal, method, code string }{
		{"unauthenticated", stationv1.Station_GetStatus_FullMethodName, api.RefusedUnauthenticated},
		{"CN=" + apitest.NoRole, stationv1.Station_GetStatus_FullMethodName, api.RefusedNoRole},
		{"qa:CN=" + apitest.QA, stationv1.Station_CreateWorkOrder_FullMethodName, api.RefusedRoleNotAllowed},
	}
	if len(recs) != len(want) {
		t.Fatalf("%d refusal records, want %d: %+v", len(recs), len(want), recs)
	}
	for i, w := range want {
		r := recs[i]
		if r.Principal != w.principal || r.Details["method"] != w.method || r.ErrorCode != w.code || r.Result != store.ResultError || r.Details["peer"] != "127.0.0.1" {
			t.Errorf("record %d = %s %s %s %s peer %q, want %s %s %s", i, r.Principal, r.Details["method"], r.ErrorCode, r.Result, r.Details["peer"], w.principal, w.method, w.code)
		}
	}
	if fp := recs[1].Details["fingerprint"]; fp != api.Fingerprint(visitorCert.Leaf) {
		t.Errorf("no-role record names fingerprint %q, want the certificate's", fp)
	}

	// A flood: the same refusals again and again, from two callers.
	const flood = 300
	for range flood {
		_, err := visitor.GetStatus(t.Context(), &stationv1.GetStatusRequest{})
		call("flood without a role", err, codes.PermissionDenied)
		_, err = anonymous.ListUnits(t.Context(), &stationv1.ListUnitsRequest{})
		call("flood without a certificate", err, codes.Unauthenticated)
	}
	e.API.Shutdown() // writes the window's summary
	recs = refusalsSince(t, e.Store, head.Seq)
	own, suppressed := 0, 0
	for _, r := range recs {
		if r.ErrorCode == api.RefusedSummary {
			n, err := strconv.Atoi(r.Details["suppressed"])
			if err != nil {
				t.Fatalf("summary %+v", r)
			}
			suppressed += n
			continue
		}
		own++
	}
	if own > 16 || len(recs) > 17 {
		t.Errorf("%d refused calls left %d records (%d of their own): the flood is not bounded", refused, len(recs), own)
	}
	if own+suppressed != refused {
		t.Errorf("records account for %d own + %d suppressed refusals, want %d", own, suppressed, refused)
	}
	if _, err := e.Store.VerifyChain(t.Context()); err != nil {
		t.Fatal(err)
	}
}
