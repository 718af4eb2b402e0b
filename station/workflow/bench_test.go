package workflow_test

import (
	"context"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/devid-station/devid/fixture/devpki"
	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
)

// newRunner builds a Runner over a real store with instant in-process CAs; opts adjust its
// configuration.
func newRunner(tb testing.TB, writers int, opts ...func(*workflow.Config)) (*workflow.Runner, *devpki.PKI, *store.Store) {
	tb.Helper()
	pki, err := devpki.New(devpki.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	st, err := store.Open(filepath.Join(tb.TempDir(), "station.db"), store.Options{StationID: "bench", MaxBatchSize: writers})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	if _, err := st.CreateWorkOrder(context.Background(), store.WorkOrder{ID: "WO-B", Profile: "default", CreatedBy: "bench",
		Range: &store.SerialRange{Prefix: "SN-", From: 0, To: 99999999, Width: 8}}); err != nil {
		tb.Fatal(err)
	}
	hw := asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1, 1}
	subject := workflow.Subject{Organization: []string{"Bench"}, CommonName: "{serial}"}
	profile := &workflow.Profile{
		Name:           "default",
		IDevID:         workflow.KeyProfile{Algorithm: agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P256, Handle: 0x81020000, Issuer: "maker", Subject: subject, HardwareModuleName: workflow.HWModuleTPM},
		IDevIDNV:       workflow.NVProfile{Index: 0x01C90000, Auth: agentv1.Hierarchy_HIERARCHY_PLATFORM, Lock: true},
		LDevID:         workflow.KeyProfile{Algorithm: agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P256, Handle: 0x81020002, Issuer: "customer", Subject: subject, HardwareModuleType: hw, HardwareModuleName: workflow.HWModuleSerial},
		SRKHandle:      0x81000002,
		LDevIDCertPath: "/etc/devid/ldevid.pem",
		LDevIDAuth:     workflow.AuthStationRA,
	}
	cfg := workflow.Config{
		Journal: st, Profiles: map[string]*workflow.Profile{"default": profile},
		Issuers: map[string]workflow.Issuer{
			"maker":    &instantCA{ca: pki.IDevIDIssuing, roots: pki.MakerRoot.RootPool()},
			"customer": &instantCA{ca: pki.LDevIDIssuing, roots: pki.CustomerRoot.RootPool()},
		},
		EKRoots: pki.TPMVendorBundle(), EKIntermediates: pki.EKIntermediates(),
	}
	for _, o := range opts {
		o(&cfg)
	}
	r, err := workflow.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return r, pki, st
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkUnit measures the station's cost per provisioned unit: the whole workflow (every
// check, every journal write to a real bbolt file) against instant fakes of the agent, its TPM
// and the CAs. The fakes' own crypto (ECDSA keys and signatures, the software credential
// activation, certificate issuance) runs in the same process and is counted too, so the
// station's share is below the cpu-ms/unit figure; station-cpu-ms/unit subtracts the fakes'
// own CPU time, measured on their threads. parallel=16 and 64 are a line's operating point,
// where the journal writes of concurrent units share commits; a lone unit (parallel=1) pays a
// commit and its fsyncs for each of its journal writes.
//
// cpu-ms/unit is the process's user and system CPU time (getrusage) over the timed run,
// divided by the units: the workflow, the store and its commits (fsync included), the
// garbage collector and the scheduler. station-cpu-ms/unit subtracts only the time the fakes'
// goroutines spend inside Do and Enroll, each locked to its thread and timed by the thread's
// CPU clock; the collector's background work for the fakes' garbage stays in the station's
// share. B/op and allocs/op count the fakes' allocations too: after the timed run every call
// the fakes answered is answered again, alone, on one goroutine (fake-allocs/unit), and
// station-allocs/unit and station-B/unit are what remains of the run's. A unit's fakes are made
// before the timer starts. b.N units are spread over parallel goroutines: to measure 64 units
// in flight, run enough of them (-benchtime=256x), as the default benchtime may choose fewer
// units than goroutines.
func BenchmarkUnit(b *testing.B) {
	for _, parallel := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("parallel=%d", parallel), func(b *testing.B) {
			var cas []*instantCA
			r, pki, _ := newRunner(b, parallel, func(c *workflow.Config) {
				for _, is := range c.Issuers {
					ca := is.(*instantCA)
					ca.reqs = make([]workflow.EnrollRequest, 0, b.N)
					cas = append(cas, ca)
				}
			})
			units := make([]*softUnit, b.N)
			for i := range units {
				units[i] = newSoftUnit(b, fmt.Sprintf("SN-%08d", i), pki.EKIssuing)
			}
			var mem runtime.MemStats
			runtime.ReadMemStats(&mem)
			mallocs0, bytes0 := mem.Mallocs, mem.TotalAlloc
			var next atomic.Int64
			var failed atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			cpu0, fake0 := cpuTime(), fakeCPU.Load()
			var wg sync.WaitGroup
			for range parallel {
				wg.Go(func() {
					for {
						i := int(next.Add(1)) - 1
						if i >= len(units) {
							return
						}
						if out := r.Run(context.Background(), units[i]); !out.Done {
							failed.Add(1)
							b.Errorf("unit %d: %+v", i, out)
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			total, fakes := cpuTime()-cpu0, time.Duration(fakeCPU.Load()-fake0)
			runtime.ReadMemStats(&mem)
			mallocs, allocated := mem.Mallocs-mallocs0, mem.TotalAlloc-bytes0
			b.ReportMetric(float64(total)/float64(time.Millisecond)/float64(b.N), "cpu-ms/unit")
			b.ReportMetric(float64(total-fakes)/float64(time.Millisecond)/float64(b.N), "station-cpu-ms/unit")
			// The fakes' calls answered again, alone: what of allocs/op is theirs.
			for _, u := range units {
				u.replay()
			}
			for _, ca := range cas {
				ca.replay()
			}
			runtime.ReadMemStats(&mem)
			fakeMallocs, fakeBytes := mem.Mallocs-mallocs0-mallocs, mem.TotalAlloc-bytes0-allocated
			b.ReportMetric(float64(fakeMallocs)/float64(b.N), "fake-allocs/unit")
			b.ReportMetric((float64(mallocs)-float64(fakeMallocs))/float64(b.N), "station-allocs/unit")
			b.ReportMetric((float64(allocated)-float64(fakeBytes))/float64(b.N), "station-B/unit")
			if failed.Load() > 0 {
				b.Fatalf("%d units failed", failed.Load())
			}
		})
	}
}

// TestSoftUnitProvisions checks the benchmark's fakes pass every station check.
func TestSoftUnitProvisions(t *testing.T) {
	r, pki, st := newRunner(t, 1)
	u := newSoftUnit(t, "SN-00000001", pki.EKIssuing)
	if out := r.Run(context.Background(), u); !out.Done {
		t.Fatalf("outcome %+v", out)
	}
	state, err := st.Unit(context.Background(), "SN-00000001")
	if err != nil || state.Status != store.StatusDone {
		t.Fatalf("unit %+v, %v", state, err)
	}
	leaf, err := x509.ParseCertificate(u.nv[0x01C90000])
	if err != nil || leaf.Subject.SerialNumber != "SN-00000001" {
		t.Fatalf("IDevID in NV: %v %v", leaf, err)
	}
}
