package torch

import (
	"fmt"
	"testing"
)

// TestFactorizedReduce checks Scope.FactorizedReduce against its definition, two 1x1
// convolutions at stride 2 of x and of x shifted by one pixel down and right, concatenated
// per group: the output and the gradients of x, w1 and w2 of sum(y * r), for one group and
// for three; and refuses odd sizes and unequal weights.
func TestFactorizedReduce(t *testing.T) { factorizedReduceCheck(t, CPU) }

// TestCUDAFactorizedReduce is TestFactorizedReduce on CUDA, in float32 (TF32 off: the
// compared convolutions take different cuDNN algorithms).
func TestCUDAFactorizedReduce(t *testing.T) {
	if !CUDAAvailable() {
		t.Skip("no CUDA device (or LibTorch built without CUDA)")
	}
	SetAllowTF32(false, false)
	defer SetAllowTF32(true, false)
	factorizedReduceCheck(t, Device{CUDA: true})
}

func factorizedReduceCheck(t *testing.T, dev Device) {
	for _, g := range []int64{1, 3} {
		t.Run(fmt.Sprintf("groups=%d", g), func(t *testing.T) {
			s := NewScope()
			defer s.Close()
			ManualSeed(4)
			const n, ci, co, h, w = 2, 3, 2, 4, 6
			x := s.Randn([]int64{n, g * ci, h, w}, dev, true)
			w1 := s.Randn([]int64{g * co, ci, 1, 1}, dev, true)
			w2 := s.Randn([]int64{g * co, ci, 1, 1}, dev, true)
			r := s.Randn([]int64{n, g * 2 * co, h / 2, w / 2}, dev, false)
			run := func(patch bool) (y []float32, grads [][]float32) {
				c := s.Child()
				defer c.Close()
				var out *Tensor
				if patch {
					out = c.FactorizedReduce(x, w1, w2, g)
				} else {
					st := Conv{Stride: [2]int64{2, 2}, Groups: g}
					a := c.Conv2d(x, w1, nil, st)
					b := c.Conv2d(c.Slice(c.Slice(x, 2, 1, h, 1), 3, 1, w, 1), w2, nil, st)
					// Per group: its co outputs of a, then its co of b.
					ab := c.Cat([]*Tensor{c.Reshape(a, n, g, co, h/2, w/2), c.Reshape(b, n, g, co, h/2, w/2)}, 2)
					out = c.Reshape(ab, n, g*2*co, h/2, w/2)
				}
				if err := c.Sum(c.Mul(out, r)).Backward(); err != nil {
					t.Fatal(err)
				}
				y = values(t, out)
				for _, p := range []*Tensor{x, w1, w2} {
					grads = append(grads, values(t, c.Grad(p)))
					if err := p.SetGrad(nil); err != nil {
						t.Fatal(err)
					}
				}
				return y, grads
			}
			wantY, wantG := run(false)
			gotY, gotG := run(true)
			near(t, "output", gotY, wantY, 1e-5)
			for i, name := range []string{"x", "w1", "w2"} {
				near(t, "gradient of "+name, gotG[i], wantG[i], 1e-5)
			}
		})
	}
	s := NewScope()
	defer s.Close()
	w := s.Zeros([]int64{4, 3, 1, 1}, dev)
	for _, c := range []struct {
		x, w2 *Tensor
		want  string
	}{
		{s.Zeros([]int64{1, 3, 5, 4}, dev), w, "even height and width"},
		{s.Zeros([]int64{1, 3, 4, 4}, dev), s.Zeros([]int64{4, 3, 3, 3}, dev), "1x1 kernels"},
	} {
		bad := s.Child()
		bad.FactorizedReduce(c.x, w, c.w2, 1)
		wantErrContains(t, bad.Err(), "factorized_reduce", c.want)
		bad.Close()
	}
}
