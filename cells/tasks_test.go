package cells

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/metanas-go/metanas/cells/genotype"
	"github.com/metanas-go/metanas/internal/testutil"
	"github.com/metanas-go/metanas/torch"
)

// loadTaskSlice copies every tensor of single into task slice t of the batched registry.
func loadTaskSlice(tb testing.TB, s *torch.Scope, batched, single *Registry, t int64) {
	tb.Helper()
	be, se := batched.Entries(), single.Entries()
	if len(be) != len(se) {
		tb.Fatalf("%d batched entries, %d single", len(be), len(se))
	}
	T := batched.Tasks()
	err := torch.NoGrad(func() error {
		for i := range be {
			if len(se[i].Tensor.MustShape()) == 0 {
				continue // batch counters are shared
			}
			dst := s.Narrow(s.View(be[i].Tensor, T, -1), 0, t, 1)
			if err := dst.Copy_(s.View(se[i].Tensor, 1, -1)); err != nil {
				return err
			}
		}
		return s.Err()
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// hostValues returns x's values as float32 on the host.
func hostValues(tb testing.TB, s *torch.Scope, x *torch.Tensor) []float32 {
	tb.Helper()
	v, err := s.To(x, torch.Float32, torch.CPU).Float32s()
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// closeTo reports whether got and want agree within loose times (1e-5 absolute plus 1e-4
// relative).
func closeTo(got, want float32, loose ...float64) bool {
	l := 1.0
	if len(loose) > 0 {
		l = loose[0]
	}
	return math.Abs(float64(got-want)) <= l*(1e-5+1e-4*math.Abs(float64(want)))
}

// TestBatchedSearchNetMatchesSingle checks that a network of 3 batched tasks computes, for
// each task, the logits and gradients of that task's own network, including when the tasks
// prune different ops and pairs; on CUDA too when there is a GPU.
func TestBatchedSearchNetMatchesSingle(t *testing.T) {
	t.Run("cpu", func(t *testing.T) { batchedMatchesSingle(t, torch.CPU, 1) })
	t.Run("cuda", func(t *testing.T) {
		if !torch.CUDAAvailable() {
			t.Skip("no CUDA device (or LibTorch built without CUDA)")
		}
		// Grouped and single convolutions take different cuDNN algorithms, which in TF32
		// (10-bit mantissa, LibTorch's default for convolutions) round differently enough
		// to blur a comparison; in float32 they agree to rounding.
		torch.SetAllowTF32(false, false)
		defer torch.SetAllowTF32(true, false)
		batchedMatchesSingle(t, torch.Device{CUDA: true}, 10)
	})
}

// batchedMatchesSingle is TestBatchedSearchNetMatchesSingle on dev, with closeTo's
// tolerance multiplied by loose.
func batchedMatchesSingle(t *testing.T, dev torch.Device, loose float64) {
	const T = 3
	const thr = 0.05
	s := torch.NewScope()
	defer s.Close()
	cfg := SearchConfig{InChannels: 2, Classes: 3, Channels: 4, Layers: 3, Nodes: 3, Reductions: []int{1},
		StemMultiplier: 3, FeatureScaleRate: 1, Primitives: genotype.FewShot, Pairwise: true, AlphaInitStd: 1.5}
	singles := make([]*SearchNet, T)
	for i := range singles {
		torch.ManualSeed(uint64(10 + i))
		n, err := NewSearchNet(s, dev, cfg)
		if err != nil {
			t.Fatal(err)
		}
		singles[i] = n
	}
	bcfg := cfg
	bcfg.Tasks = T
	batched, err := NewSearchNet(s, dev, bcfg)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range singles {
		loadTaskSlice(t, s, batched.Reg, n.Reg, int64(i))
	}
	torch.ManualSeed(99)
	const N, H = 4, 8
	xs := make([]*torch.Tensor, T)
	rs := make([]*torch.Tensor, T)
	for i := range xs {
		xs[i] = s.Randn([]int64{N, 2, H, H}, dev, false)
		rs[i] = s.Randn([]int64{N, 3}, dev, false)
	}
	// Single networks: logits and gradients of sum(logits * r).
	type result struct {
		logits, eval []float32 // training and evaluation logits
		grads        map[string][]float32
		stats        [][]float32 // running statistics after the training pass (nil: not run)
	}
	const temp = 0.4
	want := make([]result, T)
	prunedSomewhere, differs := false, false
	var firstHost []float32
	for i, n := range singles {
		w, err := n.Normalize(s, Softmax, temp)
		if err != nil {
			t.Fatal(err)
		}
		host := append([]float32{}, w.Normal.HostOps[2]...)
		for _, v := range host {
			prunedSomewhere = prunedSomewhere || v <= thr
		}
		if i == 0 {
			firstHost = host
		} else {
			for k := range host {
				differs = differs || (host[k] <= thr) != (firstHost[k] <= thr)
			}
		}
		var before [][]float32
		for _, b := range n.Reg.RunningStats() {
			before = append(before, hostValues(t, s, b))
		}
		y := n.Forward(&Ctx{S: s, Train: true}, xs[i], w, thr)
		if err := s.Sum(s.Mul(y, rs[i])).Backward(); err != nil {
			t.Fatal(err)
		}
		r := result{grads: map[string][]float32{}}
		if r.logits, err = s.To(y, torch.Float32, torch.CPU).Float32s(); err != nil {
			t.Fatal(err)
		}
		for _, e := range n.Reg.Entries() {
			if e.Kind == Buffer {
				continue
			}
			if g := s.Grad(e.Tensor); g != nil {
				if r.grads[e.Name], err = s.To(g, torch.Float32, torch.CPU).Float32s(); err != nil {
					t.Fatal(err)
				}
			}
		}
		for k, b := range n.Reg.RunningStats() {
			v := hostValues(t, s, b)
			if slices.Equal(v, before[k]) {
				// The op did not run for this task. A batched network runs it when another
				// task needs it and moves this task's statistics too (README: differences
				// from the reference); its output still counts zero.
				v = nil
			}
			r.stats = append(r.stats, v)
		}
		r.eval = hostValues(t, s, n.Forward(&Ctx{S: s, Train: false}, xs[i], w, thr))
		want[i] = r
	}
	if !prunedSomewhere || !differs {
		t.Fatalf("test setup: the tasks must prune different ops (pruned %v, differing %v)", prunedSomewhere, differs)
	}
	// Batched network: inputs [N, T*C, H, W], logits [T, N, classes].
	x := s.Reshape(s.Stack(xs, 1), N, T*2, H, H)
	w, err := batched.Normalize(s, Softmax, temp)
	if err != nil {
		t.Fatal(err)
	}
	y := batched.Forward(&Ctx{S: s, Train: true, Tasks: T}, x, w, thr)
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if sh := y.MustShape(); len(sh) != 3 || sh[0] != T || sh[1] != N || sh[2] != 3 {
		t.Fatalf("batched logits %v, want [%d %d 3]", sh, T, N)
	}
	if err := s.Sum(s.Mul(y, s.Stack(rs, 0))).Backward(); err != nil {
		t.Fatal(err)
	}
	logits, err := s.To(y, torch.Float32, torch.CPU).Float32s()
	if err != nil {
		t.Fatal(err)
	}
	per := N * 3
	for i := 0; i < T; i++ {
		for k, v := range want[i].logits {
			if got := logits[i*per+k]; !closeTo(got, v, loose) {
				t.Fatalf("task %d logit %d: batched %g, single %g", i, k, got, v)
			}
		}
	}
	// Running statistics, then evaluation logits (which read them).
	names := []string{}
	for _, e := range batched.Reg.Entries() {
		if e.Kind == Buffer && len(e.Tensor.MustShape()) > 0 {
			names = append(names, e.Name)
		}
	}
	for b, st := range batched.Reg.RunningStats() {
		all := hostValues(t, s, st)
		size := len(all) / T
		for i := 0; i < T; i++ {
			for k, v := range want[i].stats[b] {
				if got := all[i*size+k]; !closeTo(got, v, loose) {
					t.Fatalf("%s task %d element %d: batched %g, single %g", names[b], i, k, got, v)
				}
			}
		}
	}
	eval := hostValues(t, s, batched.Forward(&Ctx{S: s, Train: false, Tasks: T}, x, w, thr))
	for i := 0; i < T; i++ {
		for k, v := range want[i].eval {
			if got := eval[i*per+k]; !closeTo(got, v, loose) {
				t.Fatalf("task %d evaluation logit %d: batched %g, single %g", i, k, got, v)
			}
		}
	}
	checked := 0
	for _, e := range batched.Reg.Entries() {
		if e.Kind == Buffer {
			continue
		}
		g := s.Grad(e.Tensor)
		var all []float32
		if g != nil {
			if all, err = s.To(g, torch.Float32, torch.CPU).Float32s(); err != nil {
				t.Fatal(err)
			}
		}
		size := len(all) / T
		for i := 0; i < T; i++ {
			ref := want[i].grads[e.Name]
			for k := 0; k < size; k++ {
				var r float32
				if ref != nil {
					r = ref[k]
				}
				if got := all[i*size+k]; !closeTo(got, r, loose) {
					t.Fatalf("%s task %d element %d: batched gradient %g, single %g", e.Name, i, k, got, r)
				}
				checked++
			}
		}
	}
	if checked == 0 {
		t.Fatal("no gradient compared")
	}
}

// TestBatchedRegistryCopy checks that loading a single network into a batched one fills
// every task slice, and that the task-sum adds the slices.
func TestBatchedRegistryCopy(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	cfg := DefaultSearchConfig(5)
	cfg.Channels, cfg.Layers, cfg.Reductions = 4, 2, []int{1}
	torch.ManualSeed(3)
	single, err := NewSearchNet(s, torch.CPU, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Tasks = 4
	batched, err := NewSearchNet(s, torch.CPU, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := batched.Reg.CopyFrom(single.Reg); err != nil {
		t.Fatal(err)
	}
	for i, e := range batched.Reg.Entries() {
		se := single.Reg.Entries()[i]
		sv, err := s.To(se.Tensor, torch.Float32, torch.CPU).Float32s()
		if err != nil {
			t.Fatal(err)
		}
		bv, err := s.To(e.Tensor, torch.Float32, torch.CPU).Float32s()
		if err != nil {
			t.Fatal(err)
		}
		if len(se.Tensor.MustShape()) == 0 {
			if len(bv) != 1 || bv[0] != sv[0] {
				t.Fatalf("%s: counter %v, want %v", e.Name, bv, sv)
			}
			continue
		}
		if len(bv) != 4*len(sv) {
			t.Fatalf("%s: %d elements, want 4 x %d", e.Name, len(bv), len(sv))
		}
		for k, v := range bv {
			if v != sv[k%len(sv)] {
				t.Fatalf("%s element %d: %g, want %g", e.Name, k, v, sv[k%len(sv)])
			}
		}
	}
	// Sum over the task slices: 4 copies sum to 4x the single tensor.
	acc := s.MulScalar(s.Detach(single.AlphaNormal[0]), 0)
	if err := torch.ForeachAddTaskSum([]*torch.Tensor{acc}, []*torch.Tensor{batched.AlphaNormal[0]}, 4); err != nil {
		t.Fatal(err)
	}
	got, _ := acc.Float32s()
	ref, _ := single.AlphaNormal[0].Float32s()
	for k := range ref {
		if !closeTo(got[k], 4*ref[k]) {
			t.Fatalf("task sum element %d: %g, want %g", k, got[k], 4*ref[k])
		}
	}
	if err := torch.ForeachAddTaskSum([]*torch.Tensor{acc}, []*torch.Tensor{single.AlphaNormal[0]}, 4); err == nil {
		t.Fatal("a tensor of one task summed as four: no error")
	}
}

// TestActiveKeyAndCopyArch checks that ActiveKey changes exactly when an op or pair crosses
// the threshold (for one task of a batch), and that CopyArch copies values in place and
// refuses weights of another network.
func TestActiveKeyAndCopyArch(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	cfg := SearchConfig{InChannels: 1, Classes: 3, Channels: 4, Layers: 2, Nodes: 2, Reductions: []int{1},
		StemMultiplier: 3, FeatureScaleRate: 1, Primitives: genotype.FewShot, Pairwise: true, AlphaInitStd: 1e-3, Tasks: 2}
	n, err := NewSearchNet(s, torch.CPU, cfg)
	if err != nil {
		t.Fatal(err)
	}
	norm := func() *ArchWeights {
		w, err := n.Normalize(s, Softmax, 1)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	w0 := norm()
	k0, err := n.ActiveKey(w0, 0.01)
	if err != nil {
		t.Fatal(err)
	}
	// Every weight is about 1/7 or 1/3: all active, whatever the small alphas.
	if strings.Contains(k0, "0") {
		t.Errorf("near-uniform weights: key %q marks something inactive", k0)
	}
	if k, _ := n.ActiveKey(w0, 0.5); k == k0 {
		t.Error("a threshold above every weight gives the same key")
	}
	// Task 1's op 2 on node 0's input 0 dominates: its other ops on that edge fall below
	// 0.01, but task 0 still needs them, so the active ops stay; pair flags do not move.
	a := n.AlphaNormal[0] // [2 tasks * 2 inputs, 7 ops]
	v := make([]float32, a.Numel())
	K := len(cfg.Primitives)
	v[2*K+2] = 12
	if err := a.Copy_(s.FromFloat32(v, a.MustShape(), torch.CPU)); err != nil {
		t.Fatal(err)
	}
	w1 := norm()
	if k, _ := n.ActiveKey(w1, 0.01); k != k0 {
		t.Errorf("an op pruned for one task only changed the key:\n%s\n%s", k, k0)
	}
	// The same for task 0: now no task needs the other ops of that edge.
	v[2] = 12
	if err := a.Copy_(s.FromFloat32(v, a.MustShape(), torch.CPU)); err != nil {
		t.Fatal(err)
	}
	w2 := norm()
	k2, _ := n.ActiveKey(w2, 0.01)
	if k2 == k0 || strings.Count(k2, "0") != K-1 {
		t.Errorf("ops pruned for both tasks: key %q, want %d inactive columns", k2, K-1)
	}
	// CopyArch: w0's clone takes w2's values, device and host.
	c, err := CloneArch(s, w0)
	if err != nil {
		t.Fatal(err)
	}
	if err := CopyArch(c, w2); err != nil {
		t.Fatal(err)
	}
	if k, _ := n.ActiveKey(c, 0.01); k != k2 {
		t.Error("the copy's host weights differ from the source's")
	}
	got, _ := c.Normal.Ops[0].Float32s()
	want, _ := w2.Normal.Ops[0].Float32s()
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("copied op weight %d: %g, want %g", i, got[i], want[i])
		}
	}
	single, err := NewSearchNet(s, torch.CPU, SearchConfig{InChannels: 1, Classes: 3, Channels: 4, Layers: 2, Nodes: 3,
		Reductions: []int{1}, StemMultiplier: 3, FeatureScaleRate: 1, Primitives: genotype.FewShot, Pairwise: true})
	if err != nil {
		t.Fatal(err)
	}
	other, err := single.Normalize(s, Softmax, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := CopyArch(c, other); err == nil {
		t.Error("copy between weights of different networks: no error")
	}
	if _, err := n.ActiveKey(other, 0.01); err == nil {
		t.Error("key of another network's weights: no error")
	}
}

// TestNormalizeOnDevice checks that weights normalised on the device (no host copy, every
// op computed, pruning on the device) give the logits and alpha gradients of Normalize's
// weights with host pruning, for a batched and a single network whose alphas prune ops
// and pairs (in some tasks, and in all), and weight gradients that differ only by zeros
// where an op is pruned in every task.
func TestNormalizeOnDevice(t *testing.T) {
	for _, tasks := range []int{2, 1} {
		t.Run(fmt.Sprintf("tasks=%d", tasks), func(t *testing.T) {
			const thr = 0.05
			s := torch.NewScope()
			defer s.Close()
			cfg := SearchConfig{InChannels: 1, Classes: 3, Channels: 4, Layers: 2, Nodes: 3, Reductions: []int{1},
				StemMultiplier: 3, FeatureScaleRate: 1, Primitives: genotype.FewShot, Pairwise: true, AlphaInitStd: 1.5, Tasks: tasks}
			torch.ManualSeed(21)
			n, err := NewSearchNet(s, torch.CPU, cfg)
			if err != nil {
				t.Fatal(err)
			}
			x := s.Randn([]int64{3, int64(tasks), 8, 8}, torch.CPU, false)
			r := s.Randn([]int64{int64(tasks) * 3 * 3}, torch.CPU, false)
			run := func(device bool) (logits []float32, grads [][]float32, host *ArchWeights) {
				params := append(n.Weights(), n.Alphas()...)
				if err := torch.ZeroGrad(params, true); err != nil {
					t.Fatal(err)
				}
				var w *ArchWeights
				if device {
					w, err = n.NormalizeOnDevice(s, Softmax, s.Full(nil, 0.4, torch.CPU), nil)
				} else {
					w, err = n.Normalize(s, Softmax, 0.4)
				}
				if err != nil {
					t.Fatal(err)
				}
				y := n.Forward(&Ctx{S: s, Train: true, Tasks: int64(tasks)}, x, w, thr)
				if err := s.Sum(s.Mul(s.Flatten(y, 0, -1), r)).Backward(); err != nil {
					t.Fatal(err)
				}
				if logits, err = s.Flatten(y, 0, -1).Float32s(); err != nil {
					t.Fatal(err)
				}
				for _, p := range params {
					g := s.Grad(p)
					if g == nil {
						grads = append(grads, nil)
						continue
					}
					v, err := g.Float32s()
					if err != nil {
						t.Fatal(err)
					}
					grads = append(grads, v)
				}
				return logits, grads, w
			}
			wantL, wantG, hostW := run(false)
			gotL, gotG, _ := run(true)
			// The alphas prune some op in some task and some pair (AlphaInitStd 1.5, T 0.4).
			pruned := 0
			for _, h := range append(append([][]float32{}, hostW.Normal.HostOps...), hostW.Normal.HostPairs...) {
				for _, v := range h {
					if v <= thr {
						pruned++
					}
				}
			}
			if pruned == 0 {
				t.Fatal("nothing pruned: the test checks nothing")
			}
			for i := range wantL {
				if !closeTo(gotL[i], wantL[i]) {
					t.Fatalf("logit %d: %g on the device, %g with host pruning", i, gotL[i], wantL[i])
				}
			}
			nilToZero := 0
			for p := range wantG {
				if wantG[p] == nil {
					if gotG[p] == nil {
						continue
					}
					for _, v := range gotG[p] {
						if v != 0 {
							t.Fatalf("parameter %d: no gradient with host pruning, %g on the device", p, v)
						}
					}
					nilToZero++
					continue
				}
				for k := range wantG[p] {
					if !closeTo(gotG[p][k], wantG[p][k]) {
						t.Fatalf("parameter %d gradient %d: %g on the device, %g with host pruning", p, k, gotG[p][k], wantG[p][k])
					}
				}
			}
			if nilToZero == 0 {
				t.Error("no op pruned in every task: the zero-gradient case is not covered")
			}
		})
	}
}

// TestBatchedSearchNetPointwise runs TestBatchedSearchNetMatchesSingle again with the 1x1
// convolutions computed the other way than by default: as matrix products on the CPU
// (METANAS_POINTWISE=matmul, CUDA's default) and, with a CUDA device, as convolutions there
// (=conv); torch's TestConv2dPointwise checks the products against hand-computed sums.
func TestBatchedSearchNetPointwise(t *testing.T) {
	if os.Getenv("METANAS_POINTWISE") != "" {
		t.Skip("this process sets METANAS_POINTWISE")
	}
	envs := []string{"METANAS_POINTWISE=matmul"}
	if torch.CUDAAvailable() {
		envs = append(envs, "METANAS_POINTWISE=conv")
	}
	for _, e := range envs {
		t.Run(e, func(t *testing.T) {
			testutil.RerunWith(t, []string{e}, "^TestBatchedSearchNetMatchesSingle$", "TestBatchedSearchNetMatchesSingle")
		})
	}
}

// TestBatchedSearchNetBranchStreams runs TestBatchedSearchNetMatchesSingle again with
// METANAS_BRANCH_STREAMS=4: on CUDA the ops of each node go to four streams (on the CPU
// only the ReLUs move ahead of the ops).
func TestBatchedSearchNetBranchStreams(t *testing.T) {
	if torch.BranchStreams() > 1 {
		t.Skip("this process already runs branch streams")
	}
	testutil.RerunWith(t, []string{"METANAS_BRANCH_STREAMS=4"}, "^TestBatchedSearchNetMatchesSingle$",
		"TestBatchedSearchNetMatchesSingle")
}

// TestBatchedSearchNetNodeBatchNorm runs TestBatchedSearchNetMatchesSingle again with
// METANAS_NODE_BATCH_NORM=1, where the batched network normalises each node's tail-norm
// ops with one batch norm on the CPU too (single networks keep theirs): logits, gradients,
// running statistics and evaluation logits must still match; TestNormalizeOnDevice, where
// every op runs (one batch norm over all of a node's members) or the host prunes (a
// subset), must agree; and TestNodeBatchNormGroups checks the grouping and that both paths
// ran. With a CUDA device it also runs TestBatchedSearchNetMatchesSingle with =0, where
// CUDA's batched networks keep a batch norm per op (their default groups them).
func TestBatchedSearchNetNodeBatchNorm(t *testing.T) {
	if os.Getenv("METANAS_NODE_BATCH_NORM") != "" {
		t.Skip("this process sets METANAS_NODE_BATCH_NORM")
	}
	t.Run("on", func(t *testing.T) {
		testutil.RerunWith(t, []string{"METANAS_NODE_BATCH_NORM=1"},
			"^(TestBatchedSearchNetMatchesSingle|TestNormalizeOnDevice|TestNodeBatchNormGroups)$",
			"TestBatchedSearchNetMatchesSingle", "TestNormalizeOnDevice", "TestNodeBatchNormGroups")
	})
	if torch.CUDAAvailable() {
		t.Run("off", func(t *testing.T) {
			testutil.RerunWith(t, []string{"METANAS_NODE_BATCH_NORM=0"}, "^TestBatchedSearchNetMatchesSingle$",
				"TestBatchedSearchNetMatchesSingle")
		})
	}
}

// TestBatchedSearchNetNodeRecompute reruns, with METANAS_NODE_RECOMPUTE=1 and the node
// batch norm on (also with CUDA's other switches), the batched network against single
// networks (logits, gradients, running statistics) and the device's pruning against the
// host's: the node sums that normalise their members themselves must compute the same.
// With a CUDA device the first rerun runs there too.
func TestBatchedSearchNetNodeRecompute(t *testing.T) {
	if os.Getenv("METANAS_NODE_RECOMPUTE") != "" {
		t.Skip("this process sets METANAS_NODE_RECOMPUTE")
	}
	t.Run("on", func(t *testing.T) {
		testutil.RerunWith(t, []string{"METANAS_NODE_RECOMPUTE=1", "METANAS_NODE_BATCH_NORM=1"},
			"^(TestBatchedSearchNetMatchesSingle|TestNormalizeOnDevice|TestNodeRecomputeSetting)$",
			"TestBatchedSearchNetMatchesSingle", "TestNormalizeOnDevice", "TestNodeRecomputeSetting")
	})
	t.Run("with CUDA's switches", func(t *testing.T) {
		testutil.RerunWith(t, []string{"METANAS_NODE_RECOMPUTE=1", "METANAS_NODE_BATCH_NORM=1", "METANAS_STATE_FUSION=1",
			"METANAS_POINTWISE=matmul", "METANAS_FACTORIZED_REDUCE=patch"},
			"^(TestBatchedSearchNetMatchesSingle|TestNormalizeOnDevice)$",
			"TestBatchedSearchNetMatchesSingle", "TestNormalizeOnDevice")
	})
}

// TestBatchedSearchNetNodeFused reruns, with METANAS_NODE_FUSED=1 and the node batch norm
// on (also with CUDA's other switches), the batched network against single networks
// (logits, gradients, running statistics) and the device's pruning against the host's:
// the fused node batch norm and sum (torch.NodeNormSum) must compute what the unfused
// calls and the ops' own batch norms compute; TestNodeFusedRan checks that it ran. With a
// CUDA device the reruns run there too.
func TestBatchedSearchNetNodeFused(t *testing.T) {
	if os.Getenv("METANAS_NODE_FUSED") != "" {
		t.Skip("this process sets METANAS_NODE_FUSED")
	}
	tests := []string{"TestBatchedSearchNetMatchesSingle", "TestNormalizeOnDevice", "TestNodeFusedSetting", "TestNodeFusedRan"}
	pattern := "^(" + strings.Join(tests, "|") + ")$"
	t.Run("on", func(t *testing.T) {
		testutil.RerunWith(t, []string{"METANAS_NODE_FUSED=1", "METANAS_NODE_BATCH_NORM=1"}, pattern, tests...)
	})
	t.Run("with CUDA's switches", func(t *testing.T) {
		testutil.RerunWith(t, []string{"METANAS_NODE_FUSED=1", "METANAS_NODE_BATCH_NORM=1", "METANAS_STATE_FUSION=1",
			"METANAS_POINTWISE=matmul", "METANAS_FACTORIZED_REDUCE=patch"}, pattern, tests...)
	})
}

// TestNodeFusedSetting: METANAS_NODE_FUSED is on only where set to 1.
func TestNodeFusedSetting(t *testing.T) {
	want := map[string]bool{"": false, "1": true, "0": false, "yes": false}
	testutil.CheckSetting(t, "METANAS_NODE_FUSED", "TestNodeFusedSetting", want, "NodeFused()", NodeFused)
}

// TestNodeFusedRan: where METANAS_NODE_FUSED=1 and the node batch norm are on, the tests
// before it in this process summed nodes with the fused call, over every member and over
// subsets, fanned states out to their readers (RepeatStatesFan), ran sep_conv's middle
// batch norms and ReLUs fused (NormReLU) and handed the stem's and cells' outputs to the
// later cells through ReLU fans; otherwise none of them ran.
func TestNodeFusedRan(t *testing.T) {
	n, fans, nr, rf := nodeFusedCalls.Load(), stateFans.Load(), normReLUs.Load(), reluFans.Load()
	if want := NodeFused(); (fans > 0) != want || (nr > 0) != want || (rf > 0) != want {
		t.Errorf("%d fanned repetitions, %d fused batch norm + ReLUs, %d ReLU fans of cell inputs; want some: %v",
			fans, nr, rf, want)
	}
	if !NodeFused() || !NodeBatchNorm(torch.CPU) {
		if n != 0 {
			t.Fatalf("%d fused node sums with the switch off", n)
		}
		return
	}
	if n == 0 || nodeNormCalls[0].Load() == 0 || nodeNormCalls[1].Load() == 0 {
		t.Fatalf("%d fused node sums; node batch norms over every member %d, over a subset %d", n,
			nodeNormCalls[0].Load(), nodeNormCalls[1].Load())
	}
}

// TestNodeRecomputeSetting: METANAS_NODE_RECOMPUTE is on only where set to 1.
func TestNodeRecomputeSetting(t *testing.T) {
	want := map[string]bool{"": false, "1": true, "0": false, "yes": false}
	testutil.CheckSetting(t, "METANAS_NODE_RECOMPUTE", "TestNodeRecomputeSetting", want, "NodeRecompute()", NodeRecompute)
}

// TestNodeBatchNormSetting checks METANAS_NODE_BATCH_NORM's meaning for the CPU and CUDA:
// unset, grouped on CUDA only; 1, everywhere; 0, nowhere; another value is reported and
// read as unset. The process reads the setting once, so each value runs in a child process.
func TestNodeBatchNormSetting(t *testing.T) {
	want := map[string][2]bool{"": {false, true}, "1": {true, true}, "0": {false, false}, "yes": {false, true}}
	testutil.CheckSetting(t, "METANAS_NODE_BATCH_NORM", "TestNodeBatchNormSetting", want, "grouped on (CPU, CUDA)", func() [2]bool { return [2]bool{NodeBatchNorm(torch.CPU), NodeBatchNorm(torch.Device{CUDA: true})} })
}

// TestNodeBatchNormGroups: with METANAS_NODE_BATCH_NORM=1 a batched CPU search network groups,
// per node, every op that ends in a batch norm (the pools, convolutions and, at stride 2,
// the factorized reduce of skip_connect: 6 or 7 of the 7 few-shot ops per edge), its
// registry holds views of the node's blocks, and the earlier tests of this process used
// both the whole-node and the subset path; without the switch nothing is grouped.
func TestNodeBatchNormGroups(t *testing.T) {
	const T = 3
	s := torch.NewScope()
	defer s.Close()
	cfg := SearchConfig{InChannels: 1, Classes: 2, Channels: 4, Layers: 2, Nodes: 2, Reductions: []int{1},
		StemMultiplier: 3, FeatureScaleRate: 1, Primitives: genotype.FewShot, Pairwise: true, AlphaInitStd: 1e-3, Tasks: T}
	n, err := NewSearchNet(s, torch.CPU, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !NodeBatchNorm(torch.CPU) {
		for i, c := range n.cells {
			if c.norms != nil {
				t.Fatalf("cell %d grouped its batch norms with the switch off", i)
			}
		}
		return
	}
	want := [][]int{{12, 18}, {14, 20}} // normal: 6 per edge; reduction: 7 per stride-2 edge
	for ci, c := range n.cells {
		for i, g := range c.norms {
			if g == nil || len(g.members) != want[ci][i] {
				t.Fatalf("cell %d node %d: %v members, want %d", ci, i, g, want[ci][i])
			}
			if sh := g.mean.MustShape(); len(sh) != 3 || sh[0] != T || sh[1] != int64(want[ci][i]) || sh[2] != 4 {
				t.Fatalf("cell %d node %d: block %v", ci, i, sh)
			}
		}
	}
	// A member's view and the registry entry are one tensor: a fill through the registry
	// shows in the block.
	g := n.cells[1].norms[1]
	e, ok := n.Reg.Lookup("net.cells.1.dag.1.2._ops.6.0.net.3.running_var") // dil_conv_3x3 of input 2
	if !ok {
		t.Fatal("no running_var entry for the dil_conv of node 1, input 2")
	}
	if e.Tensor != g.members[len(g.members)-1].RunVar {
		t.Fatal("the registry entry is not the member's view")
	}
	if err := e.Tensor.Fill_(7); err != nil {
		t.Fatal(err)
	}
	block := hostValues(t, s, g.vars) // [T, members, 4]: the last member's 4 values per task
	m := len(g.members)
	for tk := 0; tk < T; tk++ {
		for k := 0; k < m; k++ {
			for ch := 0; ch < 4; ch++ {
				want := float32(1)
				if k == m-1 {
					want = 7
				}
				if v := block[(tk*m+k)*4+ch]; v != want {
					t.Fatalf("block task %d member %d channel %d = %g, want %g", tk, k, ch, v, want)
				}
			}
		}
	}
	if nodeNormCalls[0].Load() == 0 || nodeNormCalls[1].Load() == 0 {
		t.Errorf("node batch norms over every member %d, over a subset %d: the earlier tests should use both",
			nodeNormCalls[0].Load(), nodeNormCalls[1].Load())
	}
}

// TestBatchedForwardReturnsOpError: when an op of a batched network's forward pass fails
// (here the stem, given 2 input channels per task instead of 1), Forward returns and the
// scope holds the op's error, instead of panicking on the failed output's shape.
func TestBatchedForwardReturnsOpError(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	cfg := SearchConfig{InChannels: 1, Classes: 3, Channels: 4, Layers: 2, Nodes: 2, Reductions: []int{1},
		StemMultiplier: 3, FeatureScaleRate: 1, Primitives: genotype.FewShot, Pairwise: true, AlphaInitStd: 1e-3, Tasks: 2}
	n, err := NewSearchNet(s, torch.CPU, cfg)
	if err != nil {
		t.Fatal(err)
	}
	w, err := n.Normalize(s, Softmax, 1)
	if err != nil {
		t.Fatal(err)
	}
	x := s.Randn([]int64{3, 4, 8, 8}, torch.CPU, false) // 2 tasks x 2 channels
	n.Forward(&Ctx{S: s, Train: true, Tasks: 2}, x, w, 0.01)
	if err := s.Err(); err == nil || !strings.Contains(err.Error(), "conv") {
		t.Fatalf("scope error %v, want the stem convolution's", err)
	}
}

// TestFactorizedReducePatch runs the PyTorch parity test and
// TestBatchedSearchNetMatchesSingle again with METANAS_FACTORIZED_REDUCE=patch (CUDA's
// default) on the CPU, where the networks' FactorizedReduce ops of even inputs (28x28 and
// 14x14 in both tests) then run as one convolution each, and checks in that process that
// they do: one convolution forward, where the halves take two.
func TestFactorizedReducePatch(t *testing.T) {
	switch os.Getenv("METANAS_FACTORIZED_REDUCE") {
	case "":
		testutil.RerunWith(t, []string{"METANAS_FACTORIZED_REDUCE=patch"},
			"^(TestSearchNetParityWithPyTorch|TestBatchedSearchNetMatchesSingle|TestFactorizedReducePatch)$",
			"TestBatchedSearchNetMatchesSingle", "TestFactorizedReducePatch")
		return
	case "patch":
	default:
		t.Skip("METANAS_FACTORIZED_REDUCE is set to another value in this process")
	}
	if !torch.FactorizedReducePatch(torch.CPU) {
		t.Fatal("METANAS_FACTORIZED_REDUCE=patch is not in effect")
	}
	s := torch.NewScope()
	defer s.Close()
	r := NewRegistry(s, torch.CPU)
	op, err := NewOp(r, "skip_connect", 4, 2, false)
	if err != nil {
		t.Fatal(err)
	}
	torch.ProfileOps()
	if _, err := torch.OpProfile(true); err != nil {
		t.Fatal(err)
	}
	y := op.Forward(&Ctx{S: s, Train: true}, s.Randn([]int64{2, 4, 6, 6}, torch.CPU, false))
	if sh := y.MustShape(); len(sh) != 4 || sh[1] != 4 || sh[2] != 3 || sh[3] != 3 {
		t.Fatalf("output shape %v, want [2 4 3 3]", sh)
	}
	prof, err := torch.OpProfile(true)
	if err != nil {
		t.Fatal(err)
	}
	convs := torch.CallsOf(prof, "aten::convolution")
	if convs != 1 {
		t.Errorf("a FactorizedReduce of a 6x6 input ran %d convolutions, want 1", convs)
	}
}

// TestNodeCoefsShared: in a batched network with two normal cells, the second reuses the
// first's node weights: a forward pass computes them for 6 nodes instead of 9 (each one
// threshold test of the op weights and one of the pair weights: 12 aten::gt calls instead
// of 18), with the same logits and alpha gradients as when every cell computes its own.
func TestNodeCoefsShared(t *testing.T) {
	cfg := SearchConfig{InChannels: 1, Classes: 3, Channels: 4, Layers: 3, Nodes: 3, Reductions: []int{1},
		StemMultiplier: 3, FeatureScaleRate: 1, Primitives: genotype.FewShot, Pairwise: true, AlphaInitStd: 1.5, Tasks: 2}
	s := torch.NewScope()
	defer s.Close()
	torch.ManualSeed(3)
	n, err := NewSearchNet(s, torch.CPU, cfg)
	if err != nil {
		t.Fatal(err)
	}
	x := s.Randn([]int64{3, 2, 6, 6}, torch.CPU, false)
	run := func(share bool) (logits []float32, grads [][]float32, gts int64) {
		t.Helper()
		cs, y, fwd, _ := profiledPass(t, s, n, x, share, 0.05)
		defer cs.Close()
		for _, a := range n.Alphas() {
			grads = append(grads, hostValues(t, cs, cs.Grad(a)))
		}
		return hostValues(t, cs, y), grads, torch.CallsOf(fwd, "aten::gt")
	}
	y0, g0, gt0 := run(false)
	y1, g1, gt1 := run(true)
	if gt0 != 18 || gt1 != 12 {
		t.Errorf("threshold tests per forward: %d separate, %d shared; want 18 and 12", gt0, gt1)
	}
	for i := range y0 {
		if y0[i] != y1[i] {
			t.Fatalf("logit %d: %g shared, %g separate", i, y1[i], y0[i])
		}
	}
	for a := range g0 {
		for i := range g0[a] {
			if !closeTo(g1[a][i], g0[a][i]) {
				t.Fatalf("alpha %d gradient %d: %g shared, %g separate", a, i, g1[a][i], g0[a][i])
			}
		}
	}
}

// profiledPass runs a training forward pass of the batched network n (2 tasks) on x at
// threshold thr, with node weights shared between the cells of a type or not, and the
// backward pass of sum(y*y), from gradients set to none; it returns the pass's scope (the
// caller closes it), the logits and the op profiles of the forward and the backward pass.
func profiledPass(t *testing.T, s *torch.Scope, n *SearchNet, x *torch.Tensor, share bool, thr float64) (cs *torch.Scope, y *torch.Tensor, fwd, bwd []torch.OpStat) {
	t.Helper()
	defer func(old bool) { shareNodeCoefs = old }(shareNodeCoefs)
	shareNodeCoefs = share
	if err := torch.ZeroGrad(append(n.Weights(), n.Alphas()...), true); err != nil {
		t.Fatal(err)
	}
	cs = s.Child()
	w, err := n.Normalize(cs, Softmax, 1)
	if err != nil {
		t.Fatal(err)
	}
	torch.ProfileOps()
	if _, err := torch.OpProfile(true); err != nil {
		t.Fatal(err)
	}
	y = n.Forward(&Ctx{S: cs, Train: true, Tasks: 2}, x, w, thr)
	if fwd, err = torch.OpProfile(true); err != nil {
		t.Fatal(err)
	}
	if err := cs.Sum(cs.Mul(y, y)).Backward(); err != nil {
		t.Fatal(err)
	}
	if bwd, err = torch.OpProfile(true); err != nil {
		t.Fatal(err)
	}
	return cs, y, fwd, bwd
}

// viewOps are ATen calls that launch no kernel on a GPU (views, reshapes that copy
// nothing, empties, same-device conversions); kernelCalls counts the others.
var viewOps = map[string]bool{"aten::view": true, "aten::reshape": true, "aten::_reshape_alias": true,
	"aten::as_strided": true, "aten::select": true, "aten::slice": true, "aten::narrow": true, "aten::unsqueeze": true,
	"aten::expand": true, "aten::transpose": true, "aten::permute": true, "aten::empty": true, "aten::empty_strided": true,
	"aten::empty_like": true, "aten::resolve_conj": true, "aten::to": true, "aten::_to_copy": true, "aten::detach": true,
	"aten::t": true, "aten::unflatten": true, "aten::_unsafe_view": true, "aten::view_as": true, "aten::split": true,
	"aten::split_with_sizes": true, "aten::squeeze": true, "aten::alias": true, "aten::set_": true}

func kernelCalls(prof []torch.OpStat) int64 {
	var n int64
	for _, st := range prof {
		if strings.HasPrefix(st.Name, "aten::") && !viewOps[st.Name] {
			n += st.Calls
		}
	}
	return n
}

// TestBatchedPassOpCount counts, with CUDA's switches on the CPU (in a child process), the
// ATen calls that are kernels on a GPU in a forward and backward pass of a batched network
// of og_metanas's shape (4 cells, reductions 1 and 3, 3 nodes, pair weights; the count
// does not depend on sizes or tasks): at most 2,293 (BENCHMARKS.md, "Node weights once per
// cell type", 2,505, then "The fused batch norm + ReLU and the ReLU fans of cell inputs":
// reduction cells group skip_connect), and sharing node weights between the cells of a type saves at least 150. It
// also bounds the bytes the pass's ATen calls (and the shim's own kernels) read and write:
// maxPassBytes, and maxFusedPassBytes with METANAS_NODE_FUSED=1 (run as a second child).
func TestBatchedPassOpCount(t *testing.T) {
	env := []string{"METANAS_NODE_BATCH_NORM=1", "METANAS_POINTWISE=matmul", "METANAS_FACTORIZED_REDUCE=patch",
		"METANAS_FAST_CPU_OPS=0", "METANAS_CPU_POOL=0", "METANAS_STATE_FUSION=1"}
	if os.Getenv("METANAS_FAST_CPU_OPS") != "0" {
		for _, fused := range []string{"0", "1"} {
			t.Run("METANAS_NODE_FUSED="+fused, func(t *testing.T) {
				testutil.RerunWith(t, append(env, "METANAS_NODE_FUSED="+fused), "^TestBatchedPassOpCount$",
					"TestBatchedPassOpCount")
			})
		}
		return
	}
	for _, e := range env {
		if kv := strings.SplitN(e, "=", 2); os.Getenv(kv[0]) != kv[1] {
			t.Skipf("this process sets %s=%s", kv[0], os.Getenv(kv[0]))
		}
	}
	cfg := SearchConfig{InChannels: 1, Classes: 3, Channels: 4, Layers: 4, Nodes: 3, Reductions: []int{1, 3},
		StemMultiplier: 3, FeatureScaleRate: 1, Primitives: genotype.FewShot, Pairwise: true, AlphaInitStd: 1.5, Tasks: 2}
	s := torch.NewScope()
	defer s.Close()
	n, err := NewSearchNet(s, torch.CPU, cfg)
	if err != nil {
		t.Fatal(err)
	}
	x := s.Randn([]int64{3, 2, 8, 8}, torch.CPU, false)
	torch.ProfileBytes()
	// count returns the pass's kernel-launching calls and the bytes its ATen calls moved.
	count := func(share bool) (calls, bytes int64) {
		t.Helper()
		if _, err := torch.BytesProfile(true); err != nil {
			t.Fatal(err)
		}
		cs, _, fwd, bwd := profiledPass(t, s, n, x, share, 0)
		cs.Close()
		prof, err := torch.BytesProfile(true)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range prof {
			bytes += p.Bytes
		}
		return kernelCalls(fwd) + kernelCalls(bwd), bytes
	}
	separate, _ := count(false)
	shared, bytes := count(true)
	t.Logf("kernel-launching ATen calls per forward and backward pass: %d, %d with node weights shared; %d bytes read and written", separate, shared, bytes)
	if shared > 2293 || separate-shared < 150 {
		t.Errorf("%d calls (%d without sharing node weights), want at most 2,293 and at least 150 fewer", shared, separate)
	}
	// The memory-traffic floor of this pass (torch.ProfileBytes; BENCHMARKS.md, "Memory
	// traffic per batched step"): a change that copies activations more raises it.
	limit := int64(maxPassBytes)
	if NodeFused() {
		limit = maxFusedPassBytes
	}
	if bytes > limit {
		t.Errorf("the pass read and wrote %d bytes, want at most %d", bytes, limit)
	}
}

// maxPassBytes bounds TestBatchedPassOpCount's traffic: its count with Debian's LibTorch
// 1.13 on 2026-12-07 (the same on every run; the sizes are the test's, not og_metanas's;
// 18,667,064 before the reduction cells grouped skip_connect).
const maxPassBytes = 18_667_576

// maxFusedPassBytes is maxPassBytes with METANAS_NODE_FUSED=1, counted alike (15,252,824
// before the fans of states, pools and repeated ReLUs and the split pieces' gradient
// buffers; 13,338,584 before the fused batch norm + ReLU, the ReLU fans of cell inputs,
// one-edge groups and skip_connect's groups).
const maxFusedPassBytes = 12_463_320
