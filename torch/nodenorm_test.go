package torch

import (
	"math"
	"os"
	"testing"

	"github.com/metanas-go/metanas/internal/testutil"
)

// nodeNormCase is the data of TestNodeBatchNorm: m op outputs [N, T*C, H, W] and running
// statistics blocks [T, members, C], as host values.
type nodeNormCase struct {
	outs       [][]float32
	mean, vars []float32
	r          []float32 // [N, T, m, C, H, W] weights of the loss sum(r * normalised)
}

const nnT, nnN, nnC, nnHW, nnMembers = 2, 3, 2, 4, 3

// nodeNormWant computes by hand what the node's batch norm gives for the outputs of members
// sel: the normalised values ([N, T, m, C, H*W]), the running statistics after a training
// pass, and the gradient of sum(r * normalised) with respect to each output.
func nodeNormWant(c nodeNormCase, sel []int, training bool) (y, mean, vars []float32, grads [][]float32) {
	const mom, eps = 0.1, 1e-5
	m := len(sel)
	y = make([]float32, nnN*nnT*m*nnC*nnHW)
	mean = append([]float32{}, c.mean...)
	vars = append([]float32{}, c.vars...)
	grads = make([][]float32, m)
	cnt := float64(nnN * nnHW)
	for i, mem := range sel {
		grads[i] = make([]float32, nnN*nnT*nnC*nnHW)
		for tk := 0; tk < nnT; tk++ {
			for ch := 0; ch < nnC; ch++ {
				at := func(n, p int) int { return ((n*nnT+tk)*nnC+ch)*nnHW + p } // in an output
				yat := func(n, p int) int { return (((n*nnT+tk)*m+i)*nnC+ch)*nnHW + p }
				st := (tk*nnMembers+mem)*nnC + ch
				var mu, v float64
				if training {
					for n := 0; n < nnN; n++ {
						for p := 0; p < nnHW; p++ {
							mu += float64(c.outs[i][at(n, p)])
						}
					}
					mu /= cnt
					for n := 0; n < nnN; n++ {
						for p := 0; p < nnHW; p++ {
							d := float64(c.outs[i][at(n, p)]) - mu
							v += d * d
						}
					}
					v /= cnt
					mean[st] = float32((1-mom)*float64(c.mean[st]) + mom*mu)
					vars[st] = float32((1-mom)*float64(c.vars[st]) + mom*v*cnt/(cnt-1))
				} else {
					mu, v = float64(c.mean[st]), float64(c.vars[st])
				}
				inv := 1 / math.Sqrt(v+eps)
				// d/dx of sum(r * (x - mu) * inv): in training mu and inv depend on x.
				var sr, srx float64
				for n := 0; n < nnN; n++ {
					for p := 0; p < nnHW; p++ {
						xh := (float64(c.outs[i][at(n, p)]) - mu) * inv
						y[yat(n, p)] = float32(xh)
						sr += float64(c.r[yat(n, p)])
						srx += float64(c.r[yat(n, p)]) * xh
					}
				}
				for n := 0; n < nnN; n++ {
					for p := 0; p < nnHW; p++ {
						g := float64(c.r[yat(n, p)])
						if training {
							xh := (float64(c.outs[i][at(n, p)]) - mu) * inv
							g = g - sr/cnt - xh*srx/cnt
						}
						grads[i][at(n, p)] = float32(g * inv)
					}
				}
			}
		}
	}
	return y, mean, vars, grads
}

// TestNodeBatchNorm checks NodeBatchNorm against hand-computed batch norms of each (task,
// op, channel): the normalised values, the running statistics (only the selected members'
// move) and the outputs' gradients, in training and evaluation, for every member in order
// and for a subset.
func TestNodeBatchNorm(t *testing.T) {
	ManualSeed(5)
	cases := []struct {
		name     string
		sel      []int
		training bool
	}{
		{"all members, training", []int{0, 1, 2}, true},
		{"members 0 and 2, training", []int{0, 2}, true},
		{"member 1, evaluation", []int{1}, false},
		{"all members, evaluation", []int{0, 1, 2}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := NewScope()
			defer s.Close()
			m := len(tc.sel)
			var c nodeNormCase
			var outs []*Tensor
			for i := 0; i < m; i++ {
				// Outputs with their own offsets and scales per op, so a mix-up shows.
				o := s.AddScalar(s.MulScalar(s.Randn([]int64{nnN, nnT * nnC, 2, 2}, CPU, false), float64(i+1)), float64(3*i))
				o = s.Detach(o)
				if err := o.SetRequiresGrad(true); err != nil {
					t.Fatal(err)
				}
				outs = append(outs, o)
				c.outs = append(c.outs, values(t, o))
			}
			rm := s.Detach(s.Randn([]int64{nnT, nnMembers, nnC}, CPU, false))
			rv := s.Detach(s.AddScalar(s.Rand([]int64{nnT, nnMembers, nnC}, CPU), 0.5))
			c.mean, c.vars = values(t, rm), values(t, rv)
			rT := s.Randn([]int64{nnN, nnT, int64(m), nnC, 2, 2}, CPU, false)
			c.r = values(t, rT)
			var sel []int64
			if m != nnMembers {
				for _, k := range tc.sel {
					sel = append(sel, int64(k))
				}
			}
			y := s.NodeBatchNorm(outs, rm, rv, sel, nnT, tc.training, 0.1, 1e-5)
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
			if sh := y.MustShape(); len(sh) != 6 || sh[0] != nnN || sh[1] != nnT || sh[2] != int64(m) || sh[3] != nnC {
				t.Fatalf("shape %v, want [%d %d %d %d 2 2]", sh, nnN, nnT, m, nnC)
			}
			if err := s.Sum(s.Mul(y, rT)).Backward(); err != nil {
				t.Fatal(err)
			}
			wy, wm, wv, wg := nodeNormWant(c, tc.sel, tc.training)
			near(t, "normalised", values(t, y), wy, 1e-4)
			near(t, "running mean", values(t, rm), wm, 1e-4)
			near(t, "running var", values(t, rv), wv, 1e-4)
			for i, o := range outs {
				near(t, "gradient of output "+string(rune('0'+i)), values(t, s.Grad(o)), wg[i], 1e-4)
			}
		})
	}
}

// TestNodeBatchNormErrors: blocks of the wrong shape, members that do not rise, and more
// outputs than members are errors that name the op.
func TestNodeBatchNormErrors(t *testing.T) {
	s := NewScope()
	defer s.Close()
	x := s.Zeros([]int64{2, 4, 2, 2}, CPU) // 2 tasks of 2 channels
	rm := s.Zeros([]int64{2, 2, 2}, CPU)
	rv := s.Ones([]int64{2, 2, 2}, CPU)
	cases := []struct {
		name   string
		call   func(s *Scope)
		substr string
	}{
		{"block of 3 channels", func(s *Scope) {
			s.NodeBatchNorm([]*Tensor{x}, s.Zeros([]int64{2, 2, 3}, CPU), s.Ones([]int64{2, 2, 3}, CPU), []int64{0}, 2, true, 0.1, 1e-5)
		}, "is neither [N, 2*3, ...] nor [N, 2, 3, ...]"},
		{"members not rising", func(s *Scope) { s.NodeBatchNorm([]*Tensor{x, x}, rm, rv, []int64{1, 1}, 2, true, 0.1, 1e-5) }, "must rise"},
		{"member out of range", func(s *Scope) { s.NodeBatchNorm([]*Tensor{x}, rm, rv, []int64{2}, 2, true, 0.1, 1e-5) }, "must rise"},
		{"outputs not the members", func(s *Scope) { s.NodeBatchNorm([]*Tensor{x}, rm, rv, nil, 2, true, 0.1, 1e-5) }, "1 op outputs for 2 members"},
		{"channels not of the tasks", func(s *Scope) {
			s.NodeBatchNorm([]*Tensor{x}, s.Zeros([]int64{3, 2, 2}, CPU), s.Ones([]int64{3, 2, 2}, CPU), []int64{0}, 3, true, 0.1, 1e-5)
		}, "is neither [N, 3*2, ...] nor [N, 3, 2, ...]"},
		{"blocks not of the tasks", func(s *Scope) { s.NodeBatchNorm([]*Tensor{x}, rm, rv, []int64{0}, 3, true, 0.1, 1e-5) }, "not contiguous blocks [3, members, C]"},
		{"selection of the wrong length", func(s *Scope) { s.NodeBatchNorm([]*Tensor{x}, rm, rv, []int64{0, 1}, 2, true, 0.1, 1e-5) }, "1 outputs, 2 members selected"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bad := NewScope()
			defer bad.Close()
			tc.call(bad)
			wantErrContains(t, bad.Err(), "node_batch_norm")
			wantErrContains(t, bad.Err(), tc.substr)
		})
	}
}

// TestMixedTasksStacked: the node sum of stacked outputs plus separate ones equals
// MixedTasks over the same outputs one by one, with pair weights, a pruning threshold and
// drop-path masks from generators of one seed, and so do the gradients of the outputs and
// op weights. The stacked sum's backward pass spreads no gradient over zeros (its factor's
// two parts come from one split, not two slices).
func TestMixedTasksStacked(t *testing.T) {
	s := NewScope()
	defer s.Close()
	const T, N, C, nIn, K = 2, 4, 3, 2, 3
	ManualSeed(11)
	wops := s.Detach(s.Rand([]int64{T * nIn, K}, CPU))
	wpair := s.FromFloat32([]float32{0.7, 0.3}, []int64{T, 1}, CPU)
	inc := []float32{1, 1}
	stacked := s.Detach(s.Randn([]int64{N, T, 3, C, 2, 2}, CPU, false))
	rest := []*Tensor{s.Detach(s.Randn([]int64{N, T * C, 2, 2}, CPU, false)), s.Detach(s.Randn([]int64{N, T * C, 2, 2}, CPU, false))}
	for _, x := range append([]*Tensor{stacked, wops}, rest...) {
		if err := x.SetRequiresGrad(true); err != nil {
			t.Fatal(err)
		}
	}
	idx := []int64{0, 2, 4, 1, 5} // three stacked columns, then two outputs
	drop := []bool{true, true, true, false, true}
	r := s.Randn([]int64{N, T * C, 2, 2}, CPU, false)
	var slices int64 = -1
	run := func(f func(g *Generator) *Tensor) (node []float32, grads [][]float32) {
		g, err := NewGenerator(21, CPU)
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		y := f(g)
		prof := profiledBackward(t, s.Sum(s.Mul(y, r)))
		if slices < 0 {
			slices = CallsOf(prof, "aten::slice_backward")
		}
		node = values(t, y)
		all := append([]*Tensor{stacked, wops}, rest...)
		for _, x := range all {
			grads = append(grads, values(t, s.Grad(x)))
		}
		if err := ZeroGrad(all, true); err != nil {
			t.Fatal(err)
		}
		return node, grads
	}
	gotNode, gotGrads := run(func(g *Generator) *Tensor {
		return s.MixedTasksStacked(stacked, rest, wpair, wops, inc, nIn, idx, drop, 0.3, g, 0.2, T)
	})
	wantNode, wantGrads := run(func(g *Generator) *Tensor {
		var outs []*Tensor
		for i := int64(0); i < 3; i++ {
			outs = append(outs, s.Reshape(s.Narrow(stacked, 2, i, 1), N, T*C, 2, 2))
		}
		return s.MixedTasks(append(outs, rest...), wpair, wops, inc, nIn, idx, drop, 0.3, g, 0.2, T)
	})
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	same := func(what string, got, want []float32) {
		t.Helper()
		zeros := 0
		for i := range want {
			if math.Abs(float64(got[i]-want[i])) > 1e-5*(1+math.Abs(float64(want[i]))) {
				t.Fatalf("%s[%d] = %g, want %g", what, i, got[i], want[i])
			}
			if want[i] == 0 {
				zeros++
			}
		}
		if zeros == len(want) {
			t.Fatalf("%s: all zero", what)
		}
	}
	if slices != 0 {
		t.Errorf("the stacked sum's backward pass ran %d slice backwards, want 0", slices)
	}
	same("node", gotNode, wantNode)
	for i := range wantGrads {
		same("gradient "+string(rune('0'+i)), gotGrads[i], wantGrads[i])
	}
}

// TestNodeBatchNormProductGradients: a 1x1 product's output (under METANAS_POINTWISE=matmul
// a view of the product's own [N, tasks, C, H*W] result) gets its gradient from the node
// batch norm's stacked gradient without a copy (the stack's slice reaches the product as a
// view), and the same gradients as when that output is an ordinary tensor (multiplied by
// one), which the copy serves. Runs in a child process with the setting.
func TestNodeBatchNormProductGradients(t *testing.T) {
	if os.Getenv("METANAS_POINTWISE") != "matmul" {
		testutil.RerunWith(t, []string{"METANAS_POINTWISE=matmul"}, "^TestNodeBatchNormProductGradients$", "TestNodeBatchNormProductGradients")
		return
	}
	ProfileOps()
	var grads [2][][]float32
	var copies [2]int64
	for k, plain := range []bool{false, true} {
		s := NewScope()
		ManualSeed(9)
		x := s.Randn([]int64{nnN, nnT * nnC, 2, 2}, CPU, true)
		w := s.Randn([]int64{nnT * nnC, nnC, 1, 1}, CPU, true)
		y := s.Conv2d(x, w, nil, Conv{Groups: nnT})
		if plain {
			y = s.MulScalar(y, 1)
		}
		other := s.Relu(x)
		rm := s.Zeros([]int64{nnT, 2, nnC}, CPU)
		rv := s.Ones([]int64{nnT, 2, nnC}, CPU)
		st := s.NodeBatchNorm([]*Tensor{y, other}, rm, rv, nil, nnT, true, 0.1, 1e-5)
		r := s.Randn(st.MustShape(), CPU, false)
		loss := s.Sum(s.Mul(st, r))
		prof := profiledBackward(t, loss)
		copies[k] = CallsOf(prof, "aten::clone")
		grads[k] = [][]float32{values(t, s.Grad(x)), values(t, s.Grad(w))}
		s.Close()
	}
	for i, name := range []string{"input", "weight"} {
		near(t, name+" gradient through the product's view (want: through a plain tensor)", grads[0][i], grads[1][i], 1e-5)
	}
	t.Logf("copies in the backward pass: %d through the product's view, %d through a plain tensor", copies[0], copies[1])
	if copies[0] >= copies[1] {
		t.Errorf("backward copies: %d through the product's view, not fewer than %d through a plain tensor", copies[0], copies[1])
	}
}
