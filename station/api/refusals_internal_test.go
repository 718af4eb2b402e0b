package api

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/devid-station/devid/station/store"
)

// TestRefusalWindows: each window gives up to refusalBurst refusals a record of their own and
// summarizes the rest when the next window starts.
func TestRefusalWindows(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "station.db"), store.Options{StationID: "st-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	a := newRefusalAuditor(st, slog.New(slog.DiscardHandler), time.Minute, func() time.Time { return now })
	records := func() (own, summaries []store.AuditEvent) {
		recs, err := st.AuditAfter(t.Context(), 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			switch {
			case r.Action != store.AuditActionAPIRefused:
			case r.ErrorCode == RefusedSummary:
				summaries = append(summaries, r)
			default:
				own = append(own, r)
			}
		}
		return own, summaries
	}
	// Window 1: one caller 10 times, then 30 distinct callers.
	for range 10 {
		a.record(refusal{principal: "CN=a", method: "/m", code: RefusedNoRole})
	}
	for i := range 30 {
		a.record(refusal{principal: fmt.Sprintf("CN=b%d", i), method: "/m", code: RefusedNoRole})
	}
	own, sums := records()
	if len(own) != refusalBurst || len(sums) != 0 {
		t.Fatalf("window 1: %d own records, %d summaries; want %d and 0", len(own), len(sums), refusalBurst)
	}
	// Window 2 starts with the next refusal: window 1's summary is written first.
	now = now.Add(time.Minute)
	a.record(refusal{principal: "CN=a", method: "/m", code: RefusedNoRole})
	own, sums = records()
	if len(sums) != 1 || sums[0].Details["suppressed"] != "24" || sums[0].Details["distinct"] != "16" {
		t.Fatalf("window 1 summary %+v, want 24 suppressed refusals of 16 callers (a, b15-b29)", sums)
	}
	if len(own) != refusalBurst+1 || own[len(own)-1].Principal != "CN=a" {
		t.Fatalf("window 2: the first refusal has no record of its own")
	}
	// Nothing suppressed: no summary.
	a.flush()
	if _, sums = records(); len(sums) != 1 {
		t.Fatalf("a window without suppressed refusals wrote a summary")
	}
}
