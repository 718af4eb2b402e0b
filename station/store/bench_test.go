package store

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"math/big"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/devid-station/devid/fixture/devpki"
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

// BenchmarkVerify builds a store of units the way the workflow writes them
// (state updates, an EK, eight steps with intents and results, events, two
// certificates; about 30 audit records and 90 stored values per unit) and
// measures Verify over the whole file, reporting units/s and the CPU time
// per unit (user+system, which a loaded machine does not inflate the way it
// does wall time). The store is built without fsync (only its contents
// matter here).
func BenchmarkVerify(b *testing.B) {
	for _, units := range []int{1000} {
		b.Run(fmt.Sprintf("units=%d", units), func(b *testing.B) {
			s := buildUnits(b, units)
			cpu0 := cpuTime()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				rep, err := s.Verify(context.Background(), VerifyOptions{})
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(rep.Records)/float64(units), "records/unit")
				b.ReportMetric(float64(rep.Values)/float64(units), "values/unit")
			}
			b.ReportMetric(float64(units)*float64(b.N)/b.Elapsed().Seconds(), "units/s")
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(units*b.N), "cpu-µs/unit")
		})
	}
}

func buildUnits(b *testing.B, units int) *Store {
	b.Helper()
	ctx := context.Background()
	s, err := Open(filepath.Join(b.TempDir(), "station.db"), Options{StationID: testStation})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	s.db.NoSync = true
	pki, err := devpki.New(devpki.Options{})
	if err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := next.Add(1)
				if n > int64(units) {
					return
				}
				if err := oneUnit(ctx, s, pki, n); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	return s
}

func oneUnit(ctx context.Context, s *Store, pki *devpki.PKI, n int64) error {
	serial := fmt.Sprintf("SN%07d", n)
	set := func(st Status) error {
		_, err := s.UpdateUnit(ctx, serial, func(u *UnitState) error { u.Status, u.Profile = st, "default"; return nil })
		return err
	}
	if err := set(StatusRunning); err != nil {
		return err
	}
	fp := sha256.Sum256([]byte(serial))
	if err := s.BindEK(ctx, hex.EncodeToString(fp[:]), serial); err != nil {
		return err
	}
	intent := bytes.Repeat([]byte("i"), 200)
	for _, step := range []string{"authorize", "ek", "activate", "idevid.key", "idevid.enroll", "idevid.install", "ldevid.key", "ldevid.enroll"} {
		ref, err := s.BeginStep(ctx, serial, step, intent)
		if err != nil {
			return err
		}
		if err := s.EndStep(ctx, ref, intent, ""); err != nil {
			return err
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	for i, role := range []Role{RoleIDevID, RoleLDevID} {
		cert, err := pki.IDevIDIssuing.Issue(&x509.Certificate{SerialNumber: big.NewInt(n*2 + int64(i)), Subject: pkix.Name{SerialNumber: serial}}, &key.PublicKey)
		if err != nil {
			return err
		}
		if _, err := s.RecordCertificate(ctx, serial, role, cert.Raw); err != nil {
			return err
		}
	}
	if _, err := s.AppendEvent(ctx, serial, "unit.done", "", nil); err != nil {
		return err
	}
	return set(StatusDone)
}

// cpuTime returns the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
