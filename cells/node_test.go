package cells

import (
	"testing"

	"github.com/metanas-go/metanas/cells/genotype"
	"github.com/metanas-go/metanas/torch"
)

// handCell computes a search cell's nodes from the individual op outputs with plain torch
// ops: edge_j = sum over kept ops k of w[j,k] * op_k(state_j); node = sum over kept pairs
// (a,b) of w_p * (edge_a + edge_b), or the sum of all edges without pairwise weights.
func handCell(c *Ctx, cell *SearchCell, s0, s1 *torch.Tensor, w *CellWeights, thr float32) (nodes []*torch.Tensor, keptOps, keptPairs, multiPairNodes int) {
	s := c.S
	states := []*torch.Tensor{cell.pre0.Forward(c, s0), cell.pre1.Forward(c, s1)}
	for i, row := range cell.nodes {
		K := len(row[0].ops)
		edges := make([]*torch.Tensor, len(row))
		for j, e := range row {
			for k, op := range e.ops {
				wk := w.HostOps[i][j*K+k]
				if wk <= thr {
					continue
				}
				keptOps++
				term := s.MulScalar(op.Forward(c, states[j]), float64(wk))
				if edges[j] == nil {
					edges[j] = term
				} else {
					edges[j] = s.Add(edges[j], term)
				}
			}
		}
		add := func(acc, x *torch.Tensor) *torch.Tensor {
			if x == nil {
				return acc
			}
			if acc == nil {
				return x
			}
			return s.Add(acc, x)
		}
		var node *torch.Tensor
		if w.HostPairs == nil {
			for _, e := range edges {
				node = add(node, e)
			}
		} else {
			active := 0
			for p, pr := range genotype.Pairs(i + 2) {
				wp := w.HostPairs[i][p]
				if wp <= thr {
					continue
				}
				active++
				keptPairs++
				sum := add(edges[pr[0]], edges[pr[1]])
				if sum != nil {
					node = add(node, s.MulScalar(sum, float64(wp)))
				}
			}
			if active > 1 {
				multiPairNodes++
			}
		}
		if node == nil {
			node = cell.zeros(c, states[0], states[1])
		}
		nodes = append(nodes, node)
		states = append(states, node)
	}
	return nodes, keptOps, keptPairs, multiPairNodes
}

func TestSearchNodeEqualsHandSum(t *testing.T) {
	cases := []struct {
		name     string
		pairwise bool
		prims    []string
		thr      float64
	}{
		{"pairwise, pruned", true, genotype.FewShot, 0.05},
		{"pairwise, nothing pruned", true, genotype.FewShot, 0},
		{"DARTS sum with none op, pruned", false, genotype.DARTS, 0.08},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := torch.NewScope()
			defer s.Close()
			torch.ManualSeed(21)
			cfg := DefaultSearchConfig(5)
			cfg.Channels, cfg.Layers, cfg.Reductions, cfg.Nodes = 6, 2, []int{1}, 3
			cfg.Pairwise, cfg.Primitives, cfg.AlphaInitStd = tc.pairwise, tc.prims, 1.5
			n, err := NewSearchNet(s, torch.CPU, cfg)
			if err != nil {
				t.Fatal(err)
			}
			randomizeBN(t, s, n.Reg)
			w, err := n.Normalize(s, Softmax, 0.7)
			if err != nil {
				t.Fatal(err)
			}
			thr := float32(tc.thr)
			x := s.Rand([]int64{3, 1, 28, 28}, torch.CPU)
			err = torch.NoGrad(func() error {
				c := &Ctx{S: s}
				h := n.stemB.Forward(c, s.Conv2d(x, n.stemW, nil, torch.Conv{Padding: [2]int64{1, 1}}))
				s0, s1 := h, h
				for ci, cell := range n.cells {
					cw := &w.Normal
					if cell.Reduction {
						cw = &w.Reduce
					}
					out := cell.forward(c, s0, s1, cw, thr)
					nodes, ops, pairs, multi := handCell(c, cell, s0, s1, cw, thr)
					for i, node := range nodes {
						got, err := s.Narrow(out, 1, int64(i)*cell.out, cell.out).Float32s()
						if err != nil {
							return err
						}
						want, err := node.Float32s()
						if err != nil {
							return err
						}
						if d := maxAbsDiff(got, want); d > 1e-5 {
							t.Errorf("cell %d (reduction %v) node %d: max |fused - hand| = %g", ci, cell.Reduction, i, d)
						}
					}
					total := 0
					for i := range cw.HostOps {
						total += len(cw.HostOps[i])
					}
					t.Logf("cell %d: %d of %d ops kept, %d pairs kept, %d nodes with several active pairs", ci, ops, total, pairs, multi)
					if tc.pairwise && multi == 0 {
						t.Errorf("cell %d: test setup: no node sums several pairs", ci)
					}
					if tc.thr > 0 && ops == total {
						t.Errorf("cell %d: test setup: no op pruned", ci)
					}
					s0, s1 = s1, out
				}
				return s.Err()
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}
