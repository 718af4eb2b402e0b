package printable_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devid-station/devid/reports/traveler"
	"github.com/devid-station/devid/station/store"
)

// requireTools skips the test unless every named program is on PATH; under CI, whose setup
// installs them (Makefile DEB_PACKAGES), a missing one fails the test.
func requireTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("CI installs %s (make deps: poppler-utils, zbar-tools), but it is missing: %v", n, err)
			}
			t.Skipf("skipping: %s is not installed (Debian poppler-utils / zbar-tools; make deps installs them): %v", n, err)
		}
	}
}

// artifactDir is where the tests leave the rendered files and page images for a person to
// look at: $PRINTABLE_ARTIFACTS when set (make test-reports sets it under out/), else a
// t.TempDir.
func artifactDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("PRINTABLE_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

func openStore(t *testing.T, clock store.Clock) *store.Store {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "station.db"), store.Options{StationID: "st-line-1", Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func build(t *testing.T, st *store.Store, serial string) *traveler.Record {
	t.Helper()
	rec, err := traveler.Build(context.Background(), st, serial)
	if err != nil {
		t.Fatalf("building traveler of %s: %v", serial, err)
	}
	return rec
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// pdfText is the PDF's text as pdftotext extracts it.
func pdfText(t *testing.T, pdf string) string {
	t.Helper()
	return run(t, "pdftotext", "-layout", pdf, "-")
}

// pageOnePNG renders page one of pdf at 150 dpi to png.
func pageOnePNG(t *testing.T, pdf, png string) {
	t.Helper()
	run(t, "pdftoppm", "-png", "-r", "150", "-f", "1", "-l", "1", "-singlefile", pdf, strings.TrimSuffix(png, ".png"))
}

// symbols decodes every barcode zbarimg finds in the image: "TYPE:content" lines.
func symbols(t *testing.T, img string) []string {
	t.Helper()
	out := run(t, "zbarimg", "--quiet", img)
	return strings.Fields(out)
}

func fixedTime() time.Time { return time.Date(2026, 11, 28, 8, 0, 0, 0, time.UTC) }
