package torch

import (
	"fmt"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/metanas-go/metanas/internal/testutil"
)

// TestConv2dPointwise checks bias-free 1x1 convolutions, grouped and not, against sums
// computed here: the output, and the gradients of sum(y * r) to the input and the weight.
// It runs on the CPU, where the shim's 1x1 kernel is the default; under
// METANAS_POINTWISE=matmul (TestConv2dPointwiseMatmul) it also checks that they ran as
// matrix products, not as convolutions.
func TestConv2dPointwise(t *testing.T) {
	matmul := PointwiseMatmul(CPU)
	if matmul {
		ProfileOps()
		if _, err := OpProfile(true); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct{ n, groups, ci, co, h, w int64 }{
		{2, 1, 3, 4, 3, 5},
		{3, 2, 3, 2, 4, 4},
		{1, 3, 2, 5, 1, 7},
		{2, 4, 1, 1, 2, 2},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("n%d_g%d_%dto%d_%dx%d", tc.n, tc.groups, tc.ci, tc.co, tc.h, tc.w), func(t *testing.T) {
			s := NewScope()
			defer s.Close()
			g, ci, co, hw := tc.groups, tc.ci, tc.co, tc.h*tc.w
			seq := func(n int64, k float64) []float32 {
				v := make([]float32, n)
				for i := range v {
					v[i] = float32(math.Sin(k*float64(i+1)) * 1.5)
				}
				return v
			}
			xv := seq(tc.n*g*ci*hw, 0.7)
			wv := seq(g*co*ci, 1.3)
			rv := seq(tc.n*g*co*hw, 0.37)
			x := s.FromFloat32(xv, []int64{tc.n, g * ci, tc.h, tc.w}, CPU)
			w := s.FromFloat32(wv, []int64{g * co, ci, 1, 1}, CPU)
			for _, p := range []*Tensor{x, w} {
				if err := p.SetRequiresGrad(true); err != nil {
					t.Fatal(err)
				}
			}
			y := s.Conv2d(x, w, nil, Conv{Groups: g})
			r := s.FromFloat32(rv, []int64{tc.n, g * co, tc.h, tc.w}, CPU)
			if err := s.Sum(s.Mul(y, r)).Backward(); err != nil {
				t.Fatal(err)
			}
			// y[n, gi*co+o, p] = sum_c w[gi*co+o, c] x[n, gi*ci+c, p].
			wantY := make([]float64, len(rv))
			wantGX := make([]float64, len(xv))
			wantGW := make([]float64, len(wv))
			for n := int64(0); n < tc.n; n++ {
				for gi := int64(0); gi < g; gi++ {
					for o := int64(0); o < co; o++ {
						for c := int64(0); c < ci; c++ {
							wi := (gi*co+o)*ci + c
							for p := int64(0); p < hw; p++ {
								xi := (n*g*ci+gi*ci+c)*hw + p
								yi := (n*g*co+gi*co+o)*hw + p
								wantY[yi] += float64(wv[wi]) * float64(xv[xi])
								wantGX[xi] += float64(wv[wi]) * float64(rv[yi])
								wantGW[wi] += float64(xv[xi]) * float64(rv[yi])
							}
						}
					}
				}
			}
			for _, c := range []struct {
				name string
				t    *Tensor
				want []float64
			}{{"output", y, wantY}, {"input gradient", s.Grad(x), wantGX}, {"weight gradient", s.Grad(w), wantGW}} {
				got, err := c.t.Float32s()
				if err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				if len(got) != len(c.want) {
					t.Fatalf("%s: %d values, want %d", c.name, len(got), len(c.want))
				}
				for i, v := range c.want {
					if math.Abs(float64(got[i])-v) > 1e-5+1e-5*math.Abs(v) {
						t.Fatalf("%s[%d] = %g, want %g", c.name, i, got[i], v)
					}
				}
			}
		})
	}
	if !matmul {
		return
	}
	prof, err := OpProfile(false)
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]int64{}
	for _, p := range prof {
		calls[p.Name] += p.Calls
	}
	if calls["aten::matmul"] < int64(len(cases)) {
		t.Errorf("aten::matmul ran %d times for %d convolutions", calls["aten::matmul"], len(cases))
	}
	for name, n := range calls {
		if strings.Contains(name, "conv") || strings.Contains(name, "Conv") {
			t.Errorf("%s ran %d times under METANAS_POINTWISE=matmul", name, n)
		}
	}
}

// TestConv2dPointwiseMatmul runs TestConv2dPointwise again in a process with
// METANAS_POINTWISE=matmul.
func TestConv2dPointwiseMatmul(t *testing.T) {
	if os.Getenv("METANAS_POINTWISE") == "matmul" {
		t.Skip("this process already runs the matrix products")
	}
	testutil.RerunWith(t, []string{"METANAS_POINTWISE=matmul"}, "^TestConv2dPointwise$", "TestConv2dPointwise")
}

// TestPointwiseMatmulSetting checks METANAS_POINTWISE's meaning for the CPU and CUDA:
// unset, products on CUDA only; matmul, everywhere; conv, nowhere; another value is
// reported and read as unset. The process reads the setting once, so each value runs in a
// child process.
func TestPointwiseMatmulSetting(t *testing.T) {
	want := map[string][2]bool{"": {false, true}, "matmul": {true, true}, "conv": {false, false}, "sideways": {false, true}}
	testutil.CheckSetting(t, "METANAS_POINTWISE", "TestPointwiseMatmulSetting", want, "products on (CPU, CUDA)", func() [2]bool { return [2]bool{PointwiseMatmul(CPU), PointwiseMatmul(Device{CUDA: true})} })
}
