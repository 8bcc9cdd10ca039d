package learn

import (
	"runtime"
	"strings"
	"testing"

	"github.com/metanas-go/metanas/internal/testutil"
	"github.com/metanas-go/metanas/internal/testutil/torchtest"
	"github.com/metanas-go/metanas/torch"
)

// graphAdapts are graphRun's adaptations: warm-up (alphas fixed) or search, and whether
// the meta alphas first change (values only, or so that one op of every edge of the first
// normal node dominates and the others fall below the prune threshold in every task).
var graphAdapts = []struct {
	search       bool
	perturb, cut bool
}{
	{}, {perturb: true}, {cut: true}, {search: true}, {search: true}, {},
}

// graphRun adapts batches of tasks (graphAdapts) on a batched network with the given graph
// mode and on a reference network in mode ref, from the same meta-model and seeds, and
// compares the adapted weights, alphas, running statistics and results after every
// adaptation. Against a reference without graphs (graphsOff) a search differs where the
// graphed network prunes on the device (an op pruned in every task still runs: its batch
// norm statistics move and it draws drop-path masks), so there a search's running
// statistics are not compared, nor anything of a search with drop-path. Support sets hold
// 6 images, in minibatches of batch. check runs after each adaptation of the graphed
// network.
func graphRun(t *testing.T, dev torch.Device, mode, ref graphMode, dropPath, batch string, check func(i int, b *BatchWorker)) {
	cfg := tinyConfig(t)
	for _, kv := range []string{"model.drop_path=" + dropPath, "meta.meta_batch=2", "task.grad_clip=0.5", "task.batch_size=" + batch} {
		if err := cfg.Set(kv); err != nil {
			t.Fatal(err)
		}
	}
	const T = 2
	tasks := tinyTasks(t, cfg, 3*T)
	ts := Settings(cfg, false)
	s := torch.NewScope()
	defer s.Close()
	torch.ManualSeed(5)
	meta, err := NewModel(s, dev, cfg)
	if err != nil {
		t.Fatal(err)
	}
	plain := newTestBatch(t, cfg, dev, T)
	plain.graphs = ref
	graphed := newTestBatch(t, cfg, dev, T)
	if mode == graphsCUDA {
		if err := graphed.UseGraphs(true); err != nil {
			t.Fatal(err)
		}
	} else {
		graphed.graphs = mode
	}
	set := func(a *torch.Tensor, f func(k int) float32) {
		v := make([]float32, a.Numel())
		for k := range v {
			v[k] = f(k)
		}
		if err := a.Copy_(s.FromFloat32(v, a.MustShape(), dev)); err != nil {
			t.Fatal(err)
		}
	}
	K := len(meta.Search.Cfg.Primitives)
	for i, ad := range graphAdapts {
		if ad.perturb {
			set(meta.Search.AlphaReduce[0], func(k int) float32 { return float32(k%5) * 0.3 })
		}
		if ad.cut {
			set(meta.Search.AlphaNormal[0], func(k int) float32 { return 12 * float32(b2f(k%K == 4)) })
		}
		batch := tasks[(i%3)*T : (i%3+1)*T]
		var want, got [][]float32
		var wantRes, gotRes []AdaptResult
		for _, b := range []*BatchWorker{plain, graphed} {
			if err := b.Load(meta); err != nil {
				t.Fatal(err)
			}
			b.SeedTask(uint64(40 + i))
			res, err := b.Adapt(batch, ts, ad.search)
			if err != nil {
				t.Fatalf("adaptation %d: %v", i, err)
			}
			ps := append(b.Model.Weights(), b.Model.Alphas()...)
			if !ad.search || ref != graphsOff {
				ps = append(ps, b.Model.Reg.RunningStats()...)
			}
			if b == plain {
				want, wantRes = host(t, ps), res
			} else {
				got, gotRes = host(t, ps), res
			}
		}
		check(i, graphed)
		if ad.search && ref == graphsOff && dropPath != "0" {
			continue
		}
		for k := range gotRes {
			if !closeTo(float32(gotRes[k].Loss), float32(wantRes[k].Loss), 1e-5) || gotRes[k].Accuracy != wantRes[k].Accuracy {
				t.Errorf("adaptation %d task %d: loss %g accuracy %g, without graphs %g %g", i, k, gotRes[k].Loss, gotRes[k].Accuracy, wantRes[k].Loss, wantRes[k].Accuracy)
			}
		}
		for p := range got {
			for k := range got[p] {
				if !closeTo(got[p][k], want[p][k], 1e-4) {
					t.Fatalf("adaptation %d tensor %d element %d: %g, without graphs %g", i, p, k, got[p][k], want[p][k])
				}
			}
		}
	}
}

func b2f(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestBatchWorkerStaticSteps runs tasks on the static buffers that CUDA graphs capture
// (static inputs and accumulators, Adam with device steps, fixed weights copied into
// place, search weights normalised and pruned on the device), eagerly, and checks that
// they train as the plain batched network; that the fixed-alpha buffers are reused while
// the active ops stay and rebuilt when they change, the search buffers reused from one
// search to the next; that an adaptation frees the buffers of the kind it does not use;
// with a batch size that divides the support set and with one that leaves a smaller last
// minibatch (its own buffers).
func TestBatchWorkerStaticSteps(t *testing.T) {
	for _, drop := range []string{"0", "0.2"} {
		for _, batch := range []string{"3", "4"} {
			t.Run("drop_path="+drop+",batch="+batch, func(t *testing.T) { staticSteps(t, drop, batch) })
		}
	}
	cfg := tinyConfig(t)
	b := newTestBatch(t, cfg, torch.CPU, 2)
	if err := b.UseGraphs(true); err == nil || !strings.Contains(err.Error(), "CUDA") {
		t.Errorf("graphs on the CPU: %v", err)
	}
}

func staticSteps(t *testing.T, drop, batch string) {
	var prevFixed, prevArch *stepGraph
	graphRun(t, torch.CPU, graphsStatic, graphsOff, drop, batch, func(i int, b *BatchWorker) {
		ad := graphAdapts[i]
		remainder := batch == "4" // 6 images: minibatches of 4 and 2
		switch {
		case remainder && ad.search && b.archR == nil:
			t.Errorf("adaptation %d (search): no buffers for the last minibatch", i)
		case remainder && !ad.search && b.fixedR == nil:
			t.Errorf("adaptation %d (warm-up): no buffers for the last minibatch", i)
		case !remainder && (b.fixedR != nil || b.archR != nil):
			t.Errorf("adaptation %d: buffers for a last minibatch that does not exist", i)
		case ad.search && b.archG == nil:
			t.Errorf("adaptation %d (search): no static buffers", i)
		case !ad.search && b.fixedG == nil:
			t.Errorf("adaptation %d (warm-up): no static buffers", i)
		case ad.perturb && b.fixedG != prevFixed:
			t.Errorf("adaptation %d: buffers rebuilt for the same active ops", i)
		case ad.cut && b.fixedG == prevFixed:
			t.Errorf("adaptation %d: buffers kept although the active ops changed", i)
		case i == 4 && b.archG != prevArch:
			t.Errorf("adaptation %d: search buffers rebuilt for the same settings", i)
		case ad.search && (b.fixedG != nil || b.fixedR != nil):
			t.Errorf("adaptation %d (search, every step adapts the alphas): fixed-alpha buffers kept", i)
		case !ad.search && (b.archG != nil || b.archR != nil):
			t.Errorf("adaptation %d (warm-up): search buffers kept", i)
		}
		if b.Graphed() || b.GraphReplays != 0 {
			t.Errorf("adaptation %d: a graph on the CPU", i)
		}
		prevFixed, prevArch = b.fixedG, b.archG
	})
}

// TestCUDABatchWorkerGraphs replays captured CUDA graphs of warm-up and search steps and
// checks that they train as the same steps run eagerly on the static buffers, with and
// without drop-path, and with minibatches of 4 and 2. With 2 task steps of 2 minibatches,
// a graph of each minibatch shape meets its capture (its third step) in the adaptation
// after it was built, so with two shapes the graphs are checked by their replays, not
// after every adaptation.
func TestCUDABatchWorkerGraphs(t *testing.T) {
	if !torch.CUDAAvailable() {
		t.Skip("no CUDA device (or LibTorch built without CUDA)")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for _, c := range []struct{ drop, batch string }{{"0", "3"}, {"0.2", "3"}, {"0.2", "4"}} {
		t.Run("drop_path="+c.drop+",batch="+c.batch, func(t *testing.T) {
			syncs := torch.HostSyncs()
			var replays int64
			graphRun(t, torch.Device{CUDA: true}, graphsCUDA, graphsStatic, c.drop, c.batch, func(i int, b *BatchWorker) {
				if b.GraphErr != nil {
					t.Fatalf("adaptation %d: %v", i, b.GraphErr)
				}
				if !b.Graphed() && c.batch == "3" {
					t.Errorf("adaptation %d: no graph captured", i)
				}
				if i == 1 {
					// Both networks' second adaptation: the graphed one replays every step.
					t.Logf("host synchronisations over two adaptations of each network: %d", torch.HostSyncs()-syncs)
				}
				replays = b.GraphReplays
			})
			if replays == 0 {
				t.Errorf("no step replayed")
			}
		})
	}
}

// TestBatchWorkerGraphSkip checks that an adaptation that cannot use graphs although they
// are on says why (Gumbel-softmax), and that one that can (a support set of whole
// minibatches or not), or one with graphs off, says nothing.
func TestBatchWorkerGraphSkip(t *testing.T) {
	for _, c := range []struct {
		norm string
		mode graphMode
		want string
	}{
		{"gumbel_softmax", graphsStatic, "Gumbel-softmax"},
		{"softmax", graphsStatic, ""},
		{"gumbel_softmax", graphsOff, ""},
	} {
		cfg := tinyConfig(t)
		if err := cfg.Set("arch.normalizer=" + c.norm); err != nil {
			t.Fatal(err)
		}
		b := newTestBatch(t, cfg, torch.CPU, 2)
		b.graphs = c.mode
		if _, err := b.Adapt(tinyTasks(t, cfg, 2), Settings(cfg, false), false); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.GraphSkip, c.want) || (c.want == "") != (b.GraphSkip == "") {
			t.Errorf("normalizer %s, graph mode %d: GraphSkip %q, want %q", c.norm, c.mode, b.GraphSkip, c.want)
		}
	}
}

// TestBatchWorkerMetaTestKeepsBoth checks that a meta-test adaptation (alpha steps, then
// fixed-alpha steps) keeps the buffers of both kinds, and that a search adaptation after
// it frees the fixed-alpha ones.
func TestBatchWorkerMetaTestKeepsBoth(t *testing.T) {
	cfg := tinyConfig(t)
	b := newTestBatch(t, cfg, torch.CPU, 2)
	b.graphs = graphsStatic
	tasks := tinyTasks(t, cfg, 2)
	test := Settings(cfg, true)
	if test.ArchSteps <= 0 || test.ArchSteps >= test.Steps {
		t.Fatalf("test setup: meta-test settings with %d of %d steps adapting the alphas", test.ArchSteps, test.Steps)
	}
	if _, err := b.Adapt(tasks, test, true); err != nil {
		t.Fatal(err)
	}
	if b.fixedG == nil || b.archG == nil {
		t.Errorf("after a meta-test adaptation: fixed-alpha buffers %v, search buffers %v; want both", b.fixedG != nil, b.archG != nil)
	}
	if _, err := b.Adapt(tasks, Settings(cfg, false), true); err != nil {
		t.Fatal(err)
	}
	if b.fixedG != nil || b.archG == nil {
		t.Errorf("after a search adaptation: fixed-alpha buffers %v, search buffers %v; want search only", b.fixedG != nil, b.archG != nil)
	}
}

// TestCUDABatchWorkerGraphsBranchStreams runs TestCUDABatchWorkerGraphs again with METANAS_BRANCH_STREAMS=4:
// the batch worker's eager and replayed steps with the ops of each search node on four CUDA streams, captured across them.
func TestCUDABatchWorkerGraphsBranchStreams(t *testing.T) {
	torchtest.RerunCUDAWithBranchStreams(t, "TestCUDABatchWorkerGraphs")
}

// TestCUDABatchWorkerGraphsNodeBatchNormOff runs TestCUDABatchWorkerGraphs again with
// METANAS_NODE_BATCH_NORM=0: replayed steps with a batch norm per op (CUDA's default groups
// them per search node).
func TestCUDABatchWorkerGraphsNodeBatchNormOff(t *testing.T) {
	torchtest.RerunNodeBatchNormOther(t, "TestCUDABatchWorkerGraphs", true)
}

// TestCUDABatchWorkerGraphsOwnPools runs TestCUDABatchWorkerGraphs again with each graph in
// a memory pool of its own, alone and with branch streams (a diagnostic for the branch
// streams' failure under graphs on an H200).
func TestCUDABatchWorkerGraphsOwnPools(t *testing.T) {
	torchtest.RerunCUDAWithOwnGraphPools(t, "TestCUDABatchWorkerGraphs")
}

// TestCaptureReady: a graph is captured after captureAfter eager steps of its own, and
// only once the buffers of the adaptation's other minibatch shape ran as many or were
// captured, so that no shape's eager steps run beside another's reserved graph pool.
func TestCaptureReady(t *testing.T) {
	captured := &stepGraph{g: &torch.Graph{}}
	for _, c := range []struct {
		name  string
		eager int
		other *stepGraph
		want  bool
	}{
		{"one shape, first steps", captureAfter - 1, nil, false},
		{"one shape, enough steps", captureAfter, nil, true},
		{"other shape not run yet", captureAfter + 3, &stepGraph{}, false},
		{"other shape one step short", captureAfter + 1, &stepGraph{eager: captureAfter - 1}, false},
		{"both shapes ran enough", captureAfter, &stepGraph{eager: captureAfter}, true},
		{"other shape captured", captureAfter, captured, true},
		{"other ready, this one short", captureAfter - 1, &stepGraph{eager: captureAfter + 4}, false},
	} {
		if got := captureReady(&stepGraph{eager: c.eager}, c.other); got != c.want {
			t.Errorf("%s: captureReady = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestGraphWaitSetting: METANAS_GRAPH_WAIT unset or 1 makes graphs wait for both minibatch
// shapes, 0 not, and any other value keeps the default (reported on stderr); each value in
// a child process, as the setting is read once.
func TestGraphWaitSetting(t *testing.T) {
	want := map[string]bool{"": true, "1": true, "0": false, "no": true}
	testutil.CheckSetting(t, "METANAS_GRAPH_WAIT", "TestGraphWaitSetting", want, "graphWait()", graphWait)
}

// TestCUDABatchWorkerGraphsCaptureTogether: with two full minibatches and a smaller last
// one per task step, the graphs of both shapes are captured in the same step, once both
// ran their eager steps, never one while the other still runs eagerly (whose eager steps
// would then allocate beside the first graph's reserved pool): after every adaptation both
// or neither are captured, and both after the second.
func TestCUDABatchWorkerGraphsCaptureTogether(t *testing.T) {
	if !torch.CUDAAvailable() {
		t.Skip("no CUDA device (or LibTorch built without CUDA)")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cfg := tinyConfig(t)
	for _, kv := range []string{"data.train_shots=3", "task.batch_size=4", "task.steps=2", "model.drop_path=0"} {
		if err := cfg.Set(kv); err != nil {
			t.Fatal(err)
		}
	}
	b := newTestBatch(t, cfg, torch.Device{CUDA: true}, 2)
	if err := b.UseGraphs(true); err != nil {
		t.Fatal(err)
	}
	tasks := tinyTasks(t, cfg, 2)
	for i := 0; i < 3; i++ {
		if _, err := b.Adapt(tasks, Settings(cfg, false), false); err != nil {
			t.Fatal(err)
		}
		if b.GraphErr != nil {
			t.Fatalf("adaptation %d: %v", i, b.GraphErr)
		}
		if b.fixedG == nil || b.fixedR == nil {
			t.Fatalf("adaptation %d: buffers of the full minibatches %v, of the last %v; want both", i, b.fixedG != nil, b.fixedR != nil)
		}
		full, last := b.fixedG.g != nil, b.fixedR.g != nil
		if full != last || (i >= 1 && !full) {
			t.Errorf("after adaptation %d: full minibatches captured %v, last minibatch %v; want both (or neither before the second)", i, full, last)
		}
	}
}
