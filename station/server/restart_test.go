package server

import (
	"context"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/devid-station/devid/station/config"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/store/storetest"
)

// seedLine stops the line's station, writes n seeded units into its store and returns the
// serials left in flight.
func seedLine(tb testing.TB, l *testLine, n int, opts storetest.Options) []string {
	tb.Helper()
	l.stop(false)
	st, err := store.Open(l.file.StorePath, store.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	defer st.Close()
	if err := storetest.Seed(context.Background(), st, 0, n, opts); err != nil {
		tb.Fatal(err)
	}
	var inFlight []string
	for i := range n {
		if storetest.Status(i, opts) == store.StatusRunning {
			inFlight = append(inFlight, storetest.Serial(opts.Prefix, i))
		}
	}
	return inFlight
}

func serialsOf(units []store.UnitState) []string {
	var out []string
	for _, u := range units {
		out = append(out, u.Serial)
	}
	return out
}

// TestInFlightAtStart restarts a station over a store with units in flight among finished
// ones: it names exactly those at start, from the index.
func TestInFlightAtStart(t *testing.T) {
	l := newTestLine(t, lineOptions{})
	want := seedLine(t, l, 60, storetest.Options{InFlightEvery: 7, FailedEvery: 5})
	l.start(nil)
	if got := serialsOf(l.srv.InFlightAtStart()); !slices.Equal(got, want) || len(want) != 8 {
		t.Fatalf("in flight at start %v, want %v", got, want)
	}
}

// startLog records when the station logged what BenchmarkRestart times.
type startLog struct {
	mu       sync.Mutex
	opened   time.Time     // "store opened"
	verified time.Duration // "audit chain verified": its seconds
}

func (h *startLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *startLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *startLog) WithGroup(string) slog.Handler            { return h }

func (h *startLog) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch r.Message {
	case "store opened":
		h.opened = r.Time
	case "audit chain verified":
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "seconds" {
				h.verified = time.Duration(a.Value.Float64() * float64(time.Second))
			}
			return true
		})
	}
	return nil
}

// BenchmarkRestart starts a station over a store of 100,000 units (STORE_BENCH_UNITS), 500 of
// them in flight, until it serves its agent, API and console ports and has read every unit in
// flight. It reports the medians of its runs: ready_ms (the whole start, the full audit
// verification included), verify_ms (that verification alone), ready_without_verify_ms (the
// difference, run by run) and open_ms (opening the store: bbolt's consistency check of every
// page). Issue 13's target is < 1 s for a station ready with every unit in flight resumed.
func BenchmarkRestart(b *testing.B) {
	n := 100_000
	if v := os.Getenv("STORE_BENCH_UNITS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1000 {
			b.Fatalf("STORE_BENCH_UNITS=%q: want a number of at least 1000", v)
		}
	}
	l := newTestLine(b, lineOptions{configure: func(f *config.File) { f.Console.Listen = "127.0.0.1:0" }})
	start := time.Now()
	want := seedLine(b, l, n, storetest.Options{InFlightEvery: 200, FailedEvery: 50})
	if st, err := os.Stat(l.file.StorePath); err == nil {
		b.Logf("seeded %d units (%d in flight) in %.1f s; store %d MB", n, len(want), time.Since(start).Seconds(), st.Size()>>20)
	}
	var ready, verify, rest, open []time.Duration
	for b.Loop() {
		h := &startLog{}
		t0 := time.Now()
		rt, err := l.file.Validate(l.dir)
		if err != nil {
			b.Fatal(err)
		}
		srv, err := New(rt, Options{Version: "bench", Logger: slog.New(h)})
		if err != nil {
			b.Fatal(err)
		}
		if err := srv.Start(); err != nil {
			b.Fatal(err)
		}
		for _, addr := range []string{srv.AgentAddr(), srv.APIAddr(), srv.consoleLis.Addr().String()} {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
		took := time.Since(t0)
		if got := serialsOf(srv.InFlightAtStart()); !slices.Equal(got, want) {
			b.Fatalf("%d units in flight at start, want %d", len(got), len(want))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := srv.Close(ctx); err != nil {
			b.Fatal(err)
		}
		cancel()
		ready, verify, rest, open = append(ready, took), append(verify, h.verified), append(rest, took-h.verified), append(open, h.opened.Sub(t0))
	}
	b.ReportMetric(ms(ready), "ready_ms")
	b.ReportMetric(ms(verify), "verify_ms")
	b.ReportMetric(ms(rest), "ready_without_verify_ms")
	b.ReportMetric(ms(open), "open_ms")
	b.ReportMetric(float64(len(want)), "in_flight")
}

// ms is the median of d in milliseconds.
func ms(d []time.Duration) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	return float64(s[len(s)/2]) / float64(time.Millisecond)
}
