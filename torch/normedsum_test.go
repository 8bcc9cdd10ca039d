package torch

import (
	"fmt"
	"testing"
)

// TestNormedSum: a node sum over a batch norm's members computed from their statistics
// (NodeBatchNormStats, then MixedTasksCoefs with them) equals the sum over the normalised
// members (NodeBatchNorm, MixedTasksCoefs): the node, the running statistics, and the
// gradients of the members, of an identity summed beside them and of the op weights, with
// drop-path masks from generators of one seed, for all members and for a selection. After
// the forward pass it holds less memory, about the normalised members' bytes (counted by
// the CPU tensor pool where it is on). Not training, it is NodeBatchNorm.
func TestNormedSum(t *testing.T) {
	const T, N, C, nIn, K = 2, 4, 3, 2, 3
	for _, tc := range []struct {
		name string
		sel  []int64
	}{{"all members", nil}, {"members 0 and 2", []int64{0, 2}}} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewScope()
			defer s.Close()
			ManualSeed(13)
			members := int64(3)
			m := members
			if tc.sel != nil {
				m = int64(len(tc.sel))
			}
			var outs []*Tensor
			for i := int64(0); i < m; i++ {
				o := s.AddScalar(s.MulScalar(s.Randn([]int64{N, T * C, 6, 6}, CPU, false), float64(i+1)), float64(2*i))
				outs = append(outs, s.Detach(o))
			}
			rest := s.Detach(s.Randn([]int64{N, T * C, 6, 6}, CPU, false))
			wops := s.Detach(s.Rand([]int64{T * nIn, K}, CPU))
			for _, x := range append([]*Tensor{rest, wops}, outs...) {
				if err := x.SetRequiresGrad(true); err != nil {
					t.Fatal(err)
				}
			}
			idx := append([]int64{0, 1, 4}[:m], 5)              // the members' columns, then the identity's
			drop := append([]bool{true, true, true}[:m], false) // the identity has no drop-path
			r := s.Randn([]int64{N, T * C, 6, 6}, CPU, false)
			run := func(withStats, training bool) nodeResult {
				t.Helper()
				nr := newNodeRun(t, s, CPU, T, members, C, 3)
				defer nr.close()
				cs, rm, rv, g, before := nr.cs, nr.rm, nr.rv, nr.g, nr.before
				var stacked, stats *Tensor
				if withStats {
					stacked, stats = cs.NodeBatchNormStats(outs, rm, rv, tc.sel, T, training, 0.1, 1e-5)
					if training != (stats != nil) {
						t.Fatalf("training %v: statistics %v", training, stats != nil)
					}
				} else {
					stacked = cs.NodeBatchNorm(outs, rm, rv, tc.sel, T, training, 0.1, 1e-5)
				}
				coefs := cs.NodeCoefs(nil, wops, nil, nIn, idx, 0.1, T)
				node := cs.MixedTasksCoefs(stacked, stats, []*Tensor{rest}, coefs, drop, 0.3, g, T)
				stacked.Free()
				return collectNode(t, cs, node, rm, rv, r, append([]*Tensor{rest, wops}, outs...), before)
			}
			for _, training := range []bool{true, false} {
				want, got := run(false, training), run(true, training)
				compareNodes(t, got, want, 1e-4)
				if !training || !CPUPool().Enabled {
					continue
				}
				normed := int64(N * T * C * 36 * 4 * m)
				if want.held-got.held < normed*9/10 {
					t.Errorf("held after the forward pass: %d bytes with the statistics, %d without; want at least %d fewer",
						got.held, want.held, normed*9/10)
				}
			}
		})
	}
}

// nodeResult is what the node sum tests compare: the node, the running statistics, the
// gradients of the leaves, and the CPU pool's bytes held after the forward pass.
type nodeResult struct {
	node, mean, vars []float32
	grads            [][]float32
	held             int64
}

// collectNode reads node and the running statistics rm and rv, runs the backward pass of
// sum(node * r), reads the gradients of leaves and zeroes them; before is the CPU pool's
// bytes in use before the forward pass.
func collectNode(t *testing.T, cs *Scope, node, rm, rv, r *Tensor, leaves []*Tensor, before int64) nodeResult {
	t.Helper()
	if err := cs.Err(); err != nil {
		t.Fatal(err)
	}
	res := nodeResult{held: CPUPool().InUseBytes - before, node: values(t, node), mean: values(t, rm), vars: values(t, rv)}
	if err := cs.Sum(cs.Mul(node, r)).Backward(); err != nil {
		t.Fatal(err)
	}
	for _, x := range leaves {
		res.grads = append(res.grads, values(t, cs.Grad(x)))
	}
	if err := ZeroGrad(leaves, true); err != nil {
		t.Fatal(err)
	}
	return res
}

// compareNodes fails the test where got's node, running statistics or gradients (to
// gradTol) are not want's.
func compareNodes(t *testing.T, got, want nodeResult, gradTol float64) {
	t.Helper()
	near(t, "node", got.node, want.node, 1e-4)
	near(t, "running mean", got.mean, want.mean, 1e-5)
	near(t, "running var", got.vars, want.vars, 1e-5)
	for i := range want.grads {
		near(t, fmt.Sprintf("gradient %d", i), got.grads[i], want.grads[i], gradTol)
	}
}

// nodeRun is one run of a node sum test: fresh running statistics rm and rv [T, members,
// C], a drop-path generator of a fixed seed, a child scope, and the CPU pool's bytes in use
// before the forward pass.
type nodeRun struct {
	cs     *Scope
	rm, rv *Tensor
	g      *Generator
	before int64
}

func newNodeRun(t *testing.T, s *Scope, dev Device, T, members, C int64, seed uint64) nodeRun {
	t.Helper()
	g, err := NewGenerator(seed, dev)
	if err != nil {
		t.Fatal(err)
	}
	return nodeRun{rm: s.Zeros([]int64{T, members, C}, dev), rv: s.Ones([]int64{T, members, C}, dev), g: g,
		cs: s.Child(), before: CPUPool().InUseBytes}
}

// close frees the run's scope and generator.
func (nr nodeRun) close() {
	nr.cs.Close()
	nr.g.Close()
}
