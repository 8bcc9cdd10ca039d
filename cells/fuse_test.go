package cells

import (
	"fmt"
	"os"
	"slices"
	"testing"

	"github.com/metanas-go/metanas/cells/genotype"
	"github.com/metanas-go/metanas/internal/testutil"
	"github.com/metanas-go/metanas/torch"
)

// TestBatchedSearchNetStateFusion reruns, with METANAS_STATE_FUSION=1 (CUDA's default), the PyTorch parity
// test, the batched network against single ones, the device's pruning against the host's
// (with host pruning a group runs only where every reader keeps its op) and
// TestStateGroups; then the batched tests again with CUDA's other switches forced on the CPU
// (the node batch norm, the 1x1 products, the one-convolution FactorizedReduce). With a CUDA
// device it also runs the batched test with =0.
func TestBatchedSearchNetStateFusion(t *testing.T) {
	if os.Getenv("METANAS_STATE_FUSION") != "" {
		t.Skip("this process sets METANAS_STATE_FUSION")
	}
	t.Run("on", func(t *testing.T) {
		testutil.RerunWith(t, []string{"METANAS_STATE_FUSION=1"},
			"^(TestSearchNetParityWithPyTorch|TestBatchedSearchNetMatchesSingle|TestNormalizeOnDevice|TestStateGroups)$",
			"TestSearchNetParityWithPyTorch", "TestBatchedSearchNetMatchesSingle", "TestNormalizeOnDevice", "TestStateGroups")
	})
	t.Run("with CUDA's switches", func(t *testing.T) {
		testutil.RerunWith(t, []string{"METANAS_STATE_FUSION=1", "METANAS_NODE_BATCH_NORM=1", "METANAS_POINTWISE=matmul",
			"METANAS_FACTORIZED_REDUCE=patch"},
			"^(TestBatchedSearchNetMatchesSingle|TestNormalizeOnDevice|TestStateGroups)$",
			"TestBatchedSearchNetMatchesSingle", "TestNormalizeOnDevice", "TestStateGroups")
	})
	if torch.CUDAAvailable() {
		t.Run("off", func(t *testing.T) {
			testutil.RerunWith(t, []string{"METANAS_STATE_FUSION=0"}, "^TestBatchedSearchNetMatchesSingle$",
				"TestBatchedSearchNetMatchesSingle")
		})
	}
}

// TestStateFusionSetting checks METANAS_STATE_FUSION's meaning for the CPU and CUDA: unset,
// on CUDA only; 1, everywhere; 0, nowhere; another value is reported and read as unset.
func TestStateFusionSetting(t *testing.T) {
	want := map[string][2]bool{"": {false, true}, "1": {true, true}, "0": {false, false}, "on": {false, true}}
	testutil.CheckSetting(t, "METANAS_STATE_FUSION", "TestStateFusionSetting", want, "fused on (CPU, CUDA)", func() [2]bool { return [2]bool{StateFusion(torch.CPU), StateFusion(torch.Device{CUDA: true})} })
}

// TestStateGroups: a one-cell network of 3 nodes (one task and a batch of 2) groups, where
// StateFusion is on, op k of the edges of the states each node reads first, for the four
// convolutional few-shot ops: node 0's group has the 6 edges of states 0 and 1 (each read by
// all three nodes), node 1's the 2 of state 2, and node 2 none (state 3's one edge). Its
// registry holds the group's weights and sep_conv's middle statistics, the weights lie back
// to back, and one forward pass runs the convolutions of 3 edges instead of 9 (counted in a
// child process with LibTorch's convolutions, METANAS_FAST_CPU_OPS=0). Without the switch
// nothing is grouped and all 9 edges run theirs.
func TestStateGroups(t *testing.T) {
	if os.Getenv("METANAS_FAST_CPU_OPS") != "0" {
		testutil.RerunWith(t, []string{"METANAS_FAST_CPU_OPS=0"}, "^TestStateGroups$", "TestStateGroups")
		return
	}
	for _, tasks := range []int{0, 2} {
		s := torch.NewScope()
		cfg := SearchConfig{InChannels: 1, Classes: 2, Channels: 4, Layers: 1, Nodes: 3, StemMultiplier: 3,
			FeatureScaleRate: 1, Primitives: genotype.FewShot, Pairwise: true, AlphaInitStd: 1e-3, Tasks: tasks}
		n, err := NewSearchNet(s, torch.CPU, cfg)
		if err != nil {
			t.Fatal(err)
		}
		cell := n.cells[0]
		on := StateFusion(torch.CPU)
		if !on && cell.groups != nil {
			t.Fatal("state groups with the switch off")
		}
		if on {
			if len(cell.groups) != 3 {
				t.Fatalf("%d nodes' groups, want 3", len(cell.groups))
			}
			for i, edges := range []int{6, 2, 1} {
				groups := 0
				for _, g := range cell.groups[i] {
					if g != nil {
						groups++
						if len(g.ops) != edges {
							t.Fatalf("node %d: a group of %d edges, want %d", i, len(g.ops), edges)
						}
					}
				}
				if want := map[bool]int{true: 4, false: 0}[edges > 0]; groups != want {
					t.Fatalf("node %d: %d groups, want %d", i, groups, want)
				}
			}
			// The edges of node 0's group, state by state, and their indexes.
			want := [][2]int{{0, 0}, {1, 0}, {2, 0}, {0, 1}, {1, 1}, {2, 1}}
			if got := groupEdges(0, 3); !slices.Equal(got, want) {
				t.Fatalf("node 0's group edges %v, want %v", got, want)
			}
			for e, ed := range want {
				if got := edgeIndex(ed[0], ed[1], 3); got != e {
					t.Fatalf("edge %v has index %d, want %d", ed, got, e)
				}
			}
			if got := edgeIndex(2, 2, 3); got != 1 {
				t.Fatalf("edge (2, 2) has index %d, want 1", got)
			}
			// sep_conv_3x3 (column 5) on state 2, read by nodes 1 and 2 (node 1's group).
			g := cell.groups[1][5]
			sep := g.ops[1].(*sepConv)
			e, ok := n.Reg.Lookup("net.cells.0.dag.2.2._ops.5.0.net.0.net.2.weight")
			if !ok || e.Tensor != sep.a.pw {
				t.Fatal("the registry does not hold node 2's grouped sep_conv weight")
			}
			m, ok := n.Reg.Lookup("net.cells.0.dag.2.2._ops.5.0.net.0.net.3.running_var")
			if !ok || m.Tensor != sep.a.bn.RunVar {
				t.Fatal("the registry does not hold node 2's middle statistics view")
			}
			// The group reads its weights where they lie: a change to one shows in the
			// concatenation.
			cs := torch.NewScope()
			cat := catWeights(&Ctx{S: cs}, g.ops, func(o Op) *torch.Tensor { return o.(*sepConv).b.dw })
			if err := sep.b.dw.Fill_(3); err != nil {
				t.Fatal(err)
			}
			v := hostValues(t, cs, cat)
			if v[len(v)-1] != 3 || v[0] == 3 {
				t.Fatalf("the concatenated weights do not read the weights (first %g, last %g)", v[0], v[len(v)-1])
			}
			cs.Close()
			if err := m.Tensor.Fill_(5); err != nil {
				t.Fatal(err)
			}
			block := hostValues(t, s, g.mid.vars) // [2 readers * tasks * 4]
			per := len(block) / 2
			for i, v := range block {
				if want := map[bool]float32{true: 5, false: 1}[i >= per]; v != want {
					t.Fatalf("middle variance block %d = %g, want %g", i, v, want)
				}
			}
		}
		w, err := n.Normalize(s, Softmax, 1)
		if err != nil {
			t.Fatal(err)
		}
		tc := int64(max(1, tasks))
		x := s.Randn([]int64{2, tc, 6, 6}, torch.CPU, false)
		torch.ProfileOps()
		if _, err := torch.OpProfile(true); err != nil {
			t.Fatal(err)
		}
		runs := stateGroupRuns.Load()
		y := n.Forward(&Ctx{S: s, Train: true, Tasks: int64(tasks)}, x, w, 0)
		prof, err := torch.OpProfile(true)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		if sh := y.MustShape(); sh[len(sh)-1] != 2 {
			t.Fatalf("logits %v", sh)
		}
		// Per edge: conv_1x5_5x1 2, conv_3x3 2, sep_conv 4, dil_conv 2 convolutions (6
		// without the 1x1s, which are matrix products under METANAS_POINTWISE=matmul); the
		// stem 1 and the preprocessing 2 (1x1s).
		perEdge, fixed := int64(10), int64(3)
		if torch.PointwiseMatmul(torch.CPU) {
			perEdge, fixed = 6, 1
		}
		edges, groupRuns := int64(9), int64(0)
		if on {
			edges, groupRuns = 3, 8 // nodes 0 and 1's groups, and state 3's one edge
		}
		if got, want := torch.CallsOf(prof, "aten::convolution"), edges*perEdge+fixed; got != want {
			t.Errorf("tasks %d: %d convolutions, want %d", tasks, got, want)
		}
		if got := stateGroupRuns.Load() - runs; got != groupRuns {
			t.Errorf("tasks %d: %d groups ran, want %d", tasks, got, groupRuns)
		}
		s.Close()
	}
}

// TestStateGroupsMatchSeparate: two networks of the same weights, one with its groups built
// (buildGroups, whatever the switch) and one without, agree over three training steps
// (forward, backward of sum(logits * r), SGD on weights and alphas, running statistics
// updated): the logits of every step, and at the end every weight, alpha, running
// statistic and batch counter, within float rounding (closeTo after the first step, ten
// times looser after the third; all ten times looser on CUDA, TF32 off). One task and a batch of 3; drop-path off and every op kept. On the CPU, and
// with a CUDA device on it too; where the switch groups every network of the process (CUDA's
// default) it runs in a child process with METANAS_STATE_FUSION=0.
func TestStateGroupsMatchSeparate(t *testing.T) {
	devs := []torch.Device{torch.CPU}
	if torch.CUDAAvailable() {
		devs = append(devs, torch.Device{CUDA: true})
	}
	for _, dev := range devs {
		t.Run(map[bool]string{false: "cpu", true: "cuda"}[dev.CUDA], func(t *testing.T) {
			if !StateFusion(dev) {
				stateGroupsMatch(t, dev)
				return
			}
			if os.Getenv("METANAS_STATE_FUSION") != "" {
				t.Skip("the switch groups every network of this process")
			}
			testutil.RerunWith(t, []string{"METANAS_STATE_FUSION=0"}, "^TestStateGroupsMatchSeparate$", "TestStateGroupsMatchSeparate")
		})
	}
}

// stateGroupsMatch is TestStateGroupsMatchSeparate on dev.
func stateGroupsMatch(t *testing.T, dev torch.Device) {
	loose := 1.0
	if dev.CUDA {
		// Grouped and single convolutions take different cuDNN algorithms; TF32 would blur
		// the comparison (as in TestBatchedSearchNetMatchesSingle).
		torch.SetAllowTF32(false, false)
		defer torch.SetAllowTF32(true, false)
		loose = 10
	}
	for _, tasks := range []int{0, 3} {
		t.Run(fmt.Sprint("tasks=", tasks), func(t *testing.T) {
			s := torch.NewScope()
			defer s.Close()
			cfg := SearchConfig{InChannels: 2, Classes: 3, Channels: 4, Layers: 3, Nodes: 3, Reductions: []int{1},
				StemMultiplier: 3, FeatureScaleRate: 1, Primitives: genotype.FewShot, Pairwise: true, AlphaInitStd: 1.5,
				Tasks: tasks}
			nets := make([]*SearchNet, 2)
			for i := range nets {
				torch.ManualSeed(5)
				n, err := NewSearchNet(s, dev, cfg)
				if err != nil {
					t.Fatal(err)
				}
				nets[i] = n
			}
			if nets[0].cells[0].groups != nil {
				t.Fatal("the switch grouped the separate network")
			}
			if err := buildGroups(nets[1].Reg, nets[1].cells); err != nil {
				t.Fatal(err)
			}
			tc := int64(max(1, tasks))
			const N, H, lr = 4, 8, 0.05
			runs := stateGroupRuns.Load()
			for step := 0; step < 3; step++ {
				torch.ManualSeed(uint64(40 + step))
				x := s.Randn([]int64{N, 2 * tc, H, H}, dev, false)
				var logits [2][]float32
				for i, n := range nets {
					w, err := n.Normalize(s, Softmax, 0.5)
					if err != nil {
						t.Fatal(err)
					}
					y := n.Forward(&Ctx{S: s, Train: true, Tasks: int64(tasks)}, x, w, 0)
					torch.ManualSeed(uint64(60 + step))
					r := s.Randn(y.MustShape(), dev, false)
					if err := s.Sum(s.Mul(y, r)).Backward(); err != nil {
						t.Fatal(err)
					}
					logits[i] = hostValues(t, s, y)
					params := append(n.Weights(), n.Alphas()...)
					for _, p := range params {
						if g := s.Grad(p); g != nil {
							if err := p.Add_(g, -lr); err != nil {
								t.Fatal(err)
							}
						}
					}
					if err := torch.ZeroGrad(params, true); err != nil {
						t.Fatal(err)
					}
				}
				for k, v := range logits[1] {
					if !closeTo(v, logits[0][k], loose) {
						t.Fatalf("step %d logit %d: %g grouped, %g separate", step, k, v, logits[0][k])
					}
				}
				if step == 0 {
					sameState(t, s, nets, loose, "after one step")
				}
			}
			// Per step 8 groups a cell (4 op types in nodes 0 and 1; node 2's one-edge groups
			// run only with fans), and the reduction cell's skip_connect (FactorizedReduce).
			if got := stateGroupRuns.Load() - runs; got != 3*(3*8+1) {
				t.Errorf("%d groups ran, want %d (3 steps, 3 cells of 8 groups and a reduction's skip_connect)", got, 3*(3*8+1))
			}
			// A max pool's choice between nearly equal values can flip with rounding and send
			// a gradient elsewhere; over three steps that moves a few weights by up to about
			// 5e-4 of their size (seen with one thread), so the end state is compared ten
			// times looser than the first step's.
			sameState(t, s, nets, 10*loose, "after three steps")
		})
	}
}

// sameState fails the test unless nets[1]'s state_dict (batch counters included) equals
// nets[0]'s within closeTo(loose).
func sameState(t *testing.T, s *torch.Scope, nets []*SearchNet, loose float64, when string) {
	t.Helper()
	a, err := nets[0].Reg.StateDict()
	if err != nil {
		t.Fatal(err)
	}
	b, err := nets[1].Reg.StateDict()
	if err != nil {
		t.Fatal(err)
	}
	for k := range a {
		if a[k].Name != b[k].Name {
			t.Fatalf("entry %d: %s against %s", k, b[k].Name, a[k].Name)
		}
		want, got := hostValues(t, s, a[k].Tensor), hostValues(t, s, b[k].Tensor)
		for i := range want {
			if !closeTo(got[i], want[i], loose) {
				t.Fatalf("%s: %s[%d]: %g grouped, %g separate", when, a[k].Name, i, got[i], want[i])
			}
		}
	}
}
