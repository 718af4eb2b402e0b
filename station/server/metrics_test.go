package server

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/station/metrics"
	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
)

// scrape fetches the station's /metrics over HTTP and parses the text exposition.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scraping /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// value sums the counter, gauge, or histogram/summary sample count of the family's series
// whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	var sum float64
	for _, m := range fams[name].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			match = match && labels[k] == v
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		case m.Summary != nil:
			sum += float64(m.GetSummary().GetSampleCount())
		}
	}
	return sum
}

// TestMetricsDuringLine runs units one after the other through a real station and scrapes its
// /metrics listener after each: the counters move by exactly what each unit did.
func TestMetricsDuringLine(t *testing.T) {
	const units = 2
	l := newTestLine(t, lineOptions{})
	addr := l.srv.MetricsAddr()
	if addr == "" {
		t.Fatal("metrics listener not started")
	}
	var serials []string
	for i := range units {
		serials = append(serials, fmt.Sprintf("SN-%04d", i+1))
	}
	l.workOrder("WO-1", serials...)

	before := scrape(t, addr)
	if got := value(before, metrics.NameUnits, nil); got != 0 {
		t.Errorf("units counted before any ran: %v", got)
	}
	for _, want := range []string{metrics.NameAgentsConnected, metrics.NameUnitsInFlight, metrics.NameCABreaker, metrics.NameCheckpointAge, "go_goroutines"} {
		if before[want] == nil {
			t.Errorf("%s missing from /metrics", want)
		}
	}
	for i, serial := range serials {
		func() {
			sim := l.manufacture(nil, tpm.ECCP256)
			defer sim.Close()
			if v := l.runUnit(context.Background(), serial, sim); !v.Passed {
				t.Fatalf("%s: verdict %+v", serial, v)
			}
		}()
		done := float64(i + 1)
		fams := scrape(t, addr)
		if got := value(fams, metrics.NameUnits, map[string]string{"result": metrics.ResultDone}); got != done {
			t.Errorf("after %s: %s{result=done} = %v, want %v", serial, metrics.NameUnits, got, done)
		}
		// An IDevID and an LDevID per unit, at least; retries may add more.
		if got := value(fams, metrics.NameCARequests, nil); got < 2*done {
			t.Errorf("after %s: %s = %v, want >= %v", serial, metrics.NameCARequests, got, 2*done)
		}
		for _, ca := range []string{"maker", "customer"} {
			if got := value(fams, metrics.NameCALatency, map[string]string{"ca": ca}); got < done {
				t.Errorf("after %s: %d latency observations for CA %s, want >= %v", serial, int(got), ca, done)
			}
			if got := value(fams, metrics.NameCABreaker, map[string]string{"ca": ca}); got != 0 {
				t.Errorf("CA %s breaker state %v, want 0 (closed)", ca, got)
			}
		}
		steps := 0
		for _, d := range workflow.Table {
			want := done
			if d.Role == string(store.RoleIAK) {
				want = 0 // the profile has no IAK: the IAK steps do nothing and journal nothing
			} else {
				steps++
			}
			if got := value(fams, metrics.NameStepDuration, map[string]string{"step": d.Name, "result": metrics.StepOK}); got != want {
				t.Errorf("after %s: step %s succeeded %v times, want %v", serial, d.Name, got, want)
			}
		}
		if got := value(fams, metrics.NameStoreCommit, nil); got < done*float64(steps) {
			t.Errorf("after %s: %v store commits, want at least one per step", serial, got)
		}
	}
	// The audit checkpoint's age: none signed yet reads -1; once signed, a real age.
	if _, err := l.srv.Store().Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := value(scrape(t, addr), metrics.NameCheckpointAge, nil); got < 0 {
		t.Errorf("%s = %v after a checkpoint, want an age >= 0", metrics.NameCheckpointAge, got)
	}
	for _, h := range l.srv.caHealth() {
		if h.P50 <= 0 || h.P95 < h.P50 || h.Requests < units {
			t.Errorf("CA health %+v: want p50 > 0, p95 >= p50, requests >= %d", h, units)
		}
	}
}
