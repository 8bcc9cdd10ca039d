package torch

import (
	"math"
	"testing"
)

// refMaxPool3 is a 3x3 max pool with padding 1 and stride s of one H x W plane by PyTorch's
// rule: scan the window row by row, a strictly larger value or a NaN takes over, the
// window's first element when none does. It returns the outputs and the flat input index
// each one picked.
func refMaxPool3(x []float32, H, W, s int) ([]float32, []int) {
	OH, OW := (H-1)/s+1, (W-1)/s+1
	out, idx := make([]float32, OH*OW), make([]int, OH*OW)
	for oh := 0; oh < OH; oh++ {
		for ow := 0; ow < OW; ow++ {
			h0, h1 := max(oh*s-1, 0), min(oh*s+2, H)
			w0, w1 := max(ow*s-1, 0), min(ow*s+2, W)
			best, bv := h0*W+w0, float32(math.Inf(-1))
			for h := h0; h < h1; h++ {
				for w := w0; w < w1; w++ {
					if v := x[h*W+w]; v > bv || v != v {
						best, bv = h*W+w, v
					}
				}
			}
			out[oh*OW+ow], idx[oh*OW+ow] = bv, best
		}
	}
	return out, idx
}

// TestMaxPoolScanOrder checks max pooling (the CPU kernel where it applies) on planes wide
// enough for its vector passes, full of ties and NaNs: every output and the input each
// output's gradient lands on must be PyTorch's.
func TestMaxPoolScanOrder(t *testing.T) {
	for _, c := range []struct {
		name    string
		h, w, s int
	}{
		{"s1_13x21", 13, 21, 1},
		{"s2_13x21", 13, 21, 2},
		{"s2_28x28", 28, 28, 2},
		{"s1_9x10", 9, 10, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := NewScope()
			defer s.Close()
			const planes = 3
			n := c.h * c.w
			data := make([]float32, planes*n)
			for i := range data {
				// Values in {0, 1, 2}, so that most windows hold ties, and a NaN now and then.
				data[i] = float32((i * 7919 % 13) % 3)
				if i%17 == 5 {
					data[i] = float32(math.NaN())
				}
			}
			x := s.FromFloat32(data, []int64{1, planes, int64(c.h), int64(c.w)}, CPU)
			if err := x.SetRequiresGrad(true); err != nil {
				t.Fatal(err)
			}
			y := s.MaxPool2d(x, 3, int64(c.s), 1)
			if err := s.Sum(y).Backward(); err != nil {
				t.Fatal(err)
			}
			got, grad := values(t, y), values(t, s.Grad(x))
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
			wantGrad := make([]float32, len(data))
			OHW := ((c.h-1)/c.s + 1) * ((c.w-1)/c.s + 1)
			for p := 0; p < planes; p++ {
				want, idx := refMaxPool3(data[p*n:(p+1)*n], c.h, c.w, c.s)
				for o, v := range want {
					g := got[p*OHW+o]
					if (v != v) != (g != g) || (v == v && g != v) {
						t.Fatalf("plane %d output %d = %v, want %v", p, o, g, v)
					}
					wantGrad[p*n+idx[o]]++
				}
			}
			for i := range wantGrad {
				if grad[i] != wantGrad[i] {
					t.Fatalf("input %d gets gradient %v, want %v (the pool picked another element)", i, grad[i], wantGrad[i])
				}
			}
		})
	}
}
