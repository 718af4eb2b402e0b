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
	"testing"
	"time"

	"github.com/devid-station/devid/reports/export"
	"github.com/devid-station/devid/reports/traveler/travelertest"
	"github.com/devid-station/devid/station/store"
)

// BenchmarkExport measures building and writing a work order's bundle, then verifying it
// offline, in units per second, on a store of provisioned units written as the workflow
// journals them.
func BenchmarkExport(b *testing.B) {
	const units = 100
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
		Range: &store.SerialRange{Prefix: "SN-", From: 1, To: units, Width: 6}}); err != nil {
		b.Fatal(err)
	}
	roots := x509.NewCertPool()
	for i := 1; i <= units; i++ {
		roots.AddCert(travelertest.WriteUnit(b, st, travelertest.Unit{Serial: fmt.Sprintf("SN-%06d", i), WorkOrder: "WO-1", Profile: "default"}).DevIDRoot)
	}
	sel := export.Selection{WorkOrder: "WO-1"}
	base, dir := b.TempDir(), ""
	b.Run("build", func(b *testing.B) {
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
	})
	b.Run("verify", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if rep := export.Verify(dir, roots, key.Public()); !rep.OK() {
				b.Fatalf("bundle fails:\n%s", rep)
			}
		}
		b.ReportMetric(float64(units)*float64(b.N)/b.Elapsed().Seconds(), "units/s")
	})
}
