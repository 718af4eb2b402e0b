package printable

import (
	"cmp"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/devid-station/devid/reports/traveler"
	"github.com/devid-station/devid/station/store"
)

// Lot is a work order's lot report: the traveler records of its units and, when known, the
// work order itself.
type Lot struct {
	// WorkOrder is the work order; when nil the report is titled by the records' work order.
	WorkOrder *store.WorkOrder
	// StationID names the station that made the report.
	StationID string
	// Records are the units' traveler records, in the order the report lists them.
	Records []*traveler.Record
	// Generated is when the report is made (the PDF's creation date); zero: now.
	Generated time.Time
}

// The step names whose durations are the CA round trips (station/workflow's stored names).
const (
	stepIDevIDEnroll = "idevid_enroll"
	stepLDevIDEnroll = "ldevid_enroll"
)

// lotStats are the figures of a lot.
type lotStats struct {
	units     int
	byResult  map[string]int
	ended     int // done, failed or aborted
	done      int
	firstPass int
	failures  []count // by code, most frequent first
	cycles    []float64
	ends      []time.Time // when each done unit ended
	first     time.Time   // earliest step start
	last      time.Time   // latest end
	steps     map[string][]float64
	stepOrder []string
	ca        []float64 // every ended enroll attempt, ms
}

type count struct {
	key string
	n   int
}

// firstPass reports whether r passed at its first attempt: done, one agent session, no
// rework and no failed step attempt.
func firstPass(r *traveler.Record) bool {
	if r.Result != string(store.StatusDone) || r.Attempts > 1 || len(r.Reworks) > 0 {
		return false
	}
	for _, s := range r.Steps {
		if s.ErrorCode != "" {
			return false
		}
	}
	return true
}

// failureCodes are r's failures: the code of every failed step attempt, and the unit's own
// error code when it did not pass and no step attempt carries that code.
func failureCodes(r *traveler.Record) []string {
	var codes []string
	for _, s := range r.Steps {
		if s.ErrorCode != "" {
			codes = append(codes, s.ErrorCode)
		}
	}
	if r.Result != string(store.StatusDone) && r.ErrorCode != "" && !slices.Contains(codes, r.ErrorCode) {
		codes = append(codes, r.ErrorCode)
	}
	return codes
}

func (l Lot) stats() lotStats {
	s := lotStats{units: len(l.Records), byResult: map[string]int{}, steps: map[string][]float64{}}
	fails := map[string]int{}
	for _, r := range l.Records {
		s.byResult[r.Result]++
		switch store.Status(r.Result) {
		case store.StatusDone, store.StatusFailed, store.StatusAborted:
			s.ended++
		}
		if r.Result == string(store.StatusDone) {
			s.done++
			if r.CycleTimeSeconds > 0 {
				s.cycles = append(s.cycles, r.CycleTimeSeconds)
			}
			if r.EndedAt != nil {
				s.ends = append(s.ends, *r.EndedAt)
			}
		}
		if firstPass(r) {
			s.firstPass++
		}
		for _, c := range failureCodes(r) {
			fails[c]++
		}
		if r.StartedAt != nil && (s.first.IsZero() || r.StartedAt.Before(s.first)) {
			s.first = *r.StartedAt
		}
		if r.EndedAt != nil && r.EndedAt.After(s.last) {
			s.last = *r.EndedAt
		}
		for _, st := range r.Steps {
			if st.EndedAt == nil {
				continue
			}
			if _, ok := s.steps[st.Name]; !ok {
				s.stepOrder = append(s.stepOrder, st.Name)
			}
			s.steps[st.Name] = append(s.steps[st.Name], st.DurationMS)
			if st.Name == stepIDevIDEnroll || st.Name == stepLDevIDEnroll {
				s.ca = append(s.ca, st.DurationMS)
			}
		}
	}
	for k, n := range fails {
		s.failures = append(s.failures, count{k, n})
	}
	slices.SortFunc(s.failures, func(a, b count) int { return cmp.Or(b.n-a.n, strings.Compare(a.key, b.key)) })
	return s
}

// percentile is the p-th percentile of vs by nearest rank (0 when empty).
func percentile(vs []float64, p int) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	rank := (p*len(s) + 99) / 100
	return s[max(rank, 1)-1]
}

// histogram bins vs into about ten bins of a round width (bin lo-hi holds lo <= v < hi), with
// markers at p50 and p95; counted names what the bars count.
func histogram(title, unit, counted string, vs []float64) *chart {
	c := &chart{title: title, xLabel: unit, yLabel: counted, colour: barBlue}
	if len(vs) == 0 {
		return c
	}
	lo, hi := slices.Min(vs), slices.Max(vs)
	width := nice((hi - lo) / 10)
	if hi == lo {
		width = nice(math.Max(hi/10, 0.01))
	}
	lo = math.Floor(lo/width) * width
	bin := func(v float64) int { return int(math.Floor((v-lo)/width + 1e-9)) } // 1e-9: 0.94-0.88 is 0.0599...
	n := bin(hi) + 1
	c.values = make([]float64, n)
	for i := range n {
		c.labels = append(c.labels, fmtNum(lo+float64(i)*width)+"-"+fmtNum(lo+float64(i+1)*width))
	}
	for _, v := range vs {
		c.values[min(bin(v), n-1)]++
	}
	for _, m := range []struct {
		p     int
		label string
	}{{50, "p50"}, {95, "p95"}} {
		v := percentile(vs, m.p)
		c.markers = append(c.markers, marker{at: (v - lo) / width, label: m.label + " " + fmtNum(v)})
	}
	return c
}

// buckets are the bin widths the throughput chart chooses from.
var buckets = []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second,
	30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute,
	30 * time.Minute, time.Hour, 2 * time.Hour, 4 * time.Hour, 8 * time.Hour, 24 * time.Hour}

// throughput counts units completed per time bucket, with at most 24 buckets.
func throughput(ends []time.Time) *chart {
	c := &chart{title: "Throughput: units completed per interval", yLabel: "units", colour: okGreen}
	if len(ends) == 0 {
		return c
	}
	first, last := slices.MinFunc(ends, time.Time.Compare), slices.MaxFunc(ends, time.Time.Compare)
	b := buckets[len(buckets)-1]
	for _, d := range buckets {
		if last.Sub(first.Truncate(d)) < 24*d {
			b = d
			break
		}
	}
	start := first.Truncate(b)
	n := int(last.Sub(start)/b) + 1
	c.values = make([]float64, n)
	layout := "15:04:05"
	if b >= time.Minute {
		layout = "15:04"
	}
	for i := range n {
		c.labels = append(c.labels, start.Add(time.Duration(i)*b).UTC().Format(layout))
	}
	for _, e := range ends {
		c.values[int(e.Sub(start)/b)]++
	}
	c.xLabel = "interval start (UTC), " + b.String() + " each"
	return c
}

// title is the work order the report covers.
func (l Lot) title() string {
	if l.WorkOrder != nil {
		return l.WorkOrder.ID
	}
	for _, r := range l.Records {
		if r.WorkOrder != "" {
			return r.WorkOrder
		}
	}
	return "(no work order)"
}

func (l Lot) generated() time.Time {
	if l.Generated.IsZero() {
		return time.Now().UTC().Truncate(time.Second)
	}
	return l.Generated
}

// HTML writes the lot report as one self-contained HTML page.
func (l Lot) HTML(w io.Writer) error { return l.document().writeHTML(w) }

// PDF writes the lot report as an A4 PDF.
func (l Lot) PDF(w io.Writer) error { return l.document().writePDF(w, l.generated()) }

func (l Lot) document() *document {
	s := l.stats()
	id := l.title()
	d := &document{kind: "Lot report", heading: id, badge: fmt.Sprintf("%d of %d passed", s.done, s.units),
		good:   s.units > 0 && s.done == s.units,
		footer: fmt.Sprintf("Lot report %s  |  station %s  |  generated %s", id, l.StationID, stamp(l.generated()))}
	if wo := l.WorkOrder; wo != nil {
		d.meta = nonEmpty([]pair{{k: "profile", v: wo.Profile}, {k: "status", v: string(wo.Status)}, {k: "station", v: l.StationID}})
	} else {
		d.meta = nonEmpty([]pair{{k: "station", v: l.StationID}})
	}
	if wo := l.WorkOrder; wo != nil {
		facts := kv{{k: "Work order", v: wo.ID}, {k: "Profile", v: wo.Profile}, {k: "Status", v: string(wo.Status)},
			{k: "Serials", v: serialSet(wo)}, {k: "Created by", v: by(wo.CreatedBy, wo.CreatedAt)}}
		if wo.ClosedBy != "" || !wo.ClosedAt.IsZero() {
			facts = append(facts, pair{k: "Closed by", v: by(wo.ClosedBy, wo.ClosedAt)})
		}
		d.blocks = append(d.blocks, section("Work order"), nonEmpty(facts))
	}

	p50, p95 := percentile(s.cycles, 50), percentile(s.cycles, 95)
	rate := "-"
	if span := s.last.Sub(s.first); span > 0 && s.done > 0 {
		rate = fmt.Sprintf("%.0f /h", float64(s.done)*float64(time.Hour)/float64(span))
	}
	cycle := func(v float64) string {
		if len(s.cycles) == 0 {
			return "-"
		}
		return seconds(v)
	}
	ca := "-"
	if len(s.ca) > 0 {
		ca = millis(percentile(s.ca, 50))
	}
	d.blocks = append(d.blocks, section("Yield"), tiles{
		{label: "Units", value: strconv.Itoa(s.units), note: fmt.Sprintf("%d ended, %d open", s.ended, s.units-s.ended)},
		{label: "Final yield", value: pct(s.done, s.ended), note: fmt.Sprintf("%d passed of %d ended", s.done, s.ended)},
		{label: "First-pass yield", value: pct(s.firstPass, s.ended), note: fmt.Sprintf("%d passed first time", s.firstPass)},
		{label: "Failed or aborted", value: strconv.Itoa(s.ended - s.done), note: fmt.Sprintf("%d failure codes", len(s.failures))},
		{label: "Cycle time p50", value: cycle(p50), note: fmt.Sprintf("of %d passed units", len(s.cycles))},
		{label: "Cycle time p95", value: cycle(p95), note: "nearest rank"},
		{label: "Throughput", value: rate, note: "passed units per hour"},
		{label: "CA latency p50", value: ca, note: fmt.Sprintf("%d enroll round trips", len(s.ca))},
	}, note("First pass: done with one agent session, no rework and no failed step attempt. Yields are of the units "+
		"that ended (done, failed or aborted). Cycle time: first step start to completion of the current provisioning."))

	byResult := table{head: []string{"Result", "Units", "Share"}, right: []bool{false, true, true}}
	results := []string{"done", "failed", "aborted", "running", "pending"}
	for r := range s.byResult {
		if !slices.Contains(results, r) {
			results = append(results, r)
		}
	}
	for _, r := range results {
		if n := s.byResult[r]; n > 0 {
			byResult.rows = append(byResult.rows, []string{r, strconv.Itoa(n), pct(n, s.units)})
			byResult.bad = append(byResult.bad, r == "failed" || r == "aborted")
		}
	}
	d.blocks = append(d.blocks, section("Units by result"), byResult)

	d.blocks = append(d.blocks, section("Failures by code"))
	if len(s.failures) == 0 {
		d.blocks = append(d.blocks, note("No failures recorded: no step attempt failed and no unit ended with an error."))
	} else {
		par := &chart{title: "Failures by code (Pareto)", yLabel: "failures", colour: barRed, cumulative: true}
		ft := table{head: []string{"Code", "Failures", "Share", "Cumulative"}, right: []bool{false, true, true, true}}
		total, run := 0, 0
		for _, f := range s.failures {
			total += f.n
		}
		for _, f := range s.failures {
			run += f.n
			par.labels = append(par.labels, f.key)
			par.values = append(par.values, float64(f.n))
			ft.rows = append(ft.rows, []string{f.key, strconv.Itoa(f.n), pct(f.n, total), pct(run, total)})
		}
		d.blocks = append(d.blocks, par, ft, note("Every failed step attempt counts once, and a unit's own error code once "+
			"when it did not pass and no step attempt carries it."))
	}

	d.blocks = append(d.blocks, section("Cycle time"), histogram("Cycle time of passed units", "seconds", "units", s.cycles))
	d.blocks = append(d.blocks, section("Throughput"), throughput(s.ends))

	d.blocks = append(d.blocks, section("CA latency and step durations"),
		histogram("CA latency: IDevID and LDevID enroll step durations", "milliseconds", "attempts", s.ca))
	steps := table{head: []string{"Step", "Attempts ended", "p50", "p95", "Max"}, right: []bool{false, true, true, true, true}}
	for _, name := range s.stepOrder {
		ds := s.steps[name]
		label := name
		if name == stepIDevIDEnroll || name == stepLDevIDEnroll {
			label += " (CA round trip)"
		}
		steps.rows = append(steps.rows, []string{label, strconv.Itoa(len(ds)), millis(percentile(ds, 50)),
			millis(percentile(ds, 95)), millis(slices.Max(ds))})
	}
	d.blocks = append(d.blocks, steps)

	units := table{head: []string{"Serial", "Result", "Error code", "Attempts", "First pass", "Cycle time", "Ended (UTC)", "TPM", "EK"},
		right: []bool{false, false, false, true, false, true}}
	listed := listedUnits(l.Records)
	for _, r := range listed {
		fp := "no"
		if firstPass(r) {
			fp = "yes"
		}
		cyc := ""
		if r.CycleTimeSeconds > 0 {
			cyc = seconds(r.CycleTimeSeconds)
		}
		tpm, ek := "", ""
		if r.TPM != nil {
			tpm = strings.TrimSpace(r.TPM.ManufacturerID + " " + r.TPM.VendorString + " " + r.TPM.FirmwareVersion)
		}
		if r.EK != nil {
			ek = strings.TrimPrefix(r.EK.Algorithm, "KEY_ALGORITHM_")
		}
		units.rows = append(units.rows, []string{r.Serial, r.Result, r.ErrorCode, strconv.FormatUint(r.Attempts, 10), fp, cyc,
			stampPtr(r.EndedAt), tpm, ek})
		units.bad = append(units.bad, r.Result == "failed" || r.Result == "aborted")
	}
	d.blocks = append(d.blocks, section("Units"))
	if len(listed) < len(l.Records) {
		d.blocks = append(d.blocks, note(fmt.Sprintf("%d of %d units listed: every unit that did not pass first, then "+
			"passed units in order. The lot CSV lists all %d.", len(listed), len(l.Records), len(l.Records))))
	}
	d.blocks = append(d.blocks, units)
	return d
}

// maxUnitRows bounds the units table of the HTML and PDF (a page holds about 60 rows); the
// CSV lists every unit.
const maxUnitRows = 1200

// listedUnits are the units the table lists: all of them when they fit, else every unit that
// did not pass and then passed units, in order, up to maxUnitRows.
func listedUnits(recs []*traveler.Record) []*traveler.Record {
	if len(recs) <= maxUnitRows {
		return recs
	}
	var out []*traveler.Record
	for _, pass := range []bool{false, true} {
		for _, r := range recs {
			if len(out) == maxUnitRows {
				return out
			}
			if (r.Result == string(store.StatusDone)) == pass {
				out = append(out, r)
			}
		}
	}
	return out
}

// serialSet describes the work order's serials.
func serialSet(wo *store.WorkOrder) string {
	if r := wo.Range; r != nil {
		return fmt.Sprintf("%s%0*d to %s%0*d (%d serials)", r.Prefix, r.Width, r.From, r.Prefix, r.Width, r.To, r.To-r.From+1)
	}
	if len(wo.Serials) > 12 {
		return fmt.Sprintf("%s ... %s (%d serials)", strings.Join(wo.Serials[:6], ", "), wo.Serials[len(wo.Serials)-1], len(wo.Serials))
	}
	return strings.Join(wo.Serials, ", ")
}

// csvHeader names the lot CSV's columns, one row per unit.
var csvHeader = []string{"serial", "work_order", "profile", "station_id", "result", "error_code", "first_pass", "attempts",
	"reworks", "started_at", "ended_at", "cycle_time_s", "idevid_enroll_ms", "ldevid_enroll_ms", "failure_codes",
	"tpm_manufacturer", "tpm_model", "tpm_firmware", "ek_algorithm", "ek_fingerprint", "idevid_serial", "idevid_sha256",
	"ldevid_serial", "ldevid_sha256"}

// CSV writes one row per unit (columns: csvHeader). Times are RFC 3339 UTC; durations are the
// latest successful enroll attempt's.
func (l Lot) CSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(csvHeader); err != nil {
		return fmt.Errorf("writing lot CSV: %w", err)
	}
	rfc := func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return t.UTC().Format(time.RFC3339Nano)
	}
	for _, r := range l.Records {
		enroll := map[string]string{}
		for _, s := range r.Steps {
			if (s.Name == stepIDevIDEnroll || s.Name == stepLDevIDEnroll) && s.EndedAt != nil && s.ErrorCode == "" {
				enroll[s.Name] = strconv.FormatFloat(s.DurationMS, 'f', 3, 64)
			}
		}
		cyc := ""
		if r.CycleTimeSeconds > 0 {
			cyc = strconv.FormatFloat(r.CycleTimeSeconds, 'f', 3, 64)
		}
		row := []string{r.Serial, r.WorkOrder, r.Profile, r.StationID, r.Result, r.ErrorCode, strconv.FormatBool(firstPass(r)),
			strconv.FormatUint(r.Attempts, 10), strconv.Itoa(len(r.Reworks)), rfc(r.StartedAt), rfc(r.EndedAt), cyc,
			enroll[stepIDevIDEnroll], enroll[stepLDevIDEnroll], strings.Join(failureCodes(r), " ")}
		var manu, model, fw, ekAlg, ekFP string
		if t := r.TPM; t != nil {
			manu, model, fw = t.ManufacturerID, t.VendorString, t.FirmwareVersion
		}
		if e := r.EK; e != nil {
			ekAlg, ekFP = e.Algorithm, e.Fingerprint
		}
		row = append(row, manu, model, fw, ekAlg, ekFP)
		for _, c := range []*traveler.Certificate{r.IDevID, r.LDevID} {
			if c == nil {
				row = append(row, "", "")
			} else {
				row = append(row, c.SerialNumber, c.SHA256)
			}
		}
		if err := cw.Write(row); err != nil {
			return fmt.Errorf("writing lot CSV: %w", err)
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("writing lot CSV: %w", err)
	}
	return nil
}
