package reportdir_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/devid-station/devid/reports/reportdir"
	"github.com/devid-station/devid/reports/traveler/travelertest"
	"github.com/devid-station/devid/station/store"
)

// BenchmarkSync measures the reports writer catching up with BENCH_UNITS (default 64) ended
// units: each one's traveler rendered as HTML and PDF and written. A line that ends units
// faster than units/s leaves the writer behind.
func BenchmarkSync(b *testing.B) {
	units := travelertest.BenchUnits(b, 64)
	ctx := context.Background()
	clock := travelertest.NewClock(time.Date(2026, 11, 28, 8, 0, 0, 0, time.UTC))
	st, err := store.Open(filepath.Join(b.TempDir(), "station.db"), store.Options{StationID: "st-1", Clock: clock})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	wo, err := st.CreateWorkOrder(store.WithPrincipal(ctx, "mes:erp"), store.WorkOrder{ID: "WO-1", Profile: "default",
		Range: &store.SerialRange{Prefix: "SN-", From: 1, To: uint64(units), Width: 6}})
	if err != nil {
		b.Fatal(err)
	}
	for i := 1; i <= units; i++ {
		travelertest.WriteUnit(b, st, travelertest.Unit{Serial: fmt.Sprintf("SN-%06d", i), WorkOrder: wo.ID,
			Profile: "default", Clock: clock, StepTime: time.Second})
	}
	b.ResetTimer()
	cpu0 := travelertest.CPUTime()
	for i := 0; i < b.N; i++ {
		w, err := reportdir.New(filepath.Join(b.TempDir(), "reports"), st, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := w.Sync(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	n := float64(b.N * units)
	b.ReportMetric(n/b.Elapsed().Seconds(), "units/s")
	b.ReportMetric(float64(travelertest.CPUTime()-cpu0)/float64(time.Millisecond)/n, "cpu-ms/unit")
}
