package printable

import (
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/go-pdf/fpdf"
)

// A4 page geometry in millimetres.
const (
	pageW, pageH = 210.0, 297.0
	margin       = 15.0
	contentW     = pageW - 2*margin
	bottomLimit  = pageH - 18
)

// pdfDoc is a document being laid out on A4 pages.
type pdfDoc struct {
	f  *fpdf.Fpdf
	tr func(string) string
	y  float64
}

// writePDF renders d as an A4 PDF. created is the document's creation date (the PDF is
// byte-for-byte reproducible for a given created).
func (d *document) writePDF(w io.Writer, created time.Time) error {
	f := fpdf.New("P", "mm", "A4", "")
	f.SetMargins(margin, margin, margin)
	f.SetAutoPageBreak(false, 0)
	f.SetCatalogSort(true) // fonts in a fixed order: the same input gives the same bytes
	f.SetCreationDate(created)
	f.SetModificationDate(created)
	f.SetTitle(d.kind+" "+d.heading, true)
	f.SetCreator("DevID Station", true)
	f.AliasNbPages("{nb}")
	p := &pdfDoc{f: f, tr: f.UnicodeTranslatorFromDescriptor("")}
	f.SetFooterFunc(func() {
		p.font("", 7, muted)
		f.SetXY(margin, pageH-10)
		f.CellFormat(contentW/2, 4, p.tr(latin1(d.footer)), "", 0, "L", false, 0, "")
		f.CellFormat(contentW/2, 4, fmt.Sprintf("page %d of {nb}", f.PageNo()), "", 0, "R", false, 0, "")
	})
	f.AddPage()
	p.y = margin
	p.header(d)
	for i, blk := range d.blocks {
		switch v := blk.(type) {
		case section:
			var next block
			if i+1 < len(d.blocks) {
				next = d.blocks[i+1]
			}
			p.section(string(v), leadHeight(next))
		case kv:
			p.kv(v)
		case table:
			p.table(v)
		case tiles:
			p.tiles(v)
		case figure:
			p.ensure(v.height() + 2)
			v.draw(p, margin, p.y)
			p.y += v.height() + 2
		case note:
			p.note(string(v))
		default:
			return fmt.Errorf("printable: unknown block %T", blk)
		}
	}
	return f.Output(w)
}

// latin1 keeps what the PDF core fonts can show (cp1252 after translation): other runes
// become '?', control characters spaces.
func latin1(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r < 0x20:
			return ' '
		case r < 0x7f, r >= 0xa0 && r <= 0xff:
			return r
		}
		return '?'
	}, s)
}

// font selects Helvetica (style "", "B") or Courier ("mono") at size points.
func (p *pdfDoc) font(style string, size float64, c rgb) {
	if style == "mono" {
		p.f.SetFont("Courier", "", size)
	} else {
		p.f.SetFont("Helvetica", style, size)
	}
	p.f.SetTextColor(c.r, c.g, c.b)
}

func (p *pdfDoc) ensure(h float64) {
	if p.y+h > bottomLimit {
		p.f.AddPage()
		p.y = margin
	}
}

// textAt writes s with its baseline at (x, y).
func (p *pdfDoc) textAt(x, y float64, s string) { p.f.Text(x, y, p.tr(latin1(s))) }

// wrap splits s into lines of at most w millimetres in the current font.
func (p *pdfDoc) wrap(s string, w float64) []string {
	s = latin1(s)
	if s == "" {
		return []string{""}
	}
	return p.f.SplitText(s, w+2*p.f.GetCellMargin())
}

func (p *pdfDoc) header(d *document) {
	f := p.f
	leftW := contentW
	qrSize := 30.0
	bottom := p.y
	if d.qr != nil {
		leftW -= qrSize + 6
		x := margin + contentW - qrSize
		p.drawSymbol(d.qr, x, p.y, qrSize/float64(d.qr.cols()+2*d.qr.quiet), 0)
		y := p.y + qrSize + 3
		p.font("B", 7, muted)
		f.SetXY(x-3, y-2.5)
		f.CellFormat(qrSize+6, 3, p.tr(d.qrLabel), "", 0, "C", false, 0, "")
		p.font("mono", 6.5, ink)
		for i := 0; i < len(d.qr.content); i += 22 {
			y += 2.8
			f.SetXY(x-3, y-2.5)
			f.CellFormat(qrSize+6, 3, d.qr.content[i:min(i+22, len(d.qr.content))], "", 0, "C", false, 0, "")
		}
		bottom = y + 1
	}
	y := p.y + 3
	p.font("", 8, muted)
	p.textAt(margin, y, strings.ToUpper(d.kind))
	y += 9
	p.font("B", 22, ink)
	p.textAt(margin, y, d.heading)
	if d.badge != "" {
		x := margin + f.GetStringWidth(latin1(d.heading)) + 5
		p.font("B", 11, rgb{255, 255, 255})
		bw := f.GetStringWidth(strings.ToUpper(d.badge)) + 6
		c := barRed
		if d.good {
			c = okGreen
		}
		f.SetFillColor(c.r, c.g, c.b)
		f.RoundedRect(x, y-6.2, bw, 7.5, 1.2, "1234", "F")
		p.textAt(x+3, y-0.8, strings.ToUpper(d.badge))
	}
	p.font("", 8.5, ink)
	var meta []string
	for _, m := range d.meta {
		meta = append(meta, m.k+" "+m.v)
	}
	for _, l := range p.wrap(strings.Join(meta, "  |  "), leftW) {
		y += 4.5
		p.textAt(margin, y, l)
	}
	if d.barcode != nil {
		y += 3
		// 0.33 mm bars (Code 128's usual X dimension), narrower for a long serial that would
		// not fit beside the QR code.
		module := min(0.33, leftW/float64(d.barcode.cols()))
		p.drawSymbol(d.barcode, margin-float64(d.barcode.quiet)*module, y, module, 13)
		y += 13 + 4
		p.font("mono", 9, ink)
		p.textAt(margin, y, d.barcode.content)
	}
	p.y = math.Max(y, bottom) + 3
	f.SetDrawColor(ink.r, ink.g, ink.b)
	f.SetLineWidth(0.5)
	f.Line(margin, p.y, margin+contentW, p.y)
	p.y += 3
}

// drawSymbol draws s with its quiet zone's top left at (x, y), module millimetres per module;
// a one-row symbol (Code 128) is height millimetres high.
func (p *pdfDoc) drawSymbol(s *symbol, x, y, module, height float64) {
	p.f.SetFillColor(0, 0, 0)
	mh := module
	vq := float64(s.quiet)
	if s.rows() == 1 {
		mh, vq = height, 0
	}
	for r, row := range s.dark {
		for c := 0; c < len(row); {
			if !row[c] {
				c++
				continue
			}
			run := c
			for run < len(row) && row[run] {
				run++
			}
			p.f.Rect(x+(float64(s.quiet+c))*module, y+(vq+float64(r))*mh, float64(run-c)*module, mh, "F")
			c = run
		}
	}
}

// leadHeight is how much of b must fit on the page below its section heading, so that a
// heading never ends a page alone.
func leadHeight(b block) float64 {
	switch v := b.(type) {
	case figure:
		return v.height() + 2
	case tiles:
		return 20
	}
	return 10
}

func (p *pdfDoc) section(title string, lead float64) {
	p.ensure(12 + lead)
	p.y += 5
	p.font("B", 11, ink)
	p.textAt(margin, p.y, title)
	p.y += 1.8
	p.f.SetDrawColor(rule.r, rule.g, rule.b)
	p.f.SetLineWidth(0.25)
	p.f.Line(margin, p.y, margin+contentW, p.y)
	p.y += 1.5
}

const keyW = 42.0

func (p *pdfDoc) kv(pairs kv) {
	for _, kp := range pairs {
		style, size, lh := "", 8.5, 3.9
		if kp.mono {
			style, size = "mono", 8
		}
		p.font(style, size, ink)
		lines := p.wrap(kp.v, contentW-keyW)
		p.ensure(float64(len(lines))*lh + 1.5)
		p.font("", 8.5, muted)
		p.textAt(margin, p.y+3.2, kp.k)
		p.font(style, size, ink)
		for i, l := range lines {
			p.textAt(margin+keyW, p.y+3.2+float64(i)*lh, l)
		}
		p.y += float64(len(lines))*lh + 1.3
	}
}

// columnWidths fits natural column widths into contentW: the narrow columns keep theirs and
// the wide ones share what is left (their text wraps). A table that fits keeps its natural
// widths.
func columnWidths(natural []float64) []float64 {
	sum := 0.0
	for _, w := range natural {
		sum += w
	}
	out := make([]float64, len(natural))
	if sum <= contentW {
		copy(out, natural)
		return out
	}
	lo, hi := 0.0, contentW
	for range 40 {
		c := (lo + hi) / 2
		s := 0.0
		for _, w := range natural {
			s += math.Min(w, c)
		}
		if s > contentW {
			hi = c
		} else {
			lo = c
		}
	}
	for i, w := range natural {
		out[i] = math.Min(w, lo)
	}
	return out
}

func (p *pdfDoc) table(t table) {
	const size, lh, pad = 7.5, 3.3, 2.0
	cellFont := func(i int) string {
		if at(t.mono, i) {
			return "mono"
		}
		return ""
	}
	natural := make([]float64, len(t.head))
	for i, h := range t.head {
		p.font("B", size, ink)
		natural[i] = p.f.GetStringWidth(latin1(h)) + pad
		p.font(cellFont(i), size, ink)
		for _, row := range t.rows {
			if i < len(row) {
				natural[i] = math.Max(natural[i], p.f.GetStringWidth(latin1(row[i]))+pad)
			}
		}
	}
	widths := columnWidths(natural)
	tableW := 0.0
	for _, w := range widths {
		tableW += w
	}
	drawRow := func(cells []string, style func(int) string, c rgb) {
		lines := make([][]string, len(cells))
		n := 1
		for i, cell := range cells {
			p.font(style(i), size, c)
			lines[i] = p.wrap(cell, widths[i]-pad+0.5)
			n = max(n, len(lines[i]))
		}
		x := margin
		for i := range cells {
			p.font(style(i), size, c)
			for j, l := range lines[i] {
				lx := x
				if at(t.right, i) {
					lx = x + widths[i] - pad - p.f.GetStringWidth(l)
				}
				p.textAt(lx, p.y+2.7+float64(j)*lh, l)
			}
			x += widths[i]
		}
		p.y += float64(n)*lh + 0.8
		p.f.SetDrawColor(233, 236, 239)
		p.f.SetLineWidth(0.2)
		p.f.Line(margin, p.y-0.4, margin+tableW, p.y-0.4)
	}
	head := func() {
		drawRow(t.head, func(int) string { return "B" }, muted)
	}
	p.ensure(2 * (lh + 1))
	head()
	for r, row := range t.rows {
		p.ensure(lh + 1)
		if p.y == margin {
			head()
		}
		c := ink
		if at(t.bad, r) {
			c = barRed
		}
		drawRow(row, cellFont, c)
	}
	p.y += 1
}

func (p *pdfDoc) tiles(ts tiles) {
	const perRow, gap, h = 4, 4.0, 17.0
	w := (contentW - gap*(perRow-1)) / perRow
	for i, t := range ts {
		if i%perRow == 0 {
			if i > 0 {
				p.y += h + gap
			}
			p.ensure(h + 2)
		}
		x := margin + float64(i%perRow)*(w+gap)
		p.f.SetDrawColor(rule.r, rule.g, rule.b)
		p.f.SetLineWidth(0.3)
		p.f.RoundedRect(x, p.y, w, h, 1.2, "1234", "D")
		p.font("", 7.5, muted)
		p.textAt(x+3, p.y+4.2, t.label)
		p.font("B", 15, ink)
		p.textAt(x+3, p.y+10.8, t.value)
		p.font("", 7, muted)
		p.textAt(x+3, p.y+14.8, t.note)
	}
	p.y += h + 3
}

func (p *pdfDoc) note(s string) {
	p.font("", 7.5, muted)
	for _, l := range p.wrap(s, contentW) {
		p.ensure(4)
		p.y += 3.4
		p.textAt(margin, p.y, l)
	}
	p.y += 1.5
}

// canvas on the PDF page.

func (p *pdfDoc) rect(x, y, w, h float64, fill rgb) {
	p.f.SetFillColor(fill.r, fill.g, fill.b)
	p.f.Rect(x, y, w, h, "F")
}

func (p *pdfDoc) line(x1, y1, x2, y2, width float64, stroke rgb, dashed bool) {
	p.f.SetDrawColor(stroke.r, stroke.g, stroke.b)
	p.f.SetLineWidth(width)
	if dashed {
		p.f.SetDashPattern([]float64{1, 0.8}, 0)
	}
	p.f.Line(x1, y1, x2, y2)
	p.f.SetDashPattern(nil, 0)
}

func (p *pdfDoc) polyline(xs, ys []float64, width float64, stroke rgb) {
	p.f.SetDrawColor(stroke.r, stroke.g, stroke.b)
	p.f.SetLineWidth(width)
	for i := 1; i < len(xs); i++ {
		p.f.Line(xs[i-1], ys[i-1], xs[i], ys[i])
	}
}

func (p *pdfDoc) text(x, y float64, s string, size float64, anchor string, c rgb) {
	if s == "" {
		return
	}
	p.f.SetFont("Helvetica", "", size*72/25.4)
	p.f.SetTextColor(c.r, c.g, c.b)
	s = latin1(s)
	switch anchor {
	case "middle":
		x -= p.f.GetStringWidth(s) / 2
	case "end":
		x -= p.f.GetStringWidth(s)
	}
	p.f.Text(x, y, p.tr(s))
}
