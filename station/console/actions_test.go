package console

import (
	"bytes"
	"crypto/tls"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/devid-station/devid/station/api/apitest"
	"github.com/devid-station/devid/station/store"
)

// post sends an action as the page does, with extra headers set (a "" value removes one).
func post(t *testing.T, c *http.Client, url, body string, headers map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(ActionHeader, "1")
	for k, v := range headers {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// auditOf returns the audit records of serial with the given detail type (unit events) or
// action.
func auditOf(t *testing.T, st *store.Store, match func(store.AuditEvent) bool) []store.AuditEvent {
	t.Helper()
	all, err := st.AuditAfter(t.Context(), 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	var out []store.AuditEvent
	for _, a := range all {
		if match(a) {
			out = append(out, a)
		}
	}
	return out
}

// TestActions aborts, reworks and closes through the console: the API's role rules decide
// (abort: operator and admin; rework: admin; close: mes and admin), a wall display and a
// request without the action header never change anything, and what is done is audited with
// the caller's principal and reason.
func TestActions(t *testing.T) {
	f := newFixture(t, netip.MustParsePrefix("127.0.0.1/32"))
	ctx := t.Context()
	st := f.env.Store
	if _, err := st.CreateWorkOrder(ctx, store.WorkOrder{ID: "WO-1", Profile: "default", Serials: []string{"SN-0001"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpdateUnit(ctx, "SN-0001", func(u *store.UnitState) error { u.Status = store.StatusRunning; return nil }); err != nil {
		t.Fatal(err)
	}
	as := func(cn string) *http.Client {
		c := f.env.PKI.Client(t, cn)
		return f.client(&c)
	}
	const reason = `{"reason": "fixture jammed on slot 3"}`
	for _, tc := range []struct {
		name    string
		client  *http.Client
		path    string
		body    string
		headers map[string]string
		want    int
	}{
		{"wall display aborts", f.client(nil), "/api/units/SN-0001/abort", reason, nil, http.StatusForbidden},
		{"qa aborts", as(apitest.QA), "/api/units/SN-0001/abort", reason, nil, http.StatusForbidden},
		{"mes aborts", as(apitest.MES), "/api/units/SN-0001/abort", reason, nil, http.StatusForbidden},
		{"operator without the action header", as(apitest.Operator), "/api/units/SN-0001/abort", reason, map[string]string{ActionHeader: ""}, http.StatusForbidden},
		{"operator from another origin", as(apitest.Operator), "/api/units/SN-0001/abort", reason, map[string]string{"Origin": "https://evil.example"}, http.StatusForbidden},
		{"operator from another site", as(apitest.Operator), "/api/units/SN-0001/abort", reason, map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"operator without a reason", as(apitest.Operator), "/api/units/SN-0001/abort", `{"reason": "  "}`, nil, http.StatusBadRequest},
		{"operator with an endless reason", as(apitest.Operator), "/api/units/SN-0001/abort", `{"reason": "` + strings.Repeat("x", 1500) + `"}`, nil, http.StatusBadRequest},
		{"operator aborts an unknown unit", as(apitest.Operator), "/api/units/SN-9999/abort", reason, nil, http.StatusNotFound},
		{"operator reworks", as(apitest.Operator), "/api/units/SN-0001/rework", reason, nil, http.StatusForbidden},
		{"operator closes", as(apitest.Operator), "/api/workorders/WO-1/close", reason, nil, http.StatusForbidden},
		{"wall display closes", f.client(nil), "/api/workorders/WO-1/close", reason, nil, http.StatusForbidden},
	} {
		if code, body := post(t, tc.client, f.url+tc.path, tc.body, tc.headers); code != tc.want {
			t.Errorf("%s: %d, want %d: %s", tc.name, code, tc.want, body)
		}
	}
	if u, err := st.Unit(ctx, "SN-0001"); err != nil || u.Status != store.StatusRunning {
		t.Fatalf("after the refused actions: unit %+v, %v; want it still running", u, err)
	}
	if wo, err := st.WorkOrder(ctx, "WO-1"); err != nil || wo.Status != store.WorkOrderOpen {
		t.Fatalf("after the refused actions: work order %+v, %v; want it open", wo, err)
	}

	// The operator aborts: the unit is aborted, the audit names the operator and the reason.
	if code, body := post(t, as(apitest.Operator), f.url+"/api/units/SN-0001/abort", reason, map[string]string{"Origin": f.url}); code != http.StatusOK || !strings.Contains(body, `"serial":"SN-0001"`) {
		t.Fatalf("operator aborts: %d %s", code, body)
	}
	if u, err := st.Unit(ctx, "SN-0001"); err != nil || u.Status != store.StatusAborted {
		t.Fatalf("after the abort: unit %+v, %v", u, err)
	}
	aborts := auditOf(t, st, func(a store.AuditEvent) bool { return a.Serial == "SN-0001" && a.Details["type"] == "unit.aborted" })
	if len(aborts) != 1 || aborts[0].Principal != "operator:CN="+apitest.Operator || aborts[0].Details["reason"] != "fixture jammed on slot 3" {
		t.Errorf("abort audit records %+v, want one by the operator with the reason", aborts)
	}

	// The admin authorizes the rework and closes the work order.
	admin := as(apitest.Admin)
	if code, body := post(t, admin, f.url+"/api/units/SN-0001/rework", `{"reason": "fixture repaired"}`, nil); code != http.StatusOK {
		t.Fatalf("admin reworks: %d %s", code, body)
	}
	if code, body := post(t, admin, f.url+"/api/workorders/WO-1/close", `{"reason": "lot complete"}`, nil); code != http.StatusOK || !strings.Contains(body, "WORK_ORDER_STATUS_CLOSED") {
		t.Fatalf("admin closes: %d %s", code, body)
	}
	for action, want := range map[string]string{store.EventReworkAuthorized: "fixture repaired", store.EventWorkOrderClosed: "lot complete"} {
		recs := auditOf(t, st, func(a store.AuditEvent) bool { return a.Action == action })
		if len(recs) != 1 || recs[0].Principal != "admin:CN="+apitest.Admin || recs[0].Details["reason"] != want {
			t.Errorf("%s audit records %+v, want one by the admin with reason %q", action, recs, want)
		}
	}
}

// TestMe tells the page which actions the viewer may take.
func TestMe(t *testing.T) {
	f := newFixture(t, netip.MustParsePrefix("127.0.0.1/32"))
	for cn, want := range map[string]string{
		"":               `{"role":"","actions":[]}`,
		apitest.Operator: `{"role":"operator","actions":["abort"]}`,
		apitest.QA:       `{"role":"qa","actions":[]}`,
		apitest.Admin:    `{"role":"admin","actions":["abort","rework","close"]}`,
	} {
		var cert *tls.Certificate
		if cn != "" {
			c := f.env.PKI.Client(t, cn)
			cert = &c
		}
		if _, body := get(t, f.client(cert), f.url+"/api/me"); string(bytes.TrimSpace([]byte(body))) != want {
			t.Errorf("%q: /api/me %s, want %s", cn, body, want)
		}
	}
}
