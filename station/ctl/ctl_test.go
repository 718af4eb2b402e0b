package ctl_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/reports/traveler"
	"github.com/devid-station/devid/reports/traveler/travelertest"
	"github.com/devid-station/devid/station/api"
	"github.com/devid-station/devid/station/api/apitest"
	"github.com/devid-station/devid/station/ctl"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
)

type fixture struct {
	env   *apitest.Env
	flags map[string][]string // global flags per client common name
}

func newFixture(t *testing.T) *fixture { return newFixtureRunner(t, nil) }

// newFixtureRunner is newFixture with the runner the API sees wrapped by wrap, when set.
func newFixtureRunner(t *testing.T, wrap func(api.Runner) api.Runner) *fixture {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "station.db"), store.Options{StationID: "st-ctl"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	runner, err := workflow.New(workflow.Config{Journal: st, EKRoots: []*x509.Certificate{travelertest.NewCA(t, "EK root").Cert}})
	if err != nil {
		t.Fatal(err)
	}
	var r api.Runner = runner
	if wrap != nil {
		r = wrap(runner)
	}
	env := apitest.Start(t, api.Config{Store: st, Runner: r, Version: "v-ctl", PollInterval: 20 * time.Millisecond})
	f := &fixture{env: env, flags: map[string][]string{}}
	ca := env.PKI.CAFile(t)
	for _, cn := range []string{apitest.Operator, apitest.MES, apitest.QA, apitest.Admin} {
		cert, key := env.PKI.Files(t, cn, env.PKI.Client(t, cn))
		f.flags[cn] = []string{"-addr", env.Addr, "-cert", cert, "-key", key, "-ca", ca}
	}
	cert, key := env.PKI.Files(t, "untrusted", env.PKI.Untrusted(t, apitest.Admin))
	f.flags["untrusted"] = []string{"-addr", env.Addr, "-cert", cert, "-key", key, "-ca", ca}
	return f
}

// run runs stationctl as cn and returns its output.
func (f *fixture) run(t *testing.T, cn string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := ctl.Run(t.Context(), append(append([]string(nil), f.flags[cn]...), args...), &out)
	return out.String(), err
}

func (f *fixture) mustRun(t *testing.T, cn string, args ...string) string {
	t.Helper()
	out, err := f.run(t, cn, args...)
	if err != nil {
		t.Fatalf("stationctl %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// rows splits a table into rows of fields.
func rows(out string) [][]string {
	var r [][]string
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		r = append(r, strings.Fields(line))
	}
	return r
}

// column returns the value of column name in the table row i (1 = first data row).
func column(t *testing.T, out string, i int, name string) string {
	t.Helper()
	r := rows(out)
	for j, h := range r[0] {
		if h == name {
			if i >= len(r) || j >= len(r[i]) {
				t.Fatalf("no row %d column %s in\n%s", i, name, out)
			}
			return r[i][j]
		}
	}
	t.Fatalf("no column %s in\n%s", name, out)
	return ""
}

func unmarshal(t *testing.T, out string, m proto.Message) {
	t.Helper()
	if err := protojson.Unmarshal([]byte(out), m); err != nil {
		t.Fatalf("output is not protojson of %T: %v\n%s", m, err, out)
	}
}

func TestWorkOrderCommands(t *testing.T) {
	f := newFixture(t)
	out := f.mustRun(t, apitest.MES, "workorder", "create", "--id", "WO-1", "--profile", "default", "--range", "SN-:1-8:4")
	checks := []struct{ col, want string }{
		{"ID", "WO-1"}, {"PROFILE", "default"}, {"STATUS", "open"}, {"SERIALS", "SN-0001..SN-0008"},
		{"TOTAL", "8"}, {"DONE", "0"}, {"CREATED_BY", "mes:CN=mes-1"}, {"CLOSED", "-"},
	}
	for _, c := range checks {
		if got := column(t, out, 1, c.col); got != c.want {
			t.Errorf("create: %s = %q, want %q\n%s", c.col, got, c.want, out)
		}
	}
	// Columns line up: every row's fields start at the header's offsets.
	lines := strings.Split(out, "\n")
	if strings.Index(lines[0], "STATUS") != strings.Index(lines[1], "open") {
		t.Errorf("table not aligned:\n%s", out)
	}

	out = f.mustRun(t, apitest.Admin, "-o", "json", "workorder", "create", "--id", "WO-2", "--profile", "default",
		"--serial", "A-1", "--serial", "A-2")
	var wo stationv1.WorkOrder
	unmarshal(t, out, &wo)
	if wo.GetId() != "WO-2" || len(wo.GetSerials()) != 2 || wo.GetCreatedBy() != "admin:CN=admin-1" {
		t.Errorf("create -o json: %v", &wo)
	}

	out = f.mustRun(t, apitest.QA, "workorder", "get", "WO-1")
	if column(t, out, 1, "ID") != "WO-1" || column(t, out, 1, "TOTAL") != "8" {
		t.Errorf("get:\n%s", out)
	}
	out = f.mustRun(t, apitest.MES, "workorder", "close", "WO-2")
	if column(t, out, 1, "STATUS") != "closed" {
		t.Errorf("close:\n%s", out)
	}
	out = f.mustRun(t, apitest.QA, "workorder", "list")
	if r := rows(out); len(r) != 3 || r[1][0] != "WO-2" || r[2][0] != "WO-1" {
		t.Errorf("list (newest first):\n%s", out)
	}
	out = f.mustRun(t, apitest.QA, "-o", "json", "workorder", "list", "--status", "open")
	var list stationv1.ListWorkOrdersResponse
	unmarshal(t, out, &list)
	if len(list.GetWorkOrders()) != 1 || list.GetWorkOrders()[0].GetId() != "WO-1" {
		t.Errorf("list --status open -o json:\n%s", out)
	}
}

// writeUnits writes three units and returns the roots of their DevID certificates.
func writeUnits(t *testing.T, st *store.Store) *x509.CertPool {
	t.Helper()
	roots := x509.NewCertPool()
	for _, u := range []travelertest.Unit{
		{Serial: "SN-0001", WorkOrder: "WO-1", Slot: "s1"},
		{Serial: "SN-0002", WorkOrder: "WO-1", FailAt: "idevid_enroll", FailCode: workflow.CodeCARejected},
		{Serial: "SN-0003", WorkOrder: "WO-1", StopBefore: "verify"},
	} {
		u.Profile = "default"
		roots.AddCert(travelertest.WriteUnit(t, st, u).DevIDRoot)
	}
	return roots
}

func TestUnitCommands(t *testing.T) {
	f := newFixture(t)
	writeUnits(t, f.env.Store)

	out := f.mustRun(t, apitest.QA, "unit", "list")
	if r := rows(out); len(r) != 4 {
		t.Fatalf("unit list:\n%s", out)
	}
	wantRows := []struct{ serial, status, errCode string }{
		{"SN-0001", "done", "-"}, {"SN-0002", "failed", workflow.CodeCARejected}, {"SN-0003", "waiting", "-"},
	}
	for i, w := range wantRows {
		if column(t, out, i+1, "SERIAL") != w.serial || column(t, out, i+1, "STATUS") != w.status || column(t, out, i+1, "ERROR") != w.errCode {
			t.Errorf("unit list row %d, want %+v:\n%s", i+1, w, out)
		}
	}
	out = f.mustRun(t, apitest.QA, "-o", "json", "unit", "list", "--status", "failed", "--error-code", workflow.CodeCARejected, "--work-order", "WO-1")
	var list stationv1.ListUnitsResponse
	unmarshal(t, out, &list)
	if len(list.GetUnits()) != 1 || list.GetUnits()[0].GetSerial() != "SN-0002" {
		t.Errorf("unit list with filters:\n%s", out)
	}
	out = f.mustRun(t, apitest.QA, "unit", "list", "--limit", "1")
	if r := rows(out); len(r) != 2 {
		t.Errorf("unit list --limit 1:\n%s", out)
	}

	out = f.mustRun(t, apitest.Operator, "unit", "get", "SN-0002")
	if column(t, out, 1, "STEP") != "idevid_enroll" || !strings.Contains(out, "error: test failure at idevid_enroll") {
		t.Errorf("unit get:\n%s", out)
	}
	out = f.mustRun(t, apitest.Operator, "unit", "abort", "SN-0003", "--reason", "fixture jammed")
	if column(t, out, 1, "STATUS") != "failed" || column(t, out, 1, "ERROR") != workflow.CodeAborted {
		t.Errorf("unit abort:\n%s", out)
	}
	out = f.mustRun(t, apitest.Admin, "-o", "json", "unit", "rework", "SN-0003", "--reason", "retry")
	var u stationv1.Unit
	unmarshal(t, out, &u)
	if u.GetSerial() != "SN-0003" {
		t.Errorf("unit rework -o json:\n%s", out)
	}
	st, err := f.env.Store.Unit(t.Context(), "SN-0003")
	if err != nil || st.Rework == nil || st.Rework.By != "admin:CN=admin-1" {
		t.Errorf("rework not recorded: %+v %v", st.Rework, err)
	}

	if _, err := f.env.Store.UpdateUnit(t.Context(), "SN-0004", func(s *store.UnitState) error {
		s.Status, s.ErrorCode = store.StatusHold, workflow.CodeActivationFailed
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	out = f.mustRun(t, apitest.QA, "unit", "decide", "SN-0004", "--decision", "rework", "--reason", "reseated the TPM")
	if column(t, out, 1, "STATUS") != "hold" {
		t.Errorf("unit decide:\n%s", out)
	}
	st, err = f.env.Store.Unit(t.Context(), "SN-0004")
	if err != nil || st.Rework == nil || st.Rework.By != "qa:CN=qa-1" || st.Rework.Reason != "reseated the TPM" {
		t.Errorf("hold decision not recorded: %+v %v", st.Rework, err)
	}
}

// TestReleaseEK releases a unit's EK binding with stationctl: only an admin may, with a
// reason, and the release is in the audit trail with the admin and the reason.
func TestReleaseEK(t *testing.T) {
	f := newFixture(t)
	writeUnits(t, f.env.Store)
	ctx := t.Context()
	before, err := f.env.Store.Unit(ctx, "SN-0001")
	if err != nil || before.EKFingerprint == "" {
		t.Fatalf("SN-0001 has no EK binding: %+v %v", before, err)
	}
	if _, err := f.run(t, apitest.Operator, "unit", "release-ek", "SN-0001", "--reason", "rma"); err == nil || !strings.Contains(err.Error(), "PermissionDenied") {
		t.Errorf("release by an operator: %v, want PermissionDenied", err)
	}
	if _, err := f.run(t, apitest.Admin, "unit", "release-ek", "SN-0001"); ctl.ExitCode(err) != 2 {
		t.Errorf("release without a reason: %v, want a usage error", err)
	}
	out := f.mustRun(t, apitest.Admin, "-o", "json", "unit", "release-ek", "SN-0001", "--reason", "RMA 7: TPM replaced")
	var u stationv1.Unit
	unmarshal(t, out, &u)
	if u.GetSerial() != "SN-0001" {
		t.Errorf("unit release-ek -o json:\n%s", out)
	}
	if _, err := f.env.Store.UnitByEK(ctx, before.EKFingerprint); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("EK still bound after its release: %v", err)
	}
	recs, err := f.env.Store.AuditAfter(ctx, 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, a := range recs {
		if a.Action == store.EventEKReleased && a.Serial == "SN-0001" {
			found = a.Principal == "admin:CN=admin-1" && a.Details["reason"] == "RMA 7: TPM replaced" && slices.Contains(a.Fingerprints, before.EKFingerprint)
		}
	}
	if !found {
		t.Error("no audit record of the release by admin:CN=admin-1 with its reason and fingerprint")
	}
	if _, err := f.run(t, apitest.Admin, "unit", "release-ek", "SN-0001", "--reason", "again"); err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Errorf("releasing an unbound unit: %v, want NotFound", err)
	}
}

// TestRefusals lists the sessions the station refused before their first checks passed.
func TestRefusals(t *testing.T) {
	f := newFixture(t)
	for _, r := range []store.Refusal{
		{Peer: "10.0.0.7:4000", Serial: "SN-9001", Code: workflow.CodeNotAuthorized, Message: "not in a work order", Fingerprints: []string{"ab"}},
		{Peer: "10.0.0.8:4000", Serial: "SN-0001", Code: workflow.CodeEKUntrusted, Message: "unknown vendor"},
	} {
		if err := f.env.Store.RecordRefusal(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	out := f.mustRun(t, apitest.Operator, "refusals")
	if column(t, out, 1, "SERIAL") != "SN-9001" || column(t, out, 2, "CODE") != workflow.CodeEKUntrusted || !strings.Contains(out, "2 refused sessions in all") {
		t.Errorf("refusals:\n%s", out)
	}
	out = f.mustRun(t, apitest.QA, "-o", "json", "refusals", "--serial", "SN-0001")
	var resp stationv1.ListRefusalsResponse
	unmarshal(t, out, &resp)
	if len(resp.GetRefusals()) != 1 || resp.GetRefusals()[0].GetPeer() != "10.0.0.8:4000" || resp.GetTotal() != 2 {
		t.Errorf("refusals --serial -o json:\n%s", out)
	}
}

func TestTravelerAndStatus(t *testing.T) {
	f := newFixture(t)
	writeUnits(t, f.env.Store)

	out := f.mustRun(t, apitest.QA, "-o", "json", "traveler", "SN-0001")
	var rec traveler.Record
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		t.Fatalf("traveler -o json: %v\n%s", err, out)
	}
	if rec.Serial != "SN-0001" || rec.Result != "done" || rec.IDevID == nil {
		t.Errorf("traveler -o json:\n%s", out)
	}
	out = f.mustRun(t, apitest.QA, "traveler", "SN-0001")
	fields := map[string]string{}
	for _, r := range rows(out) {
		if len(r) >= 2 {
			fields[strings.Join(r[:len(r)-1], " ")] = r[len(r)-1]
		}
	}
	steps := map[string]bool{}
	for _, r := range rows(out[strings.Index(out, "\nSTEP"):]) {
		if len(r) > 0 {
			steps[r[0]] = true
		}
	}
	if !steps["verify_ek"] || !steps["complete"] || len(steps) != 16 {
		t.Errorf("traveler steps table: %v", steps)
	}
	for k, want := range map[string]string{"serial": "SN-0001", "result": "done", "attempts": "1", "fixture slot": "s1",
		"check IDevID_signature": "ok"} {
		if fields[k] != want {
			t.Errorf("traveler table: %s = %q, want %q:\n%s", k, fields[k], want, out)
		}
	}

	// A failure shows its code once, then the message.
	out = f.mustRun(t, apitest.QA, "traveler", "SN-0002")
	if want := "\nerror         CA_REJECTED: test failure at idevid_enroll\n"; !strings.Contains(out, want) {
		t.Errorf("traveler of a failed unit: want %q:\n%s", want, out)
	}

	out = f.mustRun(t, apitest.QA, "status")
	for _, want := range []string{"station           st-ctl", "version           v-ctl", "units done        1", "units failed      1", "CA  BREAKER"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	out = f.mustRun(t, apitest.QA, "-o", "json", "status")
	var s stationv1.Status
	unmarshal(t, out, &s)
	if s.GetStationId() != "st-ctl" || s.GetUnitsDone() != 1 {
		t.Errorf("status -o json:\n%s", out)
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestEventsCommand(t *testing.T) {
	f := newFixture(t)
	writeUnits(t, f.env.Store)

	out := f.mustRun(t, apitest.QA, "events", "--serial", "SN-0002")
	r := rows(out)
	if r[0][0] != "TOKEN" || len(r) < 10 {
		t.Fatalf("events:\n%s", out)
	}
	for _, row := range r[1:] {
		if row[2] != "SN-0002" {
			t.Fatalf("events --serial let through %v", row)
		}
	}
	last := r[len(r)-1]
	if last[3] != "unit.failed" || last[5] != workflow.CodeCARejected {
		t.Errorf("last event %v, want unit.failed CA_REJECTED", last)
	}

	out = f.mustRun(t, apitest.QA, "-o", "json", "events", "--after", r[len(r)-2][0], "--serial", "SN-0002")
	var ev stationv1.Event
	unmarshal(t, strings.TrimSpace(out), &ev)
	if ev.GetToken() != last[0] || ev.GetKind() != "unit.failed" {
		t.Errorf("events --after -o json: %s", out)
	}

	// --follow prints new events until interrupted.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var buf syncBuffer
	done := make(chan error, 1)
	go func() {
		args := append(append([]string(nil), f.flags[apitest.QA]...), "events", "--follow", "--after", last[0])
		done <- ctl.Run(ctx, args, &buf)
	}()
	if _, err := f.env.Store.CreateWorkOrder(t.Context(), store.WorkOrder{ID: "WO-F", Profile: "default", Serials: []string{"X-1"}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(buf.String(), "work_order=WO-F") {
		if time.Now().After(deadline) {
			t.Fatalf("followed event not printed:\n%s", buf.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("events --follow ended with %v after an interrupt", err)
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"unit", "-h"}, {"unit", "list", "-h"}, {"workorder", "create", "--help"}, {"traveler", "-h"}} {
		var out bytes.Buffer
		if err := ctl.Run(t.Context(), args, &out); err != nil || !strings.HasPrefix(out.String(), "usage: stationctl") {
			t.Errorf("stationctl %s: %v (exit %d), output %q; want the usage and exit 0", strings.Join(args, " "), err, ctl.ExitCode(err), out.String())
		}
	}
}

func TestErrors(t *testing.T) {
	f := newFixture(t)
	cases := []struct {
		name     string
		cn       string
		args     []string
		contains string
		exit     int
	}{
		{"permission denied", apitest.QA, []string{"workorder", "create", "--id", "W", "--profile", "p", "--serial", "S-1"},
			"PermissionDenied: role qa may not call /devid.station.v1.Station/CreateWorkOrder", 1},
		{"not found", apitest.QA, []string{"unit", "get", "SN-404"}, `NotFound: unit "SN-404": not found`, 1},
		{"not found traveler", apitest.QA, []string{"traveler", "SN-404"}, "NotFound: ", 1},
		{"untrusted certificate", "untrusted", []string{"status"}, "Unavailable: ", 1},
		{"no command", apitest.QA, nil, "no command", 2},
		{"unknown command", apitest.QA, []string{"reboot"}, `unknown command "reboot"`, 2},
		{"missing reason", apitest.Operator, []string{"unit", "abort", "SN-1"}, "--reason is required", 2},
		{"bad decision", apitest.QA, []string{"unit", "decide", "SN-1", "--decision", "keep", "--reason", "x"}, `--decision "keep"`, 2},
		{"extra argument", apitest.QA, []string{"unit", "get", "A", "B"}, "want 1 argument(s), got 2", 2},
		{"bad range", apitest.MES, []string{"workorder", "create", "--id", "W", "--profile", "p", "--range", "SN-:9-1"}, "first is after last", 2},
		{"bad output", apitest.QA, []string{"-o", "yaml", "status"}, `-o "yaml"`, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := f.run(t, c.cn, c.args...)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), c.contains) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q, want one line containing %q", err, c.contains)
			}
			if got := ctl.ExitCode(err); got != c.exit {
				t.Errorf("exit code %d, want %d", got, c.exit)
			}
		})
	}
}

func TestParseRange(t *testing.T) {
	cases := []struct {
		in   string
		want *stationv1.SerialRange
		err  bool
	}{
		{in: "SN-:1-8", want: &stationv1.SerialRange{Prefix: "SN-", First: 1, Last: 8}},
		{in: "SN-:1-8:4", want: &stationv1.SerialRange{Prefix: "SN-", First: 1, Last: 8, Width: 4}},
		{in: ":100-199", want: &stationv1.SerialRange{First: 100, Last: 199}},
		{in: "A:B:5-6:2", want: &stationv1.SerialRange{Prefix: "A:B", First: 5, Last: 6, Width: 2}},
		{in: "A:B:5-6", want: &stationv1.SerialRange{Prefix: "A:B", First: 5, Last: 6}},
		{in: "1-8", err: true},
		{in: "SN:8-1", err: true},
		{in: "SN:x-1", err: true},
		{in: "SN:1-8:w", err: true},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			got, err := ctl.ParseRange(c.in)
			if (err != nil) != c.err {
				t.Fatalf("err = %v, want error %v", err, c.err)
			}
			if !c.err && !proto.Equal(got, c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
}

func TestAuditCommands(t *testing.T) {
	f := newFixture(t)
	writeUnits(t, f.env.Store)
	out := f.mustRun(t, apitest.QA, "audit", "verify")
	if r := rows(out); len(r) == 0 || strings.Join(r[0], " ") != "result verified" {
		t.Errorf("audit verify:\n%s", out)
	}
	if _, err := f.run(t, apitest.Operator, "audit", "verify"); err == nil || !strings.Contains(err.Error(), "PermissionDenied") {
		t.Errorf("audit verify as operator: %v, want PermissionDenied", err)
	}
	out = f.mustRun(t, apitest.QA, "audit", "unit", "SN-0002")
	if !strings.Contains(out, "unit.updated") || !strings.Contains(out, "step.begun") || !strings.Contains(out, "SN-0002: ") {
		t.Errorf("audit unit SN-0002:\n%s", out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, l := range lines[1 : len(lines)-1] {
		if !strings.Contains(l, " none yet ") {
			t.Errorf("record %q is under a checkpoint on a store without an audit key", l)
		}
	}
	var v stationv1.VerifyAuditResponse
	unmarshal(t, f.mustRun(t, apitest.QA, "-o", "json", "audit", "verify"), &v)
	if !v.GetOk() || v.GetRecords() == 0 {
		t.Errorf("audit verify -o json: %v", &v)
	}
}
