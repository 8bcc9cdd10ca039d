package torch

import (
	"fmt"
	"testing"
)

// TestNodeNormSum: the fused node batch norm and sum (NodeNormSum) equals NodeBatchNorm in
// training followed by MixedTasksCoefs: the node, the running statistics, and the
// gradients of the members, of the outputs summed beside them and of the op weights, with
// drop-path masks from generators of one seed; for all members, a selection, members that
// are strided pieces of a grouped output, and 40 members of 7x7 (more than a CUDA launch
// takes at once). After the forward pass it holds less memory than the two calls: the
// stacked members' bytes, and the normalised ones' where the weights need gradients
// (counted by the CPU tensor pool where it is on).
func TestNodeNormSum(t *testing.T) { nodeNormSum(t, CPU) }

// TestCUDANodeNormSum is TestNodeNormSum with the shim's CUDA kernels (nodesum.cu) against
// LibTorch's batch norm and products on the GPU.
func TestCUDANodeNormSum(t *testing.T) { nodeNormSum(t, nodeNormSumCUDA(t)) }

// nodeNormSumCUDA returns the CUDA device, or skips the test where there is none or the
// shim has no CUDA kernels for NodeNormSum.
func nodeNormSumCUDA(t *testing.T) Device {
	t.Helper()
	if !CUDAAvailable() {
		t.Skip("no CUDA device (or LibTorch built without CUDA)")
	}
	dev := Device{CUDA: true}
	if !NodeNormSumOn(dev) {
		t.Skip("the shim was built without nvcc: no CUDA kernels for NodeNormSum")
	}
	return dev
}

func nodeNormSum(t *testing.T, dev Device) {
	for _, tc := range []struct {
		name             string
		N, T, C, HW, nIn int64 // HW: the side of the square planes
		members          int64
		sel              []int64
		rest             int
		pieces           bool // members as [N, T, C, H, W] pieces of one grouped output
		weightGrads      bool
		dropProb         float64
	}{
		{name: "all members", N: 4, T: 2, C: 3, HW: 6, nIn: 2, members: 3, rest: 1, weightGrads: true, dropProb: 0.3},
		{name: "members 0 and 2", N: 4, T: 2, C: 3, HW: 6, nIn: 2, members: 3, sel: []int64{0, 2}, rest: 1, weightGrads: true, dropProb: 0.3},
		{name: "pieces", N: 3, T: 2, C: 4, HW: 5, nIn: 2, members: 3, pieces: true, rest: 2, weightGrads: true},
		{name: "40 members of 7x7", N: 3, T: 2, C: 2, HW: 7, nIn: 8, members: 40, weightGrads: false, dropProb: 0.2},
		// 648 values a channel: more than a CUDA block's 256 threads, every warp summing.
		{name: "channels of 8x9x9", N: 8, T: 2, C: 2, HW: 9, nIn: 2, members: 2, rest: 1, weightGrads: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewScope()
			defer s.Close()
			ManualSeed(17)
			N, T, C, H := tc.N, tc.T, tc.C, tc.HW
			const K = 7
			m := tc.members
			if tc.sel != nil {
				m = int64(len(tc.sel))
			}
			var outs []*Tensor
			var group *Tensor
			if tc.pieces {
				group = s.Detach(s.MulScalar(s.Randn([]int64{N, (m + 1) * T * C, H, H}, dev, false), 2))
				if err := group.SetRequiresGrad(true); err != nil {
					t.Fatal(err)
				}
			}
			for i := int64(0); i < m; i++ {
				if tc.pieces {
					// Piece i+1 of the group (piece 0 is left out), as SplitChannels gives it.
					outs = append(outs, s.View(s.Narrow(group, 1, (i+1)*T*C, T*C), N, T, C, H, H))
					continue
				}
				o := s.AddScalar(s.MulScalar(s.Randn([]int64{N, T * C, H, H}, dev, false), float64(i%5+1)), float64(2*i%7))
				outs = append(outs, s.Detach(o))
			}
			var rest []*Tensor
			for i := 0; i < tc.rest; i++ {
				rest = append(rest, s.Detach(s.Randn([]int64{N, T * C, H, H}, dev, false)))
			}
			wops := s.Detach(s.Rand([]int64{T * tc.nIn, K}, dev))
			leaves := append(append([]*Tensor{}, rest...), outs...)
			if tc.pieces {
				leaves = append(append([]*Tensor{}, rest...), group)
			}
			if tc.weightGrads {
				leaves = append(leaves, wops)
			}
			for _, x := range leaves {
				if err := x.SetRequiresGrad(true); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
			var idx []int64 // the members' columns, then the other outputs'
			for i := int64(0); i < m; i++ {
				idx = append(idx, i+i/4) // every fourth column left out
			}
			for i := 0; i < tc.rest; i++ {
				idx = append(idx, tc.nIn*K-1-int64(i))
			}
			drop := make([]bool, len(idx))
			for i := range drop {
				drop[i] = i < int(m) || i == len(drop)-1 // the last other output has drop-path too
			}
			r := s.Randn([]int64{N, T * C, H, H}, dev, false)
			run := func(fused bool) nodeResult {
				t.Helper()
				nr := newNodeRun(t, s, dev, T, tc.members, C, 5)
				defer nr.close()
				cs, rm, rv, g, before := nr.cs, nr.rm, nr.rv, nr.g, nr.before
				coefs := cs.NodeCoefs(nil, wops, nil, int(tc.nIn), idx, 0.1, T)
				var node *Tensor
				if fused {
					node = cs.NodeNormSum(outs, rm, rv, tc.sel, 0.1, 1e-5, rest, coefs, drop, tc.dropProb, g, T)
				} else {
					stacked := cs.NodeBatchNorm(outs, rm, rv, tc.sel, T, true, 0.1, 1e-5)
					node = cs.MixedTasksCoefs(stacked, nil, rest, coefs, drop, tc.dropProb, g, T)
					stacked.Free()
				}
				return collectNode(t, cs, node, rm, rv, r, leaves, before)
			}
			want, got := run(false), run(true)
			compareNodes(t, got, want, 2e-4)
			if !dev.CUDA && CPUPool().Enabled {
				// The stacked members (the batch norm's input) and, where the weights need
				// gradients, the normalised ones (the product's).
				copies := N * T * C * H * H * 4 * m
				if tc.weightGrads {
					copies *= 2
				}
				if want.held-got.held < copies*9/10 {
					t.Errorf("held after the forward pass: %d bytes fused, %d not; want at least %d fewer",
						got.held, want.held, copies*9/10)
				}
			}
		})
	}
}

// TestNodeNormSumErrors: wrong counts and shapes are errors naming the call.
func TestNodeNormSumErrors(t *testing.T) {
	s := NewScope()
	defer s.Close()
	x := s.Randn([]int64{2, 6, 3, 3}, CPU, false)
	rm, rv := s.Zeros([]int64{2, 1, 3}, CPU), s.Ones([]int64{2, 1, 3}, CPU)
	coefs := s.Ones([]int64{2, 1}, CPU)
	for _, tc := range []struct {
		name    string
		call    func(c *Scope)
		wantAll []string
	}{
		{"flags", func(c *Scope) {
			c.NodeNormSum([]*Tensor{x}, rm, rv, nil, 0.1, 1e-5, nil, coefs, []bool{true, true}, 0, nil, 2)
		}, []string{"node_norm_sum", "1 members", "2 drop flags"}},
		{"coefficients", func(c *Scope) {
			c.NodeNormSum([]*Tensor{x}, rm, rv, nil, 0.1, 1e-5, nil, s.Ones([]int64{3, 1}, CPU), []bool{true}, 0, nil, 2)
		}, []string{"node_norm_sum", "coefficients of shape [3, 1]", "[2, 1]"}},
		{"channels", func(c *Scope) {
			c.NodeNormSum([]*Tensor{s.Randn([]int64{2, 5, 3, 3}, CPU, false)}, rm, rv, nil, 0.1, 1e-5, nil, coefs,
				[]bool{true}, 0, nil, 2)
		}, []string{"node_norm_sum", "[2, 5, 3, 3]"}},
		{"float64", func(c *Scope) {
			c.NodeNormSum([]*Tensor{s.To(x, Float64, CPU)}, rm, rv, nil, 0.1, 1e-5, nil, coefs, []bool{true}, 0, nil, 2)
		}, []string{"node_norm_sum", "float32"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := s.Child()
			defer c.Close()
			tc.call(c)
			wantErrContains(t, c.Err(), tc.wantAll...)
		})
	}
}

// TestNodeNormSumLowPrecision: with bfloat16 or float16 members the fused call reads and
// writes that type (the node and the members' gradients are of it) and computes in
// float32: it equals the float32 call on the same values to the type's rounding, with
// statistics and weight gradients in float32; 40 members take the CUDA kernels' float32
// accumulator.
func TestNodeNormSumLowPrecision(t *testing.T) { nodeNormSumLowPrecision(t, CPU) }

// TestCUDANodeNormSumLowPrecision is TestNodeNormSumLowPrecision with the CUDA kernels.
func TestCUDANodeNormSumLowPrecision(t *testing.T) { nodeNormSumLowPrecision(t, nodeNormSumCUDA(t)) }

func nodeNormSumLowPrecision(t *testing.T, dev Device) {
	for _, dt := range []DType{BFloat16, Float16} {
		for _, members := range []int64{3, 40} {
			t.Run(fmt.Sprintf("%v %d members", dt, members), func(t *testing.T) {
				nodeNormSumLow(t, dev, dt, members)
			})
		}
	}
}

func nodeNormSumLow(t *testing.T, dev Device, dt DType, members int64) {
	s := NewScope()
	defer s.Close()
	ManualSeed(23)
	const N, T, C, H = 3, 2, 3, 5
	var low, full []*Tensor
	for i := int64(0); i < members; i++ {
		x := s.To(s.AddScalar(s.Randn([]int64{N, T * C, H, H}, dev, false), float64(i%3)), dt, dev)
		low = append(low, s.Detach(x))
		full = append(full, s.Detach(s.To(x, Float32, dev)))
	}
	coefs := s.Rand([]int64{T, members}, dev)
	if err := coefs.SetRequiresGrad(true); err != nil {
		t.Fatal(err)
	}
	for _, x := range append(append([]*Tensor{}, low...), full...) {
		if err := x.SetRequiresGrad(true); err != nil {
			t.Fatal(err)
		}
	}
	// The node's gradient, exact in the low type, so that both calls get the same one.
	r := s.To(s.To(s.Randn([]int64{N, T * C, H, H}, dev, false), dt, dev), Float32, dev)
	drop := make([]bool, members)
	run := func(xs []*Tensor) (node, mean, grad0, gradLast, gradCoefs []float32) {
		t.Helper()
		rm, rv := s.Zeros([]int64{T, members, C}, dev), s.Ones([]int64{T, members, C}, dev)
		cs := s.Child()
		defer cs.Close()
		y := cs.NodeNormSum(xs, rm, rv, nil, 0.1, 1e-5, nil, coefs, drop, 0, nil, T)
		if err := cs.Err(); err != nil {
			t.Fatal(err)
		}
		if info, err := y.Info(); err != nil || info.DType != xs[0].dtype(t) {
			t.Fatalf("node of type %v (%v), members %v", info.DType, err, xs[0].dtype(t))
		}
		node = values(t, y)
		if err := cs.Sum(cs.Mul(cs.To(y, Float32, dev), r)).Backward(); err != nil {
			t.Fatal(err)
		}
		grad0, gradLast = values(t, cs.Grad(xs[0])), values(t, cs.Grad(xs[members-1]))
		gradCoefs = values(t, cs.Grad(coefs))
		if err := ZeroGrad(append([]*Tensor{coefs}, xs...), true); err != nil {
			t.Fatal(err)
		}
		return node, values(t, rm), grad0, gradLast, gradCoefs
	}
	n1, m1, a1, b1, c1 := run(low)
	n2, m2, a2, b2, c2 := run(full)
	tol := 1e-2 // bfloat16's 8-bit significand; float16 has 11
	near(t, "node", n1, n2, tol)
	near(t, "running mean", m1, m2, 1e-6)
	near(t, "gradient of member 0", a1, a2, tol)
	near(t, "gradient of the last member", b1, b2, tol)
	near(t, "weights' gradient", c1, c2, tol)
}

func (t *Tensor) dtype(tb testing.TB) DType {
	tb.Helper()
	info, err := t.Info()
	if err != nil {
		tb.Fatal(err)
	}
	return info.DType
}

// emulated turns EmulateKernels on for the rest of t (and back at its end) and checks then
// that kernels were launched: the CPU tests of the fused calls, run through the CUDA
// kernels' code on the host.
func emulated(t *testing.T) Device {
	t.Helper()
	was := EmulateKernels(true)
	before := EmulatedLaunches()
	t.Cleanup(func() {
		EmulateKernels(was)
		if EmulatedLaunches() == before && !t.Skipped() {
			t.Error("no emulated kernel ran")
		}
	})
	return CPU
}

// TestEmulatedNodeNormSum is TestNodeNormSum with the shim's CUDA kernels emulated on the host.
func TestEmulatedNodeNormSum(t *testing.T) { nodeNormSum(t, emulated(t)) }

// TestEmulatedNodeNormSumLowPrecision is TestNodeNormSumLowPrecision with the shim's CUDA kernels emulated on the host.
func TestEmulatedNodeNormSumLowPrecision(t *testing.T) { nodeNormSumLowPrecision(t, emulated(t)) }
