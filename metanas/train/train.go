package train

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/metanas-go/metanas/metanas/config"
	"github.com/metanas-go/metanas/metanas/data"
	"github.com/metanas-go/metanas/metanas/learn"
	"github.com/metanas-go/metanas/torch"
)

// Options are run settings that are not part of the configuration.
type Options struct {
	// Resume continues from this checkpoint (ours or the reference's meta_state).
	Resume string
	// Progress receives the one-line progress display (a terminal), or nil.
	Progress io.Writer
	// Log receives structured log lines, or nil.
	Log *slog.Logger
	// MaxEpochs stops after this many meta-epochs of this run (0: run to the end), for
	// tests and benchmarks.
	MaxEpochs int
}

// EpochMetrics is one line of metrics.jsonl for a meta-training epoch.
type EpochMetrics struct {
	Epoch    int     `json:"epoch"`
	WarmUp   bool    `json:"warm_up"`
	Loss     float64 `json:"loss"`
	Accuracy float64 `json:"accuracy"`
	Seconds  float64 `json:"seconds"`
	MetaWLR  float64 `json:"meta_w_lr"`
	MetaALR  float64 `json:"meta_a_lr"`
}

// TestResult summarises a meta-test over several tasks.
type TestResult struct {
	Epoch          int          `json:"epoch"`
	Tasks          int          `json:"tasks"`
	Accuracy       float64      `json:"accuracy"`
	CI95           float64      `json:"ci95"`
	MeanParams     float64      `json:"mean_active_params"`
	Distinct       int          `json:"distinct_architectures"`
	Seconds        float64      `json:"seconds"`
	SecondsPerTask float64      `json:"seconds_per_task"`
	PerTask        []TaskResult `json:"per_task,omitempty"`
}

// TaskResult is one meta-test task's outcome.
type TaskResult struct {
	Index        uint64  `json:"index"`
	Accuracy     float64 `json:"accuracy"`
	Genotype     string  `json:"genotype,omitempty"`
	ActiveParams int64   `json:"active_params"`
}

// Trainer holds a meta-training run's state.
type Trainer struct {
	Cfg     config.Config
	Dev     torch.Device
	Split   *data.Split
	Meta    *learn.Model
	Worker  *learn.Worker   // Workers[0]
	Workers []*learn.Worker // concurrent task learners
	// Batch adapts run.batch_tasks tasks at a time as one batched network, in meta-training
	// and meta-tests (a meta-test's remainder goes to the workers); nil when tasks are
	// adapted one by one. It is Batches[0].
	Batch *learn.BatchWorker
	// Batches are the batch workers that adapt batches at once (run.batch_workers); with
	// several, they share a gate (BatchWorker.Gate) around CUDA graph captures.
	Batches []*learn.BatchWorker
	Learner learn.MetaLearner
	scope   *torch.Scope
	opts    Options
	log     *slog.Logger
	threads int // LibTorch threads per worker
	start   int // first meta-epoch of this run
	// graphWarned is set once a failed CUDA graph capture was logged.
	graphWarned bool
	// graphSkipWarned is set once a meta-epoch that ran without graphs (run.cuda_graphs on)
	// was logged.
	graphSkipWarned bool
}

// New prepares a run: device, data, meta-model, task worker and meta-learner.
func New(cfg config.Config, opts Options) (*Trainer, error) {
	dev, err := torch.ParseDevice(cfg.Run.Device)
	if err != nil {
		return nil, usage("run.device: %v", err)
	}
	if err := dev.Check(); err != nil {
		return nil, usage("run.device: %v", err)
	}
	workers := Workers(cfg, dev)
	threads := cfg.Run.Threads
	if threads == 0 {
		if n, err := strconv.Atoi(os.Getenv("OMP_NUM_THREADS")); err == nil && n > 0 {
			threads = n // the user's (or the test harness's) choice
		} else if !dev.CUDA {
			threads = max(1, runtime.NumCPU()/workers)
		}
	}
	if threads <= 0 {
		threads = torch.NumThreads()
	}
	torch.SetNumThreads(threads)
	if dev.CUDA {
		torch.SetCuDNNBenchmark(true)
		if torch.TF32Matmul() {
			torch.SetAllowTF32(true, true)
		}
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	split, err := LoadData(cfg)
	if err != nil {
		return nil, err
	}
	for _, p := range []struct {
		name string
		ds   *data.Dataset
		k    int
	}{{"meta-train", split.Train, cfg.Data.TrainShots}, {"meta-test", split.Test, cfg.Data.Shots}} {
		if len(p.ds.Classes) < cfg.Data.Ways {
			return nil, usage("data.ways: the %s split has %d classes, fewer than the %d ways asked; lower data.ways", p.name, len(p.ds.Classes), cfg.Data.Ways)
		}
	}
	torch.ManualSeed(uint64(cfg.Run.Seed))
	s := torch.NewScope()
	meta, err := learn.NewModel(s, dev, cfg)
	if err != nil {
		s.Close()
		return nil, usage("model: %v", err)
	}
	var ws []*learn.Worker
	closeAll := func() {
		for _, w := range ws {
			w.Close()
		}
		s.Close()
	}
	for i := 0; i < workers; i++ {
		w, err := learn.NewWorker(cfg, dev)
		if err != nil {
			closeAll()
			return nil, err
		}
		ws = append(ws, w)
	}
	ml, err := learn.NewMetaLearner(cfg, meta)
	if err != nil {
		closeAll()
		return nil, usage("%v", err)
	}
	w := ws[0]
	t := &Trainer{Cfg: cfg, Dev: dev, Split: split, Meta: meta, Worker: w, Workers: ws, Learner: ml, scope: s, opts: opts, log: log, start: 1, threads: threads}
	if cfg.Run.BatchTasks > 1 {
		if _, ok := ml.(learn.BatchAdder); !ok {
			t.Close()
			return nil, usage("run.batch_tasks: meta.learner %s cannot take a batch; use reptile", cfg.Meta.Learner)
		}
		n := BatchWorkers(cfg)
		var gate *learn.DeviceGate // none for one batch worker
		if n > 1 {
			gate = &learn.DeviceGate{}
		}
		for range n {
			b, err := learn.NewBatchWorker(cfg, dev, cfg.Run.BatchTasks)
			if err != nil {
				t.Close()
				return nil, usage("run.batch_tasks: %v", err)
			}
			b.Gate = gate
			t.Batches = append(t.Batches, b)
			if err := b.UseGraphs(cfg.Run.CUDAGraphs); err != nil {
				t.Close()
				return nil, usage("run.cuda_graphs: %v", err)
			}
		}
		t.Batch = t.Batches[0]
	}
	log.Info("setup", "device", dev.String(), "workers", workers, "threads_per_worker", threads, "batch_tasks", cfg.Run.BatchTasks,
		"batch_workers", len(t.Batches), "cuda_graphs", cfg.Run.CUDAGraphs, "precision", string(cfg.Run.Precision))
	if h := SpeedHint(cfg, dev); h != "" {
		log.Warn("slow settings", "hint", h)
	}
	if opts.Resume != "" {
		ck, err := LoadCheckpoint(opts.Resume, meta, w, &cfg)
		if err != nil {
			t.Close()
			return nil, usage("resume: %v", err)
		}
		t.start = ck.MetaEpoch + 1
		log.Info("resumed", "checkpoint", opts.Resume, "meta_epoch", ck.MetaEpoch)
	}
	return t, nil
}

// Close frees the run's tensors.
func (t *Trainer) Close() {
	for _, b := range t.Batches {
		b.Close()
	}
	t.Learner.Close()
	for _, w := range t.Workers {
		w.Close()
	}
	t.scope.Close()
}

// Workers returns how many tasks run concurrently: run.workers, or when 0 one per CPU
// core on CPU (each with one LibTorch thread; small ops do not scale across threads) and
// one on a GPU. The task optimizers' state is carried across tasks only with one worker.
func Workers(cfg config.Config, dev torch.Device) int {
	n := cfg.Run.Workers
	if n == 0 {
		n = 1
		if !dev.CUDA {
			n = runtime.NumCPU()
		}
	}
	if cfg.Task.OptimState == config.OptimKeep {
		n = 1
	}
	return max(1, min(n, max(cfg.Meta.MetaBatch, 1)))
}

// SpeedHint returns a note for runs whose settings leave most of the speed unused, "" for
// others: the presets adapt task by task (run.batch_tasks: 0), which on a
// GPU is an order of magnitude slower than batches replayed from CUDA graphs (an og_metanas
// warm-up meta-epoch took 70 s task by task and 4.2 s in batches of 10 with graphs on an
// H200, BENCHMARKS.md). run.batch_tasks: 1 asks for task by task explicitly, without it.
// On the CPU it notes run.precision bf16, which is slower there.
func SpeedHint(cfg config.Config, dev torch.Device) string {
	r := cfg.Run
	if !dev.CUDA {
		if r.Precision == config.PrecisionBF16 {
			return "run.precision is bf16 on the CPU, where LibTorch's bfloat16 kernels replace the shim's float32 ones " +
				"and are slower: set run.precision: float32 unless bfloat16 itself is what you test"
		}
		return ""
	}
	switch {
	case r.BatchTasks == 0 && cfg.Model.Kind == config.ModelSearch && cfg.Meta.Learner == config.LearnerReptile &&
		cfg.Task.OptimState == config.OptimReset && cfg.Meta.MetaBatch > 1:
		return fmt.Sprintf("run.batch_tasks is 0, so each task is adapted alone; on a GPU, batches replayed from CUDA graphs "+
			"are about 17x faster: set run.batch_tasks to a divisor of meta.meta_batch (%d) that GPU memory allows "+
			"(README, Performance settings) and run.cuda_graphs: true, or run.batch_tasks: 1 to keep task by task", cfg.Meta.MetaBatch)
	case r.BatchTasks > 1 && !r.CUDAGraphs && cfg.Arch.Normalizer != config.NormGumbelSoftmax:
		return "run.cuda_graphs is false, so the batched steps are issued op by op; graphs took 17 % off a batched " +
			"og_metanas meta-epoch on an H200: set run.cuda_graphs: true"
	}
	return ""
}

// BatchWorkers returns how many batches run at once: run.batch_workers (0 and 1: one),
// at most the batches of a meta-batch; 0 without run.batch_tasks.
func BatchWorkers(cfg config.Config) int {
	if cfg.Run.BatchTasks < 2 {
		return 0
	}
	return max(1, min(cfg.Run.BatchWorkers, cfg.Meta.MetaBatch/cfg.Run.BatchTasks))
}

// taskSeed is the random stream of one task: a function of the run seed, the phase, the
// meta-epoch and the task's position, never of the worker running it.
func taskSeed(seed int64, phase, epoch, i int) uint64 {
	x := uint64(seed)*0x9E3779B97F4A7C15 ^ uint64(phase)<<56 ^ uint64(epoch)*0xBF58476D1CE4E5B9 ^ uint64(i)*0x94D049BB133111EB
	x ^= x >> 31
	return x*0xD6E8FEB86659FD93 + 1
}

// parallel runs f(w, i) for i in [0, n) on the workers (task i on worker i mod W) and
// calls ordered(w, i) for each i in increasing order, after f(w, i) and ordered(.., i-1),
// so that what ordered accumulates does not depend on scheduling. It returns the first
// error.
func (t *Trainer) parallel(n int, f, ordered func(w *learn.Worker, i int) error) error {
	return runOrdered(t, t.Workers, pool{threads: t.threads, streams: t.Dev.CUDA && t.Cfg.Run.Streams}, n, f, ordered)
}

// parallelBatches is parallel on the batch workers: batch i (of run.batch_tasks tasks) on
// batch worker i mod W. With several, each has its own CUDA stream (their kernels
// overlap) or its share of the CPU threads.
func (t *Trainer) parallelBatches(n int, f, ordered func(b *learn.BatchWorker, i int) error) error {
	p := pool{threads: max(1, t.threads*len(t.Workers)/len(t.Batches)), streams: t.Dev.CUDA && len(t.Batches) > 1, gate: t.Batch.Gate}
	if t.Dev.CUDA {
		p.threads = 0
	}
	return runOrdered(t, t.Batches, p, n, f, ordered)
}

// pool is how runOrdered runs its workers.
type pool struct {
	threads int  // LibTorch threads of each worker's OS thread (0: left as they are)
	streams bool // each worker on a CUDA stream of its own
	gate    *learn.DeviceGate
}

// runOrdered runs f(w, i) for i in [0, n) on the workers ws (item i on worker i mod W),
// each pinned to an OS thread set up as p says, and ordered(w, i) for each i in
// increasing order, after f(w, i) and ordered(.., i-1). It returns the first error.
func runOrdered[W any](t *Trainer, ws []W, p pool, n int, f, ordered func(w W, i int) error) error {
	turn := make([]chan struct{}, n+1)
	for i := range turn {
		turn[i] = make(chan struct{})
	}
	close(turn[0])
	errs := make([]error, n)
	var wg sync.WaitGroup
	if p.streams {
		// The workers' streams must see what this thread queued (the meta-update).
		if err := torch.Synchronize(t.Dev); err != nil {
			return err
		}
	}
	for wi, w := range ws {
		wg.Add(1)
		go func(wi int, w W) {
			defer wg.Done()
			// LibTorch's OpenMP thread count and current CUDA stream are per OS thread: pin
			// the goroutine and set them.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			if p.threads > 0 {
				torch.SetNumThreads(p.threads)
			}
			var serr error
			if p.streams {
				serr = torch.UsePoolStream(t.Dev)
				defer torch.UseDefaultStream(t.Dev)
			}
			for i := wi; i < n; i += len(ws) {
				err := serr
				if err == nil {
					err = f(w, i)
				}
				<-turn[i]
				if err == nil && ordered != nil {
					err = ordered(w, i)
				}
				if err == nil && p.streams {
					// What ordered accumulated is read next on another worker's stream.
					err = p.gate.Do(func() error { return torch.SyncStream(t.Dev) })
				}
				errs[i] = err
				close(turn[i+1])
			}
		}(wi, w)
	}
	wg.Wait()
	return errors.Join(errs...)
}

// RunEpoch runs one meta-epoch on the given tasks and applies the meta-update.
func (t *Trainer) RunEpoch(epoch int, tasks []data.Task) (EpochMetrics, error) {
	start := time.Now()
	cfg := t.Cfg
	warm := cfg.Meta.InWarmUp(epoch)
	ts := learn.Settings(cfg, false)
	if err := t.Learner.Begin(); err != nil {
		return EpochMetrics{}, err
	}
	var results []learn.AdaptResult
	var err error
	if t.Batch != nil && len(tasks)%t.Batch.Tasks == 0 {
		results, err = t.adaptBatch(epoch, tasks, ts, !warm)
	} else {
		results, err = t.adaptEach(epoch, tasks, ts, !warm)
	}
	if err != nil {
		return EpochMetrics{}, err
	}
	var loss, acc float64
	for _, r := range results {
		loss += r.Loss
		acc += r.Accuracy
	}
	wlr := learn.MetaLR(cfg.Meta.WLR, cfg.Meta.Anneal, epoch, cfg.Meta.Epochs)
	alr := learn.MetaLR(cfg.Meta.ALR, cfg.Meta.Anneal, epoch, cfg.Meta.Epochs)
	if warm {
		alr = 0
	}
	if _, err := t.Learner.Step(t.Meta, wlr, alr); err != nil {
		return EpochMetrics{}, err
	}
	// The task steps leave the C heap fragmented: its memory in use stays flat over a run,
	// but the free memory malloc keeps grew by about 10 MiB per 200 meta-epochs (measured,
	// BENCHMARKS.md). Giving it back once per meta-epoch keeps resident memory flat.
	torch.TrimHostHeap()
	n := float64(len(tasks))
	return EpochMetrics{Epoch: epoch, WarmUp: warm, Loss: loss / n, Accuracy: acc / n, Seconds: time.Since(start).Seconds(), MetaWLR: wlr, MetaALR: alr}, nil
}

// adaptEach adapts the tasks on the workers, one network per task, and adds each to the
// meta-learner in task order.
func (t *Trainer) adaptEach(epoch int, tasks []data.Task, ts learn.TaskSettings, alphas bool) ([]learn.AdaptResult, error) {
	results := make([]learn.AdaptResult, len(tasks))
	err := t.parallel(len(tasks), func(w *learn.Worker, i int) error {
		if err := w.Load(t.Meta); err != nil {
			return err
		}
		w.SeedTask(taskSeed(t.Cfg.Run.Seed, 0, epoch, i))
		r, err := w.Adapt(&tasks[i], ts, alphas)
		if err != nil {
			return fmt.Errorf("meta-epoch %d task %d: %w", epoch, i, err)
		}
		results[i] = r
		return nil
	}, func(w *learn.Worker, i int) error { return t.Learner.Add(w, &tasks[i]) })
	return results, err
}

// adaptBatch adapts the tasks in batches of run.batch_tasks on the batch workers and adds
// each batch to the meta-learner, in task order.
func (t *Trainer) adaptBatch(epoch int, tasks []data.Task, ts learn.TaskSettings, alphas bool) ([]learn.AdaptResult, error) {
	bt := t.Batch.Tasks
	results := make([]learn.AdaptResult, len(tasks))
	err := t.parallelBatches(len(tasks)/bt, func(b *learn.BatchWorker, k int) error {
		i := k * bt
		if err := b.Load(t.Meta); err != nil {
			return err
		}
		b.SeedTask(taskSeed(t.Cfg.Run.Seed, 0, epoch, i))
		r, err := b.Adapt(tasks[i:i+bt], ts, alphas)
		if err != nil {
			return fmt.Errorf("meta-epoch %d tasks %d-%d (batched): %w", epoch, i, i+bt-1, err)
		}
		copy(results[i:], r)
		return nil
	}, func(b *learn.BatchWorker, _ int) error {
		if err := t.Learner.(learn.BatchAdder).AddBatch(b); err != nil {
			return err
		}
		if b.GraphErr != nil && !t.graphWarned {
			t.log.Warn("cuda graphs off", "meta_epoch", epoch, "reason", b.GraphErr.Error())
			t.graphWarned = true
		}
		if b.GraphSkip != "" && !t.graphSkipWarned {
			t.log.Warn("cuda graphs not used", "meta_epoch", epoch, "reason", b.GraphSkip)
			t.graphSkipWarned = true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return results, nil
}

// MetaTest adapts a copy of the meta-model to n meta-test tasks (weights and alphas for
// the first test_arch_steps steps, then weights only), hard-prunes each at
// meta.test_prune_threshold and scores its query set.
func (t *Trainer) MetaTest(epoch, n int, perTask bool) (TestResult, error) {
	start := time.Now()
	cfg := t.Cfg
	sampler, err := data.NewSampler(t.Split.Test, cfg.Data.Ways, cfg.Data.Shots, cfg.Data.Queries, t.testSamplerSeed())
	if err != nil {
		return TestResult{}, usage("meta-test: %v", err)
	}
	ts := learn.Settings(cfg, true)
	res := TestResult{Epoch: epoch, Tasks: n}
	accs := make([]float64, 0, n)
	archs := map[string]bool{}
	var params float64
	scores := make([]learn.Score, n)
	var done atomic.Int64
	progress := func(k int) {
		if t.opts.Progress != nil {
			fmt.Fprintf(t.opts.Progress, "\r\033[Kmeta-test at epoch %d: task %d/%d", epoch, done.Add(int64(k)), n)
		}
	}
	first := 0 // tasks before first run in batches
	if b := t.Batch; b != nil {
		first = n / b.Tasks * b.Tasks
		if err := t.scoreBatches(epoch, sampler, ts, scores[:first], progress); err != nil {
			return res, err
		}
	}
	err = t.parallel(n-first, func(w *learn.Worker, k int) error {
		i := first + k
		task := sampler.Task(uint64(i))
		if err := w.Load(t.Meta); err != nil {
			return err
		}
		w.SeedTask(taskSeed(cfg.Run.Seed, 1, epoch, i))
		if _, err := w.Adapt(&task, ts, true); err != nil {
			return fmt.Errorf("meta-test task %d: %w", i, err)
		}
		sc, err := w.Score(&task, ts.Norm, cfg.Meta.TestPruneThreshold, cfg.Meta.EvalBN != config.BNEval)
		if err != nil {
			return fmt.Errorf("meta-test task %d: %w", i, err)
		}
		scores[i] = sc
		progress(1)
		return nil
	}, nil)
	if err != nil {
		return res, err
	}
	for i, sc := range scores {
		accs = append(accs, sc.Accuracy)
		archs[sc.Genotype] = true
		params += float64(sc.ActiveParams)
		if perTask {
			res.PerTask = append(res.PerTask, TaskResult{Index: uint64(i), Accuracy: sc.Accuracy, Genotype: sc.Genotype, ActiveParams: sc.ActiveParams})
		}
	}
	res.Accuracy, res.CI95 = meanCI(accs)
	res.MeanParams = params / float64(max(n, 1))
	res.Distinct = len(archs)
	res.Seconds = time.Since(start).Seconds()
	res.SecondsPerTask = res.Seconds / float64(max(n, 1))
	return res, nil
}

// scoreBatches adapts and scores meta-test tasks 0 .. len(scores)-1 in batches on the
// batch workers.
func (t *Trainer) scoreBatches(epoch int, sampler *data.Sampler, ts learn.TaskSettings, scores []learn.Score, progress func(int)) error {
	cfg := t.Cfg
	bt := t.Batch.Tasks
	return t.parallelBatches(len(scores)/bt, func(b *learn.BatchWorker, k int) error {
		i := k * bt
		tasks := make([]data.Task, bt)
		for j := range tasks {
			tasks[j] = sampler.Task(uint64(i + j))
		}
		if err := b.Load(t.Meta); err != nil {
			return err
		}
		b.SeedTask(taskSeed(cfg.Run.Seed, 1, epoch, i))
		if _, err := b.Adapt(tasks, ts, true); err != nil {
			return fmt.Errorf("meta-test tasks %d-%d (batched): %w", i, i+bt-1, err)
		}
		sc, err := b.Score(tasks, ts.Norm, cfg.Meta.TestPruneThreshold, cfg.Meta.EvalBN != config.BNEval)
		if err != nil {
			return fmt.Errorf("meta-test tasks %d-%d (batched): %w", i, i+bt-1, err)
		}
		copy(scores[i:], sc)
		progress(bt)
		return nil
	}, nil)
}

// meanCI returns the mean and the half-width of its 95% confidence interval.
func meanCI(v []float64) (float64, float64) {
	if len(v) == 0 {
		return 0, 0
	}
	var m float64
	for _, x := range v {
		m += x
	}
	m /= float64(len(v))
	if len(v) < 2 {
		return m, 0
	}
	var ss float64
	for _, x := range v {
		ss += (x - m) * (x - m)
	}
	sd := math.Sqrt(ss / float64(len(v)-1))
	return m, 1.96 * sd / math.Sqrt(float64(len(v)))
}

// Run meta-trains to the configured number of meta-epochs, writing into the run directory
// the resolved config, metrics.jsonl, checkpoint.pt at each meta-test, and results.json.
func (t *Trainer) Run(ctx context.Context) (*TestResult, error) {
	cfg := t.Cfg
	out := cfg.Run.Out
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, usage("run.out %s: %v", out, err)
	}
	ckpt := filepath.Join(out, "checkpoint.pt")
	if t.opts.Resume == "" {
		if _, err := os.Stat(ckpt); err == nil {
			return nil, usage("run directory %s already holds checkpoint.pt: resume with --resume %s, or choose another --out (nothing was overwritten)", out, ckpt)
		}
	}
	y, err := cfg.Marshal()
	if err != nil {
		return nil, err
	}
	if err := writeAtomic(filepath.Join(out, "config.yaml"), y); err != nil {
		return nil, err
	}
	mf, err := os.OpenFile(filepath.Join(out, "metrics.jsonl"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	defer mf.Close()
	enc := json.NewEncoder(mf)
	sampler, err := data.NewSampler(t.Split.Train, cfg.Data.Ways, cfg.Data.TrainShots, cfg.Data.Queries, uint64(cfg.Run.Seed))
	if err != nil {
		return nil, usage("meta-train tasks: %v", err)
	}
	pf, err := data.NewPrefetcher(ctx, sampler, cfg.Meta.MetaBatch, uint64(t.start-1), 2)
	if err != nil {
		return nil, err
	}
	defer pf.Close()
	last := cfg.Meta.Epochs
	if t.opts.MaxEpochs > 0 && t.start-1+t.opts.MaxEpochs < last {
		last = t.start - 1 + t.opts.MaxEpochs
	}
	var total time.Duration
	done := 0
	keep := cfg.Task.OptimState == config.OptimKeep
	for epoch := t.start; epoch <= last; epoch++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		mb, err := pf.Next(ctx)
		if err != nil {
			return nil, err
		}
		m, err := t.RunEpoch(epoch, mb.Tasks)
		if err != nil {
			return nil, err
		}
		total += time.Duration(m.Seconds * float64(time.Second))
		done++
		if err := enc.Encode(m); err != nil {
			return nil, err
		}
		if t.opts.Progress != nil {
			eta := time.Duration(float64(total) / float64(done) * float64(last-epoch)).Round(time.Second)
			phase := "search"
			if m.WarmUp {
				phase = "warm-up"
			}
			fmt.Fprintf(t.opts.Progress, "\r\033[Kmeta-epoch %d/%d (%s) loss %.3f acc %.3f | %.2f s/epoch | ETA %s", epoch, cfg.Meta.Epochs, phase, m.Loss, m.Accuracy, m.Seconds, eta)
		}
		if cfg.Run.LogEvery > 0 && epoch%cfg.Run.LogEvery == 0 {
			t.log.Info("meta-epoch", "epoch", epoch, "warm_up", m.WarmUp, "loss", m.Loss, "accuracy", m.Accuracy, "seconds", m.Seconds)
		}
		testNow := (cfg.Meta.TestEvery > 0 && epoch%cfg.Meta.TestEvery == 0) || epoch == cfg.Meta.Epochs
		if testNow || (cfg.Run.CheckpointEvery > 0 && epoch%cfg.Run.CheckpointEvery == 0) {
			if testNow && t.Meta.Search != nil && cfg.Meta.PruneThreshold > 0 {
				if err := t.Meta.Search.PruneAlphas(cfg.Meta.PruneThreshold, cfg.Arch.TMax); err != nil {
					return nil, err
				}
			}
			if testNow && cfg.Meta.TestTasks > 0 {
				r, err := t.MetaTest(epoch, cfg.Meta.TestTasks, false)
				if err != nil {
					return nil, err
				}
				if err := enc.Encode(map[string]any{"meta_test": r}); err != nil {
					return nil, err
				}
				if t.opts.Progress != nil {
					fmt.Fprintln(t.opts.Progress)
				}
				t.log.Info("meta-test", "epoch", epoch, "accuracy", r.Accuracy, "ci95", r.CI95, "distinct_architectures", r.Distinct, "mean_active_params", r.MeanParams, "seconds_per_task", r.SecondsPerTask)
			}
			if err := SaveCheckpoint(ckpt, cfg, epoch, t.Meta, t.Worker, keep); err != nil {
				return nil, err
			}
		}
	}
	if t.opts.Progress != nil {
		fmt.Fprintln(t.opts.Progress)
	}
	if last < cfg.Meta.Epochs {
		return nil, nil
	}
	n := cfg.Meta.FinalTestTasks
	if n <= 0 {
		n = cfg.Meta.TestTasks
	}
	if n <= 0 {
		return nil, nil
	}
	final, err := t.MetaTest(last, n, true)
	if err != nil {
		return nil, err
	}
	if t.opts.Progress != nil {
		fmt.Fprintln(t.opts.Progress)
	}
	b, _ := json.MarshalIndent(final, "", "  ")
	if err := writeAtomic(filepath.Join(out, "results.json"), b); err != nil {
		return nil, err
	}
	t.log.Info("final meta-test", "tasks", final.Tasks, "accuracy", final.Accuracy, "ci95", final.CI95, "distinct_architectures", final.Distinct)
	return &final, nil
}

func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// IsUsage reports whether err is a user-input error (exit status 2).
func IsUsage(err error) bool {
	var u *UsageError
	var ce config.Errors
	var c1 *config.Error
	return errors.As(err, &u) || errors.As(err, &ce) || errors.As(err, &c1)
}
