package learn

import (
	"fmt"
	"math"
	"testing"

	"github.com/metanas-go/metanas/metanas/config"
	"github.com/metanas-go/metanas/metanas/data"
	"github.com/metanas-go/metanas/torch"
)

// tinyConfig is a small search network on synthetic 1x8x8 tasks.
func tinyConfig(t *testing.T) config.Config {
	t.Helper()
	cfg := config.Default()
	for _, kv := range []string{
		"data.dataset=synthetic", "data.ways=3", "data.shots=2", "data.train_shots=2", "data.queries=2",
		"data.synthetic.channels=1", "data.synthetic.size=8", "data.synthetic.classes=6", "data.synthetic.per_class=6",
		"model.channels=4", "model.layers=2", "model.nodes=2", "model.reductions=[1]", "model.drop_path=0.2",
		"task.steps=2", "task.batch_size=4", "task.test_steps=2", "task.test_arch_steps=1", "task.test_batch_size=4",
		"meta.meta_batch=2", "meta.epochs=4", "meta.warm_up_epochs=1",
	} {
		if err := cfg.Set(kv); err != nil {
			t.Fatal(err)
		}
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func tinyTasks(t *testing.T, cfg config.Config, n int) []data.Task {
	ds, err := data.Synthetic(data.SyntheticOptions{Classes: 6, PerClass: 6, C: 1, H: 8, W: 8, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	sm, err := data.NewSampler(ds, cfg.Data.Ways, cfg.Data.TrainShots, cfg.Data.Queries, 5)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]data.Task, n)
	for i := range out {
		out[i] = sm.Task(uint64(i))
	}
	return out
}

// newTestWorker returns a CPU worker for cfg, closed when the test ends.
func newTestWorker(t *testing.T, cfg config.Config) *Worker {
	t.Helper()
	w, err := NewWorker(cfg, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w
}

// newTestMeta returns a meta-model for cfg on dev, initialised from LibTorch's generator
// seeded with seed, freed when the test ends.
func newTestMeta(t *testing.T, cfg config.Config, dev torch.Device, seed uint64) *Model {
	t.Helper()
	s := torch.NewScope()
	t.Cleanup(s.Close)
	torch.ManualSeed(seed)
	m, err := NewModel(s, dev, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// newTestBatch returns a batch worker of n tasks for cfg on dev, closed when the test ends.
func newTestBatch(t *testing.T, cfg config.Config, dev torch.Device, n int) *BatchWorker {
	t.Helper()
	b, err := NewBatchWorker(cfg, dev, n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func host(t *testing.T, ts []*torch.Tensor) [][]float32 {
	t.Helper()
	out := make([][]float32, len(ts))
	for i, x := range ts {
		v, err := x.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		out[i] = v
	}
	return out
}

func closeTo(a, b float32, tol float64) bool {
	return math.Abs(float64(a-b)) <= tol*(1+math.Abs(float64(b)))
}

// TestReptileUpdate checks meta' = meta + lr * mean_k(task_k - meta) for weights (lr 1.0
// would copy the mean; use 0.5) and alphas (0.3), and the mean of the running statistics.
func TestReptileUpdate(t *testing.T) {
	cfg := tinyConfig(t)
	s := torch.NewScope()
	defer s.Close()
	meta, err := NewModel(s, torch.CPU, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := NewReptile(meta)
	defer r.Close()
	if err := r.Begin(); err != nil {
		t.Fatal(err)
	}
	before := host(t, append(meta.Weights(), meta.Alphas()...))
	var tasks [][][]float32
	w := newTestWorker(t, cfg)
	for k, task := range tinyTasks(t, cfg, 2) {
		if err := w.Load(meta); err != nil {
			t.Fatal(err)
		}
		w.SeedTask(uint64(k))
		if _, err := w.Adapt(&task, Settings(cfg, false), true); err != nil {
			t.Fatal(err)
		}
		tasks = append(tasks, host(t, append(w.Model.Weights(), w.Model.Alphas()...)))
		if err := r.Add(w, &task); err != nil {
			t.Fatal(err)
		}
	}
	const wlr, alr = 0.5, 0.3
	if n, err := r.Step(meta, wlr, alr); err != nil || n != 2 {
		t.Fatalf("step: %d tasks, %v", n, err)
	}
	after := host(t, append(meta.Weights(), meta.Alphas()...))
	nw := len(meta.Weights())
	moved := false
	for i := range before {
		lr := float32(wlr)
		if i >= nw {
			lr = alr
		}
		for j := range before[i] {
			mean := (tasks[0][i][j] + tasks[1][i][j]) / 2
			want := before[i][j] + lr*(mean-before[i][j])
			if !closeTo(after[i][j], want, 1e-5) {
				t.Fatalf("param %d[%d]: %g, want %g", i, j, after[i][j], want)
			}
			if after[i][j] != before[i][j] {
				moved = true
			}
		}
	}
	if !moved {
		t.Fatal("the meta-update changed nothing")
	}
}

// TestFOMAMLUpdate checks meta' = meta - lr * mean_k(grad_k), the gradients taken on each
// task's query set at its adapted parameters (recomputed here independently).
func TestFOMAMLUpdate(t *testing.T) {
	cfg := tinyConfig(t)
	if err := cfg.Set("model.drop_path=0"); err != nil {
		t.Fatal(err)
	}
	s := torch.NewScope()
	defer s.Close()
	meta, err := NewModel(s, torch.CPU, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := Settings(cfg, false)
	f := NewFOMAML(meta, Arch{Norm: ts.Norm, Threshold: ts.Threshold})
	defer f.Close()
	if err := f.Begin(); err != nil {
		t.Fatal(err)
	}
	before := host(t, meta.Weights())
	w := newTestWorker(t, cfg)
	var grads [][][]float32
	for k, task := range tinyTasks(t, cfg, 2) {
		if err := w.Load(meta); err != nil {
			t.Fatal(err)
		}
		w.SeedTask(uint64(k))
		if _, err := w.Adapt(&task, ts, false); err != nil {
			t.Fatal(err)
		}
		if err := f.Add(w, &task); err != nil {
			t.Fatal(err)
		}
		// Add left the query gradients in the worker's parameters.
		g := make([]*torch.Tensor, 0)
		for _, p := range w.Model.Weights() {
			gp := s.Grad(p)
			if gp == nil {
				gp = s.MulScalar(s.Detach(p), 0)
			}
			g = append(g, s.Clone(gp))
		}
		grads = append(grads, host(t, g))
	}
	const lr = 0.1
	if _, err := f.Step(meta, lr, 0); err != nil {
		t.Fatal(err)
	}
	after := host(t, meta.Weights())
	nonzero := false
	for i := range before {
		for j := range before[i] {
			g := (grads[0][i][j] + grads[1][i][j]) / 2
			want := before[i][j] - lr*g
			if !closeTo(after[i][j], want, 1e-5) {
				t.Fatalf("weight %d[%d]: %g, want %g", i, j, after[i][j], want)
			}
			if g != 0 {
				nonzero = true
			}
		}
	}
	if !nonzero {
		t.Fatal("all query gradients are zero")
	}
}

func TestMetaLR(t *testing.T) {
	cases := []struct {
		anneal        config.Anneal
		epoch, epochs int
		want          float64
	}{
		{config.AnnealNone, 7, 10, 1},
		{config.AnnealLinear, 1, 10, 1},
		{config.AnnealLinear, 6, 10, 0.5},
		{config.AnnealCosine, 1, 10, 1},
		{config.AnnealCosine, 6, 10, 0.5},
	}
	for _, c := range cases {
		if got := MetaLR(1, c.anneal, c.epoch, c.epochs); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("MetaLR(%s, %d/%d) = %g, want %g", c.anneal, c.epoch, c.epochs, got, c.want)
		}
	}
}

func TestSettings(t *testing.T) {
	cfg := config.Default() // og_metanas
	tr, te := Settings(cfg, false), Settings(cfg, true)
	if tr.Steps != 5 || tr.ArchSteps != 5 || tr.BatchSize != 20 || tr.DropPath != 0.2 {
		t.Errorf("meta-train settings %+v", tr)
	}
	if te.Steps != 100 || te.ArchSteps != 50 || te.Schedule.MaxSteps != 50 {
		t.Errorf("meta-test settings %+v", te)
	}
	if got := te.Schedule.Temperature(49); math.Abs(got-cfg.Arch.TMin) > 1e-12 {
		t.Errorf("temperature at the last arch step %g, want t_min %g", got, cfg.Arch.TMin)
	}
}

// TestHostSyncsPerStep: with the alphas fixed (warm-up, weight-only steps) a task step
// makes no host synchronisation (one normalisation per task, one read of the task's loss
// at the end); an architecture step makes exactly one (the pruning decision of its
// forward pass reads the normalised weights once).
func TestHostSyncsPerStep(t *testing.T) {
	cfg := tinyConfig(t)
	s := torch.NewScope()
	defer s.Close()
	meta, err := NewModel(s, torch.CPU, cfg)
	if err != nil {
		t.Fatal(err)
	}
	w := newTestWorker(t, cfg)
	task := tinyTasks(t, cfg, 1)[0]
	ts := Settings(cfg, false)
	ts.Steps, ts.ArchSteps, ts.BatchSize = 4, 4, 2 // 3 minibatches per step
	minibatches := ts.Steps * 3
	for _, c := range []struct {
		name string
		arch bool
		want int64
	}{{"warm-up", false, 2}, {"search", true, int64(minibatches) + 1}} {
		if err := w.Load(meta); err != nil {
			t.Fatal(err)
		}
		before := torch.HostSyncs()
		if _, err := w.Adapt(&task, ts, c.arch); err != nil {
			t.Fatal(err)
		}
		if got := torch.HostSyncs() - before; got != c.want {
			t.Errorf("%s: %d host syncs for %d minibatches, want %d", c.name, got, minibatches, c.want)
		}
	}
}

// TestAdaptDeterministic adapts the same tasks from the same meta-model and seed ten times,
// each on a fresh worker (sequential and batched, warm-up and search), and requires the
// same bits every time: weights, alphas, running statistics and results. Adapt issues its
// forward and backward passes from one OS thread (torch.PinThread); from a goroutine that
// moves between threads, autograd's order of summing gradients followed the scheduler and
// about one adaptation in three differed in the last bits (which Adam can make larger).
func TestAdaptDeterministic(t *testing.T) {
	cfg := tinyConfig(t)
	for _, kv := range []string{"model.drop_path=0.2", "task.grad_clip=0.5", "task.batch_size=3"} {
		if err := cfg.Set(kv); err != nil {
			t.Fatal(err)
		}
	}
	tasks := tinyTasks(t, cfg, 2)
	ts := Settings(cfg, false)
	s := torch.NewScope()
	defer s.Close()
	torch.ManualSeed(5)
	meta, err := NewModel(s, torch.CPU, cfg)
	if err != nil {
		t.Fatal(err)
	}
	adapt := map[string]func(search bool) ([]*torch.Tensor, []AdaptResult, func()){
		"worker": func(search bool) ([]*torch.Tensor, []AdaptResult, func()) {
			w, err := NewWorker(cfg, torch.CPU)
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Load(meta); err != nil {
				t.Fatal(err)
			}
			w.SeedTask(7)
			res, err := w.Adapt(&tasks[0], ts, search)
			if err != nil {
				t.Fatal(err)
			}
			return append(append(w.Model.Weights(), w.Model.Alphas()...), w.Model.Reg.RunningStats()...), []AdaptResult{res}, w.Close
		},
		"batch": func(search bool) ([]*torch.Tensor, []AdaptResult, func()) {
			b, err := NewBatchWorker(cfg, torch.CPU, len(tasks))
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Load(meta); err != nil {
				t.Fatal(err)
			}
			b.SeedTask(7)
			res, err := b.Adapt(tasks, ts, search)
			if err != nil {
				t.Fatal(err)
			}
			return append(append(b.Model.Weights(), b.Model.Alphas()...), b.Model.Reg.RunningStats()...), res, b.Close
		},
	}
	for _, kind := range []string{"worker", "batch"} {
		for _, search := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s,search=%v", kind, search), func(t *testing.T) {
				var want [][]float32
				var wantRes []AdaptResult
				for rep := 0; rep < 10; rep++ {
					ps, res, done := adapt[kind](search)
					got := host(t, ps)
					done()
					if rep == 0 {
						want, wantRes = got, res
						continue
					}
					for k := range res {
						if res[k] != wantRes[k] {
							t.Errorf("repetition %d task %d: %+v, first %+v", rep, k, res[k], wantRes[k])
						}
					}
					for p := range got {
						for k := range got[p] {
							if got[p][k] != want[p][k] {
								t.Fatalf("repetition %d tensor %d element %d: %g, first %g", rep, p, k, got[p][k], want[p][k])
							}
						}
					}
				}
			})
		}
	}
}
