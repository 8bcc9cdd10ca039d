package torch

import (
	"fmt"
	"math"
	"os"
	"testing"

	"github.com/metanas-go/metanas/internal/testutil"
)

// TestEmulatedDepthwiseWeightGrad: a depthwise convolution whose weight gradient is the
// shim's kernel (METANAS_DW_WGRAD's, run through the kernels' host emulation) gives the
// output and the gradients of the input and the kernel that LibTorch computes in float64,
// at sep_conv's and dil_conv's geometries (strides 1 and 2, dilations 1 and 2), a 5x5
// kernel, planes of more positions than a CUDA block's threads, an input that is a
// channel slice of a larger tensor, bfloat16, and float32 under bfloat16 autocast; each
// case's weight gradient must have launched the (emulated) kernel.
func TestEmulatedDepthwiseWeightGrad(t *testing.T) { depthwiseWeightGrad(t, emulated(t)) }

// TestCUDADepthwiseWeightGrad is TestEmulatedDepthwiseWeightGrad on a GPU with
// METANAS_DW_WGRAD=1 (in a child process: the shim reads the switch once).
func TestCUDADepthwiseWeightGrad(t *testing.T) {
	dev := nodeNormSumCUDA(t)
	if os.Getenv("METANAS_DW_WGRAD") != "1" {
		testutil.RerunWith(t, []string{"METANAS_DW_WGRAD=1"}, "^TestCUDADepthwiseWeightGrad$", "TestCUDADepthwiseWeightGrad")
		return
	}
	ProfileBytes()
	depthwiseWeightGrad(t, dev)
	prof, err := BytesProfile(true)
	if err != nil {
		t.Fatal(err)
	}
	ran := false
	for _, p := range prof {
		ran = ran || p.Name == "metanas::dw_wgrad"
	}
	if !ran {
		t.Error("the depthwise convolutions did not run the shim's weight gradient")
	}
}

func depthwiseWeightGrad(t *testing.T, dev Device) {
	for _, tc := range []struct {
		N, C, H, k  int64
		stride, dil int64
		slice       bool
		dt          DType
		autocast    bool // float32 tensors under bfloat16 autocast
		tol         float64
	}{
		{N: 3, C: 5, H: 9, k: 3, stride: 1, dil: 1, dt: Float32, tol: 1e-5},
		{N: 3, C: 5, H: 9, k: 3, stride: 2, dil: 1, dt: Float32, tol: 1e-5},
		{N: 3, C: 4, H: 10, k: 3, stride: 1, dil: 2, dt: Float32, tol: 1e-5},
		{N: 2, C: 4, H: 11, k: 3, stride: 2, dil: 2, dt: Float32, tol: 1e-5},
		{N: 2, C: 3, H: 8, k: 5, stride: 1, dil: 1, dt: Float32, tol: 1e-5},
		{N: 4, C: 3, H: 12, k: 3, stride: 1, dil: 1, slice: true, dt: Float32, tol: 1e-5},
		{N: 3, C: 4, H: 7, k: 3, stride: 1, dil: 1, dt: BFloat16, tol: 3e-2},
		{N: 3, C: 4, H: 7, k: 3, stride: 2, dil: 1, dt: Float32, autocast: true, tol: 3e-2},
	} {
		name := fmt.Sprintf("%dx%d stride %d dilation %d %dx%dx%dx%d slice %v %v autocast %v", tc.k, tc.k, tc.stride,
			tc.dil, tc.N, tc.C, tc.H, tc.H, tc.slice, tc.dt, tc.autocast)
		t.Run(name, func(t *testing.T) {
			s := NewScope()
			defer s.Close()
			ManualSeed(23)
			pad := tc.dil * (tc.k - 1) / 2
			geom := Conv{Stride: [2]int64{tc.stride, tc.stride}, Padding: [2]int64{pad, pad},
				Dilation: [2]int64{tc.dil, tc.dil}, Groups: tc.C}
			// Host values, rounded to the test's type, so that both sides start from the same.
			extra := int64(0)
			if tc.slice {
				extra = 2
			}
			low := tc.dt
			if tc.autocast {
				low = BFloat16
			}
			xh := s.To(s.To(s.Randn([]int64{tc.N, tc.C + extra, tc.H, tc.H}, CPU, false), low, CPU), Float64, CPU)
			wh := s.To(s.To(s.MulScalar(s.Randn([]int64{tc.C, 1, tc.k, tc.k}, CPU, false), 0.5), low, CPU), Float64, CPU)
			run := func(dt DType, dev Device, autocast bool) (y, gx, gw []float32) {
				c := s.Child()
				defer c.Close()
				big := c.Detach(c.To(xh, dt, dev))
				w := c.Detach(c.To(wh, dt, dev))
				for _, p := range []*Tensor{big, w} {
					if err := p.SetRequiresGrad(true); err != nil {
						t.Fatal(err)
					}
				}
				x := big
				if tc.slice {
					x = c.Narrow(big, 1, 1, tc.C)
				}
				out := func() *Tensor {
					if autocast {
						restore, err := Autocast(dev, BFloat16)
						if err != nil {
							t.Fatal(err)
						}
						defer restore()
					}
					return c.Conv2d(x, w, nil, geom)
				}()
				if autocast {
					if info, err := out.Info(); err != nil || info.DType != BFloat16 {
						t.Fatalf("under autocast the output is %v (%v), want bfloat16", info.DType, err)
					}
				}
				v := make([]float32, out.Numel()) // an output gradient of varied signs
				for i := range v {
					v[i] = float32(math.Sin(float64(i)))
				}
				r := c.To(c.FromFloat32(v, out.MustShape(), CPU), dt, dev)
				if err := c.Sum(c.Mul(out, r)).Backward(); err != nil {
					t.Fatal(err)
				}
				h := func(v *Tensor) []float32 { return values(t, c.To(v, Float32, CPU)) }
				gbig := h(c.Grad(big))
				if err := c.Err(); err != nil {
					t.Fatal(err)
				}
				return h(out), gbig, h(c.Grad(w))
			}
			launched := EmulatedLaunches()
			y, gx, gw := run(tc.dt, dev, tc.autocast)
			if !dev.CUDA && EmulatedLaunches() == launched {
				t.Error("the convolution's weight gradient launched no emulated kernel")
			}
			wy, wgx, wgw := run(Float64, CPU, false)
			for _, c := range []struct {
				what      string
				got, want []float32
			}{{"output", y, wy}, {"input gradient", gx, wgx}, {"weight gradient", gw, wgw}} {
				var scale float64
				for _, v := range c.want {
					scale = max(scale, math.Abs(float64(v)))
				}
				if len(c.got) != len(c.want) {
					t.Fatalf("%s: %d values, want %d", c.what, len(c.got), len(c.want))
				}
				for i := range c.want {
					if d := math.Abs(float64(c.got[i] - c.want[i])); d > tc.tol*scale {
						t.Fatalf("%s[%d] = %g, want %g (largest %g)", c.what, i, c.got[i], c.want[i], scale)
					}
				}
			}
		})
	}
}

// TestCPUDepthwiseLargePlanes: the CPU's depthwise 3x3 "same" convolutions (the shim's
// kernel where the CPU has AVX2 and FMA: one padded output gradient per plane for both
// gradients, the weight gradient's float lanes added in double every 256 terms) give the
// output and gradients LibTorch computes in float64, on planes larger than those blocks
// (84x84, in_metanas's size) and with a partial last vector of each row (30 and 13
// columns), at dilations 1 and 2.
func TestCPUDepthwiseLargePlanes(t *testing.T) {
	for _, tc := range []struct{ N, C, H, W, dil int64 }{
		{2, 3, 84, 84, 1}, {2, 3, 84, 84, 2}, {3, 2, 30, 30, 1}, {2, 4, 11, 13, 2},
	} {
		t.Run(fmt.Sprintf("%dx%dx%dx%d dilation %d", tc.N, tc.C, tc.H, tc.W, tc.dil), func(t *testing.T) {
			s := NewScope()
			defer s.Close()
			ManualSeed(29)
			xh := s.Randn([]int64{tc.N, tc.C, tc.H, tc.W}, CPU, false)
			wh := s.Randn([]int64{tc.C, 1, 3, 3}, CPU, false)
			geom := Conv{Padding: [2]int64{tc.dil, tc.dil}, Dilation: [2]int64{tc.dil, tc.dil}, Groups: tc.C}
			run := func(dt DType) [3][]float64 {
				c := s.Child()
				defer c.Close()
				x, w := c.Detach(c.To(xh, dt, CPU)), c.Detach(c.To(wh, dt, CPU))
				for _, p := range []*Tensor{x, w} {
					if err := p.SetRequiresGrad(true); err != nil {
						t.Fatal(err)
					}
				}
				y := c.Conv2d(x, w, nil, geom)
				v := make([]float32, y.Numel()) // an output gradient of varied signs
				for i := range v {
					v[i] = float32(math.Sin(0.7 * float64(i)))
				}
				if err := c.Sum(c.Mul(y, c.To(c.FromFloat32(v, y.MustShape(), CPU), dt, CPU))).Backward(); err != nil {
					t.Fatal(err)
				}
				var out [3][]float64
				for i, r := range []*Tensor{y, c.Grad(x), c.Grad(w)} {
					for _, f := range values(t, c.To(r, Float32, CPU)) {
						out[i] = append(out[i], float64(f))
					}
				}
				if err := c.Err(); err != nil {
					t.Fatal(err)
				}
				return out
			}
			got, want := run(Float32), run(Float64)
			for i, what := range []string{"output", "input gradient", "weight gradient"} {
				var scale float64
				for _, v := range want[i] {
					scale = max(scale, math.Abs(v))
				}
				for j := range want[i] {
					if d := math.Abs(got[i][j] - want[i][j]); d > 2e-6*scale {
						t.Fatalf("%s[%d] = %g, want %g (largest %g)", what, j, got[i][j], want[i][j], scale)
					}
				}
			}
		})
	}
}
