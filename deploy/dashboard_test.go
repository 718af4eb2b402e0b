package deploy

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/devid-station/devid/station/metrics"
)

// dashboard is the part of a Grafana dashboard the test reads.
type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	GridPos *struct{ X, Y, W, H int } `json:"gridPos"`
}

// stationFamilies returns the metric families a station's registry exposes, each of its
// collectors given one sample so that labelled families appear.
func stationFamilies(t *testing.T) []*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	one := func() int { return 1 }
	if err := m.WatchLine(one, one); err != nil {
		t.Fatal(err)
	}
	if err := m.WatchCAs(func() []metrics.CAState { return []metrics.CAState{{Name: "maker"}} }); err != nil {
		t.Fatal(err)
	}
	if err := m.WatchCheckpoint(time.Now, time.Now); err != nil {
		t.Fatal(err)
	}
	m.Unit(metrics.ResultDone, "")
	m.Step("identify", "", 0)
	m.CALatency.WithLabelValues("maker").Observe(0.1)
	m.CABatchSize.WithLabelValues("maker").Observe(1)
	m.StoreCommit.Observe(0.001)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// seriesNames returns the names a query may use for f: its own, and the _sum, _count (and
// _bucket) series of a summary or histogram.
func seriesNames(f *dto.MetricFamily) []string {
	n := f.GetName()
	switch f.GetType() {
	case dto.MetricType_HISTOGRAM:
		return []string{n, n + "_sum", n + "_count", n + "_bucket"}
	case dto.MetricType_SUMMARY:
		return []string{n, n + "_sum", n + "_count"}
	}
	return []string{n}
}

var metricRE = regexp.MustCompile(`\bdevid_[a-z0-9_]+`)

// TestDashboard parses the Grafana dashboard and checks each query names only metrics the
// station's registry has.
func TestDashboard(t *testing.T) {
	data, err := os.ReadFile("grafana/devid-station.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("grafana/devid-station.json is not valid JSON: %v", err)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q, title %q: both are needed to import the dashboard", d.UID, d.Title)
	}
	fams := stationFamilies(t)
	have := map[string]bool{}
	for _, f := range fams {
		for _, n := range seriesNames(f) {
			have[n] = true
		}
	}
	var exprs []string
	for _, v := range d.Templating.List {
		exprs = append(exprs, v.Definition)
	}
	ids := map[int]bool{}
	queried := map[string]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
			t.Errorf("panel %q has no size", p.Title)
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q queries nothing", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q target %s has no expression", p.Title, tg.RefID)
			}
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, e := range exprs {
		names := metricRE.FindAllString(e, -1)
		if len(names) == 0 {
			t.Errorf("query %q names no devid_ metric", e)
		}
		for _, n := range names {
			queried[n] = true
			if !have[n] {
				t.Errorf("query %q: metric %s is not in the station's registry", e, n)
			}
		}
	}
	for _, f := range fams {
		if !slices.ContainsFunc(seriesNames(f), func(n string) bool { return queried[n] }) {
			t.Errorf("metric %s is on no panel", f.GetName())
		}
	}
}
