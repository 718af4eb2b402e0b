package printable_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/devid-station/devid/reports/printable"
	"github.com/devid-station/devid/reports/traveler/travelertest"
)

func TestTravelerPDF(t *testing.T) {
	requireTools(t, "pdftotext", "pdftoppm", "zbarimg")
	clock := travelertest.NewClock(fixedTime())
	st := openStore(t, clock)
	travelertest.WriteUnit(t, st, travelertest.Unit{Serial: "SN-0001", WorkOrder: "WO-1", Profile: "default",
		Slot: "slot-3", Clock: clock, StepTime: 1500 * time.Millisecond})
	rec := build(t, st, "SN-0001")

	dir := artifactDir(t)
	var buf bytes.Buffer
	if err := (printable.Traveler{Record: rec, Generated: fixedTime()}).PDF(&buf); err != nil {
		t.Fatal(err)
	}
	pdf := filepath.Join(dir, "traveler-SN-0001.pdf")
	if err := os.WriteFile(pdf, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	png := filepath.Join(dir, "traveler-SN-0001-page1.png")
	pageOnePNG(t, pdf, png)
	got := symbols(t, png)
	t.Logf("page one: %s; symbols %v", png, got)
	for _, want := range []string{"CODE-128:SN-0001", "QR-Code:" + rec.IDevID.SHA256} {
		if !slices.Contains(got, want) {
			t.Errorf("zbarimg found %v on page one, want %s", got, want)
		}
	}
	_ = pdfText(t, pdf)
}
