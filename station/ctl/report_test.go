package ctl_test

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/devid-station/devid/reports/reportdir"
	"github.com/devid-station/devid/station/api"
	"github.com/devid-station/devid/station/api/apitest"
	"github.com/devid-station/devid/station/ctl"
	"github.com/devid-station/devid/station/store"
)

func TestReportCommand(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "station.db"), store.Options{StationID: "st-ctl"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.CreateWorkOrder(t.Context(), store.WorkOrder{ID: "WO-1", Profile: "default",
		Serials: []string{"SN-0001", "SN-0002", "SN-0003"}}); err != nil {
		t.Fatal(err)
	}
	writeUnits(t, st)
	if _, err := st.CloseWorkOrder(t.Context(), "WO-1", ""); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "reports")
	w, err := reportdir.New(dir, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	// A report larger than one chunk of the stream.
	_, big := reportdir.TravelerFiles(dir, "SN-BIG")
	bigData := make([]byte, 700<<10)
	rand.Read(bigData)
	if err := os.WriteFile(big, bigData, 0o644); err != nil {
		t.Fatal(err)
	}

	env := apitest.Start(t, api.Config{Store: st, ReportsDir: dir})
	cert, key := env.PKI.Files(t, apitest.Operator, env.PKI.Client(t, apitest.Operator))
	global := []string{"-addr", env.Addr, "-cert", cert, "-key", key, "-ca", env.PKI.CAFile(t)}
	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := ctl.Run(t.Context(), append(append([]string(nil), global...), args...), &out)
		return out.String(), err
	}
	into := t.TempDir()
	tHTML, tPDF := reportdir.TravelerFiles(dir, "SN-0001")
	lHTML, lPDF, lCSV := reportdir.LotFiles(dir, "WO-1")
	cases := []struct {
		args []string
		src  string // the file in the reports folder
		dst  string // where stationctl writes it
	}{
		{[]string{"report", "traveler", "SN-0001", "--out", into}, tPDF, filepath.Join(into, "SN-0001.pdf")},
		{[]string{"report", "traveler", "SN-0001", "--format", "html", "--out", filepath.Join(into, "t.html")}, tHTML, filepath.Join(into, "t.html")},
		{[]string{"report", "lot", "WO-1", "--out", into}, lPDF, filepath.Join(into, "WO-1.pdf")},
		{[]string{"report", "lot", "WO-1", "--format", "html", "--out", into}, lHTML, filepath.Join(into, "WO-1.html")},
		{[]string{"report", "lot", "WO-1", "--format", "csv", "--out", into}, lCSV, filepath.Join(into, "WO-1.csv")},
		{[]string{"report", "traveler", "SN-BIG", "--out", into}, big, filepath.Join(into, "SN-BIG.pdf")},
	}
	for _, c := range cases {
		out, err := run(c.args...)
		if err != nil {
			t.Errorf("stationctl %s: %v", strings.Join(c.args, " "), err)
			continue
		}
		want, _ := os.ReadFile(c.src)
		got, err := os.ReadFile(c.dst)
		if err != nil || len(want) == 0 || !bytes.Equal(got, want) {
			t.Errorf("stationctl %s wrote %d bytes to %s (%v), want the %d bytes of %s", strings.Join(c.args, " "),
				len(got), c.dst, err, len(want), c.src)
		}
		if !strings.HasPrefix(out, c.dst+" (") {
			t.Errorf("stationctl %s printed %q, want the path it wrote", strings.Join(c.args, " "), out)
		}
	}
	out, err := run("report", "lot", "WO-1", "--format", "csv", "--out", "-")
	if want, _ := os.ReadFile(lCSV); err != nil || out != string(want) {
		t.Errorf("report lot --out - printed %q (%v), want the CSV", out, err)
	}

	errs := []struct {
		args []string
		want string
	}{
		{[]string{"report", "traveler", "SN-0003"}, "NotFound"}, // still running: no traveler yet
		{[]string{"report", "lot", "WO-2"}, "NotFound"},
		{[]string{"report", "traveler", "SN-0001", "--format", "csv"}, "InvalidArgument"},
		{[]string{"report", "unit", "SN-0001"}, "want traveler SERIAL or lot WORK_ORDER"},
	}
	for _, c := range errs {
		if _, err := run(c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("stationctl %s: %v, want an error with %q", strings.Join(c.args, " "), err, c.want)
		}
	}

	// A station without a reports folder says so.
	f := newFixture(t)
	if _, err := f.run(t, apitest.QA, "report", "traveler", "SN-0001"); err == nil || !strings.Contains(err.Error(), "reports_dir") {
		t.Errorf("report from a station without reports_dir: %v", err)
	}
}
