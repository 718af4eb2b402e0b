// Package printable renders the station's evidence for people: a unit's traveler and a work
// order's lot report, as self-contained HTML (inline CSS with a print stylesheet, inline SVG
// charts, symbols as data: URIs, no external references), as PDF, and the lot as CSV. Its input
// is the traveler record (reports/traveler); it draws only facts the record holds.
//
// Both formats walk one document model (doc.go), so the HTML and the PDF of a report carry the
// same facts. The traveler carries a Code 128 barcode of the serial and a QR code of the
// IDevID certificate's SHA-256, drawn module by module so that scanners read them from paper.
package printable

import (
	"fmt"
	"time"
)

// document is a report before it is rendered.
type document struct {
	kind    string // "Unit traveler", "Lot report"
	heading string // the serial or the work order
	badge   string // the result, shown large
	good    bool   // badge colour: pass or not
	meta    []pair // short facts beside the heading
	barcode *symbol
	qr      *symbol
	qrLabel string
	footer  string
	blocks  []block
}

// block is one of section, kv, table, tiles, figure, note.
type block any

// figure is a drawing chartW millimetres wide: *chart, *timeline.
type figure interface {
	draw(cv canvas, ox, oy float64)
	height() float64
	caption() string
}

// section starts a titled part of the report.
type section string

// kv is a two-column list of facts.
type kv []pair

type pair struct {
	k, v string
	mono bool // hashes and serial numbers: fixed-width
}

// table is a table; mono marks fixed-width columns, bad marks rows shown as failures.
type table struct {
	head []string
	rows [][]string
	mono []bool
	bad  []bool
	// right marks right-aligned (numeric) columns.
	right []bool
}

// tiles are headline figures.
type tiles []tile

type tile struct{ label, value, note string }

// note is a paragraph of small print.
type note string

// stamp formats a time for a report: UTC, to the second.
func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// clock formats t as a time of day to the millisecond when it falls on day's date (UTC), as
// stamp otherwise.
func clock(t time.Time, day time.Time) string {
	const date = "2006-01-02"
	if t.IsZero() || day.IsZero() || t.UTC().Format(date) != day.UTC().Format(date) {
		return stamp(t)
	}
	return t.UTC().Format("15:04:05.000")
}

// stampPtr is stamp of an optional time ("" when absent).
func stampPtr(t *time.Time) string {
	if t == nil {
		return ""
	}
	return stamp(*t)
}

// seconds formats a duration in seconds with sensible precision.
func seconds(s float64) string {
	switch {
	case s >= 100:
		return fmt.Sprintf("%.0f s", s)
	case s >= 10:
		return fmt.Sprintf("%.1f s", s)
	default:
		return fmt.Sprintf("%.2f s", s)
	}
}

// millis formats milliseconds.
func millis(ms float64) string {
	if ms >= 1000 {
		return seconds(ms / 1000)
	}
	if ms >= 100 {
		return fmt.Sprintf("%.0f ms", ms)
	}
	return fmt.Sprintf("%.1f ms", ms)
}

// pct formats a ratio as a percentage.
func pct(num, den int) string {
	if den == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f %%", 100*float64(num)/float64(den))
}
