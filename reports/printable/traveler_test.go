package printable_test

import (
	"bytes"
	"encoding/base64"
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

// travelerFacts are the facts of rec that a printed traveler must show, as pdftotext or the
// HTML source has them.
func travelerFacts(rec *traveler.Record) []string {
	facts := []string{rec.Serial, rec.WorkOrder, rec.Profile, rec.StationID, rec.ErrorCode,
		rec.TPM.ManufacturerID, rec.TPM.Manufacturer, rec.TPM.VendorString, rec.TPM.FirmwareVersion,
		rec.EK.Algorithm, rec.EK.Fingerprint, rec.EK.SHA256, rec.EK.SerialNumber, rec.TPM.FixtureSlot}
	for _, s := range rec.Steps {
		facts = append(facts, s.Name)
	}
	for _, c := range []*traveler.Certificate{rec.IDevID, rec.LDevID} {
		if c != nil {
			facts = append(facts, c.SHA256, c.SerialNumber, c.Subject, c.NotAfter.UTC().Format("2006-01-02 15:04:05Z"))
		}
	}
	for k, v := range rec.Verification {
		facts = append(facts, k, v)
	}
	return slices.DeleteFunc(facts, func(s string) bool { return s == "" })
}

func TestTravelerPDF(t *testing.T) {
	requireTools(t, "pdftotext", "pdftoppm", "zbarimg")
	cases := []struct {
		name string
		unit travelertest.Unit
		want []string // more text the PDF must hold
	}{
		{"done", travelertest.Unit{Serial: "SN-0001", Slot: "slot-3", StepTime: 1500 * time.Millisecond},
			[]string{"DONE", "Cycle time", "22.5 s", "mes:erp-gateway", "IDevID certificate SHA-256"}},
		{"failed", travelertest.Unit{Serial: "SN-0002", Slot: "slot-4", StepTime: 2 * time.Second,
			FailAt: "ldevid_enroll", FailCode: "CA_REJECTED"},
			[]string{"FAILED", "CA_REJECTED", "test failure at ldevid_enroll", "22.0 s"}},
	}
	dir := artifactDir(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			clock := travelertest.NewClock(fixedTime())
			st := openStore(t, clock)
			wo, err := st.CreateWorkOrder(store.WithPrincipal(t.Context(), "mes:erp-gateway"),
				store.WorkOrder{ID: "WO-7", Profile: "default", Serials: []string{c.unit.Serial}})
			if err != nil {
				t.Fatal(err)
			}
			u := c.unit
			u.WorkOrder, u.Profile, u.Clock = wo.ID, "default", clock
			travelertest.WriteUnit(t, st, u)
			rec := build(t, st, u.Serial)

			var buf bytes.Buffer
			if err := (printable.Traveler{Record: rec, WorkOrder: &wo, Generated: fixedTime()}).PDF(&buf); err != nil {
				t.Fatal(err)
			}
			pdf := filepath.Join(dir, "traveler-"+u.Serial+".pdf")
			if err := os.WriteFile(pdf, buf.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			text := pdfText(t, pdf)
			for _, want := range append(travelerFacts(rec), c.want...) {
				if !strings.Contains(text, want) {
					t.Errorf("the PDF's text lacks %q", want)
				}
			}

			png := filepath.Join(dir, "traveler-"+u.Serial+"-page1.png")
			pageOnePNG(t, pdf, png)
			t.Logf("page one of the traveler: %s", png)
			got := symbols(t, png)
			want := []string{"CODE-128:" + u.Serial}
			if rec.IDevID != nil {
				want = append(want, "QR-Code:"+rec.IDevID.SHA256)
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("zbarimg decoded %v from page one, want %v", got, want)
			}
		})
	}
}

var dataURI = regexp.MustCompile(`src="data:image/png;base64,([A-Za-z0-9+/=]+)"`)

// selfContained fails the test when the HTML page refers to anything outside itself.
func selfContained(t *testing.T, page string) {
	t.Helper()
	for _, bad := range []string{"<script", "<link", `src="http`, `href="http`, "url(", "@import", `src="/`, `src="file:`} {
		if strings.Contains(page, bad) {
			t.Errorf("the HTML is not self-contained: it holds %q", bad)
		}
	}
	if !strings.Contains(page, "@media print") || !strings.Contains(page, "@page") {
		t.Error("the HTML has no print stylesheet")
	}
}

func TestTravelerHTML(t *testing.T) {
	requireTools(t, "zbarimg")
	clock := travelertest.NewClock(fixedTime())
	st := openStore(t, clock)
	travelertest.WriteUnit(t, st, travelertest.Unit{Serial: "SN-0003", WorkOrder: "WO-7", Profile: "default",
		Slot: "slot-5", Clock: clock, StepTime: time.Second})
	rec := build(t, st, "SN-0003")
	var buf bytes.Buffer
	if err := (printable.Traveler{Record: rec, Generated: fixedTime()}).HTML(&buf); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	dir := artifactDir(t)
	if err := os.WriteFile(filepath.Join(dir, "traveler-SN-0003.html"), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	selfContained(t, page)
	for _, want := range travelerFacts(rec) {
		if !strings.Contains(page, want) {
			t.Errorf("the HTML lacks %q", want)
		}
	}
	// The symbols are PNG data: URIs; each must scan to the serial and the IDevID SHA-256.
	var got []string
	for i, m := range dataURI.FindAllStringSubmatch(page, -1) {
		img, err := base64.StdEncoding.DecodeString(m[1])
		if err != nil {
			t.Fatalf("data URI %d: %v", i, err)
		}
		f := filepath.Join(t.TempDir(), "symbol.png")
		if err := os.WriteFile(f, img, 0o644); err != nil {
			t.Fatal(err)
		}
		got = append(got, symbols(t, f)...)
	}
	want := []string{"CODE-128:SN-0003", "QR-Code:" + rec.IDevID.SHA256}
	if !slices.Equal(got, want) {
		t.Errorf("the HTML's images decode to %v, want %v", got, want)
	}
}

// The same record and date give the same PDF bytes (the reports folder can be compared and
// archived by hash).
func TestPDFIsReproducible(t *testing.T) {
	clock := travelertest.NewClock(fixedTime())
	st := openStore(t, clock)
	travelertest.WriteUnit(t, st, travelertest.Unit{Serial: "SN-0004", WorkOrder: "WO-7", Profile: "default",
		Clock: clock, StepTime: time.Second})
	rec := build(t, st, "SN-0004")
	lot := printable.Lot{Records: []*traveler.Record{rec}, Generated: fixedTime()}
	for name, render := range map[string]func(*bytes.Buffer) error{
		"traveler": func(b *bytes.Buffer) error { return printable.Traveler{Record: rec, Generated: fixedTime()}.PDF(b) },
		"lot":      func(b *bytes.Buffer) error { return lot.PDF(b) },
	} {
		var first bytes.Buffer
		if err := render(&first); err != nil {
			t.Fatal(err)
		}
		for range 5 {
			var again bytes.Buffer
			if err := render(&again); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(first.Bytes(), again.Bytes()) {
				t.Fatalf("two renderings of the %s PDF differ", name)
			}
		}
	}
}

// Write lays the traveler out once for both files: they are the bytes HTML and PDF give, each
// time (the PNG encoder's buffers are reused between symbols).
func TestTravelerWriteIsHTMLAndPDF(t *testing.T) {
	clock := travelertest.NewClock(fixedTime())
	st := openStore(t, clock)
	travelertest.WriteUnit(t, st, travelertest.Unit{Serial: "SN-0005", WorkOrder: "WO-7", Profile: "default",
		Clock: clock, StepTime: time.Second})
	tr := printable.Traveler{Record: build(t, st, "SN-0005"), Generated: fixedTime()}
	var html, pdf bytes.Buffer
	if err := tr.HTML(&html); err != nil {
		t.Fatal(err)
	}
	if err := tr.PDF(&pdf); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		var h, p bytes.Buffer
		if err := tr.Write(&h, &p); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(h.Bytes(), html.Bytes()) || !bytes.Equal(p.Bytes(), pdf.Bytes()) {
			t.Fatal("Write's HTML or PDF differs from what HTML and PDF write")
		}
	}
}
