package cells

import (
	"math/rand"
	"strings"
	"testing"

	"github.com/metanas-go/metanas/cells/genotype"
	"github.com/metanas-go/metanas/torch"
)

// setAlphas overwrites an alpha tensor with host values.
func setAlphas(t *testing.T, s *torch.Scope, a *torch.Tensor, vals []float32) {
	t.Helper()
	if err := a.Copy_(s.FromFloat32(vals, a.MustShape(), torch.CPU)); err != nil {
		t.Fatal(err)
	}
}

// plantGenotype sets n's alphas to N(0,1) noise plus a margin of boost on one random pair
// per node and one random op on every input row, and returns the genotype those choices
// describe. After PruneAlphas(0.01, 1) exactly the planted pairs and ops survive, with
// softmax weight exactly 1.
func plantGenotype(t *testing.T, s *torch.Scope, n *SearchNet, rng *rand.Rand, boost float32) genotype.Genotype {
	t.Helper()
	K := len(n.Cfg.Primitives)
	plant := func(ops, pairs []*torch.Tensor) [][]genotype.Edge {
		var nodes [][]genotype.Edge
		for i := range ops {
			nIn := i + 2
			best := make([]int, nIn)
			vals := make([]float32, nIn*K)
			for j := 0; j < nIn; j++ {
				best[j] = rng.Intn(K)
				for k := 0; k < K; k++ {
					vals[j*K+k] = float32(rng.NormFloat64())
				}
				vals[j*K+best[j]] += boost
			}
			setAlphas(t, s, ops[i], vals)
			ps := genotype.Pairs(nIn)
			p := rng.Intn(len(ps))
			pv := make([]float32, len(ps))
			for q := range pv {
				pv[q] = float32(rng.NormFloat64())
			}
			pv[p] += boost
			setAlphas(t, s, pairs[i], pv)
			a, b := ps[p][0], ps[p][1]
			nodes = append(nodes, []genotype.Edge{{Op: n.Cfg.Primitives[best[a]], Input: a}, {Op: n.Cfg.Primitives[best[b]], Input: b}})
		}
		return nodes
	}
	g := genotype.Genotype{Normal: plant(n.AlphaNormal, n.AlphaPwNormal), Reduce: plant(n.AlphaReduce, n.AlphaPwReduce)}
	g.NormalConcat, g.ReduceConcat = genotype.DefaultConcat(n.Cfg.Nodes), genotype.DefaultConcat(n.Cfg.Nodes)
	return g
}

func TestPrunedOneShotEqualsDiscrete(t *testing.T) {
	cases := []struct {
		name  string
		seed  int64
		in    int64
		size  int64
		nodes int
	}{
		{"omniglot", 1, 1, 28, 3},
		{"omniglot other genotype", 2, 1, 28, 3},
		{"miniimagenet 4 nodes", 3, 3, 84, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := torch.NewScope()
			defer s.Close()
			torch.ManualSeed(uint64(tc.seed))
			cfg := DefaultSearchConfig(5)
			cfg.InChannels, cfg.Channels, cfg.Nodes = int(tc.in), 6, tc.nodes
			n, err := NewSearchNet(s, torch.CPU, cfg)
			if err != nil {
				t.Fatal(err)
			}
			randomizeBN(t, s, n.Reg)
			want := plantGenotype(t, s, n, rand.New(rand.NewSource(tc.seed)), 12)
			const thr = 0.01
			if err := n.PruneAlphas(thr, 1); err != nil {
				t.Fatal(err)
			}
			w, err := n.Normalize(s, Softmax, 1)
			if err != nil {
				t.Fatal(err)
			}
			// Exactly the planted ops and pairs are left, each with weight exactly 1.
			for _, cw := range []*CellWeights{&w.Normal, &w.Reduce} {
				for i := range cw.HostOps {
					for _, v := range append(append([]float32(nil), cw.HostOps[i]...), cw.HostPairs[i]...) {
						if v != 0 && v != 1 {
							t.Fatalf("node %d: weight %g after pruning, want 0 or 1", i, v)
						}
					}
				}
			}
			g, err := n.Genotype(w)
			if err != nil {
				t.Fatal(err)
			}
			if !g.Equal(want) {
				t.Fatalf("derived genotype\n%v\nplanted\n%v", g, want)
			}
			d, err := n.Discrete(s, g)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := n.ActiveParams(w, thr), d.Reg.Count(Weight); got != want {
				t.Errorf("ActiveParams %d, discrete network has %d weights", got, want)
			}
			x := s.Rand([]int64{3, tc.in, tc.size, tc.size}, torch.CPU)
			for _, train := range []bool{false, true} {
				a := logitsOf(t, s, func() *torch.Tensor { return n.Forward(&Ctx{S: s, Train: train}, x, w, thr) })
				b := logitsOf(t, s, func() *torch.Tensor { return d.Forward(&Ctx{S: s, Train: train}, x) })
				diff := maxAbsDiff(a, b)
				if diff > 1e-5 {
					t.Errorf("train=%v: max |one-shot - discrete| = %g\n%v\n%v", train, diff, a, b)
				}
				t.Logf("train=%v: max |one-shot - discrete| = %g for %v", train, diff, g)
			}
		})
	}
}

func TestSearchToDiscreteErrors(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	cfg := DefaultSearchConfig(5)
	cfg.Channels = 4
	n, err := NewSearchNet(s, torch.CPU, cfg)
	if err != nil {
		t.Fatal(err)
	}
	og := mustGenotype(t, genotype.MetaNASOmniglotV2)
	cases := []struct {
		name string
		g    func() genotype.Genotype
		want string
	}{
		{"op outside the primitives", func() genotype.Genotype { g := og.Clone(); g.Normal[0][0].Op = genotype.OpSepConv5x5; return g }, "sep_conv_5x5"},
		{"too many nodes", func() genotype.Genotype { return mustGenotype(t, genotype.AutoMeta) }, "5 normal"},
		{"narrower output", func() genotype.Genotype { g := og.Clone(); g.NormalConcat = []int{2, 4}; return g }, "shape"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := n.Discrete(s, tc.g()); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
	if _, err := n.Discrete(s, og); err != nil {
		t.Errorf("metanas_og_v2 over the few-shot search network: %v", err)
	}
}

// hostWeights builds ArchWeights with only the host copies set (what masks and counts use).
func hostWeights(normalOps, reduceOps, normalPairs, reducePairs [][]float32) *ArchWeights {
	return &ArchWeights{Normal: CellWeights{HostOps: normalOps, HostPairs: normalPairs},
		Reduce: CellWeights{HostOps: reduceOps, HostPairs: reducePairs}}
}

func fill(n int, v float32) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = v
	}
	return out
}

func TestMasksAndActiveParams(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	cfg := DefaultSearchConfig(5)
	cfg.Channels, cfg.Nodes, cfg.Layers, cfg.Reductions = 4, 2, 2, []int{1}
	n, err := NewSearchNet(s, torch.CPU, cfg)
	if err != nil {
		t.Fatal(err)
	}
	K := len(cfg.Primitives)
	total := n.Reg.Count(Weight)
	// params of op k on input j of node i in cell c
	opParams := func(c, i, j, k int) int64 { return numelOf(n.cells[c].nodes[i][j].ops[k].Params()...) }
	var edgeParams = func(c, i, j int) int64 {
		var m int64
		for k := 0; k < K; k++ {
			m += opParams(c, i, j, k)
		}
		return m
	}
	uniform := func() [][]float32 { return [][]float32{fill(2*K, 1.0/7), fill(3*K, 1.0/7)} }
	conv3 := 4 // conv_3x3 column of the few-shot set
	cases := []struct {
		name string
		w    func() *ArchWeights
		thr  float64
		want int64
		mask func(t *testing.T, m *PruneMasks)
	}{
		{"nothing pruned", func() *ArchWeights {
			return hostWeights(uniform(), uniform(), [][]float32{{1}, {0.4, 0.3, 0.3}}, [][]float32{{1}, {0.4, 0.3, 0.3}})
		}, 0.01, total, nil},
		{"normal node 1: pair (0,1) only, so input 2 is never read", func() *ArchWeights {
			return hostWeights(uniform(), uniform(), [][]float32{{1}, {0.98, 0.01, 0.01}}, [][]float32{{1}, {0.4, 0.3, 0.3}})
		}, 0.01, total - edgeParams(0, 1, 2), func(t *testing.T, m *PruneMasks) {
			if m.Normal.Inputs[1][2] || !m.Normal.Inputs[1][0] || !m.Normal.Inputs[1][1] {
				t.Errorf("inputs of normal node 1: %v", m.Normal.Inputs[1])
			}
			if m.Normal.Pairs[1][0] != true || m.Normal.Pairs[1][1] || m.Normal.Pairs[1][2] {
				t.Errorf("pairs of normal node 1: %v", m.Normal.Pairs[1])
			}
			if !m.Normal.Ops[1][2][conv3] || m.Normal.Active(1, 2, conv3) {
				t.Error("op kept by its own weight but its input is unused: must be inactive")
			}
		}},
		{"reduce node 0: only conv_3x3 on input 0; float32(thr) itself is pruned", func() *ArchWeights {
			r := uniform()
			for k := 0; k < K; k++ {
				r[0][k] = float32(0.05)
			}
			r[0][conv3] = 0.7
			return hostWeights(uniform(), r, [][]float32{{1}, {0.4, 0.3, 0.3}}, [][]float32{{1}, {0.4, 0.3, 0.3}})
		}, 0.05, total - edgeParams(1, 0, 0) + opParams(1, 0, 0, conv3), func(t *testing.T, m *PruneMasks) {
			for k := 0; k < K; k++ {
				if m.Reduce.Ops[0][0][k] != (k == conv3) {
					t.Errorf("reduce node 0 input 0 op %d kept=%v", k, m.Reduce.Ops[0][0][k])
				}
			}
		}},
		{"everything pruned", func() *ArchWeights {
			z := [][]float32{fill(2*K, 0), fill(3*K, 0)}
			return hostWeights(z, z, [][]float32{{0}, {0, 0, 0}}, [][]float32{{0}, {0, 0, 0}})
		}, 0.01, total - edgeParams(0, 0, 0) - edgeParams(0, 0, 1) - edgeParams(0, 1, 0) - edgeParams(0, 1, 1) - edgeParams(0, 1, 2) -
			edgeParams(1, 0, 0) - edgeParams(1, 0, 1) - edgeParams(1, 1, 0) - edgeParams(1, 1, 1) - edgeParams(1, 1, 2), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := tc.w()
			if got := n.ActiveParams(w, tc.thr); got != tc.want {
				t.Errorf("ActiveParams %d, want %d (all weights %d)", got, tc.want, total)
			}
			m, err := n.Masks(w, tc.thr)
			if err != nil {
				t.Fatal(err)
			}
			if tc.mask != nil {
				tc.mask(t, m)
			}
		})
	}
	// Malformed weights.
	z := [][]float32{fill(2*K, 0), fill(3*K, 0)}
	if _, err := n.Masks(hostWeights(z[:1], z, nil, nil), 0.01); err == nil {
		t.Error("Masks accepted weights with a missing node")
	}
	if _, err := n.Masks(hostWeights(z, z, [][]float32{{0}, {0, 0}}, [][]float32{{0}, {0, 0, 0}}), 0.01); err == nil {
		t.Error("Masks accepted a node with 2 pair weights for 3 pairs")
	}
	if _, err := n.Genotype(nil); err == nil {
		t.Error("Genotype accepted nil weights")
	}
}

func TestPruneAlphas(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	torch.ManualSeed(4)
	cfg := DefaultSearchConfig(5)
	cfg.Channels, cfg.AlphaInitStd = 4, 2
	n, err := NewSearchNet(s, torch.CPU, cfg)
	if err != nil {
		t.Fatal(err)
	}
	const thr, temp = 0.05, 0.5
	before, err := n.Normalize(s, Softmax, temp)
	if err != nil {
		t.Fatal(err)
	}
	mBefore, err := n.Masks(before, thr)
	if err != nil {
		t.Fatal(err)
	}
	paramsBefore := n.ActiveParams(before, thr)
	// Expected: every entry with weight <= float32(thr) becomes PrunedAlpha, unless it is
	// its row's largest.
	type alphaRows struct {
		a      *torch.Tensor
		w      []float32
		rowLen int
	}
	var all []alphaRows
	K := len(cfg.Primitives)
	for i := range n.AlphaNormal {
		all = append(all, alphaRows{n.AlphaNormal[i], before.Normal.HostOps[i], K}, alphaRows{n.AlphaReduce[i], before.Reduce.HostOps[i], K},
			alphaRows{n.AlphaPwNormal[i], before.Normal.HostPairs[i], len(before.Normal.HostPairs[i])},
			alphaRows{n.AlphaPwReduce[i], before.Reduce.HostPairs[i], len(before.Reduce.HostPairs[i])})
	}
	var old [][]float32
	for _, r := range all {
		v, _ := r.a.Float32s()
		old = append(old, v)
	}
	if err := n.PruneAlphas(thr, temp); err != nil {
		t.Fatal(err)
	}
	pruned := 0
	for q, r := range all {
		got, _ := r.a.Float32s()
		for idx := range got {
			start := idx / r.rowLen * r.rowLen
			isMax := true
			for o := start; o < start+r.rowLen; o++ {
				if r.w[o] > r.w[idx] {
					isMax = false
				}
			}
			wantPruned := r.w[idx] <= float32(thr) && !isMax
			switch {
			case wantPruned && got[idx] != PrunedAlpha:
				t.Errorf("alpha %d[%d] (weight %g) = %g, want pruned", q, idx, r.w[idx], got[idx])
			case !wantPruned && got[idx] != old[q][idx]:
				t.Errorf("alpha %d[%d] (weight %g) changed %g -> %g", q, idx, r.w[idx], old[q][idx], got[idx])
			}
			if wantPruned {
				pruned++
			}
		}
	}
	if pruned == 0 {
		t.Fatal("test setup: nothing to prune")
	}
	after, err := n.Normalize(s, Softmax, temp)
	if err != nil {
		t.Fatal(err)
	}
	mAfter, _ := n.Masks(after, thr)
	if !masksEqual(mBefore, mAfter) {
		t.Error("pruning changed which ops and pairs the forward pass keeps")
	}
	if got := n.ActiveParams(after, thr); got != paramsBefore {
		t.Errorf("active params %d after pruning, %d before", got, paramsBefore)
	}
	for _, cw := range []*CellWeights{&after.Normal, &after.Reduce} {
		for i := range cw.HostOps {
			for _, v := range append(append([]float32(nil), cw.HostOps[i]...), cw.HostPairs[i]...) {
				if v != v || (v > 0 && v < 1e-30) {
					t.Errorf("weight %g after pruning: want finite, pruned ones exactly 0", v)
				}
			}
		}
	}
	// Idempotent.
	snap := make([][]float32, len(all))
	for q, r := range all {
		snap[q], _ = r.a.Float32s()
	}
	if err := n.PruneAlphas(thr, temp); err != nil {
		t.Fatal(err)
	}
	for q, r := range all {
		got, _ := r.a.Float32s()
		if maxAbsDiff(got, snap[q]) != 0 {
			t.Errorf("second pruning changed alpha %d", q)
		}
	}
	if err := n.PruneAlphas(thr, 0); err == nil {
		t.Error("temperature 0 accepted")
	}
	// A threshold above every weight keeps each row's largest entry.
	if err := n.PruneAlphas(1, temp); err != nil {
		t.Fatal(err)
	}
	w, _ := n.Normalize(s, Softmax, temp)
	g, err := n.Genotype(w)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Validate(cfg.Primitives); err != nil {
		t.Error(err)
	}
}

func masksEqual(a, b *PruneMasks) bool {
	eq := func(x, y CellMask) bool {
		for i := range x.Ops {
			for j := range x.Ops[i] {
				if x.Inputs[i][j] != y.Inputs[i][j] {
					return false
				}
				for k := range x.Ops[i][j] {
					if x.Ops[i][j][k] != y.Ops[i][j][k] {
						return false
					}
				}
			}
			for p := range x.Pairs[i] {
				if x.Pairs[i][p] != y.Pairs[i][p] {
					return false
				}
			}
		}
		return true
	}
	return eq(a.Normal, b.Normal) && eq(a.Reduce, b.Reduce)
}

func TestGenotypeFromAlphasDARTS(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	cfg := DefaultSearchConfig(5)
	cfg.Channels, cfg.Nodes, cfg.Pairwise = 4, 2, false
	n, err := NewSearchNet(s, torch.CPU, cfg)
	if err != nil {
		t.Fatal(err)
	}
	K := len(cfg.Primitives)
	// normal node 0: input 1 conv_3x3 (3.0) beats input 0 max_pool (2.0);
	// node 1: input 2 dil_conv (4.0), input 0 skip (2.5), input 1 weaker (1.0).
	n0 := make([]float32, 2*K)
	n0[0*K+0], n0[1*K+4] = 2, 3
	n1 := make([]float32, 3*K)
	n1[0*K+2], n1[1*K+1], n1[2*K+6] = 2.5, 1, 4
	setAlphas(t, s, n.AlphaNormal[0], n0)
	setAlphas(t, s, n.AlphaNormal[1], n1)
	setAlphas(t, s, n.AlphaReduce[0], n0)
	setAlphas(t, s, n.AlphaReduce[1], n1)
	w, err := n.Normalize(s, Softmax, 1)
	if err != nil {
		t.Fatal(err)
	}
	g, err := n.Genotype(w)
	if err != nil {
		t.Fatal(err)
	}
	want := "Genotype(normal=[[('conv_3x3', 1), ('max_pool_3x3', 0)], [('dil_conv_3x3', 2), ('skip_connect', 0)]], normal_concat=range(2, 4), " +
		"reduce=[[('conv_3x3', 1), ('max_pool_3x3', 0)], [('dil_conv_3x3', 2), ('skip_connect', 0)]], reduce_concat=range(2, 4))"
	if g.String() != want {
		t.Errorf("genotype\n%v\nwant\n%v", g, want)
	}
	if got, all := n.ActiveParams(w, 0.01), n.Reg.Count(Weight); got != all {
		t.Errorf("no pairwise weights, no op at or below 0.01: active %d of %d", got, all)
	}
}
