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
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/devid-station/devid/fixture/devpki"
)

// BenchmarkStepRecord measures one step record (BeginStep + EndStep, two
// commits with fsync, in groups) on a real file, with 1, 16 and 256 concurrent
// writers, with MaxBatchSize equal to the writers ("tuned") or fixed at 256 as a
// station configured for 256 units sees when fewer are active. With 16 or
// more writers it uses RunParallel with SetParallelism(writers / GOMAXPROCS);
// one writer is a plain loop.
func BenchmarkStepRecord(b *testing.B) {
	for _, writers := range []int{1, 16, 256} {
		for i, batch := range []int{writers, 256} {
			if i == 0 && writers == 256 {
				continue // same as the fixed run
			}
			b.Run(fmt.Sprintf("writers=%d/batch=%d", writers, batch), func(b *testing.B) {
				benchStepRecord(b, writers, batch)
			})
		}
	}
}

func benchStepRecord(b *testing.B, writers, batch int) {
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "station.db")
	s, err := Open(path, Options{StationID: testStation, MaxBatchSize: batch})
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

// benchUnits returns the number of units the store benchmarks build:
// BENCH_UNITS (e.g. 100000) or def.
func benchUnits(b *testing.B, def int) int {
	env := os.Getenv("BENCH_UNITS")
	if env == "" {
		return def
	}
	n, err := strconv.Atoi(env)
	if err != nil || n <= 0 {
		b.Fatalf("BENCH_UNITS=%q: want a number of units", env)
	}
	return n
}

// BenchmarkVerify builds a store of units the way the workflow writes them
// (state updates, an EK, eight steps with intents and results, events, two
// certificates; 22 audit records and 40 stored values per unit) and
// measures Verify over the whole file, reporting units/s, the CPU time per
// unit (user+system, which a loaded machine does not inflate the way it does
// wall time), the file's size per unit and the size of the pages in use per
// unit; and, before it, the time and CPU time Open takes (its check of every
// page) when the store is opened again. BENCH_UNITS=100000 sets the store's
// size (default 1000).
func BenchmarkVerify(b *testing.B) {
	units := benchUnits(b, 1000)
	b.Run(fmt.Sprintf("units=%d", units), func(b *testing.B) {
		built := buildUnits(b, units)
		if err := built.Close(); err != nil {
			b.Fatal(err)
		}
		// Opened again as stationd opens it at start, before it verifies: the page check of
		// every page (which also makes the verification's reads of them cheaper).
		runtime.GC() // the build's garbage is neither the open's nor the verification's
		cpu0, t0 := cpuTime(), time.Now()
		s, err := Open(built.path, Options{StationID: testStation, MaxBatchSize: 1024})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		openWall, openCPU := time.Since(t0), cpuTime()-cpu0
		cpu0 = cpuTime()
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
		b.ReportMetric(float64(openWall.Microseconds())/1000, "open-ms")
		b.ReportMetric(float64(openCPU.Microseconds())/1000, "open-cpu-ms")
		st, err := os.Stat(s.path)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(st.Size())/1024/float64(units), "file-KiB/unit")
		// The pages in use (the file grows in steps of up to bbolt's 16 MiB AllocSize, so its size
		// runs ahead of them by as much).
		var used int64
		if err := s.db.View(func(tx *bolt.Tx) error { used = tx.Size(); return nil }); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(used)/1024/float64(units), "used-KiB/unit")
	})
}

// buildUnits builds a store of units provisioned as oneUnit writes them,
// quickly: without fsync (only the contents matter), with 256 writers sharing
// large batches, and with certificates made by patching the serial number of
// one issued certificate per role (the store parses certificates, it does
// not verify them).
//
// With BENCH_STORE set to a folder, the store is kept there as
// verify-<units>.db and reused by the next run instead of built again (a store
// of 100,000 units takes several minutes to build).
func buildUnits(b *testing.B, units int) *Store {
	b.Helper()
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "station.db")
	kept := false
	if dir := os.Getenv("BENCH_STORE"); dir != "" {
		path = filepath.Join(dir, fmt.Sprintf("verify-%d.db", units))
		_, err := os.Stat(path)
		kept = err == nil
	}
	s, err := Open(path, Options{StationID: testStation, MaxBatchSize: 1024})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	if kept {
		return s
	}
	s.db.NoSync = true
	certs, err := newCertMaker()
	if err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 256)
	for g := 0; g < 256; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := next.Add(1)
				if n > int64(units) {
					return
				}
				if err := oneUnit(ctx, s, certs, n); err != nil {
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

// certMaker makes distinct certificates fast: one issued certificate per role
// whose 8-byte serial number is replaced per unit. The signatures of the
// copies do not verify.
type certMaker struct {
	der map[Role][]byte
	off map[Role]int // where the serial number's bytes are in der
}

func newCertMaker() (*certMaker, error) {
	pki, err := devpki.New(devpki.Options{})
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	m := &certMaker{der: map[Role][]byte{}, off: map[Role]int{}}
	for i, role := range []Role{RoleIDevID, RoleLDevID} {
		sn := new(big.Int).SetUint64(0x5aa55aa55aa55aa0 + uint64(i))
		cert, err := pki.IDevIDIssuing.Issue(&x509.Certificate{SerialNumber: sn, Subject: pkix.Name{SerialNumber: "SN-BENCH"}}, &key.PublicKey)
		if err != nil {
			return nil, err
		}
		if n := bytes.Count(cert.Raw, sn.Bytes()); n != 1 {
			return nil, fmt.Errorf("serial number found %d times in the certificate", n)
		}
		m.der[role], m.off[role] = cert.Raw, bytes.Index(cert.Raw, sn.Bytes())
	}
	return m, nil
}

// make returns role's certificate with serial number 0x5a<<56 | n (n < 2^56).
func (m *certMaker) make(role Role, n int64) []byte {
	der := bytes.Clone(m.der[role])
	binary.BigEndian.PutUint64(der[m.off[role]:], 0x5a<<56|uint64(n))
	return der
}

func oneUnit(ctx context.Context, s *Store, certs *certMaker, n int64) error {
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
	for i, role := range []Role{RoleIDevID, RoleLDevID} {
		if _, err := s.RecordCertificate(ctx, serial, role, certs.make(role, n*2+int64(i))); err != nil {
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
