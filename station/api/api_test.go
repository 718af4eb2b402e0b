package api_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/devid-station/devid/fixture/devpki"
	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/reports/traveler"
	"github.com/devid-station/devid/reports/traveler/travelertest"
	"github.com/devid-station/devid/station/api"
	"github.com/devid-station/devid/station/api/apitest"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
	bolt "go.etcd.io/bbolt"
)

type agentCount int

func (n agentCount) Connected() int { return int(n) }

type testEnv struct {
	*apitest.Env
	runner *workflow.Runner
	pki    *devpki.PKI
}

// newEnv serves the API over a fresh store, with a real workflow runner (no CAs: it only
// aborts and tracks units the tests start by hand).
func newEnv(t *testing.T) *testEnv {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "station.db"), store.Options{StationID: "st-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	runner, pki := newRunner(t, st)
	env := apitest.Start(t, api.Config{
		Store: st, Runner: runner, Agents: agentCount(3), Version: "v-test", Profiles: []string{"default"},
		CAs: func() []api.CAHealth {
			return []api.CAHealth{{Name: "maker", Breaker: "closed", Requests: 10, Errors: 1, P50: 120 * time.Millisecond, P95: 300 * time.Millisecond}}
		},
		PollInterval: 20 * time.Millisecond,
		Clock:        storeAgeClock{st: st, age: 30 * time.Second},
	})
	return &testEnv{Env: env, runner: runner, pki: pki}
}

// storeAgeClock tells the time as the store's creation plus age, so that the
// rates GetStatus reports do not depend on how long the test took to get there.
type storeAgeClock struct {
	st  *store.Store
	age time.Duration
}

func (c storeAgeClock) Now() time.Time {
	created, err := c.st.CreatedAt(context.Background())
	if err != nil {
		panic("store creation time: " + err.Error())
	}
	return created.Add(c.age)
}

func code(err error) codes.Code { return status.Code(err) }

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// auditBy returns the audit records of action for serial (any when empty) whose details hold
// key=value (any when key is empty).
func auditBy(t *testing.T, st *store.Store, action, serial, key, value string) []store.AuditEvent {
	t.Helper()
	all, err := st.AuditAfter(t.Context(), 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	return slices.DeleteFunc(all, func(a store.AuditEvent) bool {
		return a.Action != action || (serial != "" && a.Serial != serial) || (key != "" && a.Details[key] != value)
	})
}

// startRun authorizes serial, runs the workflow for it with a blocking agent and waits until
// the runner blocks on the agent's first command after the first checks (the unit is then
// running at its first key step); the returned channel receives Run's outcome.
func (e *testEnv) startRun(t *testing.T, ctx context.Context, serial string) <-chan workflow.Outcome {
	t.Helper()
	if _, err := e.Store.CreateWorkOrder(ctx, store.WorkOrder{ID: "WO-" + serial, Profile: "default", Serials: []string{serial}}); err != nil {
		t.Fatal(err)
	}
	done := make(chan workflow.Outcome, 1)
	a := blockingAgent{serial: serial, ek: testEK(t, e.pki), asked: make(chan struct{}, 1)}
	go func() { done <- e.runner.Run(ctx, a) }()
	select {
	case <-a.asked:
	case out := <-done:
		t.Fatalf("the runner ended %s before its first key: %+v", serial, out)
	case <-time.After(time.Minute):
		t.Fatalf("the runner sent %s no command", serial)
	}
	return done
}

// call is one API method called with a request that needs no data in the store.
type call struct {
	method string
	do     func(t *testing.T, e *testEnv, cn string) error
}

func stationCall(method string, fn func(ctx context.Context, c stationv1.StationClient, cn string) error) call {
	return call{method: method, do: func(t *testing.T, e *testEnv, cn string) error {
		return fn(t.Context(), e.Client(t, cn), cn)
	}}
}

var calls = []call{
	stationCall("CreateWorkOrder", func(ctx context.Context, c stationv1.StationClient, cn string) error {
		_, err := c.CreateWorkOrder(ctx, &stationv1.CreateWorkOrderRequest{Id: "WO-" + cn, Profile: "default", Serials: []string{"SN-" + cn}})
		return err
	}),
	stationCall("GetWorkOrder", func(ctx context.Context, c stationv1.StationClient, _ string) error {
		_, err := c.GetWorkOrder(ctx, &stationv1.GetWorkOrderRequest{Id: "none"})
		return err
	}),
	stationCall("ListWorkOrders", func(ctx context.Context, c stationv1.StationClient, _ string) error {
		_, err := c.ListWorkOrders(ctx, &stationv1.ListWorkOrdersRequest{})
		return err
	}),
	stationCall("CloseWorkOrder", func(ctx context.Context, c stationv1.StationClient, _ string) error {
		_, err := c.CloseWorkOrder(ctx, &stationv1.CloseWorkOrderRequest{Id: "none"})
		return err
	}),
	stationCall("GetUnit", func(ctx context.Context, c stationv1.StationClient, _ string) error {
		_, err := c.GetUnit(ctx, &stationv1.GetUnitRequest{Serial: "none"})
		return err
	}),
	stationCall("ListUnits", func(ctx context.Context, c stationv1.StationClient, _ string) error {
		_, err := c.ListUnits(ctx, &stationv1.ListUnitsRequest{})
		return err
	}),
	stationCall("WatchEvents", func(ctx context.Context, c stationv1.StationClient, _ string) error {
		s, err := c.WatchEvents(ctx, &stationv1.WatchEventsRequest{})
		if err != nil {
			return err
		}
		for {
			if _, err := s.Recv(); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
		}
	}),
	stationCall("AbortUnit", func(ctx context.Context, c stationv1.StationClient, _ string) error {
		_, err := c.AbortUnit(ctx, &stationv1.AbortUnitRequest{Serial: "none", Reason: "test"})
		return err
	}),
	stationCall("AuthorizeRework", func(ctx context.Context, c stationv1.StationClient, _ string) error {
		_, err := c.AuthorizeRework(ctx, &stationv1.AuthorizeReworkRequest{Serial: "none", Reason: "test"})
		return err
	}),
	stationCall("DecideHold", func(ctx context.Context, c stationv1.StationClient, _ string) error {
		_, err := c.DecideHold(ctx, &stationv1.DecideHoldRequest{Serial: "none", Decision: stationv1.HoldDecision_HOLD_DECISION_SCRAP, Reason: "test"})
		return err
	}),
	stationCall("ReleaseEK", func(ctx context.Context, c stationv1.StationClient, _ string) error {
		_, err := c.ReleaseEK(ctx, &stationv1.ReleaseEKRequest{Serial: "none", Reason: "test"})
		return err
	}),
	stationCall("ListRefusals", func(ctx context.Context, c stationv1.StationClient, _ string) error {
		_, err := c.ListRefusals(ctx, &stationv1.ListRefusalsRequest{})
		return err
	}),
	stationCall("GetTraveler", func(ctx context.Context, c stationv1.StationClient, _ string) error {
		_, err := c.GetTraveler(ctx, &stationv1.GetTravelerRequest{Serial: "none"})
		return err
	}),
	stationCall("GetStatus", func(ctx context.Context, c stationv1.StationClient, _ string) error {
		_, err := c.GetStatus(ctx, &stationv1.GetStatusRequest{})
		return err
	}),
	stationCall("VerifyAudit", func(ctx context.Context, c stationv1.StationClient, _ string) error {
		_, err := c.VerifyAudit(ctx, &stationv1.VerifyAuditRequest{})
		return err
	}),
	stationCall("GetUnitAudit", func(ctx context.Context, c stationv1.StationClient, _ string) error {
		_, err := c.GetUnitAudit(ctx, &stationv1.GetUnitAuditRequest{Serial: "none"})
		return err
	}),
	{method: "Health", do: func(t *testing.T, e *testEnv, cn string) error {
		cert := e.PKI.Client(t, cn)
		_, err := healthpb.NewHealthClient(e.Conn(t, &cert)).Check(t.Context(), &healthpb.HealthCheckRequest{Service: "devid.station.v1.Station"})
		return err
	}},
	{method: "Reflection", do: func(t *testing.T, e *testEnv, cn string) error {
		cert := e.PKI.Client(t, cn)
		s, err := reflectionpb.NewServerReflectionClient(e.Conn(t, &cert)).ServerReflectionInfo(t.Context())
		if err != nil {
			return err
		}
		// Send fails with io.EOF when the server already ended the stream (a refusal); the
		// status comes from Recv.
		if err := s.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		resp, err := s.Recv()
		if err != nil {
			return err
		}
		for _, svc := range resp.GetListServicesResponse().GetService() {
			if svc.GetName() == "devid.station.v1.Station" {
				return nil
			}
		}
		return errors.New("reflection does not list the Station service")
	}},
}

func TestRolePermissions(t *testing.T) {
	e := newEnv(t)
	all := []string{apitest.Operator, apitest.MES, apitest.QA, apitest.Admin}
	allowed := map[string][]string{
		"CreateWorkOrder": {apitest.MES, apitest.Admin},
		"CloseWorkOrder":  {apitest.MES, apitest.Admin},
		"AbortUnit":       {apitest.Operator, apitest.Admin},
		"AuthorizeRework": {apitest.Admin},
		"DecideHold":      {apitest.QA, apitest.Admin},
		"ReleaseEK":       {apitest.Admin},
		"VerifyAudit":     {apitest.QA, apitest.Admin},
		"GetUnitAudit":    {apitest.QA, apitest.Admin},
	}
	for _, cn := range append(all, apitest.NoRole) {
		for _, c := range calls {
			t.Run(cn+"/"+c.method, func(t *testing.T) {
				roles, ok := allowed[c.method]
				if !ok {
					roles = all
				}
				err := c.do(t, e, cn)
				switch {
				case cn == apitest.NoRole || !slices.Contains(roles, cn):
					if code(err) != codes.PermissionDenied {
						t.Fatalf("%s by %s: %v, want PermissionDenied", c.method, cn, err)
					}
				case code(err) == codes.PermissionDenied || code(err) == codes.Unauthenticated:
					t.Fatalf("%s by %s refused: %v", c.method, cn, err)
				}
			})
		}
	}
}

// TestFingerprintRole maps a certificate by fingerprint, whatever its CommonName.
func TestFingerprintRole(t *testing.T) {
	pki := apitest.NewPKI(t)
	cert := pki.Client(t, apitest.QA) // CommonName says qa; the fingerprint says admin
	table := api.RoleTable{Fingerprints: map[string]api.Role{api.Fingerprint(cert.Leaf): api.RoleAdmin}, CommonNames: apitest.Roles.CommonNames}
	if err := table.Validate(); err != nil {
		t.Fatal(err)
	}
	if r, ok := table.Lookup(cert.Leaf); !ok || r != api.RoleAdmin {
		t.Errorf("Lookup = %v %v, want admin", r, ok)
	}
	bad := api.RoleTable{CommonNames: map[string]api.Role{"x": "root"}}
	if bad.Validate() == nil {
		t.Error("a table with an unknown role validates")
	}
}

func TestNoClientCertificate(t *testing.T) {
	e := newEnv(t)
	cc := e.Conn(t, nil)
	_, err := stationv1.NewStationClient(cc).GetStatus(t.Context(), &stationv1.GetStatusRequest{})
	if code(err) != codes.Unauthenticated {
		t.Errorf("GetStatus without a certificate: %v, want Unauthenticated", err)
	}
	s, err := stationv1.NewStationClient(cc).WatchEvents(t.Context(), &stationv1.WatchEventsRequest{})
	if err == nil {
		_, err = s.Recv()
	}
	if code(err) != codes.Unauthenticated {
		t.Errorf("WatchEvents without a certificate: %v, want Unauthenticated", err)
	}
	_, err = healthpb.NewHealthClient(cc).Check(t.Context(), &healthpb.HealthCheckRequest{})
	if code(err) != codes.Unauthenticated {
		t.Errorf("health without a certificate: %v, want Unauthenticated", err)
	}
}

func TestUntrustedClientCA(t *testing.T) {
	e := newEnv(t)
	cert := e.PKI.Untrusted(t, apitest.MES) // the right name from the wrong CA
	c := stationv1.NewStationClient(e.Conn(t, &cert))
	_, err := c.CreateWorkOrder(t.Context(), &stationv1.CreateWorkOrderRequest{Id: "WO-X", Profile: "default", Serials: []string{"SN-1"}})
	// The handshake fails: the call never reaches the interceptors. With TLS 1.3 the client
	// may see the server's alert or only the connection it closed ("broken pipe").
	if code(err) != codes.Unavailable {
		t.Fatalf("CreateWorkOrder with an untrusted certificate: %v, want Unavailable (handshake failure)", err)
	}
	if _, err := e.Store.WorkOrder(t.Context(), "WO-X"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("work order created by an untrusted caller: %v", err)
	}
}

func TestWorkOrderRoundTrip(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	mes, admin, qa := e.Client(t, apitest.MES), e.Client(t, apitest.Admin), e.Client(t, apitest.QA)

	wo1, err := mes.CreateWorkOrder(ctx, &stationv1.CreateWorkOrderRequest{Id: "WO-1", Profile: "default", Serials: []string{"SN-1", "SN-2"}})
	if err != nil {
		t.Fatal(err)
	}
	if wo1.GetCreatedBy() != "mes:CN=mes-1" || wo1.GetStatus() != stationv1.WorkOrderStatus_WORK_ORDER_STATUS_OPEN || wo1.GetUnitsTotal() != 2 {
		t.Errorf("created %v", wo1)
	}
	wo2, err := admin.CreateWorkOrder(ctx, &stationv1.CreateWorkOrderRequest{Id: "WO-2", Profile: "default",
		Ranges: []*stationv1.SerialRange{{Prefix: "SN-", First: 1, Last: 250, Width: 4}}})
	if err != nil {
		t.Fatal(err)
	}
	if wo2.GetUnitsTotal() != 250 || len(wo2.GetRanges()) != 1 || wo2.GetCreatedBy() != "admin:CN=admin-1" {
		t.Errorf("created %v", wo2)
	}
	// Several ranges and serials are expanded into one serial list.
	wo3, err := mes.CreateWorkOrder(ctx, &stationv1.CreateWorkOrderRequest{Id: "WO-3", Profile: "default", Serials: []string{"A-9"},
		Ranges: []*stationv1.SerialRange{{Prefix: "A-", First: 1, Last: 3}, {Prefix: "B-", First: 7, Last: 8, Width: 2}}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"A-9", "A-1", "A-2", "A-3", "B-07", "B-08"}; !slices.Equal(wo3.GetSerials(), want) {
		t.Errorf("WO-3 serials %v, want %v", wo3.GetSerials(), want)
	}

	refusals := []struct {
		name string
		req  *stationv1.CreateWorkOrderRequest
		want codes.Code
	}{
		{"same id other content", &stationv1.CreateWorkOrderRequest{Id: "WO-1", Profile: "default", Serials: []string{"SN-9"}}, codes.AlreadyExists},
		{"unknown profile", &stationv1.CreateWorkOrderRequest{Id: "WO-9", Profile: "nope", Serials: []string{"SN-9"}}, codes.InvalidArgument},
		{"no serials", &stationv1.CreateWorkOrderRequest{Id: "WO-9", Profile: "default"}, codes.InvalidArgument},
		{"bad serial", &stationv1.CreateWorkOrderRequest{Id: "WO-9", Profile: "default", Serials: []string{"bad serial"}}, codes.InvalidArgument},
		{"range wider than width", &stationv1.CreateWorkOrderRequest{Id: "WO-9", Profile: "default",
			Ranges: []*stationv1.SerialRange{{Prefix: "S", First: 1, Last: 1000, Width: 3}}}, codes.InvalidArgument},
	}
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			if _, err := mes.CreateWorkOrder(ctx, r.req); code(err) != r.want {
				t.Errorf("%v, want %v", err, r.want)
			}
		})
	}
	// Creating the same work order again is idempotent.
	if again, err := mes.CreateWorkOrder(ctx, &stationv1.CreateWorkOrderRequest{Id: "WO-1", Profile: "default", Serials: []string{"SN-1", "SN-2"}}); err != nil ||
		!again.GetCreateTime().AsTime().Equal(wo1.GetCreateTime().AsTime()) {
		t.Errorf("repeated create: %v %v", again, err)
	}

	got, err := qa.GetWorkOrder(ctx, &stationv1.GetWorkOrderRequest{Id: "WO-1"})
	if err != nil || got.GetId() != "WO-1" || !slices.Equal(got.GetSerials(), []string{"SN-1", "SN-2"}) {
		t.Fatalf("GetWorkOrder = %v, %v", got, err)
	}
	if _, err := qa.GetWorkOrder(ctx, &stationv1.GetWorkOrderRequest{Id: "WO-404"}); code(err) != codes.NotFound {
		t.Errorf("GetWorkOrder of a missing id: %v, want NotFound", err)
	}

	closed, err := admin.CloseWorkOrder(ctx, &stationv1.CloseWorkOrderRequest{Id: "WO-1"})
	if err != nil || closed.GetStatus() != stationv1.WorkOrderStatus_WORK_ORDER_STATUS_CLOSED || closed.GetCloseTime() == nil {
		t.Fatalf("CloseWorkOrder = %v, %v", closed, err)
	}

	// Newest first, one per page.
	var ids []string
	req := &stationv1.ListWorkOrdersRequest{PageSize: 1}
	for {
		resp, err := qa.ListWorkOrders(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range resp.GetWorkOrders() {
			ids = append(ids, w.GetId())
		}
		if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
			break
		}
		if len(ids) > 10 {
			t.Fatal("listing does not end")
		}
	}
	if want := []string{"WO-3", "WO-2", "WO-1"}; !slices.Equal(ids, want) {
		t.Errorf("listing %v, want %v", ids, want)
	}
	open, err := qa.ListWorkOrders(ctx, &stationv1.ListWorkOrdersRequest{Status: stationv1.WorkOrderStatus_WORK_ORDER_STATUS_CLOSED})
	if err != nil || len(open.GetWorkOrders()) != 1 || open.GetWorkOrders()[0].GetId() != "WO-1" {
		t.Errorf("closed work orders: %v %v", open, err)
	}
	if _, err := qa.ListWorkOrders(ctx, &stationv1.ListWorkOrdersRequest{PageToken: "!!"}); code(err) != codes.InvalidArgument {
		t.Errorf("bad page token: %v, want InvalidArgument", err)
	}

	audits := []struct{ action, wo, principal string }{
		{store.EventWorkOrderCreated, "WO-1", "mes:CN=mes-1"},
		{store.EventWorkOrderCreated, "WO-2", "admin:CN=admin-1"},
		{store.EventWorkOrderClosed, "WO-1", "admin:CN=admin-1"},
	}
	for _, a := range audits {
		recs := auditBy(t, e.Store, a.action, "", "work_order", a.wo)
		if len(recs) == 0 {
			t.Errorf("no %s audit record for %s", a.action, a.wo)
			continue
		}
		if recs[0].Principal != a.principal || recs[0].Result != store.ResultOK {
			t.Errorf("%s %s audited as %s %s, want %s ok", a.action, a.wo, recs[0].Principal, recs[0].Result, a.principal)
		}
	}
	if recs := auditBy(t, e.Store, store.EventWorkOrderCreated, "", "work_order", "WO-1"); len(recs) != 2 || recs[1].Result != store.ResultError {
		t.Errorf("the refused re-creation of WO-1 is not audited as an error: %+v", recs)
	}
}

// writeLine writes six units: three done and one failed in WO-A, one failed and one stopped
// (running, no session) in WO-B.
func writeLine(t *testing.T, st *store.Store) map[string]travelertest.Written {
	t.Helper()
	units := []travelertest.Unit{
		{Serial: "SN-01", WorkOrder: "WO-A", Slot: "slot-1"},
		{Serial: "SN-02", WorkOrder: "WO-A"},
		{Serial: "SN-03", WorkOrder: "WO-A"},
		{Serial: "SN-04", WorkOrder: "WO-A", FailAt: "idevid_enroll", FailCode: workflow.CodeCARejected},
		{Serial: "SN-05", WorkOrder: "WO-B", FailAt: "ldevid_enroll", FailCode: workflow.CodeCAUnavailable},
		{Serial: "SN-06", WorkOrder: "WO-B", StopBefore: "verify"},
	}
	out := map[string]travelertest.Written{}
	for _, u := range units {
		u.Profile = "default"
		out[u.Serial] = travelertest.WriteUnit(t, st, u)
	}
	return out
}

func serialsOf(units []*stationv1.Unit) []string {
	var s []string
	for _, u := range units {
		s = append(s, u.GetSerial())
	}
	return s
}

func TestListUnits(t *testing.T) {
	e := newEnv(t)
	written := writeLine(t, e.Store)
	qa := e.Client(t, apitest.QA)
	ctx := t.Context()

	filters := []struct {
		name string
		req  *stationv1.ListUnitsRequest
		want []string
	}{
		{"all", &stationv1.ListUnitsRequest{}, []string{"SN-01", "SN-02", "SN-03", "SN-04", "SN-05", "SN-06"}},
		{"done", &stationv1.ListUnitsRequest{Status: stationv1.UnitStatus_UNIT_STATUS_DONE}, []string{"SN-01", "SN-02", "SN-03"}},
		{"failed", &stationv1.ListUnitsRequest{Status: stationv1.UnitStatus_UNIT_STATUS_FAILED}, []string{"SN-04", "SN-05"}},
		{"waiting", &stationv1.ListUnitsRequest{Status: stationv1.UnitStatus_UNIT_STATUS_WAITING}, []string{"SN-06"}},
		{"running", &stationv1.ListUnitsRequest{Status: stationv1.UnitStatus_UNIT_STATUS_RUNNING}, nil},
		{"work order", &stationv1.ListUnitsRequest{WorkOrder: "WO-B"}, []string{"SN-05", "SN-06"}},
		{"error code", &stationv1.ListUnitsRequest{ErrorCode: workflow.CodeCARejected}, []string{"SN-04"}},
		{"work order and status", &stationv1.ListUnitsRequest{WorkOrder: "WO-A", Status: stationv1.UnitStatus_UNIT_STATUS_FAILED}, []string{"SN-04"}},
	}
	for _, f := range filters {
		t.Run(f.name, func(t *testing.T) {
			resp, err := qa.ListUnits(ctx, f.req)
			if err != nil {
				t.Fatal(err)
			}
			if got := serialsOf(resp.GetUnits()); !slices.Equal(got, f.want) || resp.GetNextPageToken() != "" {
				t.Errorf("units %v token %q, want %v and no token", got, resp.GetNextPageToken(), f.want)
			}
		})
	}

	pages := []struct {
		name  string
		req   *stationv1.ListUnitsRequest
		pages [][]string
	}{
		{"all by two", &stationv1.ListUnitsRequest{PageSize: 2}, [][]string{{"SN-01", "SN-02"}, {"SN-03", "SN-04"}, {"SN-05", "SN-06"}}},
		{"done by two", &stationv1.ListUnitsRequest{PageSize: 2, Status: stationv1.UnitStatus_UNIT_STATUS_DONE}, [][]string{{"SN-01", "SN-02"}, {"SN-03"}}},
		{"all by three", &stationv1.ListUnitsRequest{PageSize: 3}, [][]string{{"SN-01", "SN-02", "SN-03"}, {"SN-04", "SN-05", "SN-06"}}},
	}
	for _, p := range pages {
		t.Run(p.name, func(t *testing.T) {
			for i := range p.pages {
				resp, err := qa.ListUnits(ctx, p.req)
				if err != nil {
					t.Fatal(err)
				}
				last := i == len(p.pages)-1
				if got := serialsOf(resp.GetUnits()); !slices.Equal(got, p.pages[i]) || (resp.GetNextPageToken() == "") != last {
					t.Fatalf("page %d: %v token %q, want %v and a token unless last", i, got, resp.GetNextPageToken(), p.pages[i])
				}
				p.req.PageToken = resp.GetNextPageToken()
			}
		})
	}

	// A token continues only the listing it came from, unchanged.
	first, err := qa.ListUnits(ctx, &stationv1.ListUnitsRequest{PageSize: 2})
	if err != nil || first.GetNextPageToken() == "" {
		t.Fatalf("first page: %v, %v", first, err)
	}
	tok := first.GetNextPageToken()
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		t.Fatal(err)
	}
	flipped := slices.Clone(raw)
	flipped[len(flipped)/2] ^= 1
	for _, bad := range []struct {
		name string
		req  *stationv1.ListUnitsRequest
		want string
	}{
		{"serial as token", &stationv1.ListUnitsRequest{PageToken: "SN-04"}, "not a token this station issued"},
		{"not base64", &stationv1.ListUnitsRequest{PageToken: "%%%"}, "not a token this station issued"},
		{"cut", &stationv1.ListUnitsRequest{PageToken: tok[:len(tok)-3]}, "was changed"},
		{"bit flipped", &stationv1.ListUnitsRequest{PageToken: base64.RawURLEncoding.EncodeToString(flipped)}, "was changed"},
		{"other filters", &stationv1.ListUnitsRequest{PageToken: tok, WorkOrder: "WO-A"}, "other filters"},
	} {
		_, err := qa.ListUnits(ctx, bad.req)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: %v, want InvalidArgument saying %q", bad.name, err, bad.want)
		}
	}
	// A unit added before the position and one after it: the next page continues where the
	// first ended and shows the later one.
	for _, serial := range []string{"SN-00", "SN-035"} {
		if _, err := e.Store.UpdateUnit(ctx, serial, func(u *store.UnitState) error { u.WorkOrderID = "WO-A"; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	next, err := qa.ListUnits(ctx, &stationv1.ListUnitsRequest{PageSize: 2, PageToken: tok})
	if got := serialsOf(next.GetUnits()); err != nil || !slices.Equal(got, []string{"SN-03", "SN-035"}) {
		t.Errorf("page after the token with units added: %v, %v; want [SN-03 SN-035]", got, err)
	}

	u, err := qa.GetUnit(ctx, &stationv1.GetUnitRequest{Serial: "SN-01"})
	if err != nil {
		t.Fatal(err)
	}
	if u.GetEkSha256() != sha(written["SN-01"].EKCert) || u.GetFixtureSlot() != "slot-1" || u.GetAttempts() != 1 ||
		u.GetWorkOrder() != "WO-A" || u.GetProfile() != "default" || u.GetStep() != "complete" || u.GetStatus() != stationv1.UnitStatus_UNIT_STATUS_DONE {
		t.Errorf("GetUnit(SN-01) = %v", u)
	}
	f, err := qa.GetUnit(ctx, &stationv1.GetUnitRequest{Serial: "SN-04"})
	if err != nil || f.GetErrorCode() != workflow.CodeCARejected || f.GetStep() != "idevid_enroll" || f.GetErrorMessage() == "" {
		t.Errorf("GetUnit(SN-04) = %v, %v", f, err)
	}
	// Work order progress counts its units.
	wo, err := e.Store.CreateWorkOrder(ctx, store.WorkOrder{ID: "WO-A", Profile: "default", Serials: []string{"SN-01", "SN-02", "SN-03", "SN-04", "SN-09"}})
	if err != nil {
		t.Fatal(err)
	}
	pb, err := qa.GetWorkOrder(ctx, &stationv1.GetWorkOrderRequest{Id: wo.ID})
	if err != nil || pb.GetUnitsTotal() != 5 || pb.GetUnitsDone() != 3 || pb.GetUnitsFailed() != 1 {
		t.Errorf("WO-A progress %v, %v: want total 5 done 3 failed 1", pb, err)
	}
}

func recvAll(t *testing.T, s stationv1.Station_WatchEventsClient) []*stationv1.Event {
	t.Helper()
	var out []*stationv1.Event
	for {
		ev, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
}

func TestWatchEvents(t *testing.T) {
	e := newEnv(t)
	writeLine(t, e.Store)
	ctx := t.Context()
	op := e.Client(t, apitest.Operator)
	stored, _, err := e.Store.OutboxAfter(ctx, 0, 100000)
	if err != nil {
		t.Fatal(err)
	}

	watch := func(req *stationv1.WatchEventsRequest) []*stationv1.Event {
		s, err := op.WatchEvents(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return recvAll(t, s)
	}
	all := watch(&stationv1.WatchEventsRequest{})
	if len(all) != len(stored) || len(all) < 50 {
		t.Fatalf("replayed %d events, the store holds %d", len(all), len(stored))
	}
	for i, ev := range all {
		if ev.GetToken() != strconv.FormatUint(stored[i].Seq, 10) || ev.GetKind() != stored[i].Type || ev.GetSerial() != stored[i].Serial {
			t.Fatalf("event %d = %v, want %+v", i, ev, stored[i])
		}
	}
	var failed *stationv1.Event
	for _, ev := range all {
		if ev.GetKind() == "unit.failed" && ev.GetSerial() == "SN-04" {
			failed = ev
		}
	}
	if failed == nil || failed.GetErrorCode() != workflow.CodeCARejected || failed.GetPrincipal() != "station" {
		t.Errorf("unit.failed event of SN-04: %v", failed)
	}

	resumed := watch(&stationv1.WatchEventsRequest{AfterToken: all[9].GetToken()})
	if len(resumed) != len(all)-10 || resumed[0].GetToken() != all[10].GetToken() {
		t.Errorf("resuming after token %s: %d events from %s, want %d from %s", all[9].GetToken(), len(resumed),
			resumed[0].GetToken(), len(all)-10, all[10].GetToken())
	}
	one := watch(&stationv1.WatchEventsRequest{Serial: "SN-02"})
	if len(one) == 0 {
		t.Fatal("no events for SN-02")
	}
	for _, ev := range one {
		if ev.GetSerial() != "SN-02" {
			t.Fatalf("serial filter let through %v", ev)
		}
	}
	if s, err := op.WatchEvents(ctx, &stationv1.WatchEventsRequest{AfterToken: "x"}); err == nil {
		if _, err = s.Recv(); code(err) != codes.InvalidArgument {
			t.Errorf("bad token: %v, want InvalidArgument", err)
		}
	}

	// Follow from the last token: the next event arrives.
	fctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	s, err := op.WatchEvents(fctx, &stationv1.WatchEventsRequest{AfterToken: all[len(all)-1].GetToken(), Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	mes := e.Client(t, apitest.MES)
	if _, err := mes.CreateWorkOrder(ctx, &stationv1.CreateWorkOrderRequest{Id: "WO-F", Profile: "default", Serials: []string{"SN-F"}}); err != nil {
		t.Fatal(err)
	}
	ev, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if ev.GetKind() != store.EventWorkOrderCreated || !strings.Contains(ev.GetMessage(), "work_order=WO-F") {
		t.Errorf("followed event %v, want work_order.created of WO-F", ev)
	}
	admin := e.Client(t, apitest.Admin)
	if _, err := admin.AuthorizeRework(ctx, &stationv1.AuthorizeReworkRequest{Serial: "SN-04", Reason: "new CA"}); err != nil {
		t.Fatal(err)
	}
	ev, err = s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if ev.GetKind() != store.EventReworkAuthorized || ev.GetSerial() != "SN-04" || ev.GetPrincipal() != "admin:CN=admin-1" {
		t.Errorf("followed event %v, want rework.authorized of SN-04 by admin", ev)
	}
	// Shutdown ends following streams, so that a graceful stop does not wait for clients.
	e.API.Shutdown()
	if _, err := s.Recv(); code(err) != codes.Unavailable {
		t.Errorf("following stream after Shutdown: %v, want Unavailable", err)
	}
}

func TestGetTraveler(t *testing.T) {
	e := newEnv(t)
	written := writeLine(t, e.Store)
	tr, err := e.Client(t, apitest.QA).GetTraveler(t.Context(), &stationv1.GetTravelerRequest{Serial: "SN-02"})
	if err != nil {
		t.Fatal(err)
	}
	var rec traveler.Record
	if err := json.Unmarshal(tr.GetJson(), &rec); err != nil {
		t.Fatal(err)
	}
	if tr.GetSerial() != "SN-02" || rec.Serial != "SN-02" || rec.Result != "done" || rec.IDevID == nil ||
		rec.IDevID.SHA256 != sha(written["SN-02"].IDevID) || rec.LDevID.SHA256 != sha(written["SN-02"].LDevID) || rec.StationID != "st-test" {
		t.Errorf("traveler %s", tr.GetJson())
	}
	if _, err := e.Client(t, apitest.QA).GetTraveler(t.Context(), &stationv1.GetTravelerRequest{Serial: "SN-404"}); code(err) != codes.NotFound {
		t.Errorf("traveler of a missing unit: %v, want NotFound", err)
	}
}

func TestAbortAndRework(t *testing.T) {
	e := newEnv(t)
	writeLine(t, e.Store)
	ctx := t.Context()
	op, admin := e.Client(t, apitest.Operator), e.Client(t, apitest.Admin)

	done := e.startRun(t, ctx, "SN-07")
	u, err := op.GetUnit(ctx, &stationv1.GetUnitRequest{Serial: "SN-07"})
	if err != nil || u.GetStatus() != stationv1.UnitStatus_UNIT_STATUS_RUNNING {
		t.Fatalf("SN-07 while its session runs: %v, %v", u, err)
	}

	refusals := []struct {
		name string
		req  *stationv1.AbortUnitRequest
		want codes.Code
	}{
		{"no reason", &stationv1.AbortUnitRequest{Serial: "SN-07"}, codes.InvalidArgument},
		{"no serial", &stationv1.AbortUnitRequest{Reason: "x"}, codes.InvalidArgument},
		{"unknown unit", &stationv1.AbortUnitRequest{Serial: "SN-404", Reason: "x"}, codes.NotFound},
		{"done unit", &stationv1.AbortUnitRequest{Serial: "SN-01", Reason: "x"}, codes.FailedPrecondition},
	}
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			if _, err := op.AbortUnit(ctx, r.req); code(err) != r.want {
				t.Errorf("%v, want %v", err, r.want)
			}
		})
	}
	if _, err := e.Store.Unit(ctx, "SN-404"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("aborting an unknown serial created it: %v", err)
	}

	u, err = op.AbortUnit(ctx, &stationv1.AbortUnitRequest{Serial: "SN-07", Reason: "fixture jammed"})
	if err != nil {
		t.Fatal(err)
	}
	if u.GetStatus() != stationv1.UnitStatus_UNIT_STATUS_FAILED || u.GetErrorCode() != workflow.CodeAborted ||
		!strings.Contains(u.GetErrorMessage(), "operator:CN=operator-1") || !strings.Contains(u.GetErrorMessage(), "fixture jammed") {
		t.Errorf("aborted unit %v", u)
	}
	select {
	case out := <-done:
		if out.Code != workflow.CodeAborted {
			t.Errorf("run outcome %+v, want ABORTED", out)
		}
	case <-time.After(time.Minute):
		t.Fatal("the unit's session did not end after the abort")
	}
	recs := auditBy(t, e.Store, store.EventUnitUpdated, "SN-07", "status", "aborted")
	if len(recs) != 1 || recs[0].Principal != "operator:CN=operator-1" {
		t.Errorf("abort audit records %+v, want one by operator:CN=operator-1", recs)
	}

	if _, err := admin.AuthorizeRework(ctx, &stationv1.AuthorizeReworkRequest{Serial: "SN-04"}); code(err) != codes.InvalidArgument {
		t.Errorf("rework without a reason: %v, want InvalidArgument", err)
	}
	if _, err := admin.AuthorizeRework(ctx, &stationv1.AuthorizeReworkRequest{Serial: "SN-404", Reason: "x"}); code(err) != codes.NotFound {
		t.Errorf("rework of an unknown unit: %v, want NotFound", err)
	}
	if _, err := admin.AuthorizeRework(ctx, &stationv1.AuthorizeReworkRequest{Serial: "SN-07", Reason: "retry"}); err != nil {
		t.Errorf("rework of an aborted unit: %v", err)
	}
	st, err := e.Store.Unit(ctx, "SN-07")
	if err != nil || st.Rework == nil || st.Rework.By != "admin:CN=admin-1" || st.Rework.Reason != "retry" {
		t.Errorf("rework recorded as %+v, %v", st.Rework, err)
	}
	if recs := auditBy(t, e.Store, store.EventReworkAuthorized, "SN-07", "", ""); len(recs) != 1 || recs[0].Principal != "admin:CN=admin-1" {
		t.Errorf("rework audit records %+v", recs)
	}
}

// TestDecideHold puts a unit on hold as the workflow does after a security failure: it is
// reported on hold, only a hold decision (not a plain rework) releases it, and the decision is
// audited with its principal.
func TestDecideHold(t *testing.T) {
	e := newEnv(t)
	writeLine(t, e.Store)
	ctx := t.Context()
	if _, err := e.Store.UpdateUnit(ctx, "SN-HOLD", func(s *store.UnitState) error {
		s.Status, s.ErrorCode = store.StatusHold, workflow.CodeCertInvalid
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	qa, admin := e.Client(t, apitest.QA), e.Client(t, apitest.Admin)
	u, err := qa.GetUnit(ctx, &stationv1.GetUnitRequest{Serial: "SN-HOLD"})
	if err != nil || u.GetStatus() != stationv1.UnitStatus_UNIT_STATUS_HOLD {
		t.Fatalf("held unit: %v, %v", u, err)
	}
	if _, err := admin.AuthorizeRework(ctx, &stationv1.AuthorizeReworkRequest{Serial: "SN-HOLD", Reason: "x"}); code(err) != codes.FailedPrecondition {
		t.Errorf("plain rework of a held unit: %v, want FailedPrecondition", err)
	}
	refusals := []struct {
		name string
		req  *stationv1.DecideHoldRequest
		want codes.Code
	}{
		{"no decision", &stationv1.DecideHoldRequest{Serial: "SN-HOLD", Reason: "x"}, codes.InvalidArgument},
		{"no reason", &stationv1.DecideHoldRequest{Serial: "SN-HOLD", Decision: stationv1.HoldDecision_HOLD_DECISION_SCRAP}, codes.InvalidArgument},
		{"not on hold", &stationv1.DecideHoldRequest{Serial: "SN-01", Decision: stationv1.HoldDecision_HOLD_DECISION_SCRAP, Reason: "x"}, codes.FailedPrecondition},
	}
	for _, r := range refusals {
		if _, err := qa.DecideHold(ctx, r.req); code(err) != r.want {
			t.Errorf("%s: %v, want %v", r.name, err, r.want)
		}
	}
	u, err = qa.DecideHold(ctx, &stationv1.DecideHoldRequest{Serial: "SN-HOLD", Decision: stationv1.HoldDecision_HOLD_DECISION_SCRAP, Reason: "counterfeit TPM"})
	if err != nil || u.GetStatus() != stationv1.UnitStatus_UNIT_STATUS_SCRAPPED {
		t.Fatalf("scrap: %v, %v", u, err)
	}
	recs := auditBy(t, e.Store, store.EventHoldDecided, "SN-HOLD", "decision", store.DecisionScrap)
	if len(recs) != 1 || recs[0].Principal != "qa:CN=qa-1" || recs[0].Details["reason"] != "counterfeit TPM" {
		t.Errorf("hold decision audit records %+v", recs)
	}
	if _, err := admin.AuthorizeRework(ctx, &stationv1.AuthorizeReworkRequest{Serial: "SN-HOLD", Reason: "x"}); code(err) != codes.FailedPrecondition {
		t.Errorf("rework of a scrapped unit: %v, want FailedPrecondition", err)
	}
}

func TestReworkOfUnendedUnit(t *testing.T) {
	e := newEnv(t)
	writeLine(t, e.Store)
	_, err := e.Client(t, apitest.Admin).AuthorizeRework(t.Context(), &stationv1.AuthorizeReworkRequest{Serial: "SN-06", Reason: "x"})
	if code(err) != codes.FailedPrecondition {
		t.Errorf("rework of a unit that has not ended: %v, want FailedPrecondition", err)
	}
}

func TestGetStatus(t *testing.T) {
	e := newEnv(t)
	writeLine(t, e.Store)
	ctx, cancel := context.WithCancel(t.Context())
	done := e.startRun(t, ctx, "SN-07")
	st, err := e.Client(t, apitest.QA).GetStatus(t.Context(), &stationv1.GetStatusRequest{})
	cancel()
	<-done
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"station", st.GetStationId(), "st-test"},
		{"version", st.GetVersion(), "v-test"},
		{"agents", st.GetAgentsConnected(), uint32(3)},
		{"done", st.GetUnitsDone(), uint64(3)},
		{"failed", st.GetUnitsFailed(), uint64(2)},
		// A unit past its first checks, blocked at its first key; SN-06 waits for its agent.
		{"running at idevid_key", st.GetUnitsPerStep()["idevid_key"], uint32(1)},
		{"steps", len(st.GetUnitsPerStep()), 1},
		{"window", st.GetWindowMinutes(), uint32(15)},
		// The store is 30 s old (storeAgeClock): three units over the one-minute floor.
		{"units per hour", st.GetUnitsPerHour(), 180.0},
		{"cas", len(st.GetCas()), 1},
		{"ca p95", st.GetCas()[0].GetP95Ms(), 300.0},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

// TestOnePrincipal creates a work order as an MES and reworks a unit of it as an admin: the
// audit trail, the event stream, the work order's created_by and the unit's traveler all name
// each caller with the same principal string.
func TestOnePrincipal(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	const mesP, adminP = "mes:CN=mes-1", "admin:CN=admin-1"
	mes, admin := e.Client(t, apitest.MES), e.Client(t, apitest.Admin)
	wo, err := mes.CreateWorkOrder(ctx, &stationv1.CreateWorkOrderRequest{Id: "WO-P", Profile: "default", Serials: []string{"SN-P1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Store.UpdateUnit(ctx, "SN-P1", func(s *store.UnitState) error {
		s.WorkOrderID, s.Profile, s.Status, s.ErrorCode = "WO-P", "default", store.StatusFailed, workflow.CodeCAUnavailable
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.AuthorizeRework(ctx, &stationv1.AuthorizeReworkRequest{Serial: "SN-P1", Reason: "new CA"}); err != nil {
		t.Fatal(err)
	}

	if wo.GetCreatedBy() != mesP {
		t.Errorf("work order created_by %q, want %q", wo.GetCreatedBy(), mesP)
	}
	if recs := auditBy(t, e.Store, store.EventWorkOrderCreated, "", "work_order", "WO-P"); len(recs) != 1 || recs[0].Principal != mesP {
		t.Errorf("work order audit records %+v, want one by %s", recs, mesP)
	}
	s, err := e.Client(t, apitest.QA).WatchEvents(ctx, &stationv1.WatchEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	principals := map[string]string{}
	for {
		ev, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if stationv1.ParseEventKind(ev.GetKind()) == stationv1.EventKind_EVENT_KIND_UNSPECIFIED {
			t.Errorf("event kind %q is not a documented EventKind", ev.GetKind())
		}
		principals[ev.GetKind()] = ev.GetPrincipal()
	}
	if principals[stationv1.KindWorkOrderCreated] != mesP || principals[stationv1.KindReworkAuthorized] != adminP ||
		principals[stationv1.KindUnitCreated] != store.PrincipalStation {
		t.Errorf("event principals %v, want work_order.created by %s, rework.authorized by %s, unit.created by station", principals, mesP, adminP)
	}
	tr, err := admin.GetTraveler(ctx, &stationv1.GetTravelerRequest{Serial: "SN-P1"})
	if err != nil {
		t.Fatal(err)
	}
	var rec traveler.Record
	if err := json.Unmarshal(tr.GetJson(), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.WorkOrderCreatedBy != mesP || len(rec.Actions) != 1 || rec.Actions[0].Principal != adminP || rec.Actions[0].Kind != stationv1.KindReworkAuthorized {
		t.Errorf("traveler names work order creator %q and actions %+v", rec.WorkOrderCreatedBy, rec.Actions)
	}
}

// TestAuditVerifyAndTrail verifies the chain through the API (ok), reads a unit's trail, then
// breaks a stored unit state on the file and sees VerifyAudit name it.
func TestAuditVerifyAndTrail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "station.db")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	open := func() *store.Store {
		st, err := store.Open(path, store.Options{StationID: "st-test", Checkpoints: store.CheckpointOptions{Signer: key, Every: 1000, Interval: time.Hour}})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	st := open()
	ctx := t.Context()
	if _, err := st.UpdateUnit(ctx, "SN-1", func(u *store.UnitState) error { u.Status = store.StatusRunning; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpdateUnit(ctx, "SN-1", func(u *store.UnitState) error { u.Status = store.StatusFailed; return nil }); err != nil {
		t.Fatal(err)
	}
	e := apitest.Start(t, api.Config{Store: st})
	qa := e.Client(t, apitest.QA)
	r, err := qa.VerifyAudit(ctx, &stationv1.VerifyAuditRequest{})
	if err != nil || !r.GetOk() || r.GetCheckpoints() < 1 || r.GetRecords() == 0 || r.GetValues() == 0 || len(r.GetKeySha256()) != 32 {
		t.Fatalf("VerifyAudit: %v, %v", r, err)
	}
	trail, err := qa.GetUnitAudit(ctx, &stationv1.GetUnitAuditRequest{Serial: "SN-1"})
	if err != nil || len(trail.GetRecords()) != 2 {
		t.Fatalf("GetUnitAudit: %v, %v", trail, err)
	}
	first, second := trail.GetRecords()[0], trail.GetRecords()[1]
	if first.GetCheckpointSeq() <= first.GetSeq() || second.GetCheckpointSeq() != 0 || first.GetWrites() == 0 || first.GetAction() != store.EventUnitUpdated {
		t.Errorf("trail: %v; want the first record under a checkpoint, the second not yet", trail)
	}
	if _, err := qa.GetUnitAudit(ctx, &stationv1.GetUnitAuditRequest{Serial: "SN-NONE"}); code(err) != codes.NotFound {
		t.Errorf("GetUnitAudit of an unknown unit: %v, want NotFound", err)
	}

	// Break the unit's stored state: "failed" back to "running".
	e.API.Shutdown()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("unit_states"))
		return b.Put([]byte("SN-1"), bytes.Replace(b.Get([]byte("SN-1")), []byte(`"failed"`), []byte(`"running"`), 1))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	st = open()
	t.Cleanup(func() { st.Close() })
	e = apitest.Start(t, api.Config{Store: st})
	r, err = e.Client(t, apitest.QA).VerifyAudit(ctx, &stationv1.VerifyAuditRequest{})
	if err != nil || r.GetOk() || r.GetErrorCode() != store.CodeAuditChainBroken || r.GetBucket() != "unit_states" || r.GetKey() != "SN-1" || r.GetBadSeq() == 0 {
		t.Fatalf("VerifyAudit after tampering: %v, %v; want AUDIT_CHAIN_BROKEN naming unit_states SN-1", r, err)
	}
}
