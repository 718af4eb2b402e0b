package traveler_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/devid-station/devid/reports/traveler"
	"github.com/devid-station/devid/reports/traveler/travelertest"
	"github.com/devid-station/devid/station/store"
)

// BenchmarkBuild measures traveler.Build and Record.JSON over every unit of a store, in CPU
// time a unit. With BENCH_STORE=DIR it reads the store reports/export's BenchmarkExport kept
// there (export-<BENCH_UNITS>.db and its key; build it first with that benchmark), else it
// writes BENCH_UNITS units (default 200) into a fresh store. BENCH_TRAVELER_DUMP=FILE writes
// every unit's traveler JSON into FILE, in serial order, to compare two versions' output byte
// for byte.
func BenchmarkBuild(b *testing.B) {
	units := travelertest.BenchUnits(b, 200)
	ctx := context.Background()
	var st *store.Store
	if dir := os.Getenv("BENCH_STORE"); dir != "" {
		base := filepath.Join(dir, fmt.Sprintf("export-%d", units))
		der, err := os.ReadFile(base + ".key")
		if err != nil {
			b.Fatalf("no kept store (run reports/export's BenchmarkExport with BENCH_STORE first): %v", err)
		}
		key, err := x509.ParseECPrivateKey(der)
		if err != nil {
			b.Fatal(err)
		}
		if st, err = store.Open(base+".db", store.Options{Checkpoints: store.CheckpointOptions{Signer: key, Interval: time.Hour}}); err != nil {
			b.Fatal(err)
		}
	} else {
		var err error
		if st, err = store.Open(filepath.Join(b.TempDir(), "station.db"), store.Options{StationID: "st-bench"}); err != nil {
			b.Fatal(err)
		}
		for i := 1; i <= units; i++ {
			travelertest.WriteUnit(b, st, travelertest.Unit{Serial: fmt.Sprintf("SN-%06d", i), WorkOrder: "WO-1", Profile: "default"})
		}
	}
	defer st.Close()
	serials := make([]string, units)
	for i := range serials {
		serials[i] = fmt.Sprintf("SN-%06d", i+1)
	}
	var dump *os.File
	if name := os.Getenv("BENCH_TRAVELER_DUMP"); name != "" {
		var err error
		if dump, err = os.Create(name); err != nil {
			b.Fatal(err)
		}
		defer dump.Close()
	}
	// One untimed pass first: it writes the dump, and maps the store's pages, whose first read
	// (a page fault each) would otherwise weigh on whichever code reads them first.
	each := func(fn func(data []byte)) {
		for _, serial := range serials {
			rec, err := traveler.Build(ctx, st, serial)
			if err != nil {
				b.Fatal(err)
			}
			data, err := rec.JSON()
			if err != nil {
				b.Fatal(err)
			}
			fn(data)
		}
	}
	each(func(data []byte) {
		if dump != nil {
			if _, err := dump.Write(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	runtime.GC()
	b.ResetTimer()
	cpu0 := travelertest.CPUTime()
	for i := 0; i < b.N; i++ {
		each(func([]byte) {})
	}
	b.ReportMetric(float64((travelertest.CPUTime()-cpu0).Microseconds())/float64(units*b.N), "cpu-µs/unit")
}
