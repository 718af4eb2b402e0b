package api_test

import (
	"crypto/x509"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/station/api"
	"github.com/devid-station/devid/station/api/apitest"
	"github.com/devid-station/devid/station/store"
)

// TestAuthorizeOutsideGRPC checks a caller that reaches the station other than over gRPC (the
// operator console) by the interceptors' rules: no certificate is Unauthenticated, a role
// the method's table lacks is PermissionDenied, and an allowed caller's context makes the
// call audited under its principal.
func TestAuthorizeOutsideGRPC(t *testing.T) {
	e := apitest.Start(t, api.Config{})
	ctx := t.Context()
	const closeWO = stationv1.Station_CloseWorkOrder_FullMethodName
	for _, tc := range []struct {
		cn   string
		want codes.Code
	}{
		{"", codes.Unauthenticated},
		{apitest.NoRole, codes.PermissionDenied},
		{apitest.Operator, codes.PermissionDenied},
		{apitest.QA, codes.PermissionDenied},
		{apitest.MES, codes.OK},
	} {
		var leaf *x509.Certificate
		if tc.cn != "" {
			leaf = e.PKI.Client(t, tc.cn).Leaf
		}
		_, err := e.API.Authorize(ctx, closeWO, leaf, "192.0.2.7:4431")
		if status.Code(err) != tc.want {
			t.Errorf("%q: %v, want %v", tc.cn, err, tc.want)
		}
	}
	if _, err := e.Store.CreateWorkOrder(ctx, store.WorkOrder{ID: "WO-1", Profile: "default", Serials: []string{"SN-1"}}); err != nil {
		t.Fatal(err)
	}
	actx, err := e.API.Authorize(ctx, closeWO, e.PKI.Client(t, apitest.MES).Leaf, "192.0.2.7:4431")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.API.CloseWorkOrder(actx, &stationv1.CloseWorkOrderRequest{Id: "WO-1", Reason: strings.Repeat("x", api.MaxReasonBytes+1)}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a reason over %d bytes: %v, want InvalidArgument", api.MaxReasonBytes, err)
	}
	if _, err := e.API.CloseWorkOrder(actx, &stationv1.CloseWorkOrderRequest{Id: "WO-1", Reason: "lot complete"}); err != nil {
		t.Fatal(err)
	}
	recs, err := e.Store.AuditAfter(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, a := range recs {
		if a.Action == store.EventWorkOrderClosed {
			found = a.Principal == "mes:CN="+apitest.MES && a.Details["reason"] == "lot complete"
		}
	}
	if !found {
		t.Errorf("no audit record of the closing by %s with its reason: %+v", apitest.MES, recs)
	}
}
