package export_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/devid-station/devid/reports/export"
	"github.com/devid-station/devid/reports/traveler/travelertest"
	"github.com/devid-station/devid/station/store"
)

// BenchmarkExport measures building and writing a work order's bundle, then verifying it
// offline, in units per second, on a store of provisioned units written as the workflow
// journals them (64 at a time, so that they share commits). BENCH_UNITS sets the number of
// units (default 100); each unit has its own CAs.
func BenchmarkExport(b *testing.B) {
	units := 100
	if env := os.Getenv("BENCH_UNITS"); env != "" {
		n, err := strconv.Atoi(env)
		if err != nil || n <= 0 {
			b.Fatalf("BENCH_UNITS=%q: want a number of units", env)
		}
		units = n
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	st, err := store.Open(filepath.Join(b.TempDir(), "station.db"), store.Options{StationID: "st-bench",
		Checkpoints: store.CheckpointOptions{Signer: key, Interval: time.Hour}})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	if _, err := st.CreateWorkOrder(ctx, store.WorkOrder{ID: "WO-1", Profile: "default",
		Range: &store.SerialRange{Prefix: "SN-", From: 1, To: uint64(units), Width: 6}}); err != nil {
		b.Fatal(err)
	}
	roots := x509.NewCertPool()
	var mu sync.Mutex
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= int64(units); i = next.Add(1) {
				w := travelertest.WriteUnit(b, st, travelertest.Unit{Serial: fmt.Sprintf("SN-%06d", i), WorkOrder: "WO-1", Profile: "default"})
				mu.Lock()
				roots.AddCert(w.DevIDRoot)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if b.Failed() {
		return
	}
	sel := export.Selection{WorkOrder: "WO-1"}
	base, dir := b.TempDir(), ""
	b.Run("build", func(b *testing.B) {
		cpu0 := cpuTime()
		for i := 0; i < b.N; i++ {
			bundle, err := export.Build(ctx, st, sel, export.Options{Version: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			dir = filepath.Join(base, fmt.Sprintf("bundle-%d", i))
			if err := os.RemoveAll(dir); err != nil {
				b.Fatal(err)
			}
			if err := bundle.WriteDir(dir); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(units)*float64(b.N)/b.Elapsed().Seconds(), "units/s")
		b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(units*b.N), "cpu-µs/unit")
	})
	b.Run("verify", func(b *testing.B) {
		cpu0 := cpuTime()
		for i := 0; i < b.N; i++ {
			if rep := export.Verify(dir, roots, key.Public()); !rep.OK() {
				b.Fatalf("bundle fails:\n%s", rep)
			}
		}
		b.ReportMetric(float64(units)*float64(b.N)/b.Elapsed().Seconds(), "units/s")
		b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(units*b.N), "cpu-µs/unit")
	})
}

// cpuTime returns the process's user and system CPU time so far: on a loaded machine it
// says more than wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
