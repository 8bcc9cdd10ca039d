package cells

import (
	"testing"

	"github.com/metanas-go/metanas/torch"
)

// gradNorm returns the norm of t's gradient and whether it has one.
func gradNorm(t *testing.T, s *torch.Scope, x *torch.Tensor) (float64, bool) {
	t.Helper()
	g := s.Grad(x)
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if g == nil {
		return 0, false
	}
	v, err := s.Norm(g).Item()
	if err != nil {
		t.Fatal(err)
	}
	return v, true
}

func TestGradientsReachAlphasAndActiveWeights(t *testing.T) {
	cases := []struct {
		name     string
		std, thr float64
	}{
		{"nothing pruned", 1e-3, 0.01},
		{"pruned", 1.5, 0.05},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := torch.NewScope()
			defer s.Close()
			torch.ManualSeed(8)
			cfg := DefaultSearchConfig(5)
			cfg.Channels, cfg.Layers, cfg.Reductions, cfg.AlphaInitStd = 4, 2, []int{1}, tc.std
			n, err := NewSearchNet(s, torch.CPU, cfg)
			if err != nil {
				t.Fatal(err)
			}
			w, err := n.Normalize(s, Softmax, 0.7)
			if err != nil {
				t.Fatal(err)
			}
			x := s.Rand([]int64{10, 1, 28, 28}, torch.CPU)
			y := s.FromInt64([]int64{0, 1, 2, 3, 4, 0, 1, 2, 3, 4}, []int64{10}, torch.CPU)
			loss := s.CrossEntropy(n.Forward(&Ctx{S: s, Train: true}, x, w, tc.thr), y)
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
			if err := loss.Backward(); err != nil {
				t.Fatal(err)
			}
			for _, e := range n.Reg.Entries() {
				if e.Kind != Alpha {
					continue
				}
				norm, ok := gradNorm(t, s, e.Tensor)
				if !ok {
					t.Errorf("alpha %s has no gradient", e.Name)
					continue
				}
				// softmax of a single pair weight is the constant 1.
				if e.Tensor.Numel() > 1 && norm == 0 {
					t.Errorf("alpha %s: zero gradient", e.Name)
				}
			}
			// Every weight of an active op, and of the stem, preprocessing and classifier,
			// gets a non-zero gradient; pruned ops get none. Together: exactly ActiveParams.
			masks, err := n.Masks(w, tc.thr)
			if err != nil {
				t.Fatal(err)
			}
			var withGrad int64
			for _, e := range n.Reg.Entries() {
				if e.Kind != Weight {
					continue
				}
				if norm, ok := gradNorm(t, s, e.Tensor); ok && norm > 0 {
					withGrad += e.Tensor.Numel()
				}
			}
			for ci, cell := range n.cells {
				m := masks.Normal
				if cell.Reduction {
					m = masks.Reduce
				}
				for i, row := range cell.nodes {
					for j, e := range row {
						for k, op := range e.ops {
							for _, p := range op.Params() {
								norm, ok := gradNorm(t, s, p)
								if active := m.Active(i, j, k); active && (!ok || norm == 0) {
									t.Errorf("cell %d node %d input %d op %s: active but no gradient", ci, i, j, cfg.Primitives[k])
								} else if !active && ok && norm != 0 {
									t.Errorf("cell %d node %d input %d op %s: pruned but has a gradient", ci, i, j, cfg.Primitives[k])
								}
							}
						}
					}
				}
			}
			active := n.ActiveParams(w, tc.thr)
			if withGrad != active {
				t.Errorf("%d weights have a gradient, ActiveParams %d", withGrad, active)
			}
			if all := n.Reg.Count(Weight); tc.std > 1 && active == all {
				t.Error("test setup: nothing pruned")
			}
			t.Logf("%d of %d weights active", active, n.Reg.Count(Weight))
		})
	}
}
