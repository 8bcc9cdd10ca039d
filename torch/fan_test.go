package torch

import (
	"fmt"
	"testing"
)

// TestRepeatStatesFan: RepeatStatesFan's readers see RepeatStates' values (of the inputs'
// ReLUs where relu), and the inputs' gradients equal those through RepeatStates (and Relu)
// read by the same readers (autograd adding the readers' gradients), with a reader whose
// gradient is strided, a reader that does not reach the loss, one tensor not repeated, and
// bfloat16 and float16; the backward pass sums in the fan's one node, with no addition
// and no ReLU of its own.
func TestRepeatStatesFan(t *testing.T) { repeatStatesFan(t, CPU) }

// TestCUDARepeatStatesFan is TestRepeatStatesFan with the shim's CUDA kernel.
func TestCUDARepeatStatesFan(t *testing.T) { repeatStatesFan(t, nodeNormSumCUDA(t)) }

// TestEmulatedRepeatStatesFan is TestRepeatStatesFan with the shim's CUDA kernels emulated on the host.
func TestEmulatedRepeatStatesFan(t *testing.T) { repeatStatesFan(t, emulated(t)) }

func repeatStatesFan(t *testing.T, dev Device) {
	for _, tc := range []struct {
		n, r, readers int
		unused        int // a reader whose output the loss does not read (-1: none)
		relu          bool
		dt            DType
		tol           float64
	}{
		{n: 2, r: 3, readers: 3, unused: -1, relu: true, dt: Float32, tol: 1e-6},
		{n: 1, r: 1, readers: 3, unused: 1, relu: true, dt: Float32, tol: 1e-6},
		{n: 2, r: 2, readers: 2, unused: -1, relu: true, dt: BFloat16, tol: 2e-2},
		{n: 2, r: 3, readers: 3, unused: -1, dt: Float32, tol: 1e-6},
		{n: 2, r: 3, readers: 4, unused: 2, dt: Float32, tol: 1e-6},
		{n: 1, r: 1, readers: 5, unused: -1, dt: Float32, tol: 1e-6},
		{n: 1, r: 2, readers: 1, unused: -1, dt: Float32, tol: 1e-6},
		{n: 2, r: 2, readers: 3, unused: -1, dt: BFloat16, tol: 2e-2},
		{n: 2, r: 2, readers: 3, unused: -1, dt: Float16, tol: 2e-3},
	} {
		t.Run(fmt.Sprintf("%d states r %d %d readers relu %v %v", tc.n, tc.r, tc.readers, tc.relu, tc.dt), func(t *testing.T) {
			var outs, grads [2][][]float32
			var adds, relus [2]int64
			var fans int64
			for k, fan := range []bool{false, true} {
				s := NewScope()
				ManualSeed(31)
				const N, C, H = 3, 4, 5
				var xs []*Tensor
				for i := 0; i < tc.n; i++ {
					x := s.Detach(s.To(s.Randn([]int64{N, C, H, H}, dev, false), tc.dt, dev))
					if err := x.SetRequiresGrad(true); err != nil {
						t.Fatal(err)
					}
					xs = append(xs, x)
				}
				var ys []*Tensor
				if fan {
					ys = s.RepeatStatesFan(xs, int64(tc.r), int64(tc.readers), tc.relu)
				} else {
					in := xs
					if tc.relu {
						in = nil
						for _, x := range xs {
							in = append(in, s.Relu(x))
						}
					}
					y := s.RepeatStates(in, int64(tc.r))
					for j := 0; j < tc.readers; j++ {
						ys = append(ys, y)
					}
				}
				if len(ys) != tc.readers {
					t.Fatalf("%d tensors for %d readers", len(ys), tc.readers)
				}
				// Reader j weighs its tensor by w_j; reader 1 reads it permuted, so that its
				// gradient reaches the fan strided.
				var loss *Tensor
				for j, y := range ys {
					outs[k] = append(outs[k], values(t, s.To(s.Contiguous(y), Float32, CPU)))
					if j == tc.unused {
						continue
					}
					in := y
					if j == 1 {
						in = s.Permute(y, 0, 2, 3, 1)
					}
					w := s.To(s.Randn(in.MustShape(), dev, false), tc.dt, dev)
					term := s.Sum(s.To(s.Mul(in, w), Float32, dev))
					if loss == nil {
						loss = term
					} else {
						loss = s.Add(loss, term)
					}
				}
				prof := profiledBackward(t, loss)
				adds[k] = CallsOf(prof, "aten::add") + CallsOf(prof, "aten::add_")
				relus[k] = CallsOf(prof, "aten::threshold_backward")
				if fan {
					fans = CallsOf(prof, "torch::autograd::CppNode<(anonymous namespace)::RepeatFan>")
				}
				for _, x := range xs {
					grads[k] = append(grads[k], values(t, s.To(s.Grad(x), Float32, CPU)))
				}
				if err := s.Err(); err != nil {
					t.Fatal(err)
				}
				s.Close()
			}
			for j := range outs[0] {
				near(t, fmt.Sprintf("reader %d's values", j), outs[1][j], outs[0][j], 0)
			}
			for i := range grads[0] {
				near(t, fmt.Sprintf("gradient of tensor %d", i), grads[1][i], grads[0][i], tc.tol)
			}
			used := tc.readers
			if tc.unused >= 0 {
				used--
			}
			if adds[1] != 0 || adds[0] < int64(used-1) {
				t.Errorf("gradient additions: %d through the fan (want 0), %d through RepeatStates (want >= %d)",
					adds[1], adds[0], used-1)
			}
			if fans != 1 {
				t.Errorf("the fan's backward node ran %d times, want 1", fans)
			}
			if tc.relu && (relus[1] != 0 || relus[0] != int64(tc.n)) {
				t.Errorf("ReLU backward passes: %d through the fan (want 0), %d through Relu (want %d)", relus[1], relus[0], tc.n)
			}
		})
	}
}

// TestRepeatStatesFanShares: without repetition the readers' tensors are the input's
// memory (no copy is made), and RepeatStatesFan names its bad arguments.
func TestRepeatStatesFanShares(t *testing.T) {
	s := NewScope()
	defer s.Close()
	x := s.Zeros([]int64{2, 3, 2}, CPU)
	ys := s.RepeatStatesFan([]*Tensor{x}, 1, 2, false)
	if err := x.Fill_(5); err != nil {
		t.Fatal(err)
	}
	for j, y := range ys {
		if v := values(t, y); v[0] != 5 || v[len(v)-1] != 5 {
			t.Errorf("reader %d's tensor does not share the input's memory: %v", j, v)
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		xs      []*Tensor
		readers int64
	}{
		{"no readers", []*Tensor{x}, 0},
		{"no tensors", nil, 2},
		{"shapes differ", []*Tensor{x, s.Zeros([]int64{2, 4, 2}, CPU)}, 2},
	} {
		c := s.Child()
		c.RepeatStatesFan(tc.xs, 2, tc.readers, false)
		if c.Err() == nil {
			t.Errorf("%s: no error", tc.name)
		}
		c.Close()
	}
}

// TestSplitPiecesGradBuffer: fused node sums of a group's task pieces (SplitChannels with
// tasks) write the pieces' gradients into the split's buffer, so the group's gradient
// takes no concatenation, and it equals that through narrowed views of the group; with a
// piece no node reads (its gradient zero) and with a piece that has a second reader (the
// split then concatenates, as autograd's would).
func TestSplitPiecesGradBuffer(t *testing.T) { splitPiecesGradBuffer(t, CPU) }

// TestCUDASplitPiecesGradBuffer is TestSplitPiecesGradBuffer with the shim's CUDA kernels.
func TestCUDASplitPiecesGradBuffer(t *testing.T) { splitPiecesGradBuffer(t, nodeNormSumCUDA(t)) }

// TestEmulatedSplitPiecesGradBuffer is TestSplitPiecesGradBuffer with the shim's CUDA kernels emulated on the host.
func TestEmulatedSplitPiecesGradBuffer(t *testing.T) { splitPiecesGradBuffer(t, emulated(t)) }

func splitPiecesGradBuffer(t *testing.T, dev Device) {
	const N, T, C, H, P = 3, 2, 3, 4, 3
	for _, tc := range []struct {
		name   string
		nodes  [][]int // the pieces each node sums
		extra  bool    // piece 0 also read by the loss directly
		concat int64   // concatenations in the split pieces' backward pass
	}{
		{name: "every piece", nodes: [][]int{{0, 2}, {1}}, concat: 0},
		{name: "piece 1 unread", nodes: [][]int{{2}, {0}}, concat: 0},
		{name: "a second reader", nodes: [][]int{{0, 1}, {2}}, extra: true, concat: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var grads [2][]float32
			var cats [2]int64
			for k, split := range []bool{false, true} {
				s := NewScope()
				ManualSeed(41)
				y := s.Detach(s.Randn([]int64{N, P * T * C, H, H}, dev, false))
				if err := y.SetRequiresGrad(true); err != nil {
					t.Fatal(err)
				}
				var pieces []*Tensor
				if split {
					pieces = s.SplitChannels(y, P, T)
				} else {
					for p := int64(0); p < P; p++ {
						pieces = append(pieces, s.View(s.Narrow(y, 1, p*T*C, T*C), N, T, C, H, H))
					}
				}
				var loss *Tensor
				for i, members := range tc.nodes {
					var xs []*Tensor
					for _, p := range members {
						xs = append(xs, pieces[p])
					}
					m := int64(len(xs))
					rm, rv := s.Zeros([]int64{T, m, C}, dev), s.Ones([]int64{T, m, C}, dev)
					coefs := s.AddScalar(s.Rand([]int64{T, m}, dev), 0.5)
					node := s.NodeNormSum(xs, rm, rv, nil, 0.1, 1e-5, nil, coefs, make([]bool, m), 0, nil, T)
					term := s.Sum(s.Mul(node, s.AddScalar(s.Randn(node.MustShape(), dev, false), float64(i))))
					if loss == nil {
						loss = term
					} else {
						loss = s.Add(loss, term)
					}
				}
				if tc.extra {
					loss = s.Add(loss, s.Sum(s.Mul(pieces[0], s.Randn(pieces[0].MustShape(), dev, false))))
				}
				prof := profiledBackward(t, loss)
				cats[k] = CallsOf(prof, "aten::cat")
				grads[k] = values(t, s.To(s.Grad(y), Float32, CPU))
				if err := s.Err(); err != nil {
					t.Fatal(err)
				}
				s.Close()
			}
			near(t, "the group's gradient", grads[1], grads[0], 1e-5)
			if cats[1] != tc.concat {
				t.Errorf("%d concatenations in the backward pass of the split pieces, want %d", cats[1], tc.concat)
			}
		})
	}
}
