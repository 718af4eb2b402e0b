package ctl_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devid-station/devid/reports/export"
	"github.com/devid-station/devid/station/api"
	"github.com/devid-station/devid/station/api/apitest"
	"github.com/devid-station/devid/station/ctl"
	"github.com/devid-station/devid/station/store"
)

func TestExportCommand(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(t.TempDir(), "station.db"), store.Options{StationID: "st-ctl",
		Checkpoints: store.CheckpointOptions{Signer: key, Interval: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.CreateWorkOrder(t.Context(), store.WorkOrder{ID: "WO-1", Profile: "default",
		Serials: []string{"SN-0001", "SN-0002", "SN-0003"}}); err != nil {
		t.Fatal(err)
	}
	roots := writeUnits(t, st)
	// Records in the unit's range large enough that audit.jsonl takes several chunks of the
	// stream: refusals with long details, then one more event of SN-0001.
	long := map[string]string{}
	for i := range 16 {
		long[fmt.Sprintf("detail-%02d", i)] = strings.Repeat("x", 500)
	}
	for range 80 {
		if err := st.AuditAPIRefusal(t.Context(), "TEST_REFUSED", long); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.AppendEvent(t.Context(), "SN-0001", "unit.note", "after the refusals", nil); err != nil {
		t.Fatal(err)
	}
	env := apitest.Start(t, api.Config{Store: st, Version: "v-ctl"})
	run := func(role string, args ...string) (string, error) {
		cert, key := env.PKI.Files(t, role, env.PKI.Client(t, role))
		var out bytes.Buffer
		err := ctl.Run(t.Context(), append([]string{"-addr", env.Addr, "-cert", cert, "-key", key, "-ca", env.PKI.CAFile(t)}, args...), &out)
		return out.String(), err
	}
	out := filepath.Join(t.TempDir(), "bundle")
	if msg, err := run(apitest.QA, "export", "--work-order", "WO-1", "--out", out); err != nil {
		t.Fatalf("export: %v\n%s", err, msg)
	}
	// The folder verifies offline, with the roots that issued the units' certificates.
	if fi, err := os.Stat(filepath.Join(out, export.AuditFile)); err != nil || fi.Size() < 512<<10 {
		t.Fatalf("audit.jsonl: %v, want more than two chunks", err)
	}
	rep := export.Verify(out, roots, key.Public())
	if !rep.OK() || len(rep.Units) != 3 {
		t.Fatalf("the fetched bundle does not verify (%d units):\n%s", len(rep.Units), rep)
	}
	// A name ending in .tar fetches one archive, which verifies too.
	archive := filepath.Join(t.TempDir(), "bundle.tar")
	if msg, err := run(apitest.QA, "export", "--work-order", "WO-1", "--out", archive); err != nil || !strings.Contains(msg, "devid-verify -bundle "+archive) {
		t.Fatalf("export to an archive: %v\n%s", err, msg)
	}
	if fi, err := os.Stat(archive); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("%s: %v, want a file", archive, err)
	}
	if rep := export.Verify(archive, roots, key.Public()); !rep.OK() || len(rep.Units) != 3 {
		t.Fatalf("the fetched archive does not verify (%d units):\n%s", len(rep.Units), rep)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(archive), ".bundle.tar.*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}

	for _, c := range []struct {
		role string
		args []string
		want string
	}{
		{apitest.Operator, []string{"export", "--work-order", "WO-1", "--out", filepath.Join(t.TempDir(), "b")}, "PermissionDenied"},
		{apitest.QA, []string{"export", "--work-order", "WO-1", "--out", out}, "exists"},
		{apitest.QA, []string{"export", "--work-order", "WO-1", "--serials", "SN-0001", "--out", filepath.Join(t.TempDir(), "b")}, "InvalidArgument"},
		{apitest.QA, []string{"export", "--serials", "SN-404", "--out", filepath.Join(t.TempDir(), "b")}, "NotFound"},
		{apitest.QA, []string{"export", "--since", "yesterday", "--out", filepath.Join(t.TempDir(), "b")}, "RFC 3339"},
	} {
		if _, err := run(c.role, c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %v: error %v, want %q", c.role, c.args, err, c.want)
		}
	}
}
