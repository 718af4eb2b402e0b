package store

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkStepRecord measures one step record (BeginStep + EndStep, two
// batched commits with fsync) on a real file, with 1, 16 and 256 concurrent
// writers, under bbolt's default MaxBatchDelay (10ms) and the store's (2ms),
// with MaxBatchSize equal to the writers ("tuned") or fixed at 256 as a
// station configured for 256 units sees when fewer are active. With 16 or
// more writers it uses RunParallel with SetParallelism(writers / GOMAXPROCS);
// one writer is a plain loop.
func BenchmarkStepRecord(b *testing.B) {
	for _, delay := range []time.Duration{10 * time.Millisecond, defaultMaxBatchDelay} {
		for _, writers := range []int{1, 16, 256} {
			for i, batch := range []int{writers, 256} {
				if i == 0 && writers == 256 {
					continue // same as the fixed run
				}
				b.Run(fmt.Sprintf("delay=%s/writers=%d/batch=%d", delay, writers, batch), func(b *testing.B) {
					benchStepRecord(b, delay, writers, batch)
				})
			}
		}
	}
}

func benchStepRecord(b *testing.B, delay time.Duration, writers, batch int) {
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "station.db")
	s, err := Open(path, Options{StationID: testStation, MaxBatchSize: batch, MaxBatchDelay: delay})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	procs := runtime.GOMAXPROCS(0)
	goroutines := writers
	if writers >= procs {
		goroutines = writers / procs * procs
	}
	for i := 0; i < goroutines; i++ {
		if _, err := s.UpdateUnit(ctx, fmt.Sprintf("SN%05d", i), func(u *UnitState) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
	record := func(serial string) error {
		ref, err := s.BeginStep(ctx, serial, "enroll", []byte("intent"))
		if err != nil {
			return err
		}
		return s.EndStep(ctx, ref, []byte("result"), "")
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.ReportMetric(float64(goroutines), "writers")
	if writers < procs {
		for i := 0; i < b.N; i++ {
			if err := record("SN00000"); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	var next atomic.Int64
	b.SetParallelism(writers / procs)
	b.RunParallel(func(pb *testing.PB) {
		serial := fmt.Sprintf("SN%05d", next.Add(1)-1)
		for pb.Next() {
			if err := record(serial); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
