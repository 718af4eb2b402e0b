package traveler_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLayers keeps the arrows between the station and its reports pointing one way (see
// docs/README.md, "Layers"): reports read the store and its published record shapes
// (station/store, station/journal) and nothing else of the station; only the station's serving
// layer (API, console, stationctl, server, mains) uses reports; the store, the journal and
// everything below them never do.
func TestLayers(t *testing.T) {
	const mod = "github.com/devid-station/devid/"
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", mod+"...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	serving := []string{"station/api", "station/console", "station/ctl", "station/server", "station/cmd/"}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], mod)
		for _, imp := range fields[1:] {
			if !strings.HasPrefix(imp, mod) {
				continue
			}
			imp = strings.TrimPrefix(imp, mod)
			checked++
			switch {
			case strings.HasPrefix(pkg, "reports/") && strings.HasPrefix(imp, "station/") &&
				imp != "station/store" && imp != "station/journal":
				t.Errorf("%s imports %s: reports read only station/store and station/journal", pkg, imp)
			case strings.HasPrefix(pkg, "station/") && strings.HasPrefix(imp, "reports/") && !hasAnyPrefix(pkg, serving):
				t.Errorf("%s imports %s: only the serving layer (%s) uses reports", pkg, imp, strings.Join(serving, ", "))
			}
		}
	}
	if checked == 0 {
		t.Fatal("go list found no imports inside the module")
	}
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
