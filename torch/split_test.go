package torch

import (
	"os"
	"slices"
	"testing"
)

// TestRepeatStatesSplitChannels: RepeatStates copies each tensor's channels r times,
// tensor-major then copy-major; SplitChannels gives equal views along the channels;
// gradients through both are the hand-computed sums, the split's parts coming back through
// one concatenation.
func TestRepeatStatesSplitChannels(t *testing.T) {
	s := NewScope()
	defer s.Close()
	a := s.Detach(s.Reshape(s.To(s.Arange(12, CPU), Float32, CPU), 2, 3, 2)) // a[n, c, l] = 6n + 2c + l
	b := s.Detach(s.AddScalar(a, 100))
	for _, x := range []*Tensor{a, b} {
		if err := x.SetRequiresGrad(true); err != nil {
			t.Fatal(err)
		}
	}
	y := s.RepeatStates([]*Tensor{a, b}, 2)
	if sh := y.MustShape(); len(sh) != 3 || sh[0] != 2 || sh[1] != 12 || sh[2] != 2 {
		t.Fatalf("repeated shape %v, want [2 12 2]", sh)
	}
	var want []float32
	for n := 0; n < 2; n++ {
		for ch := 0; ch < 12; ch++ { // tensor ch/6, copy ch%6/3, channel ch%3
			for l := 0; l < 2; l++ {
				want = append(want, float32(100*(ch/6)+6*n+2*(ch%3)+l))
			}
		}
	}
	near(t, "repeated", values(t, s.Contiguous(y)), want, 0)
	one := s.RepeatStates([]*Tensor{a}, 2)
	near(t, "one repeated", values(t, s.Contiguous(one)), slices.Concat(want[:12], want[24:36]), 0)
	parts := s.SplitChannels(y, 6, 0)
	if len(parts) != 6 {
		t.Fatalf("%d parts, want 6", len(parts))
	}
	// loss = sum_p (p+1) * sum(part p): part p holds channels 2p and 2p+1 of y.
	var loss *Tensor
	for p, part := range parts {
		if sh := part.MustShape(); len(sh) != 3 || sh[1] != 2 {
			t.Fatalf("part %d shape %v, want [2 2 2]", p, sh)
		}
		near(t, "part", values(t, s.Contiguous(part)), slices.Concat(want[4*p:4*p+4], want[24+4*p:24+4*p+4]), 0)
		term := s.Sum(s.MulScalar(part, float64(p+1)))
		if loss == nil {
			loss = term
		} else {
			loss = s.Add(loss, term)
		}
	}
	ProfileOps()
	prof := profiledBackward(t, loss)
	// y's channel ch has gradient ch/2 + 1; channel c of a sums channels c and c+3, of b
	// channels 6+c and 9+c.
	ga, gb := []float32{3, 3, 4, 4, 5, 5}, []float32{9, 9, 10, 10, 11, 11}
	near(t, "a gradient", values(t, s.Grad(a)), slices.Concat(ga, ga), 0)
	near(t, "b gradient", values(t, s.Grad(b)), slices.Concat(gb, gb), 0)
	if n := CallsOf(prof, "aten::cat"); n != 1 {
		t.Errorf("the parts' gradients took %d concatenations, want 1", n)
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	s.SplitChannels(a, 2, 0) // 3 channels do not split in 2
	if s.Err() == nil {
		t.Error("splitting 3 channels in 2 parts did not fail")
	}
}

// TestAdjacentCat: Adjacent's copies keep values, shapes and requires-grad; AdjacentCat of
// them reads their storage (an in-place change of one shows in the concatenation), and of
// tensors out of storage order copies (Cat); both hand each input its slice of the gradient.
func TestAdjacentCat(t *testing.T) {
	s := NewScope()
	defer s.Close()
	a := s.Detach(s.Reshape(s.To(s.Arange(4, CPU), Float32, CPU), 2, 2)) // [[0 1] [2 3]]
	b := s.Detach(s.Reshape(s.To(s.Arange(2, CPU), Float32, CPU), 1, 2)) // [[0 1]]
	b = s.AddScalar(b, 10)                                               // [[10 11]]
	if err := a.SetRequiresGrad(true); err != nil {
		t.Fatal(err)
	}
	leaves := s.Adjacent([]*Tensor{a, b})
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	near(t, "first copy", values(t, leaves[0]), []float32{0, 1, 2, 3}, 0)
	near(t, "second copy", values(t, leaves[1]), []float32{10, 11}, 0)
	i0, err0 := leaves[0].Info()
	i1, err1 := leaves[1].Info()
	if err0 != nil || err1 != nil {
		t.Fatal(err0, err1)
	}
	if !i0.RequiresGrad || i1.RequiresGrad {
		t.Fatal("Adjacent changed which tensors require gradients")
	}
	if err := leaves[1].SetRequiresGrad(true); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		in     []*Tensor
		shared bool
	}{
		{"in storage order", leaves, true},
		{"out of order", []*Tensor{leaves[1], leaves[0]}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewScope()
			defer s.Close()
			cat := s.AdjacentCat(tc.in)
			if sh := cat.MustShape(); len(sh) != 2 || sh[0] != 3 || sh[1] != 2 {
				t.Fatalf("shape %v, want [3 2]", sh)
			}
			want := slices.Concat(values(t, tc.in[0]), values(t, tc.in[1]))
			near(t, "concatenation", values(t, cat), want, 0)
			r := s.Detach(s.To(s.Arange(6, CPU), Float32, CPU))
			if err := s.Sum(s.Mul(cat, s.Reshape(r, 3, 2))).Backward(); err != nil {
				t.Fatal(err)
			}
			n0 := tc.in[0].Numel()
			near(t, "first gradient", values(t, s.Grad(tc.in[0])), values(t, s.Narrow(r, 0, 0, n0)), 0)
			near(t, "second gradient", values(t, s.Grad(tc.in[1])), values(t, s.Narrow(r, 0, n0, 6-n0)), 0)
			if err := ZeroGrad(tc.in, true); err != nil {
				t.Fatal(err)
			}
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
			// An in-place change of an input shows in the concatenation only where it
			// shares the storage.
			if err := tc.in[0].Fill_(-1); err != nil {
				t.Fatal(err)
			}
			got := values(t, cat)[0]
			if shared := got == -1; shared != tc.shared {
				t.Errorf("the concatenation reads its inputs' storage: %v, want %v", shared, tc.shared)
			}
			if err := tc.in[0].Copy_(s.Narrow(s.Reshape(s.To(s.Arange(4, CPU), Float32, CPU), 2, 2), 0, 0, tc.in[0].MustShape()[0])); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestNodeBatchNormTaskParts: the node batch norm of a split output's parts as [N, tasks, C,
// H, W] (SplitChannels with tasks) equals that of the same parts as [N, tasks*C, H, W], in
// value and in the split tensor's gradient, and their gradients reach the split's
// concatenation without the copy each 4-d part needs (counted).
func TestNodeBatchNormTaskParts(t *testing.T) {
	const N, T, C, parts = 3, 2, 4, 2
	var outs, grads [2][]float32
	var copies [2]int64
	ProfileOps()
	for k, tasks := range []int64{0, T} {
		s := NewScope()
		ManualSeed(4)
		y := s.Randn([]int64{N, parts * T * C, 3, 3}, CPU, true)
		rm := s.Zeros([]int64{T, parts, C}, CPU)
		rv := s.Ones([]int64{T, parts, C}, CPU)
		st := s.NodeBatchNorm(s.SplitChannels(y, parts, tasks), rm, rv, nil, T, true, 0.1, 1e-5)
		if sh := st.MustShape(); len(sh) != 6 || sh[0] != N || sh[1] != T || sh[2] != parts || sh[3] != C {
			t.Fatalf("tasks %d: stacked shape %v, want [%d %d %d %d 3 3]", tasks, sh, N, T, parts, C)
		}
		r := s.Randn(st.MustShape(), CPU, false)
		loss := s.Sum(s.Mul(st, r))
		prof := profiledBackward(t, loss)
		copies[k] = CallsOf(prof, "aten::clone")
		outs[k], grads[k] = values(t, s.Contiguous(st)), values(t, s.Grad(y))
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	near(t, "normalised", outs[1], outs[0], 1e-6)
	near(t, "gradient", grads[1], grads[0], 1e-5)
	if copies[0] != parts || copies[1] != 0 {
		t.Errorf("gradient copies: %d with 4-d parts (want %d), %d with task parts (want 0)", copies[0], parts, copies[1])
	}
}

// TestMixedNodeStridedRows: the CPU's one-pass node sum takes op outputs whose samples are
// rows one stride apart (the parts of a split) as they are: the same sum and gradients as
// from contiguous copies, and its own backward pass runs for them (no stacked fallback).
func TestMixedNodeStridedRows(t *testing.T) {
	var outs, gy, gw [2][]float32
	var runs [2]int64
	ProfileOps()
	for k, copyParts := range []bool{false, true} {
		s := NewScope()
		ManualSeed(8)
		y := s.Randn([]int64{3, 8, 2, 2}, CPU, true)
		w := s.Randn([]int64{2, 1}, CPU, true)
		parts := s.SplitChannels(y, 2, 0)
		if copyParts {
			parts = []*Tensor{s.Contiguous(parts[0]), s.Contiguous(parts[1])}
		}
		out := s.MixedNode(parts, nil, w, nil, 2, []int64{0, 1}, []bool{false, false}, 0, nil)
		r := s.Randn(out.MustShape(), CPU, false)
		prof := profiledBackward(t, s.Sum(s.Mul(out, r)))
		runs[k] = CallsOf(prof, "torch::autograd::CppNode<mt::(anonymous namespace)::MixedSum>")
		outs[k], gy[k], gw[k] = values(t, out), values(t, s.Grad(y)), values(t, s.Grad(w))
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	near(t, "sum", outs[0], outs[1], 1e-6)
	near(t, "output gradient", gy[0], gy[1], 1e-6)
	near(t, "weight gradient", gw[0], gw[1], 1e-5)
	if os.Getenv("METANAS_FAST_CPU_OPS") != "0" && (runs[0] != 1 || runs[1] != 1) {
		t.Errorf("one-pass node sum backward ran %d times for strided parts, %d for copies; want 1 and 1", runs[0], runs[1])
	}
}

// profiledBackward runs loss's backward pass with the op profile on (ProfileOps) and
// returns that pass's operator counts.
func profiledBackward(t *testing.T, loss *Tensor) []OpStat {
	t.Helper()
	return profiled(t, loss.Backward)
}

// profiled runs f from a reset op profile (ProfileOps on) and returns the operators it ran.
func profiled(t *testing.T, f func() error) []OpStat {
	t.Helper()
	ProfileOps()
	if _, err := OpProfile(true); err != nil {
		t.Fatal(err)
	}
	if err := f(); err != nil {
		t.Fatal(err)
	}
	prof, err := OpProfile(true)
	if err != nil {
		t.Fatal(err)
	}
	return prof
}
