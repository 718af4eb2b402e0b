package export_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devid-station/devid/reports/export"
	"github.com/devid-station/devid/reports/traveler/travelertest"
	"github.com/devid-station/devid/station/store"
)

// BenchmarkExport measures building and writing a work order's bundle as one archive, then
// verifying it offline, in units per second and CPU time a unit, on a store of provisioned
// units written as the workflow journals them (benchStore). BENCH_UNITS sets the number of
// units (default 100); BENCH_STORE=DIR keeps the store for the next run.
func BenchmarkExport(b *testing.B) {
	units := travelertest.BenchUnits(b, 100)
	st, key, roots := benchStore(b, units)
	if b.Failed() {
		return
	}
	defer st.Close()
	ctx := context.Background()
	sel := export.Selection{WorkOrder: "WO-1"}
	base := b.TempDir()
	// The archive (one file written in one pass) is what is measured; BENCH_FOLDER=1 also
	// measures the folder, a file a traveler and a certificate.
	formats := []string{"archive"}
	if os.Getenv("BENCH_FOLDER") == "1" {
		formats = append(formats, "folder")
	}
	for _, format := range formats {
		name, out := "", ""
		if format == "folder" {
			name = "-folder"
		}
		b.Run("build"+name, func(b *testing.B) {
			defer profile(b, "build"+name)()
			peak := watchMemory()
			cpu0 := travelertest.CPUTime()
			for i := 0; i < b.N; i++ {
				out = filepath.Join(base, fmt.Sprintf("%s-%d", format, i))
				if err := writeBundle(ctx, st, sel, format, out); err != nil {
					b.Fatal(err)
				}
			}
			report(b, units, cpu0)
			reportMemory(b, peak)
		})
		b.Run("verify"+name, func(b *testing.B) {
			defer profile(b, "verify"+name)()
			peak := watchMemory()
			cpu0 := travelertest.CPUTime()
			for i := 0; i < b.N; i++ {
				if rep := export.Verify(out, roots, key.Public()); !rep.OK() {
					b.Fatalf("bundle fails:\n%s", rep)
				}
			}
			report(b, units, cpu0)
			reportMemory(b, peak)
		})
	}
}

// profile writes a CPU profile of the phase to $BENCH_PROFILE/<phase>.pprof when BENCH_PROFILE
// names a folder, and returns the function that ends it.
func profile(b *testing.B, phase string) func() {
	dir := os.Getenv("BENCH_PROFILE")
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, phase+".pprof"))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// benchStore returns a store of units provisioned as the workflow journals them (64 at a time,
// so that they share commits; each unit with its own CAs), its audit key and the roots of the
// units' certificates. With BENCH_STORE set to a folder, the three are kept there as
// export-<units>.db, export-<units>.key (mode 0600) and export-<units>-roots.pem, and reused by
// the next run instead of built again (100,000 units take several minutes to build).
func benchStore(b *testing.B, units int) (*store.Store, *ecdsa.PrivateKey, *x509.CertPool) {
	dir, kept := b.TempDir(), false
	if env := os.Getenv("BENCH_STORE"); env != "" {
		dir = env
		_, err := os.Stat(filepath.Join(dir, fmt.Sprintf("export-%d.key", units)))
		kept = err == nil
	}
	base := filepath.Join(dir, fmt.Sprintf("export-%d", units))
	roots := x509.NewCertPool()
	var key *ecdsa.PrivateKey
	if kept {
		der, err := os.ReadFile(base + ".key")
		if err != nil {
			b.Fatal(err)
		}
		if key, err = x509.ParseECPrivateKey(der); err != nil {
			b.Fatal(err)
		}
		pemRoots, err := os.ReadFile(base + "-roots.pem")
		if err != nil || !roots.AppendCertsFromPEM(pemRoots) {
			b.Fatalf("reading the kept roots: %v", err)
		}
	} else {
		var err error
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			b.Fatal(err)
		}
	}
	st, err := store.Open(base+".db", store.Options{StationID: "st-bench",
		Checkpoints: store.CheckpointOptions{Signer: key, Interval: time.Hour}})
	if err != nil {
		b.Fatal(err)
	}
	if kept {
		return st, key, roots
	}
	ctx := context.Background()
	if _, err := st.CreateWorkOrder(ctx, store.WorkOrder{ID: "WO-1", Profile: "default",
		Range: &store.SerialRange{Prefix: "SN-", From: 1, To: uint64(units), Width: 6}}); err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	var pemRoots bytes.Buffer
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			tb := writerTB{b} // a failure ends this writer, not the benchmark's goroutine
			for i := next.Add(1); i <= int64(units); i = next.Add(1) {
				w := travelertest.WriteUnit(tb, st, travelertest.Unit{Serial: fmt.Sprintf("SN-%06d", i), WorkOrder: "WO-1", Profile: "default"})
				mu.Lock()
				roots.AddCert(w.DevIDRoot)
				_ = pem.Encode(&pemRoots, &pem.Block{Type: "CERTIFICATE", Bytes: w.DevIDRoot.Raw})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	if os.Getenv("BENCH_STORE") != "" {
		der, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			b.Fatal(err)
		}
		// The key last: its presence says the store and the roots are complete.
		if err := os.WriteFile(base+"-roots.pem", pemRoots.Bytes(), 0o644); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(base+".key", der, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	return st, key, roots
}

// writerTB is the benchmark's testing.TB for a goroutine of its own: Fatal, Fatalf and FailNow
// report the failure (Error is safe from any goroutine) and end that goroutine only, where
// testing.B's must be called from the benchmark's goroutine.
type writerTB struct{ testing.TB }

func (w writerTB) Fatal(args ...any) {
	w.TB.Helper()
	w.TB.Error(args...)
	runtime.Goexit()
}

func (w writerTB) Fatalf(format string, args ...any) {
	w.TB.Helper()
	w.TB.Errorf(format, args...)
	runtime.Goexit()
}

func (w writerTB) FailNow() {
	w.TB.Fail()
	runtime.Goexit()
}

// reportMemory states the peak of the Go runtime's memory while the phase ran (peak-MiB) and
// how much of it the phase added to what the process held when it began (added-MiB: the store
// and the units written keep some memory of their own).
func reportMemory(b *testing.B, peak func() (float64, float64)) {
	start, top := peak()
	b.ReportMetric(top, "peak-MiB")
	b.ReportMetric(top-start, "added-MiB")
}

// watchMemory collects garbage and returns the memory to the system, then samples the Go
// runtime's memory every 5 ms (all it maps but what it returned: heap, stacks and runtime
// structures; not the store's memory map) until the returned function is called, which stops
// the sampling and returns the first sample and the peak in MiB. It is what the process needs
// in RAM while the phase runs, less than its resident set, which also counts the pages of the
// store the export read.
func watchMemory() func() (float64, float64) {
	runtime.GC()
	debug.FreeOSMemory()
	samples := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	var peak uint64
	sample := func() {
		metrics.Read(samples)
		peak = max(peak, samples[0].Value.Uint64()-samples[1].Value.Uint64())
	}
	sample()
	start := peak
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				sample()
				return
			case <-t.C:
				sample()
			}
		}
	}()
	return func() (float64, float64) {
		close(stop)
		<-done
		return float64(start) / (1 << 20), float64(peak) / (1 << 20)
	}
}

// writeBundle exports sel into out: an archive written as it is built, or a folder.
func writeBundle(ctx context.Context, st *store.Store, sel export.Selection, format, out string) error {
	if format == "folder" {
		bundle, err := export.Build(ctx, st, sel, export.Options{Version: "bench"})
		if err != nil {
			return err
		}
		return bundle.WriteDir(out)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := export.NewTarWriter(f)
	if _, err := export.Write(ctx, st, sel, export.Options{Version: "bench"}, tw); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}

// report states units/s and the process's CPU time a unit since cpu0.
func report(b *testing.B, units int, cpu0 time.Duration) {
	b.ReportMetric(float64(units)*float64(b.N)/b.Elapsed().Seconds(), "units/s")
	b.ReportMetric(float64((travelertest.CPUTime()-cpu0).Microseconds())/float64(units*b.N), "cpu-µs/unit")
}
