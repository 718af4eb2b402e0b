package console

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/devid-station/devid/reports/traveler/travelertest"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
)

// TestUnitAndWorkOrderPages reads a provisioned unit (its timeline, certificates, printable
// traveler), the work orders' progress and the line view's typical step times and failures.
func TestUnitAndWorkOrderPages(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	if _, err := f.env.Store.CreateWorkOrder(ctx, store.WorkOrder{ID: "WO-1", Profile: "default",
		Serials: []string{"SN-0001", "SN-0002", "SN-0003", "SN-0004"}}); err != nil {
		t.Fatal(err)
	}
	travelertest.WriteUnit(t, f.env.Store, travelertest.Unit{Serial: "SN-0001", WorkOrder: "WO-1", Profile: "default"})
	travelertest.WriteUnit(t, f.env.Store, travelertest.Unit{Serial: "SN-0002", WorkOrder: "WO-1", Profile: "default",
		FailAt: "idevid_enroll", FailCode: workflow.CodeCAUnavailable})
	travelertest.WriteUnit(t, f.env.Store, travelertest.Unit{Serial: "SN-0003", WorkOrder: "WO-1", Profile: "default", StopBefore: "verify"})
	f.live.mu.Lock()
	f.live.serials = []string{"SN-0003"}
	f.live.mu.Unlock()
	c := f.operator(t)

	resp, body := get(t, c, f.url+"/api/units/SN-0001")
	var u struct {
		Unit struct {
			Serial string `json:"serial"`
		} `json:"unit"`
		Traveler struct {
			Steps []struct {
				Name string `json:"name"`
			} `json:"steps"`
			IDevID *struct {
				SHA256 string `json:"sha256"`
			} `json:"idevid"`
		} `json:"traveler"`
	}
	if err := json.Unmarshal([]byte(body), &u); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/api/units/SN-0001: %s %v\n%s", resp.Status, err, body)
	}
	if u.Unit.Serial != "SN-0001" || len(u.Traveler.Steps) < 2 || u.Traveler.IDevID == nil || u.Traveler.IDevID.SHA256 == "" {
		t.Errorf("unit view %+v", u)
	}
	if resp, _ := get(t, c, f.url+"/api/units/SN-9999"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown unit: %s", resp.Status)
	}
	for _, page := range []string{"/unit?serial=SN-0001", "/workorders"} {
		if resp, body := get(t, c, f.url+page); resp.StatusCode != http.StatusOK || !strings.Contains(body, "/assets/common.js") {
			t.Errorf("%s: %s", page, resp.Status)
		}
	}
	resp, body = get(t, c, f.url+"/units/SN-0001/traveler")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(body, "SN-0001") || !strings.Contains(body, u.Traveler.IDevID.SHA256) {
		t.Errorf("printable traveler: %s %q (%d bytes)", resp.Status, resp.Header.Get("Content-Type"), len(body))
	}

	resp, body = get(t, c, f.url+"/api/workorders")
	var wos []struct {
		WorkOrder struct {
			ID          string `json:"id"`
			UnitsTotal  string `json:"units_total"`
			UnitsDone   string `json:"units_done"`
			UnitsFailed string `json:"units_failed"`
		} `json:"work_order"`
		InFlight int `json:"in_flight"`
	}
	if err := json.Unmarshal([]byte(body), &wos); err != nil || resp.StatusCode != http.StatusOK || len(wos) != 1 {
		t.Fatalf("/api/workorders: %s %v\n%s", resp.Status, err, body)
	}
	if w := wos[0]; w.WorkOrder.ID != "WO-1" || w.WorkOrder.UnitsTotal != "4" || w.WorkOrder.UnitsDone != "1" || w.WorkOrder.UnitsFailed != "1" || w.InFlight != 1 {
		t.Errorf("work order progress %+v, want 1 done, 1 failed, 1 in flight of 4", w)
	}

	resp, body = get(t, c, f.url+"/api/line")
	var line struct {
		TypicalMS map[string]int64 `json:"typical_ms"`
		Failures  []struct {
			Serial    string `json:"serial"`
			ErrorCode string `json:"error_code"`
		} `json:"failures"`
		Advice map[string]string `json:"advice"`
	}
	if err := json.Unmarshal([]byte(body), &line); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/api/line: %s %v\n%s", resp.Status, err, body)
	}
	for _, s := range u.Traveler.Steps { // SN-0001 is the one unit done
		if _, ok := line.TypicalMS[s.Name]; !ok {
			t.Errorf("no typical time for step %s: %v", s.Name, line.TypicalMS)
		}
	}
	if len(line.Failures) != 1 || line.Failures[0].Serial != "SN-0002" || line.Failures[0].ErrorCode != workflow.CodeCAUnavailable ||
		!strings.Contains(line.Advice[workflow.CodeCAUnavailable], "check the CA") {
		t.Errorf("failures %+v, advice for %s %q", line.Failures, workflow.CodeCAUnavailable, line.Advice[workflow.CodeCAUnavailable])
	}
}

// TestQuantile takes nearest-rank quantiles.
func TestQuantile(t *testing.T) {
	for _, tc := range []struct {
		xs   []float64
		q    float64
		want int64
	}{
		{nil, .5, 0},
		{[]float64{7}, .95, 7},
		{[]float64{3, 1, 2}, .5, 2},
		{[]float64{1, 2, 3, 4}, .5, 2},
		{[]float64{10, 20, 30, 40, 50, 60, 70, 80, 90, 100}, .95, 100},
	} {
		if got := quantile(tc.xs, tc.q); got != tc.want {
			t.Errorf("quantile(%v, %v) = %d, want %d", tc.xs, tc.q, got, tc.want)
		}
	}
}
