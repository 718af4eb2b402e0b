package printable

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"sync"

	"github.com/boombuler/barcode"
	"github.com/boombuler/barcode/code128"
	"github.com/boombuler/barcode/qr"
)

// symbol is a machine-readable symbol as its module grid: dark[y][x] is a dark module (a bar
// for Code 128, whose grid is one row high). Renderers draw it with vector rectangles (PDF) or
// as a PNG with whole-pixel modules (HTML), so scanners see crisp edges.
type symbol struct {
	kind    string // "Code 128" or "QR"
	content string
	dark    [][]bool
	quiet   int // quiet zone in modules on every side (Code 128: left and right only)
}

func (s *symbol) cols() int { return len(s.dark[0]) }
func (s *symbol) rows() int { return len(s.dark) }

// code128Symbol encodes content (printable ASCII) as Code 128.
func code128Symbol(content string) (*symbol, error) {
	bc, err := code128.Encode(content)
	if err != nil {
		return nil, fmt.Errorf("encoding %q as Code 128: %w", content, err)
	}
	return grid(barcode.TypeCode128, content, bc, 1, 10), nil
}

// qrSymbol encodes content as a QR code with error correction level M.
func qrSymbol(content string) (*symbol, error) {
	bc, err := qr.Encode(content, qr.M, qr.Auto)
	if err != nil {
		return nil, fmt.Errorf("encoding %q as QR: %w", content, err)
	}
	return grid("QR", content, bc, bc.Bounds().Dy(), 4), nil
}

func grid(kind, content string, img image.Image, rows, quiet int) *symbol {
	b := img.Bounds()
	s := &symbol{kind: kind, content: content, quiet: quiet}
	for y := 0; y < rows; y++ {
		row := make([]bool, b.Dx())
		for x := range row {
			c := color.GrayModel.Convert(img.At(b.Min.X+x, b.Min.Y+y)).(color.Gray)
			row[x] = c.Y < 128
		}
		s.dark = append(s.dark, row)
	}
	return s
}

// pngDataURI renders the symbol as an 8-bit grayscale PNG, scale pixels per module and (for
// Code 128) height pixels high, quiet zone included, as a data: URI.
func (s *symbol) pngDataURI(scale, height int) (string, error) {
	w := (s.cols() + 2*s.quiet) * scale
	h := height
	vq := 0
	if s.rows() > 1 {
		vq = s.quiet
		h = (s.rows() + 2*vq) * scale
	}
	img := image.NewGray(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = 0xff
	}
	for y := 0; y < h; y++ {
		my := 0
		if s.rows() > 1 {
			my = y/scale - vq
			if my < 0 || my >= s.rows() {
				continue
			}
		}
		for x := 0; x < w; x++ {
			mx := x/scale - s.quiet
			if mx >= 0 && mx < s.cols() && s.dark[my][mx] {
				img.Pix[y*img.Stride+x] = 0
			}
		}
	}
	var buf bytes.Buffer
	if err := pngEncoder.Encode(&buf, img); err != nil {
		return "", fmt.Errorf("encoding %s PNG: %w", s.kind, err)
	}
	return "data:image/png;base64," + base64.StdEncoding.EncodeToString(buf.Bytes()), nil
}

// pngEncoder reuses its compressor's buffers between images: a new one costs more than the
// small symbol it encodes.
var pngEncoder = png.Encoder{BufferPool: &pngBuffers{}}

type pngBuffers struct{ p sync.Pool }

func (b *pngBuffers) Get() *png.EncoderBuffer {
	eb, _ := b.p.Get().(*png.EncoderBuffer)
	return eb
}

func (b *pngBuffers) Put(eb *png.EncoderBuffer) { b.p.Put(eb) }
