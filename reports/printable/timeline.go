package printable

import (
	"math"
	"strconv"
	"time"

	"github.com/devid-station/devid/reports/traveler"
)

// timeline is a Gantt chart of a unit's step attempts: one row per attempt, a bar from its
// start to its end, in seconds from the first start.
type timeline struct {
	title string
	rows  []span
	total float64 // seconds shown
}

type span struct {
	label      string
	start, end float64
	failed     bool
	open       bool // not ended: drawn to the end of the axis
}

// maxTimelineRows bounds the chart; the step table lists every attempt anyway.
const maxTimelineRows = 60

const timelineRowH = 3.2

// stepTimeline draws steps (nil when there are none or too many to draw).
func stepTimeline(steps []traveler.Step) *timeline {
	if len(steps) == 0 || len(steps) > maxTimelineRows {
		return nil
	}
	t0 := steps[0].StartedAt
	for _, s := range steps {
		if s.StartedAt.Before(t0) {
			t0 = s.StartedAt
		}
	}
	tl := &timeline{title: "Step timeline (seconds from the first step's start)"}
	attempts := map[string]int{}
	for _, s := range steps {
		attempts[s.Name]++
	}
	for _, s := range steps {
		sp := span{label: s.Name, start: s.StartedAt.Sub(t0).Seconds(), failed: s.ErrorCode != ""}
		if attempts[s.Name] > 1 {
			sp.label += " #" + strconv.FormatUint(s.Attempt, 10)
		}
		if s.EndedAt != nil {
			sp.end = s.EndedAt.Sub(t0).Seconds()
		} else {
			sp.open = true
		}
		tl.total = math.Max(tl.total, math.Max(sp.start, sp.end))
		tl.rows = append(tl.rows, sp)
	}
	if tl.total <= 0 {
		tl.total = time.Millisecond.Seconds()
	}
	return tl
}

func (tl *timeline) caption() string { return tl.title }

func (tl *timeline) height() float64 { return 8 + float64(len(tl.rows))*timelineRowH + 9 }

func (tl *timeline) draw(cv canvas, ox, oy float64) {
	const labelW = 34.0
	x0, pw := ox+labelW, chartW-labelW-4
	y0 := oy + 7
	cv.text(ox, oy+3.5, tl.title, 3.2, "start", ink)
	step := niceStep(tl.total / 6)
	axisEnd := math.Ceil(tl.total/step-1e-9) * step
	scale := pw / axisEnd
	bottom := y0 + float64(len(tl.rows))*timelineRowH
	for v := 0.0; v <= axisEnd+step/2; v += step {
		x := x0 + v*scale
		cv.line(x, y0, x, bottom, 0.15, rule, v > 0)
		cv.text(x, bottom+3.5, fmtNum(v), 2.5, "middle", muted)
	}
	for i, r := range tl.rows {
		y := y0 + float64(i)*timelineRowH
		c := barBlue
		if r.failed {
			c = barRed
		}
		end := r.end
		if r.open {
			end, c = axisEnd, rgb{170, 190, 215}
		}
		cv.text(x0-1.5, y+timelineRowH-0.9, r.label, 2.4, "end", ink)
		cv.rect(x0+r.start*scale, y+0.5, math.Max((end-r.start)*scale, 0.4), timelineRowH-1, c)
	}
	cv.line(x0, bottom, x0+pw, bottom, 0.3, ink, false)
	cv.text(x0+pw/2, bottom+7.5, "seconds", 2.6, "middle", muted)
}

// niceStep rounds v up to 1, 2 or 5 times a power of ten (at least a millisecond).
func niceStep(v float64) float64 { return nice(math.Max(v, 0.001)) }
