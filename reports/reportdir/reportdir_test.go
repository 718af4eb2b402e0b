package reportdir_test

import (
	"context"
	"encoding/csv"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devid-station/devid/reports/reportdir"
	"github.com/devid-station/devid/reports/traveler/travelertest"
	"github.com/devid-station/devid/station/store"
)

func exists(t *testing.T, paths ...string) bool {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			return false
		}
	}
	return true
}

func TestWriterFollowsTheOutbox(t *testing.T) {
	ctx := context.Background()
	clock := travelertest.NewClock(time.Date(2026, 11, 28, 8, 0, 0, 0, time.UTC))
	st, err := store.Open(filepath.Join(t.TempDir(), "station.db"), store.Options{StationID: "st-1", Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	wo, err := st.CreateWorkOrder(store.WithPrincipal(ctx, "mes:erp"), store.WorkOrder{ID: "WO/9", Profile: "default",
		Range: &store.SerialRange{Prefix: "SN-", From: 1, To: 4, Width: 4}})
	if err != nil {
		t.Fatal(err)
	}
	unit := func(serial string) travelertest.Unit {
		return travelertest.Unit{Serial: serial, WorkOrder: wo.ID, Profile: "default", Clock: clock, StepTime: time.Second}
	}
	travelertest.WriteUnit(t, st, unit("SN-0001"))
	failed := unit("SN-0002")
	failed.FailAt, failed.FailCode = "idevid_enroll", "CA_REJECTED"
	travelertest.WriteUnit(t, st, failed)
	running := unit("SN-0003")
	running.StopBefore = "verify"
	travelertest.WriteUnit(t, st, running)
	// SN-0004 is done but its complete step is still open (the workflow marks the unit done,
	// tells the agent, then ends the step): its traveler waits for the step.
	closing := unit("SN-0004")
	closing.StopBefore = "complete"
	travelertest.WriteUnit(t, st, closing)
	ref, err := st.BeginStep(ctx, "SN-0004", "complete", []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpdateUnit(ctx, "SN-0004", func(u *store.UnitState) error { u.Status = store.StatusDone; return nil }); err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(t.TempDir(), "reports")
	w, err := reportdir.New(dir, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for serial, want := range map[string]bool{"SN-0001": true, "SN-0002": true, "SN-0003": false, "SN-0004": false} {
		html, pdf := reportdir.TravelerFiles(dir, serial)
		if got := exists(t, html, pdf); got != want {
			t.Errorf("traveler files of %s written: %v, want %v", serial, got, want)
		}
	}
	html, pdf := reportdir.TravelerFiles(dir, "SN-0001")
	if b, _ := os.ReadFile(pdf); !strings.HasPrefix(string(b), "%PDF-") {
		t.Errorf("%s is not a PDF", pdf)
	}
	if b, _ := os.ReadFile(html); !strings.Contains(string(b), "SN-0001") || !strings.Contains(string(b), "mes:erp") {
		t.Errorf("%s does not name the unit and the work order's creator", html)
	}

	if err := st.EndStep(ctx, ref, []byte(`{}`), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CloseWorkOrder(ctx, wo.ID, ""); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	html, pdf = reportdir.TravelerFiles(dir, "SN-0004")
	if !exists(t, html, pdf) {
		t.Error("no traveler for SN-0004 once its complete step ended")
	}
	lh, lp, lc := reportdir.LotFiles(dir, wo.ID)
	if filepath.Base(lc) != "WO%2F9.csv" {
		t.Errorf("lot CSV %s, want WO%%2F9.csv (a work order id is made a file name)", lc)
	}
	if !exists(t, lh, lp, lc) {
		t.Fatalf("no lot report for %s after it closed", wo.ID)
	}
	f, err := os.Open(lc)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var serials []string
	for _, r := range rows[1:] {
		serials = append(serials, r[0]+" "+r[4])
	}
	if got, want := strings.Join(serials, ", "), "SN-0001 done, SN-0002 failed, SN-0003 running, SN-0004 done"; got != want {
		t.Errorf("lot CSV units %q, want %q", got, want)
	}

	// A new writer resumes after what the folder holds: it rewrites nothing.
	if err := os.Remove(pdf); err != nil {
		t.Fatal(err)
	}
	w2, err := reportdir.New(dir, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w2.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if exists(t, pdf) {
		t.Error("a restarted writer rewrote a traveler of an event it had handled")
	}
}

func TestRunWritesTheLastReportsWhenStopped(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "station.db"), store.Options{StationID: "st-1"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	dir := t.TempDir()
	read := make(chan struct{}, 1)
	w, err := reportdir.New(dir, signalling{st, read}, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Poll = time.Hour // only the start and the final sync run
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx, 30*time.Second)
	}()
	<-read // the first read of the outbox is done: only the final sync sees what follows
	travelertest.WriteUnit(t, st, travelertest.Unit{Serial: "SN-0100", WorkOrder: "WO-1", Profile: "default"})
	cancel()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return within 60 s of its context ending")
	}
	html, pdf := reportdir.TravelerFiles(dir, "SN-0100")
	if !exists(t, html, pdf) {
		t.Error("Run did not write the traveler of a unit that ended before it was stopped")
	}
}

// signalling is a store that says when an outbox read returned.
type signalling struct {
	*store.Store
	read chan struct{}
}

func (s signalling) OutboxAfter(ctx context.Context, token uint64, limit int) ([]store.Event, uint64, error) {
	evs, next, err := s.Store.OutboxAfter(ctx, token, limit)
	select {
	case s.read <- struct{}{}:
	default:
	}
	return evs, next, err
}

func TestFileNamesAreOneToOne(t *testing.T) {
	cases := map[string]string{"SN-0001": "SN-0001", "a.b:c_d": "a.b:c_d", "WO/9": "WO%2F9", "WO_9": "WO_9",
		"WO%2F9": "WO%252F9", "..": "%2E.", ".hidden": "%2Ehidden", "x y": "x%20y"}
	for id, want := range cases {
		_, _, csv := reportdir.LotFiles("/r", id)
		if got := strings.TrimSuffix(filepath.Base(csv), ".csv"); got != want {
			t.Errorf("the file name of %q is %q, want %q", id, got, want)
		}
	}
}

// TestSyncStopsAtAFileItCannotWrite: the travelers of a batch are written concurrently; one
// that cannot be written fails Sync, which then keeps its outbox position, so the next Sync
// writes it (and Written says how far the folder is complete).
func TestSyncStopsAtAFileItCannotWrite(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(filepath.Join(t.TempDir(), "station.db"), store.Options{StationID: "st-1"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var serials []string
	for i := range 8 {
		serial := fmt.Sprintf("SN-%04d", i+1)
		serials = append(serials, serial)
		travelertest.WriteUnit(t, st, travelertest.Unit{Serial: serial, WorkOrder: "WO-1", Profile: "default"})
	}
	dir := t.TempDir()
	w, err := reportdir.New(dir, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A folder where SN-0005's PDF goes: renaming the written file onto it fails.
	_, blocked := reportdir.TravelerFiles(dir, "SN-0005")
	if err := os.Mkdir(blocked, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(ctx); err == nil || !strings.Contains(err.Error(), "SN-0005.pdf") {
		t.Fatalf("Sync with SN-0005's PDF unwritable: %v, want an error naming the file", err)
	}
	if w.Written() != 0 {
		t.Errorf("Written %d after a failed Sync, want 0 (the folder is not complete)", w.Written())
	}
	if err := os.Remove(blocked); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for _, serial := range serials {
		if html, pdf := reportdir.TravelerFiles(dir, serial); !exists(t, html, pdf) {
			t.Errorf("no traveler files for %s after the second Sync", serial)
		}
	}
	_, head, err := st.OutboxAfter(ctx, 0, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	if w.Written() != head {
		t.Errorf("Written %d after a complete Sync, want the outbox head %d", w.Written(), head)
	}
}
