package data

import (
	"fmt"
	"math"
)

// ResizeMode selects the resampling filter of Resize.
type ResizeMode string

const (
	// ResizeArea averages the source pixels that each destination pixel
	// covers, weighting every source pixel by the fraction of it that lies
	// inside the destination pixel's footprint (a box filter with
	// fractional weights, like OpenCV's INTER_AREA). The result is computed
	// in float64 and rounded once, half up. It is the default.
	ResizeArea ResizeMode = "area"
	// ResizeBilinear reproduces Pillow's Image.resize with
	// Image.BILINEAR, which is what torchvision's Resize does to PIL
	// images and therefore what the torchmeta-based reference uses: a
	// triangle filter whose support grows with the reduction factor
	// (antialiased), 22-bit fixed-point weights, a horizontal pass then a
	// vertical pass, each rounded to uint8.
	ResizeBilinear ResizeMode = "bilinear"
)

func (m ResizeMode) orDefault() ResizeMode {
	if m == "" {
		return ResizeArea
	}
	return m
}

func (m ResizeMode) check() error {
	switch m.orDefault() {
	case ResizeArea, ResizeBilinear:
		return nil
	}
	return fmt.Errorf("data: unknown resize mode %q (want %q or %q)", string(m), ResizeArea, ResizeBilinear)
}

// Resize resamples a planar (CHW) uint8 image with c channels from h x w
// to outH x outW pixels and returns a new slice of c*outH*outW values.
// The empty mode means ResizeArea. Each channel is resampled on its own.
// When the size does not change the pixels are copied unchanged.
func Resize(src []uint8, c, h, w, outH, outW int, mode ResizeMode) ([]uint8, error) {
	if c <= 0 || h <= 0 || w <= 0 || outH <= 0 || outW <= 0 {
		return nil, fmt.Errorf("data: resize: invalid sizes c=%d %dx%d -> %dx%d", c, h, w, outH, outW)
	}
	if len(src) != c*h*w {
		return nil, fmt.Errorf("data: resize: got %d values, want c*h*w = %d", len(src), c*h*w)
	}
	r, err := newResizer(h, w, outH, outW, mode)
	if err != nil {
		return nil, err
	}
	dst := make([]uint8, c*outH*outW)
	r.run(dst, src, c)
	return dst, nil
}

// taps holds, for each destination index, the first source index and the
// weights of the consecutive source indices that contribute to it.
type taps struct {
	start []int
	w     [][]float64
	fixed [][]int32 // Pillow fixed-point weights (bilinear only)
}

// resizer resamples images of one fixed source and destination size. It
// keeps scratch memory, so one resizer must not be used concurrently.
type resizer struct {
	mode       ResizeMode
	h, w       int
	outH, outW int
	tx, ty     taps
	tmpF       []float64
	tmp8       []uint8
}

func newResizer(h, w, outH, outW int, mode ResizeMode) (*resizer, error) {
	if err := mode.check(); err != nil {
		return nil, err
	}
	r := &resizer{mode: mode.orDefault(), h: h, w: w, outH: outH, outW: outW}
	switch r.mode {
	case ResizeArea:
		r.tx = areaTaps(w, outW)
		r.ty = areaTaps(h, outH)
		r.tmpF = make([]float64, h*outW)
	case ResizeBilinear:
		r.tx = pilBilinearTaps(w, outW)
		r.ty = pilBilinearTaps(h, outH)
		r.tmp8 = make([]uint8, h*outW)
	}
	return r, nil
}

// areaTaps computes box-filter weights with fractional coverage: the
// destination pixel i covers the source interval [i*in/out, (i+1)*in/out)
// and each source pixel j is weighted by the length of [j, j+1) inside it,
// divided by the interval length, so the weights sum to 1.
func areaTaps(in, out int) taps {
	t := taps{start: make([]int, out), w: make([][]float64, out)}
	scale := float64(in) / float64(out)
	for i := 0; i < out; i++ {
		lo := float64(i*in) / float64(out)
		hi := float64((i+1)*in) / float64(out)
		j0 := int(math.Floor(lo))
		j1 := int(math.Ceil(hi))
		if j1 > in {
			j1 = in
		}
		var ws []float64
		for j := j0; j < j1; j++ {
			ov := math.Min(hi, float64(j+1)) - math.Max(lo, float64(j))
			ws = append(ws, ov/scale)
		}
		t.start[i] = j0
		t.w[i] = ws
	}
	return t
}

// pilPrecisionBits is the number of fractional bits of Pillow's 8-bit
// fixed-point resampling weights.
const pilPrecisionBits = 32 - 8 - 2

// pilBilinearTaps computes Pillow's BILINEAR resampling weights for one
// axis: the triangle filter of support 1 is stretched by the reduction
// factor (when shrinking), centred on the destination pixel centre mapped
// into the source, evaluated at the source pixel centres, normalised to
// sum 1 and converted to fixed point.
func pilBilinearTaps(in, out int) taps {
	t := taps{start: make([]int, out), w: make([][]float64, out), fixed: make([][]int32, out)}
	scale := float64(in) / float64(out)
	fscale := math.Max(scale, 1)
	support := fscale // the triangle filter has support 1
	for i := 0; i < out; i++ {
		center := (float64(i) + 0.5) * scale
		xmin := int(center - support + 0.5) // truncation, as in C
		if xmin < 0 {
			xmin = 0
		}
		xmax := int(center + support + 0.5)
		if xmax > in {
			xmax = in
		}
		ws := make([]float64, xmax-xmin)
		sum := 0.0
		for j := range ws {
			x := math.Abs((float64(j+xmin) - center + 0.5) / fscale)
			if x < 1 {
				ws[j] = 1 - x
			}
			sum += ws[j]
		}
		fx := make([]int32, len(ws))
		for j := range ws {
			if sum != 0 {
				ws[j] /= sum
			}
			if ws[j] < 0 {
				fx[j] = int32(-0.5 + ws[j]*(1<<pilPrecisionBits))
			} else {
				fx[j] = int32(0.5 + ws[j]*(1<<pilPrecisionBits))
			}
		}
		t.start[i] = xmin
		t.w[i] = ws
		t.fixed[i] = fx
	}
	return t
}

// run resamples c planes of src into dst.
func (r *resizer) run(dst, src []uint8, c int) {
	inPlane := r.h * r.w
	outPlane := r.outH * r.outW
	for ch := 0; ch < c; ch++ {
		s := src[ch*inPlane : (ch+1)*inPlane]
		d := dst[ch*outPlane : (ch+1)*outPlane]
		if r.h == r.outH && r.w == r.outW {
			copy(d, s)
			continue
		}
		switch r.mode {
		case ResizeArea:
			r.areaPlane(d, s)
		case ResizeBilinear:
			r.pilPlane(d, s)
		}
	}
}

func (r *resizer) areaPlane(d, s []uint8) {
	tmp := r.tmpF
	for y := 0; y < r.h; y++ {
		row := s[y*r.w : (y+1)*r.w]
		for x := 0; x < r.outW; x++ {
			st := r.tx.start[x]
			acc := 0.0
			for k, wt := range r.tx.w[x] {
				acc += wt * float64(row[st+k])
			}
			tmp[y*r.outW+x] = acc
		}
	}
	for y := 0; y < r.outH; y++ {
		st := r.ty.start[y]
		ws := r.ty.w[y]
		for x := 0; x < r.outW; x++ {
			acc := 0.0
			for k, wt := range ws {
				acc += wt * tmp[(st+k)*r.outW+x]
			}
			d[y*r.outW+x] = roundUint8(acc)
		}
	}
}

// roundUint8 rounds half up and clamps to 0..255. A tiny epsilon makes
// values that should be exact halves but carry rounding error round up
// consistently.
func roundUint8(v float64) uint8 {
	v = math.Floor(v + 0.5 + 1e-9)
	if v <= 0 {
		return 0
	}
	if v >= 255 {
		return 255
	}
	return uint8(v)
}

func clipFixed(acc int64) uint8 {
	v := acc >> pilPrecisionBits
	if v < 0 {
		return 0
	}
	if v > 255 {
		return 255
	}
	return uint8(v)
}

// pilPlane emulates Pillow's two-pass 8-bit resampling: horizontal pass
// (skipped when the width does not change) into a uint8 buffer, then the
// vertical pass (skipped when the height does not change).
func (r *resizer) pilPlane(d, s []uint8) {
	const half = int64(1) << (pilPrecisionBits - 1)
	in := s
	inW := r.w
	if r.w != r.outW {
		tmp := r.tmp8
		for y := 0; y < r.h; y++ {
			row := s[y*r.w : (y+1)*r.w]
			for x := 0; x < r.outW; x++ {
				st := r.tx.start[x]
				acc := half
				for k, wt := range r.tx.fixed[x] {
					acc += int64(row[st+k]) * int64(wt)
				}
				tmp[y*r.outW+x] = clipFixed(acc)
			}
		}
		in = tmp
		inW = r.outW
	}
	if r.h == r.outH {
		copy(d, in[:r.outH*inW])
		return
	}
	for y := 0; y < r.outH; y++ {
		st := r.ty.start[y]
		ws := r.ty.fixed[y]
		for x := 0; x < inW; x++ {
			acc := half
			for k, wt := range ws {
				acc += int64(in[(st+k)*inW+x]) * int64(wt)
			}
			d[y*inW+x] = clipFixed(acc)
		}
	}
}

// Rotate rotates a square planar (CHW) image of c channels and size x size
// pixels counter-clockwise by quarterTurns * 90 degrees (any integer; taken
// modulo 4), like PIL's Image.rotate and torchvision's rotate with a
// positive angle. It returns a new slice.
func Rotate(src []uint8, c, size, quarterTurns int) ([]uint8, error) {
	if c <= 0 || size <= 0 || len(src) != c*size*size {
		return nil, fmt.Errorf("data: rotate: got %d values for c=%d size=%d", len(src), c, size)
	}
	dst := make([]uint8, len(src))
	rotateInto(dst, src, c, size, quarterTurns)
	return dst, nil
}

// rotateInto writes src rotated counter-clockwise by quarterTurns*90
// degrees into dst (which must not alias src).
func rotateInto(dst, src []uint8, c, n, quarterTurns int) {
	q := ((quarterTurns % 4) + 4) % 4
	plane := n * n
	for ch := 0; ch < c; ch++ {
		s := src[ch*plane : (ch+1)*plane]
		d := dst[ch*plane : (ch+1)*plane]
		switch q {
		case 0:
			copy(d, s)
		case 1: // out[y][x] = in[x][n-1-y]
			for y := 0; y < n; y++ {
				for x := 0; x < n; x++ {
					d[y*n+x] = s[x*n+n-1-y]
				}
			}
		case 2: // out[y][x] = in[n-1-y][n-1-x]
			for i := 0; i < plane; i++ {
				d[i] = s[plane-1-i]
			}
		case 3: // out[y][x] = in[n-1-x][y]
			for y := 0; y < n; y++ {
				for x := 0; x < n; x++ {
					d[y*n+x] = s[(n-1-x)*n+y]
				}
			}
		}
	}
}
