package printable

import (
	"fmt"
	"math"
	"strconv"
)

// rgb is a colour.
type rgb struct{ r, g, b int }

func (c rgb) hex() string { return fmt.Sprintf("#%02x%02x%02x", c.r, c.g, c.b) }

var (
	ink     = rgb{33, 37, 41}
	muted   = rgb{108, 117, 125}
	rule    = rgb{206, 212, 218}
	barBlue = rgb{52, 101, 164}
	barRed  = rgb{192, 57, 43}
	accent  = rgb{230, 126, 34}
	okGreen = rgb{39, 133, 72}
)

// canvas is what charts and symbols draw on: the PDF page and the SVG element implement it.
// Coordinates are millimetres from the top left of the drawing; text y is the baseline and
// size is in millimetres.
type canvas interface {
	rect(x, y, w, h float64, fill rgb)
	line(x1, y1, x2, y2, width float64, stroke rgb, dashed bool)
	polyline(xs, ys []float64, width float64, stroke rgb)
	text(x, y float64, s string, size float64, anchor string, c rgb)
}

// chart is a bar chart: one bar per label, optionally with the cumulative share of the total
// as a line on a right-hand percentage axis (a Pareto chart) and vertical markers at positions
// measured in bars (bar i spans [i, i+1]).
type chart struct {
	title          string
	xLabel, yLabel string
	labels         []string
	values         []float64
	colour         rgb
	cumulative     bool
	markers        []marker
}

type marker struct {
	at    float64
	label string
}

// chart geometry in millimetres.
const (
	chartW = 180.0
	chartH = 62.0
)

func (c *chart) height() float64 { return chartH }
func (c *chart) caption() string { return c.title }

// draw draws the chart into the chartW x chartH box at the canvas origin (ox, oy).
func (c *chart) draw(cv canvas, ox, oy float64) {
	left, right, top, bottom := 16.0, 6.0, 10.0, 12.0
	if c.cumulative {
		right = 14
	}
	pw, ph := chartW-left-right, chartH-top-bottom
	x0, y0 := ox+left, oy+top+ph // plot origin (bottom left)
	cv.text(ox, oy+3.5, c.title, 3.2, "start", ink)

	maxV := 0.0
	total := 0.0
	for _, v := range c.values {
		maxV = math.Max(maxV, v)
		total += v
	}
	// The bars count things: whole-number ticks of 1, 2 or 5 times a power of ten, at most
	// five of them above zero.
	step := math.Max(nice(maxV/4), 1)
	ticks := int(math.Max(math.Ceil(maxV/step-1e-9), 1))
	top1 := step * float64(ticks)
	for i := 0; i <= ticks; i++ {
		v := step * float64(i)
		y := y0 - ph*float64(i)/float64(ticks)
		cv.line(x0, y, x0+pw, y, 0.15, rule, i > 0)
		cv.text(x0-1.5, y+1, fmtNum(v), 2.6, "end", muted)
		if c.cumulative {
			cv.text(x0+pw+1.5, y+1, fmtNum(100*v/top1)+"%", 2.6, "start", muted)
		}
	}
	n := len(c.values)
	if n == 0 {
		cv.text(x0+pw/2, y0-ph/2, "no data", 3, "middle", muted)
	} else {
		slot := math.Min(pw/float64(n), 28)
		bx := x0 + (pw-slot*float64(n))/2 // few bars: narrower, centred
		gap := math.Min(slot*0.2, 3)
		every := int(math.Ceil(float64(n) / math.Max(1, math.Floor(pw/14))))
		for i, v := range c.values {
			h := ph * v / top1
			x := bx + slot*float64(i)
			if h > 0 {
				cv.rect(x+gap/2, y0-h, slot-gap, h, c.colour)
			}
			if i%every == 0 {
				cv.text(x+slot/2, y0+3.5, c.labels[i], 2.5, "middle", ink)
			}
			switch {
			case n > 24 || v == 0:
			case h > 5:
				cv.text(x+slot/2, y0-h+3.2, fmtNum(v), 2.4, "middle", rgb{255, 255, 255})
			default:
				cv.text(x+slot/2, y0-h-0.8, fmtNum(v), 2.4, "middle", ink)
			}
		}
		if c.cumulative && total > 0 {
			xs, ys := make([]float64, n), make([]float64, n)
			run := 0.0
			for i, v := range c.values {
				run += v
				xs[i] = bx + slot*(float64(i)+0.5)
				ys[i] = y0 - ph*run/total
			}
			cv.polyline(xs, ys, 0.5, accent)
			for i := range xs {
				cv.rect(xs[i]-0.7, ys[i]-0.7, 1.4, 1.4, accent)
			}
		}
		for _, m := range c.markers {
			x := bx + slot*m.at
			cv.line(x, y0, x, y0-ph-1, 0.4, accent, true)
			if x > x0+pw-20 {
				cv.text(x-0.8, y0-ph+1.5, m.label, 2.6, "end", accent)
			} else {
				cv.text(x+0.8, y0-ph+1.5, m.label, 2.6, "start", accent)
			}
		}
	}
	cv.line(x0, y0, x0+pw, y0, 0.3, ink, false)
	cv.line(x0, y0, x0, y0-ph, 0.3, ink, false)
	cv.text(x0+pw/2, oy+chartH-1.5, c.xLabel, 2.8, "middle", muted)
	cv.text(x0-1.5, oy+top-1.5, c.yLabel, 2.6, "end", muted)
}

// nice rounds v up to 1, 2 or 5 times a power of ten.
func nice(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v*(1-1e-9) {
			return m * p
		}
	}
	return 10 * p
}

// fmtNum prints v with at most two decimals and no trailing zeros.
func fmtNum(v float64) string {
	return strconv.FormatFloat(math.Round(v*100)/100, 'f', -1, 64)
}
