package printable_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/csv"
	"fmt"
	"html"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/devid-station/devid/reports/printable"
	"github.com/devid-station/devid/reports/traveler"
	"github.com/devid-station/devid/reports/traveler/travelertest"
	"github.com/devid-station/devid/station/store"
)

// lotUnit is one unit of the test lot.
type lotUnit struct {
	serial   string
	stepTime time.Duration
	failAt   string // step of the (last) failure
	failCode string
	retried  bool // failed once at failAt, then passed in a second session
	running  bool // stopped before verify
}

// writeLot journals the units into a fresh store, one after another on one clock, and returns
// the store, its work order and the units' traveler records.
func writeLot(t *testing.T, units []lotUnit) (*store.Store, store.WorkOrder, []*traveler.Record) {
	t.Helper()
	clock := travelertest.NewClock(fixedTime())
	st := openStore(t, clock)
	var serials []string
	for _, u := range units {
		serials = append(serials, u.serial)
	}
	ctx := store.WithPrincipal(t.Context(), "mes:erp-gateway")
	wo, err := st.CreateWorkOrder(ctx, store.WorkOrder{ID: "WO-2026-0042", Profile: "default", Serials: serials})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range units {
		tu := travelertest.Unit{Serial: u.serial, WorkOrder: wo.ID, Profile: "default", Slot: "slot-1",
			Clock: clock, StepTime: u.stepTime}
		if u.running {
			tu.StopBefore = "verify"
		}
		if u.failAt != "" {
			tu.FailAt, tu.FailCode = u.failAt, u.failCode
		}
		if u.retried {
			ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			tu.EK = ek
		}
		travelertest.WriteUnit(t, st, tu)
		if u.retried {
			clock.Advance(time.Second)
			tu.FailAt, tu.FailCode = "", ""
			travelertest.WriteUnit(t, st, tu)
		}
		clock.Advance(2 * time.Second)
	}
	if wo, err = st.CloseWorkOrder(store.WithPrincipal(t.Context(), "operator:jane"), wo.ID, ""); err != nil {
		t.Fatal(err)
	}
	var recs []*traveler.Record
	for _, s := range serials {
		recs = append(recs, build(t, st, s))
	}
	return st, wo, recs
}

// testLot: 20 units, 15 passing first time with step times of 1.0 to 2.4 s, one passing on
// its second session after a CA rejection, three failing, one still running.
func testLot() []lotUnit {
	var units []lotUnit
	for i := range 15 {
		units = append(units, lotUnit{serial: fmt.Sprintf("SN-%04d", i+1), stepTime: time.Duration(1000+100*i) * time.Millisecond})
	}
	return append(units,
		lotUnit{serial: "SN-0016", stepTime: time.Second, failAt: "idevid_enroll", failCode: "CA_REJECTED", retried: true},
		lotUnit{serial: "SN-0017", stepTime: time.Second, failAt: "idevid_enroll", failCode: "CA_REJECTED"},
		lotUnit{serial: "SN-0018", stepTime: time.Second, failAt: "ldevid_enroll", failCode: "CA_REJECTED"},
		lotUnit{serial: "SN-0019", stepTime: time.Second, failAt: "verify_ek", failCode: "EK_UNTRUSTED"},
		lotUnit{serial: "SN-0020", stepTime: time.Second, running: true},
	)
}

// The expected figures of testLot. Ended: 16 done + 3 failed = 19; final yield 16/19; first
// pass 15/19 (SN-0016 passed on its second session). The 16 passed cycle times are 15 steps of
// 1.0..2.4 s (15.0..36.0 s) and SN-0016's 22.0 s: sorted, the 8th (p50, nearest rank) is
// 24.0 s and the 16th (p95) 36.0 s. Failures: CA_REJECTED at SN-0016's first session, SN-0017
// and SN-0018 (3), EK_UNTRUSTED at SN-0019 (1).
var lotFigures = []string{"WO-2026-0042", "16 OF 20 PASSED", "84.2 %", "78.9 %", "24.0 s", "36.0 s",
	"CA_REJECTED", "EK_UNTRUSTED", "75.0 %", "100.0 %", "mes:erp-gateway", "operator:jane",
	"First-pass yield", "Final yield", "Failures by code (Pareto)", "Cycle time of passed units", "p50 24", "p95 36",
	"Throughput", "CA latency", "idevid_enroll (CA round trip)", "ldevid_enroll (CA round trip)"}

func TestLotReport(t *testing.T) {
	requireTools(t, "pdftotext", "pdftoppm")
	st, wo, recs := writeLot(t, testLot())
	lot := printable.Lot{WorkOrder: &wo, StationID: st.StationID(), Records: recs, Generated: fixedTime()}
	dir := artifactDir(t)

	var pdfBuf bytes.Buffer
	if err := lot.PDF(&pdfBuf); err != nil {
		t.Fatal(err)
	}
	pdf := filepath.Join(dir, "lot-WO-2026-0042.pdf")
	if err := os.WriteFile(pdf, pdfBuf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	png := filepath.Join(dir, "lot-WO-2026-0042-page1.png")
	pageOnePNG(t, pdf, png)
	t.Logf("page one of the lot report: %s", png)
	text := pdfText(t, pdf)
	want := slices.Clone(lotFigures)
	for _, r := range recs {
		want = append(want, r.Serial)
	}
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("the lot PDF's text lacks %q", w)
		}
	}
	// Units by result and the Pareto table, as rows.
	for _, row := range []string{`done\s+16\s+80\.0 %`, `failed\s+3\s+15\.0 %`, `running\s+1\s+5\.0 %`,
		`CA_REJECTED\s+3\s+75\.0 %\s+75\.0 %`, `EK_UNTRUSTED\s+1\s+25\.0 %\s+100\.0 %`,
		`SN-0016\s+done\s+2\s+no`, `SN-0017\s+failed\s+CA_REJECTED\s+1\s+no`} {
		if !regexp.MustCompile(row).MatchString(text) {
			t.Errorf("the lot PDF's text has no row matching %s", row)
		}
	}

	var htmlBuf bytes.Buffer
	if err := lot.HTML(&htmlBuf); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "lot-WO-2026-0042.html"), htmlBuf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	page := htmlBuf.String()
	selfContained(t, page)
	for _, w := range want {
		if !strings.Contains(page, html.EscapeString(w)) && !strings.Contains(page, strings.ToLower(w)) {
			t.Errorf("the lot HTML lacks %q", w)
		}
	}
	if n := strings.Count(page, "<svg"); n != 4 {
		t.Errorf("the lot HTML has %d charts, want 4 (Pareto, cycle time, throughput, CA latency)", n)
	}
}

func TestLotCSV(t *testing.T) {
	_, wo, recs := writeLot(t, testLot())
	var buf bytes.Buffer
	if err := (printable.Lot{WorkOrder: &wo, Records: recs}).CSV(&buf); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatalf("the lot CSV does not parse: %v", err)
	}
	if len(rows) != 1+len(recs) {
		t.Fatalf("the lot CSV has %d rows, want a header and %d units", len(rows), len(recs))
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	bySerial := map[string][]string{}
	for _, r := range rows[1:] {
		bySerial[r[col["serial"]]] = r
	}
	byRec := map[string]*traveler.Record{}
	for _, r := range recs {
		byRec[r.Serial] = r
	}
	cases := []struct{ serial, column, want string }{
		{"SN-0001", "result", "done"},
		{"SN-0001", "first_pass", "true"},
		{"SN-0001", "cycle_time_s", "15.000"},
		{"SN-0001", "idevid_enroll_ms", "1000.000"},
		{"SN-0015", "ldevid_enroll_ms", "2400.000"},
		{"SN-0001", "work_order", "WO-2026-0042"},
		{"SN-0001", "started_at", "2026-11-28T08:00:00Z"},
		{"SN-0001", "idevid_sha256", byRec["SN-0001"].IDevID.SHA256},
		{"SN-0001", "ldevid_serial", byRec["SN-0001"].LDevID.SerialNumber},
		{"SN-0001", "ek_fingerprint", byRec["SN-0001"].EK.Fingerprint},
		{"SN-0001", "tpm_firmware", "7.85.4555.0"},
		{"SN-0016", "result", "done"},
		{"SN-0016", "first_pass", "false"},
		{"SN-0016", "attempts", "2"},
		{"SN-0016", "failure_codes", "CA_REJECTED"},
		{"SN-0017", "result", "failed"},
		{"SN-0017", "error_code", "CA_REJECTED"},
		{"SN-0017", "idevid_sha256", ""},
		{"SN-0019", "failure_codes", "EK_UNTRUSTED"},
		{"SN-0020", "result", "running"},
		{"SN-0020", "ended_at", ""},
	}
	for _, c := range cases {
		row, ok := bySerial[c.serial]
		if !ok {
			t.Errorf("no CSV row for %s", c.serial)
			continue
		}
		i, ok := col[c.column]
		if !ok {
			t.Fatalf("no CSV column %s in %v", c.column, rows[0])
		}
		if row[i] != c.want {
			t.Errorf("%s %s = %q, want %q", c.serial, c.column, row[i], c.want)
		}
	}
}
