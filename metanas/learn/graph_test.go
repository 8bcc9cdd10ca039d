package learn

import (
	"runtime"
	"strings"
	"testing"

	"github.com/metanas-go/metanas/torch"
)

// graphRun adapts batches of tasks, warm-up and search, on a batched network with the
// given graph mode and on one without, from the same meta-model and seeds, and compares
// the adapted weights, alphas, running statistics and results after every adaptation. Its
// third adaptation runs on meta alphas that prune ops (the captured graph no longer fits),
// its fourth adapts the alphas (no graph), its fifth is warm-up again. check runs after
// each adaptation of the graphed network.
func graphRun(t *testing.T, dev torch.Device, mode graphMode, dropPath string, check func(i int, b *BatchWorker)) {
	cfg := tinyConfig(t)
	for _, kv := range []string{"model.drop_path=" + dropPath, "meta.meta_batch=2", "task.grad_clip=0.5", "task.batch_size=3"} {
		if err := cfg.Set(kv); err != nil {
			t.Fatal(err)
		}
	}
	const T = 2
	tasks := tinyTasks(t, cfg, 4*T)
	ts := Settings(cfg, false)
	s := torch.NewScope()
	defer s.Close()
	torch.ManualSeed(5)
	meta, err := NewModel(s, dev, cfg)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := NewBatchWorker(cfg, dev, T)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	graphed, err := NewBatchWorker(cfg, dev, T)
	if err != nil {
		t.Fatal(err)
	}
	defer graphed.Close()
	if mode == graphsCUDA {
		if err := graphed.UseGraphs(true); err != nil {
			t.Fatal(err)
		}
	} else {
		graphed.graphs = mode
	}
	for i, alphas := range []bool{false, false, false, true, false} {
		if i == 1 {
			// New values, the same active ops: the graph stays, its weights must follow.
			a := meta.Search.AlphaReduce[0]
			v := make([]float32, a.Numel())
			for k := range v {
				v[k] = float32(k%5) * 0.3
			}
			if err := a.Copy_(s.FromFloat32(v, a.MustShape(), dev)); err != nil {
				t.Fatal(err)
			}
		}
		if i == 2 {
			// One op of every edge of the first normal node dominates: the others fall
			// below the prune threshold, so other kernels run.
			a := meta.Search.AlphaNormal[0]
			v := make([]float32, a.Numel())
			for k := range v {
				if k%len(meta.Search.Cfg.Primitives) == 4 {
					v[k] = 12
				}
			}
			if err := a.Copy_(s.FromFloat32(v, a.MustShape(), dev)); err != nil {
				t.Fatal(err)
			}
		}
		batch := tasks[(i%4)*T : (i%4+1)*T]
		var want, got [][]float32
		var wantRes, gotRes []AdaptResult
		for _, b := range []*BatchWorker{plain, graphed} {
			if err := b.Load(meta); err != nil {
				t.Fatal(err)
			}
			b.SeedTask(uint64(40 + i))
			res, err := b.Adapt(batch, ts, alphas)
			if err != nil {
				t.Fatalf("adaptation %d: %v", i, err)
			}
			vals := host(t, append(append(b.Model.Weights(), b.Model.Alphas()...), b.Model.Reg.RunningStats()...))
			if b == plain {
				want, wantRes = vals, res
			} else {
				got, gotRes = vals, res
			}
		}
		check(i, graphed)
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

// TestBatchWorkerStaticSteps runs warm-up tasks on the static buffers that a CUDA graph
// captures (static inputs and accumulators, Adam with device steps, weights copied into
// place), eagerly, and checks that they train exactly as the plain batched network, that
// the buffers are reused while the active ops stay, rebuilt when they change and dropped
// for a search task.
func TestBatchWorkerStaticSteps(t *testing.T) {
	var prev *stepGraph
	graphRun(t, torch.CPU, graphsStatic, "0.2", func(i int, b *BatchWorker) {
		switch {
		case i == 3 && b.sg != nil:
			t.Errorf("adaptation %d (search): static buffers kept", i)
		case i != 3 && b.sg == nil:
			t.Errorf("adaptation %d (warm-up): no static buffers", i)
		case i == 1 && b.sg != prev:
			t.Errorf("adaptation %d: static buffers rebuilt for the same active ops", i)
		case i == 2 && b.sg == prev:
			t.Errorf("adaptation %d: static buffers kept although the active ops changed", i)
		}
		if b.Graphed() {
			t.Errorf("adaptation %d: a graph on the CPU", i)
		}
		prev = b.sg
	})
	cfg := tinyConfig(t)
	b, err := NewBatchWorker(cfg, torch.CPU, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.UseGraphs(true); err == nil || !strings.Contains(err.Error(), "CUDA") {
		t.Errorf("graphs on the CPU: %v", err)
	}
}

// TestCUDABatchWorkerGraphs replays captured CUDA graphs of the warm-up step and checks
// that they train as the eager batched network, with and without drop-path, and that a
// graphed warm-up task synchronises with the host only at its start and end.
func TestCUDABatchWorkerGraphs(t *testing.T) {
	if !torch.CUDAAvailable() {
		t.Skip("no CUDA device (or LibTorch built without CUDA)")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for _, drop := range []string{"0", "0.2"} {
		t.Run("drop_path="+drop, func(t *testing.T) {
			syncs := torch.HostSyncs()
			graphRun(t, torch.Device{CUDA: true}, graphsCUDA, drop, func(i int, b *BatchWorker) {
				if b.GraphErr != nil {
					t.Fatalf("adaptation %d: %v", i, b.GraphErr)
				}
				if want := i != 3; b.Graphed() != want {
					t.Errorf("adaptation %d: graphed %v, want %v", i, b.Graphed(), want)
				}
				if i == 1 {
					// Both networks' second adaptation: the graphed one replays every step.
					t.Logf("host synchronisations over two adaptations of each network: %d", torch.HostSyncs()-syncs)
				}
			})
		})
	}
}
