package printable

import (
	"fmt"
	"html"
	"io"
	"strings"
)

// css is the whole style of the HTML reports: screen and print (A4, no page break inside a
// row, a figure or a section heading's first lines).
const css = `
*{box-sizing:border-box}
body{font:13px/1.4 "Helvetica Neue",Helvetica,Arial,sans-serif;color:#212529;max-width:210mm;margin:0 auto;padding:12mm 15mm;background:#fff}
header{display:flex;justify-content:space-between;align-items:flex-start;gap:8mm;border-bottom:2px solid #212529;padding-bottom:4mm;margin-bottom:4mm}
.kind{text-transform:uppercase;letter-spacing:.08em;color:#6c757d;font-size:11px}
h1{font-size:28px;margin:0 0 2mm}
.badge{display:inline-block;padding:1px 10px;border-radius:4px;color:#fff;font-weight:bold;text-transform:uppercase;font-size:14px;vertical-align:middle;margin-left:4mm}
.good{background:#278548}.bad{background:#c0392b}
.meta{color:#495057;font-size:12px}
.barcode img{height:16mm;max-width:100%;image-rendering:pixelated;display:block;margin-top:2mm}
.qr{text-align:center;font-size:9px;color:#6c757d}
.qr img{width:30mm;height:30mm;image-rendering:pixelated;display:block}
.qr code{display:block;max-width:32mm;word-break:break-all}
h2{font-size:15px;border-bottom:1px solid #ced4da;margin:6mm 0 2mm;padding-bottom:1mm}
table{border-collapse:collapse;width:100%;font-size:11px}
th,td{text-align:left;padding:2px 6px 2px 0;border-bottom:1px solid #e9ecef;vertical-align:top}
th{color:#6c757d;font-weight:normal}
td.r,th.r{text-align:right}
tr.fail td{color:#c0392b}
table.kv th{width:42mm}
.mono{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:10.5px;word-break:break-all}
.tiles{display:flex;flex-wrap:wrap;gap:3mm}
.tile{border:1px solid #ced4da;border-radius:4px;padding:2mm 4mm;min-width:38mm}
.tile b{display:block;font-size:20px}
.tile span{color:#6c757d;font-size:11px}
figure{margin:3mm 0}
figure svg{width:100%;height:auto}
p.note{color:#6c757d;font-size:11px}
footer{margin-top:8mm;color:#6c757d;font-size:10px;border-top:1px solid #ced4da;padding-top:2mm}
@media print{
 @page{size:A4;margin:12mm 15mm}
 body{padding:0;max-width:none;font-size:11px}
 h2{break-after:avoid}
 tr,figure,.tile,header{break-inside:avoid}
 .badge{-webkit-print-color-adjust:exact;print-color-adjust:exact}
}
`

// writeHTML renders d as one self-contained HTML page.
func (d *document) writeHTML(w io.Writer) error {
	var b strings.Builder
	title := d.kind + " " + d.heading
	fmt.Fprintf(&b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>%s</title>\n<style>%s</style>\n</head>\n<body>\n<header>\n<div>\n", esc(title), css)
	fmt.Fprintf(&b, "<div class=\"kind\">%s</div>\n<h1>%s", esc(d.kind), esc(d.heading))
	if d.badge != "" {
		cls := "bad"
		if d.good {
			cls = "good"
		}
		fmt.Fprintf(&b, "<span class=\"badge %s\">%s</span>", cls, esc(d.badge))
	}
	b.WriteString("</h1>\n<div class=\"meta\">")
	for i, p := range d.meta {
		if i > 0 {
			b.WriteString(" &middot; ")
		}
		fmt.Fprintf(&b, "%s <b>%s</b>", esc(p.k), esc(p.v))
	}
	b.WriteString("</div>\n")
	if d.barcode != nil {
		uri, err := d.barcode.pngDataURI(3, 60)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "<div class=\"barcode\"><img alt=\"Code 128: %s\" src=\"%s\"></div>\n", esc(d.barcode.content), uri)
	}
	b.WriteString("</div>\n")
	if d.qr != nil {
		uri, err := d.qr.pngDataURI(6, 0)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "<div class=\"qr\"><img alt=\"QR: %s\" src=\"%s\">%s<code>%s</code></div>\n",
			esc(d.qr.content), uri, esc(d.qrLabel), esc(d.qr.content))
	}
	b.WriteString("</header>\n")
	for _, blk := range d.blocks {
		switch v := blk.(type) {
		case section:
			fmt.Fprintf(&b, "<h2>%s</h2>\n", esc(string(v)))
		case kv:
			b.WriteString("<table class=\"kv\">\n")
			for _, p := range v {
				fmt.Fprintf(&b, "<tr><th>%s</th><td%s>%s</td></tr>\n", esc(p.k), monoAttr(p.mono, false), esc(p.v))
			}
			b.WriteString("</table>\n")
		case table:
			b.WriteString("<table>\n<tr>")
			for i, h := range v.head {
				fmt.Fprintf(&b, "<th%s>%s</th>", monoAttr(false, at(v.right, i)), esc(h))
			}
			b.WriteString("</tr>\n")
			for r, row := range v.rows {
				if at(v.bad, r) {
					b.WriteString("<tr class=\"fail\">")
				} else {
					b.WriteString("<tr>")
				}
				for i, c := range row {
					fmt.Fprintf(&b, "<td%s>%s</td>", monoAttr(at(v.mono, i), at(v.right, i)), esc(c))
				}
				b.WriteString("</tr>\n")
			}
			b.WriteString("</table>\n")
		case tiles:
			b.WriteString("<div class=\"tiles\">\n")
			for _, t := range v {
				fmt.Fprintf(&b, "<div class=\"tile\"><span>%s</span><b>%s</b><span>%s</span></div>\n", esc(t.label), esc(t.value), esc(t.note))
			}
			b.WriteString("</div>\n")
		case figure:
			sv := &svg{}
			v.draw(sv, 0, 0)
			fmt.Fprintf(&b, "<figure><svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %g %g\" role=\"img\" aria-label=\"%s\" font-family=\"Helvetica,Arial,sans-serif\">\n%s</svg></figure>\n",
				chartW, v.height(), esc(v.caption()), sv.String())
		case note:
			fmt.Fprintf(&b, "<p class=\"note\">%s</p>\n", esc(string(v)))
		default:
			return fmt.Errorf("printable: unknown block %T", blk)
		}
	}
	fmt.Fprintf(&b, "<footer>%s</footer>\n</body>\n</html>\n", esc(d.footer))
	_, err := io.WriteString(w, b.String())
	return err
}

func monoAttr(mono, right bool) string {
	switch {
	case mono && right:
		return ` class="mono r"`
	case mono:
		return ` class="mono"`
	case right:
		return ` class="r"`
	}
	return ""
}

func at(bs []bool, i int) bool { return i < len(bs) && bs[i] }

func esc(s string) string { return html.EscapeString(s) }

// svg is a canvas that writes SVG elements (millimetre user units).
type svg struct{ strings.Builder }

func (s *svg) rect(x, y, w, h float64, fill rgb) {
	fmt.Fprintf(s, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\"/>\n", x, y, w, h, fill.hex())
}

func (s *svg) line(x1, y1, x2, y2, width float64, stroke rgb, dashed bool) {
	dash := ""
	if dashed {
		dash = ` stroke-dasharray="1,0.8"`
	}
	fmt.Fprintf(s, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"%s\" stroke-width=\"%.2f\"%s/>\n", x1, y1, x2, y2, stroke.hex(), width, dash)
}

func (s *svg) polyline(xs, ys []float64, width float64, stroke rgb) {
	s.WriteString("<polyline fill=\"none\" points=\"")
	for i := range xs {
		fmt.Fprintf(s, "%.2f,%.2f ", xs[i], ys[i])
	}
	fmt.Fprintf(s, "\" stroke=\"%s\" stroke-width=\"%.2f\"/>\n", stroke.hex(), width)
}

func (s *svg) text(x, y float64, t string, size float64, anchor string, c rgb) {
	if t == "" {
		return
	}
	fmt.Fprintf(s, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"%.2f\" text-anchor=\"%s\" fill=\"%s\">%s</text>\n", x, y, size, anchor, c.hex(), esc(t))
}
