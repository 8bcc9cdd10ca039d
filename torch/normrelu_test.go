package torch

import (
	"fmt"
	"strings"
	"testing"
)

// TestNormReLU: NormReLU's output, x's gradient and the moved running statistics equal
// BatchNorm (training, no affine tensors) followed by Relu, for 4-D and 2-D inputs, a
// gradient that reaches it strided, channels shifted far from zero and bfloat16 and float16; it runs no batch norm, ReLU or ReLU backward operator of
// LibTorch's.
func TestNormReLU(t *testing.T) { normReLU(t, CPU) }

// TestCUDANormReLU is TestNormReLU with the shim's CUDA kernels.
func TestCUDANormReLU(t *testing.T) { normReLU(t, nodeNormSumCUDA(t)) }

// TestEmulatedNormReLU is TestNormReLU with the shim's CUDA kernels emulated on the host.
func TestEmulatedNormReLU(t *testing.T) { normReLU(t, emulated(t)) }

func normReLU(t *testing.T, dev Device) {
	for _, tc := range []struct {
		shape   []int64
		dt      DType
		strided bool
		tol     float64
	}{
		{shape: []int64{4, 5, 3, 6}, dt: Float32, tol: 2e-5},
		{shape: []int64{4, 5, 3, 6}, dt: Float32, strided: true, tol: 2e-5},
		{shape: []int64{7, 3}, dt: Float32, tol: 2e-5},
		{shape: []int64{1, 2, 5, 5}, dt: Float32, tol: 2e-5},
		{shape: []int64{6, 3, 9, 9}, dt: Float32, tol: 2e-5}, // more values a channel than a CUDA block's threads
		{shape: []int64{3, 4, 4, 4}, dt: BFloat16, tol: 3e-2},
		{shape: []int64{3, 4, 4, 4}, dt: Float16, tol: 4e-3},
	} {
		t.Run(fmt.Sprintf("%v %v strided %v", tc.shape, tc.dt, tc.strided), func(t *testing.T) {
			var outs, grads, means, vars [2][]float32
			var calls [2]map[string]int64
			var nodes int64
			for k, fused := range []bool{false, true} {
				s := NewScope()
				ManualSeed(17)
				x := s.Randn(tc.shape, dev, false)
				// Channel c shifted by -c and x scaled by 2: channels whose mean is far from
				// zero against their spread.
				shape := append([]int64{1, tc.shape[1]}, ones(len(tc.shape)-2)...)
				sh := s.Reshape(s.MulScalar(s.To(s.Arange(tc.shape[1], dev), Float32, dev), -1), shape...)
				x = s.Detach(s.To(s.Add(s.MulScalar(x, 2), sh), tc.dt, dev))
				if err := x.SetRequiresGrad(true); err != nil {
					t.Fatal(err)
				}
				rm := s.Detach(s.To(s.Randn([]int64{tc.shape[1]}, dev, false), Float32, dev))
				rv := s.Detach(s.AddScalar(s.Mul(rm, rm), 0.5))
				var y *Tensor
				calls[k] = map[string]int64{}
				prof := profiled(t, func() error {
					if fused {
						y = s.NormReLU(x, rm, rv, 0.1, 1e-5)
					} else {
						// LibTorch 1.13's CPU batch norm has no float16: the reference
						// normalises a float32 copy.
						in := x
						if tc.dt == Float16 && dev == CPU {
							in = s.To(x, Float32, dev)
						}
						y = s.To(s.Relu(s.BatchNorm(in, nil, nil, rm, rv, true, 0.1, 1e-5)), tc.dt, dev)
					}
					return s.Err()
				})
				for _, op := range []string{"aten::batch_norm", "aten::relu", "aten::clamp_min"} {
					calls[k][op] = CallsOf(prof, op)
				}
				outs[k] = values(t, s.To(y, Float32, CPU))
				in := y
				if tc.strided {
					in = s.Permute(y, 0, 2, 3, 1)
				}
				w := s.To(s.Randn(in.MustShape(), dev, false), tc.dt, dev)
				loss := s.Sum(s.To(s.Mul(in, w), Float32, dev))
				prof = profiledBackward(t, loss)
				calls[k]["aten::threshold_backward"] = CallsOf(prof, "aten::threshold_backward")
				for _, st := range prof {
					// LibTorch's backward nodes (NativeBatchNormBackward0, ...) or the shim's
					// CPU batch norm's (CppNode<...BatchNormTrain>).
					if strings.Contains(st.Name, "BatchNorm") && !strings.Contains(st.Name, "evaluate_function") {
						calls[k]["batch norm backward"] += st.Calls
					}
				}
				if fused {
					nodes = CallsOf(prof, "torch::autograd::CppNode<(anonymous namespace)::NormReLU>")
				}
				grads[k] = values(t, s.To(s.Grad(x), Float32, CPU))
				means[k], vars[k] = values(t, s.To(rm, Float32, CPU)), values(t, s.To(rv, Float32, CPU))
				if err := s.Err(); err != nil {
					t.Fatal(err)
				}
				s.Close()
			}
			near(t, "output", outs[1], outs[0], tc.tol)
			near(t, "x's gradient", grads[1], grads[0], tc.tol)
			near(t, "running mean", means[1], means[0], 1e-5)
			near(t, "running variance", vars[1], vars[0], 1e-5)
			for op, n := range calls[1] {
				if n != 0 {
					t.Errorf("NormReLU ran %s %d times, want 0", op, n)
				}
			}
			if nodes != 1 {
				t.Errorf("NormReLU's backward node ran %d times, want 1", nodes)
			}
			if calls[0]["aten::threshold_backward"] != 1 || calls[0]["batch norm backward"] < 1 {
				t.Errorf("BatchNorm and Relu ran threshold_backward %d times and a batch norm's backward %d (want 1 and >= 1): the comparison's operator names moved",
					calls[0]["aten::threshold_backward"], calls[0]["batch norm backward"])
			}
		})
	}
}

func ones(n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = 1
	}
	return out
}

// TestNormReLUErrors: NormReLU names running statistics of the wrong size or type.
func TestNormReLUErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rm, rv []int64
		dt     DType
		want   string
	}{
		{name: "size", rm: []int64{3}, rv: []int64{4}, dt: Float32, want: "running statistics of shape [3]"},
		{name: "type", rm: []int64{4}, rv: []int64{4}, dt: Float64, want: "not contiguous float32 [4]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewScope()
			defer s.Close()
			x := s.Randn([]int64{2, 4, 3, 3}, CPU, false)
			rm := s.To(s.Zeros(tc.rm, CPU), tc.dt, CPU)
			rv := s.To(s.Zeros(tc.rv, CPU), tc.dt, CPU)
			s.NormReLU(x, rm, rv, 0.1, 1e-5)
			err := s.Err()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one naming %q", err, tc.want)
			}
		})
	}
}

// TestKernelDivision: the CUDA kernels' index division (a multiply and a shift per
// divisor) equals integer division for divisors of the networks' sizes (positions, rows,
// channels), powers of two and large ones, over the first values, around multiples of the
// divisor and up to 2^31.
func TestKernelDivision(t *testing.T) {
	for _, d := range []uint32{1, 2, 3, 5, 7, 28, 49, 196, 784, 1680, 3136, 15680, 65536, 1<<20 + 1, 123456789, 1<<30 + 3, 1 << 31} {
		starts := []uint64{0, uint64(d) - 1, 100 * uint64(d), 1<<31 - 100000}
		if d > 1<<20 {
			starts = append(starts, uint64(d)-50000, 2*uint64(d)-50000)
		}
		for _, n0 := range starts {
			if n0 >= 1<<31 {
				continue // the kernels index below 2^31
			}
			if n := divCheck(d, uint32(n0), 100000); n >= 0 {
				t.Errorf("%d / %d divided wrongly", n, d)
			}
		}
	}
}
