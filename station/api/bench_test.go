package api_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/station/api"
	"github.com/devid-station/devid/station/api/apitest"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/store/storetest"
)

// benchUnits is how many units the store benchmarks seed: STORE_BENCH_UNITS, else 100,000.
func benchUnits(b *testing.B) int {
	if v := os.Getenv("STORE_BENCH_UNITS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1000 {
			b.Fatalf("STORE_BENCH_UNITS=%q: want a number of at least 1000", v)
		}
		return n
	}
	return 100_000
}

// median returns the median of d in milliseconds.
func median(d []time.Duration) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	return float64(s[len(s)/2]) / float64(time.Millisecond)
}

// cpuTime is the CPU time the process used so far (user and system, every thread): the API
// server and its client both run in it.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkListUnits lists one page of 100 units through the API (TLS gRPC, a QA client) over
// 100,000 stored units, at offsets 0, 50,000 and 99,900 of the whole listing, and the first
// page of a work order's units and of the units waiting (in flight), and reports the median
// time per page (ms/page; issue 13's target is < 20 ms at any offset) and the median CPU time
// the process spent on one (cpu-ms/page: server and client; on a shared host the wall time
// includes waiting for a core).
func BenchmarkListUnits(b *testing.B) {
	n := benchUnits(b)
	st, err := store.Open(filepath.Join(b.TempDir(), "station.db"), store.Options{StationID: "st-bench"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	opts := storetest.Options{InFlightEvery: 500, FailedEvery: 50}
	start := time.Now()
	if err := storetest.Seed(b.Context(), st, 0, n, opts); err != nil {
		b.Fatal(err)
	}
	b.Logf("seeded %d units in %.1f s", n, time.Since(start).Seconds())
	env := apitest.Start(b, api.Config{Store: st, Version: "bench"})
	qa := env.Client(b, apitest.QA)

	// The tokens at the offsets, from a listing in pages of up to 1000.
	offsets := []int{0, n / 2, n - 100}
	tokens := map[int]string{}
	at, token := 0, ""
	for _, off := range offsets[1:] {
		for at < off {
			resp, err := qa.ListUnits(b.Context(), &stationv1.ListUnitsRequest{PageSize: uint32(min(1000, off-at)), PageToken: token})
			if err != nil {
				b.Fatal(err)
			}
			at, token = at+len(resp.GetUnits()), resp.GetNextPageToken()
		}
		tokens[off] = token
	}
	cases := []struct {
		name  string
		req   *stationv1.ListUnitsRequest
		first string
		want  int
	}{
		{fmt.Sprintf("offset=%d", offsets[0]), &stationv1.ListUnitsRequest{PageSize: 100}, storetest.Serial("", offsets[0]), 100},
		{fmt.Sprintf("offset=%d", offsets[1]), &stationv1.ListUnitsRequest{PageSize: 100, PageToken: tokens[offsets[1]]}, storetest.Serial("", offsets[1]), 100},
		{fmt.Sprintf("offset=%d", offsets[2]), &stationv1.ListUnitsRequest{PageSize: 100, PageToken: tokens[offsets[2]]}, storetest.Serial("", offsets[2]), 100},
		{"work_order", &stationv1.ListUnitsRequest{PageSize: 100, WorkOrder: fmt.Sprintf("WO-%d", n/2000)}, storetest.Serial("", n/2000*1000), 100},
		{"in_flight", &stationv1.ListUnitsRequest{PageSize: 100, Status: stationv1.UnitStatus_UNIT_STATUS_RUNNING}, storetest.Serial("", 499), min(100, n/500)},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var took, cpu []time.Duration
			for b.Loop() {
				t0, c0 := time.Now(), cpuTime(b)
				resp, err := qa.ListUnits(b.Context(), c.req)
				took, cpu = append(took, time.Since(t0)), append(cpu, cpuTime(b)-c0)
				if err != nil {
					b.Fatal(err)
				}
				if u := resp.GetUnits(); len(u) != c.want || u[0].GetSerial() != c.first || u[0].GetFixtureSlot() == "" {
					b.Fatalf("%d units (%v...), want %d from %s", len(u), u[:min(1, len(u))], c.want, c.first)
				}
			}
			b.ReportMetric(median(took), "ms/page")
			b.ReportMetric(median(cpu), "cpu-ms/page")
		})
	}
}

// indexBenchUnits is how many units BenchmarkUnitCounts seeds: INDEX_BENCH_UNITS, else 20,000.
func indexBenchUnits(b *testing.B) int {
	if v := os.Getenv("INDEX_BENCH_UNITS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1000 {
			b.Fatalf("INDEX_BENCH_UNITS=%q: want a number of at least 1000", v)
		}
		return n
	}
	return 20_000
}

// BenchmarkUnitCounts measures the API calls that count units over the whole store (GetStatus:
// units by status and step; ListWorkOrders: done and failed units of each work order listed)
// and over one work order (GetWorkOrder), over INDEX_BENCH_UNITS seeded units (as the workflow
// leaves them, 1,000 a work order), and reports the median time per call (ms/op) and the
// median CPU time the process spent on one (cpu-ms/op: server and client).
func BenchmarkUnitCounts(b *testing.B) {
	n := indexBenchUnits(b)
	st, err := store.Open(filepath.Join(b.TempDir(), "station.db"), store.Options{StationID: "st-bench"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	if err := storetest.Seed(b.Context(), st, 0, n, storetest.Options{InFlightEvery: 500, FailedEvery: 50}); err != nil {
		b.Fatal(err)
	}
	for i := range n / 1000 {
		if _, err := st.CreateWorkOrder(b.Context(), store.WorkOrder{ID: fmt.Sprintf("WO-%d", i), Profile: "default",
			Range: &store.SerialRange{Prefix: "SN-", From: uint64(i * 1000), To: uint64(i*1000 + 999), Width: 8}}); err != nil {
			b.Fatal(err)
		}
	}
	env := apitest.Start(b, api.Config{Store: st, Version: "bench"})
	qa := env.Client(b, apitest.QA)
	wo := fmt.Sprintf("WO-%d", n/2000)
	cases := []struct {
		name string
		call func() error
	}{
		{"GetStatus", func() error {
			s, err := qa.GetStatus(b.Context(), &stationv1.GetStatusRequest{})
			if err == nil && s.GetUnitsDone()+s.GetUnitsFailed() == 0 {
				err = fmt.Errorf("status %v counts no unit", s)
			}
			return err
		}},
		{"GetWorkOrder", func() error {
			w, err := qa.GetWorkOrder(b.Context(), &stationv1.GetWorkOrderRequest{Id: wo})
			if err == nil && w.GetUnitsDone()+w.GetUnitsFailed() != 998 {
				err = fmt.Errorf("work order %v: want 998 units done or failed", w)
			}
			return err
		}},
		{"ListWorkOrders", func() error {
			l, err := qa.ListWorkOrders(b.Context(), &stationv1.ListWorkOrdersRequest{PageSize: 100})
			if err == nil && len(l.GetWorkOrders()) != min(100, n/1000) {
				err = fmt.Errorf("%d work orders listed", len(l.GetWorkOrders()))
			}
			return err
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var took, cpu []time.Duration
			for b.Loop() {
				t0, c0 := time.Now(), cpuTime(b)
				err := c.call()
				took, cpu = append(took, time.Since(t0)), append(cpu, cpuTime(b)-c0)
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(median(took), "ms/op")
			b.ReportMetric(median(cpu), "cpu-ms/op")
		})
	}
}
