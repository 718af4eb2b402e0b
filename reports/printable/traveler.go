package printable

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/devid-station/devid/reports/traveler"
	"github.com/devid-station/devid/station/store"
)

// Traveler is a unit's printable traveler: its record and, when known, the work order it was
// provisioned under (whose principals the traveler names).
type Traveler struct {
	Record    *traveler.Record
	WorkOrder *store.WorkOrder
	// Generated is when the document is made (the PDF's creation date); zero: now.
	Generated time.Time
}

// HTML writes the traveler as one self-contained HTML page.
func (t Traveler) HTML(w io.Writer) error {
	d, err := t.document()
	if err != nil {
		return err
	}
	return d.writeHTML(w)
}

// PDF writes the traveler as an A4 PDF.
func (t Traveler) PDF(w io.Writer) error {
	d, err := t.document()
	if err != nil {
		return err
	}
	return d.writePDF(w, t.generated())
}

// Write writes the traveler as HTML to html and as PDF to pdf, laying it out (its barcode and
// QR code included) once for both.
func (t Traveler) Write(html, pdf io.Writer) error {
	d, err := t.document()
	if err != nil {
		return err
	}
	if err := d.writeHTML(html); err != nil {
		return err
	}
	return d.writePDF(pdf, t.generated())
}

func (t Traveler) generated() time.Time {
	if t.Generated.IsZero() {
		return time.Now().UTC().Truncate(time.Second)
	}
	return t.Generated
}

// travelerFields are the record's JSON keys the traveler lays out itself; any other key the
// record gains is printed under "Other recorded facts", so nothing recorded is left off.
var travelerFields = []string{"schema", "serial", "work_order", "profile", "station_id", "result", "error_code",
	"error_message", "attempts", "started_at", "ended_at", "cycle_time_seconds", "steps", "tpm", "ek", "idevid",
	"ldevid", "iak", "iak_certification", "certificates", "verification", "reworks"}

func (t Traveler) document() (*document, error) {
	r := t.Record
	if r == nil {
		return nil, fmt.Errorf("printable: no traveler record")
	}
	d := &document{kind: "Unit traveler", heading: r.Serial, badge: r.Result, good: r.Result == string(store.StatusDone),
		meta:   nonEmpty([]pair{{k: "work order", v: r.WorkOrder}, {k: "profile", v: r.Profile}, {k: "station", v: r.StationID}}),
		footer: fmt.Sprintf("Traveler %s  |  station %s  |  %s  |  generated %s", r.Serial, r.StationID, r.Schema, stamp(t.generated()))}
	var err error
	if d.barcode, err = code128Symbol(r.Serial); err != nil {
		return nil, err
	}
	if r.IDevID != nil && r.IDevID.SHA256 != "" {
		if d.qr, err = qrSymbol(r.IDevID.SHA256); err != nil {
			return nil, err
		}
		d.qrLabel = "IDevID certificate SHA-256"
	}

	summary := kv{{k: "Result", v: r.Result}, {k: "Error code", v: r.ErrorCode}, {k: "Error message", v: r.ErrorMessage},
		{k: "Attempts", v: strconv.FormatUint(r.Attempts, 10)}, {k: "Started", v: stampPtr(r.StartedAt)},
		{k: "Ended", v: stampPtr(r.EndedAt)}}
	if r.CycleTimeSeconds > 0 {
		summary = append(summary, pair{k: "Cycle time", v: seconds(r.CycleTimeSeconds)})
	}
	summary = append(summary, pair{k: "Work order", v: r.WorkOrder}, pair{k: "Profile", v: r.Profile},
		pair{k: "Station", v: r.StationID})
	d.blocks = append(d.blocks, section("Summary"), kv(nonEmpty(summary)))

	if p := t.principals(); len(p) > 0 {
		d.blocks = append(d.blocks, section("Principals"), p)
	}
	if len(r.Steps) > 0 {
		d.blocks = append(d.blocks, section("Step timeline"))
		if tl := stepTimeline(r.Steps); tl != nil {
			d.blocks = append(d.blocks, tl)
		}
		var day time.Time
		if r.StartedAt != nil {
			day = *r.StartedAt
			d.blocks = append(d.blocks, note("Times of day on "+day.UTC().Format("2006-01-02")+" (UTC) unless dated."))
		}
		d.blocks = append(d.blocks, stepTable(r.Steps, day))
	}
	if tpm := tpmFacts(r); len(tpm) > 0 {
		d.blocks = append(d.blocks, section("TPM identity"), tpm)
	}
	d.blocks = append(d.blocks, certificateBlocks(r)...)
	if len(r.Verification) > 0 {
		tb := table{head: []string{"Check", "Result"}}
		for _, k := range slices.Sorted(maps.Keys(r.Verification)) {
			tb.rows = append(tb.rows, []string{k, r.Verification[k]})
			tb.bad = append(tb.bad, r.Verification[k] != "ok")
		}
		d.blocks = append(d.blocks, section("Verification"), tb)
	}
	extra, err := otherFacts(r, travelerFields)
	if err != nil {
		return nil, err
	}
	if len(extra) > 0 {
		d.blocks = append(d.blocks, section("Other recorded facts"))
		d.blocks = append(d.blocks, extra...)
	}
	return d, nil
}

func (t Traveler) principals() kv {
	var p kv
	if wo := t.WorkOrder; wo != nil {
		p = append(p, pair{k: "Work order created by", v: by(wo.CreatedBy, wo.CreatedAt)})
		if wo.ClosedBy != "" || !wo.ClosedAt.IsZero() {
			p = append(p, pair{k: "Work order closed by", v: by(wo.ClosedBy, wo.ClosedAt)})
		}
	}
	for i, rw := range t.Record.Reworks {
		v := by(rw.By, rw.AuthorizedAt) + ": " + rw.Reason
		if !rw.UsedAt.IsZero() {
			v += " (used " + stamp(rw.UsedAt) + ")"
		}
		p = append(p, pair{k: fmt.Sprintf("Rework %d authorized by", i+1), v: v})
	}
	return nonEmpty(p)
}

func by(who string, when time.Time) string {
	if who == "" {
		who = "(not recorded)"
	}
	if when.IsZero() {
		return who
	}
	return who + " at " + stamp(when)
}

func stepTable(steps []traveler.Step, day time.Time) table {
	tb := table{head: []string{"#", "Step", "Attempt", "Started", "Ended", "Duration", "Result"},
		right: []bool{true, false, true, false, false, true, false}}
	for i, s := range steps {
		res, dur := "ok", ""
		switch {
		case s.ErrorCode != "":
			res = s.ErrorCode
		case s.EndedAt == nil:
			res = "open"
		}
		if s.EndedAt != nil {
			dur = millis(s.DurationMS)
		}
		tb.rows = append(tb.rows, []string{strconv.Itoa(i + 1), s.Name, strconv.FormatUint(s.Attempt, 10),
			clock(s.StartedAt, day), endClock(s.EndedAt, day), dur, res})
		tb.bad = append(tb.bad, s.ErrorCode != "")
	}
	return tb
}

func endClock(t *time.Time, day time.Time) string {
	if t == nil {
		return ""
	}
	return clock(*t, day)
}

func tpmFacts(r *traveler.Record) kv {
	var p kv
	if t := r.TPM; t != nil {
		manu := t.ManufacturerID
		if t.Manufacturer != "" {
			manu = strings.TrimSpace(manu + " (" + t.Manufacturer + ")")
		}
		spec := t.Family
		if t.SpecRevision != 0 || t.SpecYear != 0 {
			spec = fmt.Sprintf("%s, level %d, revision %.2f, %d", t.Family, t.SpecLevel, float64(t.SpecRevision)/100, t.SpecYear)
		}
		p = append(p, pair{k: "Manufacturer", v: manu}, pair{k: "Model (vendor string)", v: t.VendorString},
			pair{k: "Firmware", v: t.FirmwareVersion}, pair{k: "Specification", v: spec},
			pair{k: "EKs held", v: strings.Join(t.EKsHeld, ", ")}, pair{k: "EK used", v: t.EKUsed}, pair{k: "Agent version", v: t.AgentVersion},
			pair{k: "TPM transport", v: t.TPMTransport}, pair{k: "Serial source", v: t.SerialSource},
			pair{k: "Fixture slot", v: t.FixtureSlot}, pair{k: "Boot ID", v: t.BootID, mono: true})
	}
	if ek := r.EK; ek != nil {
		p = append(p, pair{k: "EK algorithm", v: ek.Algorithm}, pair{k: "EK fingerprint", v: ek.Fingerprint, mono: true},
			pair{k: "EK manufacturer", v: ek.Manufacturer}, pair{k: "EK cert subject", v: ek.Subject},
			pair{k: "EK cert issuer", v: ek.Issuer}, pair{k: "EK cert serial", v: ek.SerialNumber, mono: true},
			pair{k: "EK cert SHA-256", v: ek.SHA256, mono: true})
	}
	return nonEmpty(p)
}

func certificateBlocks(r *traveler.Record) []block {
	var out []block
	for _, c := range []struct {
		name string
		cert *traveler.Certificate
	}{{"IDevID certificate", r.IDevID}, {"LDevID certificate", r.LDevID}, {"IAK certificate", r.IAK}} {
		if c.cert == nil {
			continue
		}
		out = append(out, section(c.name), kv(nonEmpty([]pair{{k: "Subject", v: c.cert.Subject}, {k: "Issuer", v: c.cert.Issuer},
			{k: "Serial number", v: c.cert.SerialNumber, mono: true},
			{k: "Valid", v: stamp(c.cert.NotBefore) + "  to  " + stamp(c.cert.NotAfter)},
			{k: "SHA-256", v: c.cert.SHA256, mono: true}})))
	}
	if c := r.IAKCertification; c != nil {
		out = append(out, section("IDevID certified by the IAK (TPM2_Certify)"), kv{
			{k: "Attest SHA-256", v: c.AttestSHA256, mono: true}, {k: "Certified Name (IDevID)", v: c.CertifiedName, mono: true},
			{k: "IAK Name", v: c.IAKName, mono: true}, {k: "Station nonce", v: c.Nonce, mono: true}})
	}
	if len(r.Certificates) > 0 {
		tb := table{head: []string{"Role", "SHA-256", "Duplicate"}, mono: []bool{false, true}}
		for _, c := range r.Certificates {
			dup := ""
			if c.Duplicate {
				dup = "yes"
			}
			tb.rows = append(tb.rows, []string{c.Role, c.SHA256, dup})
		}
		out = append(out, section("Certificates recorded"), tb)
	}
	return out
}

// otherFacts renders the record's JSON keys that are not in known: objects as facts, lists of
// objects as tables, anything else as its JSON.
func otherFacts(rec any, known []string) ([]block, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("printable: encoding record: %w", err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return nil, fmt.Errorf("printable: decoding record: %w", err)
	}
	var out []block
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		raw := fields[k]
		if slices.Contains(known, k) || string(raw) == "null" {
			continue
		}
		title := strings.ReplaceAll(k, "_", " ")
		var list []map[string]json.RawMessage
		var obj map[string]json.RawMessage
		switch {
		case json.Unmarshal(raw, &list) == nil && len(list) > 0:
			var cols []string
			for _, row := range list {
				for c := range row {
					if !slices.Contains(cols, c) {
						cols = append(cols, c)
					}
				}
			}
			slices.Sort(cols)
			tb := table{head: cols}
			for _, row := range list {
				cells := make([]string, len(cols))
				for i, c := range cols {
					cells[i] = scalar(row[c])
				}
				tb.rows = append(tb.rows, cells)
			}
			out = append(out, note(title), tb)
		case json.Unmarshal(raw, &obj) == nil:
			var p kv
			for _, c := range slices.Sorted(maps.Keys(obj)) {
				p = append(p, pair{k: c, v: scalar(obj[c])})
			}
			out = append(out, note(title), p)
		default:
			out = append(out, kv{{k: title, v: scalar(raw)}})
		}
	}
	return out, nil
}

// scalar prints a JSON value: strings without quotes, anything else as compact JSON.
func scalar(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

func nonEmpty(ps []pair) kv {
	out := ps[:0:0]
	for _, p := range ps {
		if p.v != "" {
			out = append(out, p)
		}
	}
	return out
}
