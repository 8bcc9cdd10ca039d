// Command bench measures MetaNAS's cost on synthetic tasks of a preset's shapes: seconds
// per warm-up and per search meta-epoch, per meta-test task, per task step, and peak
// memory. It prints one JSON line per case.
//
//	go run ./cmd/bench [--cases og_metanas,in_metanas] [--device cpu|cuda] [--tasks N]
//
// --tasks N measures N tasks of each meta-batch and scales the meta-epoch time to the
// preset's meta-batch (the line says so with "measured_tasks"); 0 runs whole meta-batches.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/metanas-go/metanas/cells"
	"github.com/metanas-go/metanas/internal/cli"
	"github.com/metanas-go/metanas/metanas/config"
	"github.com/metanas-go/metanas/metanas/data"
	"github.com/metanas-go/metanas/metanas/train"
	"github.com/metanas-go/metanas/torch"
)

// Result is one case's measurements.
type Result struct {
	Case           string  `json:"case"`
	Device         string  `json:"device"`
	Machine        string  `json:"machine"`
	Date           string  `json:"date"`
	Commit         string  `json:"commit,omitempty"`
	Workers        int     `json:"workers"`
	Streams        bool    `json:"streams,omitempty"`
	BatchTasks     int     `json:"batch_tasks,omitempty"`
	BatchWorkers   int     `json:"batch_workers,omitempty"` // batches adapted at once (run.batch_workers)
	BatchStepMS    float64 `json:"batch_step_ms,omitempty"`
	CUDAGraphs     bool    `json:"cuda_graphs,omitempty"`
	Precision      string  `json:"precision"`     // run.precision
	GraphReplays   int64   `json:"graph_replays"` // always shown: 0 with cuda_graphs on means nothing was replayed
	GraphError     string  `json:"graph_error,omitempty"`
	GraphSkip      string  `json:"graph_skip,omitempty"`
	ThreadsPerWork int     `json:"threads_per_worker"`
	MetaBatch      int     `json:"meta_batch"`
	MeasuredTasks  int     `json:"measured_tasks"`
	WarmUpEpochS   float64 `json:"warmup_epoch_s"`
	SearchEpochS   float64 `json:"search_epoch_s"`
	MetaTestTaskS  float64 `json:"meta_test_task_s"`
	MetaTestSteps  int     `json:"meta_test_steps"`
	TaskStepMS     float64 `json:"task_step_ms"`
	StepsPerTask   int     `json:"steps_per_task"`
	PeakRSSMiB     float64 `json:"peak_rss_mib"`
	CPUPool        bool    `json:"cpu_pool"` // CPU tensors from the shim's pool (torch.CPUPool)
	// The GPU switches in effect (README: on CUDA the node batch norm, the 1x1 products and
	// the grouped ops of a cell's states are on unless switched off, branch streams off
	// unless switched on, and they turn the grouping off), so that a line says what it
	// measured.
	BranchStreams   int  `json:"branch_streams,omitempty"`
	PointwiseMatmul bool `json:"pointwise_matmul,omitempty"`
	NodeBatchNorm   bool `json:"node_batch_norm,omitempty"`
	StateFusion     bool `json:"state_fusion,omitempty"`
	TF32Matmul      bool `json:"tf32_matmul,omitempty"`    // METANAS_TF32_MATMUL=1 on CUDA
	NodeRecompute   bool `json:"node_recompute,omitempty"` // METANAS_NODE_RECOMPUTE=1 with the node batch norm
	// METANAS_NODE_FUSED=1 with the node batch norm, where the shim has the device's
	// kernels (the fused node batch norm and sum).
	NodeFused       bool    `json:"node_fused,omitempty"`
	HostSyncsPerStp float64 `json:"host_syncs_per_step"`
	// On CUDA, LibTorch's allocator at its peak in each part of the run (untimed warming
	// passes and graph captures included): "warmup", "search" and "meta_test".
	GPUPeaks map[string]GPUPeak `json:"gpu_peak_mib,omitempty"`
	// On the CPU, resident memory at its peak in each part of the run ("warmup", "search",
	// "meta_test", as gpu_peak_mib), where Linux lets the process reset its peak.
	RSSPeaks map[string]float64 `json:"rss_peak_mib,omitempty"`
	// On the CPU with the tensor pool, the most tensor memory it had handed out at once in
	// each part (the counterpart of gpu_peak_mib's allocated; no cached blocks, no heap).
	PoolPeaks      map[string]float64 `json:"cpu_pool_peak_mib,omitempty"`
	AtenOpsPerStep float64            `json:"aten_ops_per_step,omitempty"`
	// With --profile-bytes, the bytes that the ATen calls of each timed meta-epoch
	// ("warmup", "search") read and wrote, GiB (torch.ProfileBytes: a floor of the memory
	// traffic their kernels need, whatever the device).
	TrafficGiB map[string]float64 `json:"traffic_gib,omitempty"`
}

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	const prog = "bench"
	fs := pflag.NewFlagSet(prog, pflag.ContinueOnError)
	cases := fs.String("cases", "og_metanas,in_metanas", "presets to measure (files configs/<name>.yaml)")
	device := fs.String("device", "cpu", "cpu, cuda or cuda:N")
	tasks := fs.Int("tasks", 0, "tasks measured per meta-epoch (0: the preset's meta-batch); the epoch time is scaled to the meta-batch")
	testSteps := fs.Int("test-steps", 50, "task steps of a meta-test task (architecture adapted in the first half)")
	workers := fs.Int("workers", 0, "concurrent tasks (run.workers; 0: automatic)")
	streams := fs.Bool("streams", false, "one CUDA stream per worker (run.streams)")
	batchTasks := fs.Int("batch-tasks", 0, "meta-train this many tasks at a time as one batched network (run.batch_tasks; 0: task by task); measures whole meta-batches")
	batchWorkers := fs.Int("batch-workers", 0, "with --batch-tasks: adapt this many batches at once, each on its own batched network (run.batch_workers; CUDA: one stream each)")
	graphs := fs.Bool("cuda-graphs", false, "with --batch-tasks on CUDA: run the batched steps from captured CUDA graphs (run.cuda_graphs)")
	precision := fs.String("precision", "", "float32 or bf16: autocast forward passes to bfloat16 (run.precision; empty: the preset's)")
	countOps := fs.Bool("count-ops", false, "also count ATen operator calls per warm-up task step (aten_ops_per_step; slows every op, so the timings are not comparable)")
	profTop := fs.Int("profile-ops", 0, "also time operator calls by self time and print the N costliest of each timed meta-epoch to stderr (slows every op)")
	bytesTop := fs.Int("profile-bytes", 0, "also count the bytes that ATen calls read and write (traffic_gib per timed meta-epoch) and print the N operators that moved most to stderr (slows every op)")
	traceOps := fs.Bool("kernel-trace-ops", false, "with --kernel-trace on CUDA, record the host's operators too, so that third_party/bench/trace_kernels.py names the operators that launched each eager kernel (larger traces, a slower host)")
	trace := fs.String("kernel-trace", "", "write a Chrome trace (PyTorch's profiler) of each timed meta-epoch to PREFIX-<case>-epoch<N>.json: CUDA kernels with --device cuda, host operators on the CPU (slows every launch; needs a LibTorch with Kineto, as PyTorch's wheels have)")
	configs := fs.String("configs", "configs", "folder of the presets")
	nodeIters := fs.Int("node-bench", 0, "instead of timings: time a batched og_metanas node's batch norm and sum, forward and backward, unfused and fused (METANAS_NODE_FUSED's call), this many times each at four node shapes (--device, --precision float32 or bf16), one JSON line per shape; on CUDA also four batched depthwise convolutions with cuDNN's and the shim's weight gradient (METANAS_DW_WGRAD's)")
	memEpochs := fs.Int("memory-epochs", 0, "instead of timings: run this many meta-epochs of a small synthetic MetaNAS run (the smoke preset; with --batch-tasks, --batch-workers and --cuda-graphs as given) and report resident and GPU memory at epoch 50 and at the end")
	if code, done := cli.Parse(fs, prog, args); done {
		return code
	}
	if *countOps {
		torch.CountOps()
	}
	if *profTop < 0 {
		return cli.Errorf(prog, cli.Usage, fmt.Errorf("--profile-ops must be >= 0, got %d", *profTop))
	}
	if *bytesTop < 0 {
		return cli.Errorf(prog, cli.Usage, fmt.Errorf("--profile-bytes must be >= 0, got %d", *bytesTop))
	}
	if *bytesTop > 0 {
		torch.ProfileBytes()
	}
	if *traceOps && *trace == "" {
		return cli.Errorf(prog, cli.Usage, fmt.Errorf("--kernel-trace-ops needs --kernel-trace PREFIX (the trace it adds to)"))
	}
	if *profTop > 0 {
		torch.ProfileOps()
	}
	if *nodeIters < 0 {
		return cli.Errorf(prog, cli.Usage, fmt.Errorf("--node-bench must be >= 0, got %d", *nodeIters))
	}
	if *nodeIters > 0 && *precision != "" && *precision != "float32" && *precision != "bf16" {
		return cli.Errorf(prog, cli.Usage, fmt.Errorf("--precision %q: --node-bench takes float32 or bf16", *precision))
	}
	if *nodeIters > 0 {
		rs, err := nodeBench(*device, *precision, *nodeIters)
		if err != nil {
			return cli.Errorf(prog, cli.Fail, err)
		}
		for _, r := range rs {
			printJSON(r)
		}
		dws, err := dwBench(*device, *precision, *nodeIters)
		if err != nil {
			return cli.Errorf(prog, cli.Fail, err)
		}
		for _, r := range dws {
			printJSON(r)
		}
		return cli.OK
	}
	if *memEpochs > 0 {
		r, err := memory(*configs, *device, *memEpochs, *batchTasks, *batchWorkers, *graphs)
		if err != nil {
			return cli.Errorf(prog, cli.Fail, err)
		}
		printJSON(r)
		return cli.OK
	}
	for _, c := range strings.Split(*cases, ",") {
		o := caseOpts{tasks: *tasks, testSteps: *testSteps, workers: *workers, streams: *streams, batchTasks: *batchTasks, batchWorkers: *batchWorkers, graphs: *graphs, precision: *precision, profTop: *profTop, bytesTop: *bytesTop, trace: *trace, traceOps: *traceOps}
		r, err := measure(*configs, strings.TrimSpace(c), *device, o)
		if err != nil {
			if train.IsUsage(err) {
				return cli.Errorf(prog, cli.Usage, err)
			}
			return cli.Errorf(prog, cli.Fail, err)
		}
		printJSON(r)
	}
	return cli.OK
}

// printJSON prints v as one JSON line (the command's results; they marshal without error).
func printJSON(v any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

// caseOpts are the settings of a measured case (the command's flags).
type caseOpts struct {
	tasks, testSteps, workers int
	streams                   bool
	batchTasks, batchWorkers  int
	graphs                    bool
	precision                 string // run.precision ("" for the preset's)
	profTop                   int
	bytesTop                  int    // with ProfileBytes on: operators printed by traffic
	trace                     string // kernel-trace file prefix ("" for none)
	traceOps                  bool   // the kernel traces also record the host's operators
}

// measure times one preset; with profTop > 0 it also prints the profTop costliest operators
// of each timed meta-epoch (ProfileOps must be on).
func measure(dir, name, device string, o caseOpts) (*Result, error) {
	tasks, testSteps, workers, streams, batchTasks, profTop := o.tasks, o.testSteps, o.workers, o.streams, o.batchTasks, o.profTop
	cfg, err := config.Load(dir + "/" + name + ".yaml")
	if err != nil {
		return nil, err
	}
	in, size := cfg.Data.InputShape()
	out, err := os.MkdirTemp("", "metanas-bench")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(out)
	per := max(cfg.Data.TrainShots, cfg.Data.Shots) + cfg.Data.Queries
	sets := []string{
		"data.dataset=synthetic", fmt.Sprintf("data.synthetic.channels=%d", in), fmt.Sprintf("data.synthetic.size=%d", size),
		fmt.Sprintf("data.synthetic.classes=%d", 2*cfg.Data.Ways), fmt.Sprintf("data.synthetic.per_class=%d", per),
		"run.device=" + device, "run.out=" + out, fmt.Sprintf("run.workers=%d", workers), fmt.Sprintf("run.streams=%t", streams),
		fmt.Sprintf("run.batch_tasks=%d", batchTasks), fmt.Sprintf("run.batch_workers=%d", o.batchWorkers), fmt.Sprintf("run.cuda_graphs=%t", o.graphs),
		fmt.Sprintf("task.test_steps=%d", testSteps), fmt.Sprintf("task.test_arch_steps=%d", testSteps/2),
	}
	if o.precision != "" {
		sets = append(sets, "run.precision="+o.precision)
	}
	for _, kv := range sets {
		if err := cfg.Set(kv); err != nil {
			return nil, err
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tr, err := train.New(cfg, train.Options{})
	if err != nil {
		return nil, err
	}
	defer tr.Close()
	n := cfg.Meta.MetaBatch
	if tasks > 0 && tasks < n && batchTasks < 2 { // batches measure the whole meta-batch
		n = tasks
	}
	sampler, err := data.NewSampler(tr.Split.Train, cfg.Data.Ways, cfg.Data.TrainShots, cfg.Data.Queries, 1)
	if err != nil {
		return nil, err
	}
	batch := sampler.Batch(0, n)
	dev := tr.Dev       // parsed and checked by train.New
	var traffic float64 // GiB moved in the last timed meta-epoch (with o.bytesTop)
	timeEpoch := func(epoch int) (float64, error) {
		warm := batch[:min(len(batch), len(tr.Workers))] // one task per worker warms caches
		steps := tr.Cfg.Task.Steps
		if batchTasks > 1 {
			// The batch's shapes warm up with the whole meta-batch, for one task step.
			warm, tr.Cfg.Task.Steps = batch, 1
		}
		_, err := tr.RunEpoch(epoch, warm)
		tr.Cfg.Task.Steps = steps
		if err != nil {
			return 0, err
		}
		if err := torch.Synchronize(dev); err != nil {
			return 0, err
		}
		if profTop > 0 {
			if _, err := torch.OpProfile(true); err != nil {
				return 0, err
			}
		}
		if o.bytesTop > 0 {
			if _, err := torch.BytesProfile(true); err != nil {
				return 0, err
			}
		}
		if o.trace != "" {
			if err := torch.StartTrace(dev.CUDA, o.traceOps); err != nil {
				return 0, err
			}
		}
		start := time.Now()
		if _, err := tr.RunEpoch(epoch, batch); err != nil {
			if o.trace != "" {
				_ = torch.StopTrace(os.DevNull) // the epoch's error is the one to report
			}
			return 0, err
		}
		if err := torch.Synchronize(dev); err != nil {
			return 0, err
		}
		if o.trace != "" {
			path := fmt.Sprintf("%s-%s-epoch%d.json", o.trace, name, epoch)
			if err := torch.StopTrace(path); err != nil {
				return 0, err
			}
			fmt.Fprintf(os.Stderr, "bench: %s: trace of meta-epoch %d in %s\n", name, epoch, path)
		}
		if profTop > 0 {
			if err := printProfile(fmt.Sprintf("%s meta-epoch %d", name, epoch), time.Since(start), profTop); err != nil {
				return 0, err
			}
		}
		if o.bytesTop > 0 {
			if traffic, err = printTraffic(fmt.Sprintf("%s meta-epoch %d", name, epoch), o.bytesTop); err != nil {
				return 0, err
			}
		}
		return time.Since(start).Seconds() * float64(cfg.Meta.MetaBatch) / float64(n), nil
	}
	r := &Result{Case: name, Device: device, Machine: machine(dev), Date: time.Now().UTC().Format("2006-01-02"), Commit: commit(),
		Workers: len(tr.Workers), Streams: streams && dev.CUDA, BatchTasks: batchTasks, BatchWorkers: len(tr.Batches), MetaBatch: cfg.Meta.MetaBatch, MeasuredTasks: n, MetaTestSteps: testSteps,
		Precision: string(cfg.Run.Precision)}
	r.ThreadsPerWork = torch.NumThreads()
	// peak records the CUDA allocator's peaks since the last call under part and starts
	// new ones (the first call only starts them).
	var rssMax float64 // the process's peak before each reset
	peak := func(part string) error {
		if !dev.CUDA {
			if pk := float64(torch.CPUPoolPeak(true)) / (1 << 20); part != "" && torch.CPUPool().Enabled {
				if r.PoolPeaks == nil {
					r.PoolPeaks = map[string]float64{}
				}
				r.PoolPeaks[part] = pk
			}
			v := peakRSS()
			rssMax = max(rssMax, v)
			if resetPeakRSS() && part != "" {
				if r.RSSPeaks == nil {
					r.RSSPeaks = map[string]float64{}
				}
				r.RSSPeaks[part] = v
			}
			return nil
		}
		m, err := torch.CUDAMemoryStats(dev, true)
		if err != nil || part == "" {
			return err
		}
		if r.GPUPeaks == nil {
			r.GPUPeaks = map[string]GPUPeak{}
		}
		r.GPUPeaks[part] = GPUPeak{Reserved: float64(m.ReservedPeak) / (1 << 20), Allocated: float64(m.AllocatedPeak) / (1 << 20)}
		return nil
	}
	if err := peak(""); err != nil {
		return nil, err
	}
	syncs, ops := torch.HostSyncs(), torch.OpCount()
	if r.WarmUpEpochS, err = timeEpoch(1); err != nil {
		return nil, err
	}
	if err := peak("warmup"); err != nil {
		return nil, err
	}
	addTraffic := func(part string) {
		if o.bytesTop > 0 {
			if r.TrafficGiB == nil {
				r.TrafficGiB = map[string]float64{}
			}
			r.TrafficGiB[part] = traffic
		}
	}
	addTraffic("warmup")
	fmt.Fprintf(os.Stderr, "bench: %s: warm-up meta-epoch %.2f s (%d of %d tasks measured, %d workers)\n", name, r.WarmUpEpochS, n, cfg.Meta.MetaBatch, len(tr.Workers))
	for _, b := range tr.Batches {
		if o.graphs {
			r.CUDAGraphs = true
			r.GraphReplays += b.GraphReplays
			if b.GraphErr != nil && r.GraphError == "" {
				r.GraphError = b.GraphErr.Error()
			}
			if r.GraphSkip == "" {
				r.GraphSkip = b.GraphSkip
			}
		}
	}
	batches := (cfg.Data.Ways*cfg.Data.TrainShots + cfg.Task.BatchSize - 1) / cfg.Task.BatchSize
	r.StepsPerTask = cfg.Task.Steps * batches
	stepsTotal := float64(2 * n * r.StepsPerTask)
	r.HostSyncsPerStp = float64(torch.HostSyncs()-syncs) / stepsTotal
	// The warm-up epoch's tasks include scoring the query set: a few ops per task besides
	// the steps, counted with them.
	r.AtenOpsPerStep = float64(torch.OpCount()-ops) / stepsTotal
	r.TaskStepMS = r.WarmUpEpochS / float64(cfg.Meta.MetaBatch*r.StepsPerTask) * 1000 * float64(len(tr.Workers))
	if batchTasks > 1 {
		// One batched step serves batchTasks tasks: report it (with several batch workers,
		// the time per step of their combined throughput), and a task step's share.
		r.BatchStepMS = r.WarmUpEpochS / float64(r.StepsPerTask*cfg.Meta.MetaBatch/batchTasks) * 1000
		r.TaskStepMS = r.BatchStepMS / float64(batchTasks)
	}
	if r.SearchEpochS, err = timeEpoch(cfg.Meta.WarmUpEpochs + 1); err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "bench: %s: search meta-epoch %.2f s\n", name, r.SearchEpochS)
	addTraffic("search")
	if err := peak("search"); err != nil {
		return nil, err
	}
	// One meta-test task per worker, or one batch of tasks per batch worker when batching.
	testTasks := max(1, len(tr.Workers))
	if batchTasks > 1 {
		testTasks = batchTasks * len(tr.Batches)
	}
	// A short meta-test first, untimed: the meta-test's minibatch shapes differ from
	// meta-training's, and cuDNN's autotuner meets each new shape once per process, as in a
	// run's first meta-test only (the epochs above are warmed the same way).
	steps, archSteps := tr.Cfg.Task.TestSteps, tr.Cfg.Task.TestArchSteps
	tr.Cfg.Task.TestSteps, tr.Cfg.Task.TestArchSteps = 2, 1
	_, err = tr.MetaTest(0, testTasks, false)
	tr.Cfg.Task.TestSteps, tr.Cfg.Task.TestArchSteps = steps, archSteps
	if err != nil {
		return nil, err
	}
	mt, err := tr.MetaTest(0, testTasks, false)
	if err != nil {
		return nil, err
	}
	r.MetaTestTaskS = mt.Seconds / float64(mt.Tasks)
	if err := peak("meta_test"); err != nil {
		return nil, err
	}
	r.PeakRSSMiB = max(rssMax, peakRSS())
	r.CPUPool = torch.CPUPool().Enabled
	r.BranchStreams, r.PointwiseMatmul = torch.BranchStreams(), torch.PointwiseMatmul(tr.Dev)
	r.NodeBatchNorm = cfg.Run.BatchTasks > 1 && cells.NodeBatchNorm(tr.Dev)
	r.StateFusion = cells.StateFusion(tr.Dev) && r.BranchStreams < 2
	r.TF32Matmul = tr.Dev.CUDA && torch.TF32Matmul()
	r.NodeFused = r.NodeBatchNorm && cells.NodeFused() && torch.NodeNormSumOn(tr.Dev)
	r.NodeRecompute = r.NodeBatchNorm && cells.NodeRecompute() && !r.NodeFused
	return r, nil
}

// printProfile writes the top costliest operators since the last reset to stderr, with
// their share of the wall time (over all threads, so shares can sum past 100 %).
func printProfile(label string, wall time.Duration, top int) error {
	stats, err := torch.OpProfile(true)
	if err != nil {
		return err
	}
	var total float64
	for _, s := range stats {
		total += s.SelfUS
	}
	fmt.Fprintf(os.Stderr, "%s: %.1f s wall, %.1f s in operators (all threads), %d operators\n", label, wall.Seconds(), total/1e6, len(stats))
	fmt.Fprintf(os.Stderr, "  %-44s %10s %10s %8s %7s\n", "operator", "calls", "self s", "us/call", "% wall")
	for i, s := range stats {
		if i == top {
			break
		}
		fmt.Fprintf(os.Stderr, "  %-44s %10d %10.2f %8.1f %7.1f\n", s.Name, s.Calls, s.SelfUS/1e6, s.SelfUS/float64(max(s.Calls, 1)), 100*s.SelfUS/1e6/wall.Seconds())
	}
	return nil
}

// printTraffic writes the top operators by bytes moved since the last reset to stderr, and
// returns the total in GiB.
func printTraffic(label string, top int) (float64, error) {
	stats, err := torch.BytesProfile(true)
	if err != nil {
		return 0, err
	}
	var total, calls int64
	for _, s := range stats {
		total += s.Bytes
		calls += s.Calls
	}
	const gib = 1 << 30
	fmt.Fprintf(os.Stderr, "%s: %.2f GiB read and written by %d outermost ATen calls\n", label, float64(total)/gib, calls)
	fmt.Fprintf(os.Stderr, "  %-44s %10s %10s %10s %7s\n", "operator", "calls", "GiB", "MiB/call", "% bytes")
	for i, s := range stats {
		if i == top {
			break
		}
		fmt.Fprintf(os.Stderr, "  %-44s %10d %10.3f %10.2f %7.1f\n", s.Name, s.Calls, float64(s.Bytes)/gib,
			float64(s.Bytes)/float64(max(s.Calls, 1))/(1<<20), 100*float64(s.Bytes)/float64(max(total, 1)))
	}
	return float64(total) / gib, nil
}

// cHeap returns the C heap in use and free-but-kept, in MiB.
func cHeap() (inUse, free float64) {
	u, f := torch.HostHeap()
	return float64(u) / (1 << 20), float64(f) / (1 << 20)
}

// GPUPeak is the most memory LibTorch's CUDA allocator held in part of a run, in MiB:
// reserved from the device (tensors, cached blocks and CUDA graphs' pools) and allocated
// to tensors.
type GPUPeak struct {
	Reserved  float64 `json:"reserved"`
	Allocated float64 `json:"allocated"`
}

// MemoryResult tracks resident memory over a long run.
type MemoryResult struct {
	Case         string  `json:"case"`
	Device       string  `json:"device"`
	Epochs       int     `json:"epochs"`
	BatchTasks   int     `json:"batch_tasks,omitempty"`
	BatchWorkers int     `json:"batch_workers,omitempty"`
	CUDAGraphs   bool    `json:"cuda_graphs,omitempty"`
	GraphReplays int64   `json:"graph_replays,omitempty"`
	RSSAt50MiB   float64 `json:"rss_at_epoch_50_mib"`
	RSSEndMiB    float64 `json:"rss_at_end_mib"`
	GrowthPct    float64 `json:"growth_pct"`
	// The highest of the samples taken every 50 meta-epochs from epoch 50 on, and its
	// growth over epoch 50: the end sample alone can hide a bump.
	RSSMaxMiB    float64 `json:"rss_max_from_epoch_50_mib"`
	MaxGrowthPct float64 `json:"max_growth_pct"`
	// Anonymous resident memory (RssAnon: heaps, stacks, LibTorch's tensors), without the
	// pages of mapped files such as LibTorch's code, which the kernel drops and reloads as
	// the machine's other work needs memory.
	AnonAt50MiB      float64 `json:"rss_anon_at_epoch_50_mib"`
	AnonEndMiB       float64 `json:"rss_anon_at_end_mib"`
	AnonMaxMiB       float64 `json:"rss_anon_max_from_epoch_50_mib"`
	AnonGrowthPct    float64 `json:"anon_growth_pct"`
	AnonMaxGrowthPct float64 `json:"anon_max_growth_pct"`
	LiveTensors      int64   `json:"live_tensor_handles_delta"`
	GoHeapAt50       float64 `json:"go_heap_at_epoch_50_mib"`
	GoHeapEnd        float64 `json:"go_heap_at_end_mib"`
	CHeapAt50        float64 `json:"c_heap_in_use_at_epoch_50_mib"`
	CHeapEnd         float64 `json:"c_heap_in_use_at_end_mib"`
	CFreeAt50        float64 `json:"c_heap_free_at_epoch_50_mib"`
	CFreeEnd         float64 `json:"c_heap_free_at_end_mib"`
	// The CPU tensor pool (torch.CPUPool; counted in the C heap in use): free blocks it still
	// kept at the end (the trainer empties it after every meta-epoch; other threads drop
	// theirs at their next allocation), and the share of allocations it served.
	CPUPool        bool    `json:"cpu_pool"`
	CPUPoolKeptEnd float64 `json:"cpu_pool_kept_at_end_mib"`
	CPUPoolHitPct  float64 `json:"cpu_pool_hit_pct"`
	// GPU memory of this process as nvidia-smi reports it (what LibTorch's caching
	// allocator holds plus the CUDA context), on CUDA only; -1 where nvidia-smi cannot say.
	GPUAt50MiB   float64 `json:"gpu_mem_at_epoch_50_mib,omitempty"`
	GPUEndMiB    float64 `json:"gpu_mem_at_end_mib,omitempty"`
	GPUGrowthPct float64 `json:"gpu_growth_pct,omitempty"`
	// The highest GPU sample from epoch 50 on, and its growth over epoch 50.
	GPUMaxMiB       float64 `json:"gpu_mem_max_from_epoch_50_mib,omitempty"`
	GPUMaxGrowthPct float64 `json:"gpu_max_growth_pct,omitempty"`
	// The run's search starts at SearchFrom (warm-up before it). Within each phase, the
	// highest growth of resident and GPU memory over the phase's base sample: epoch 50 in
	// warm-up, the search's first sample at least 50 meta-epochs into it (what a switch of
	// phase changes once, such as the graphs captured for the search, is not growth).
	SearchFrom           int     `json:"search_from_epoch"`
	RSSPhaseMaxGrowthPct float64 `json:"rss_max_growth_in_phase_pct"`
	GPUPhaseMaxGrowthPct float64 `json:"gpu_max_growth_in_phase_pct,omitempty"`
	Seconds              float64 `json:"seconds"`
}

// phaseGrowth tracks the highest growth of a memory figure within each phase of a run
// whose search starts at searchFrom: over the base sample (epoch 50) while it warms up, and
// in the search over its first sample at least 50 meta-epochs into it; the samples between
// the switch and that one do not count. Values at or below 0 (not measured) are ignored.
type phaseGrowth struct {
	searchFrom, baseEpoch int
	base, maxPct          float64
}

func (g *phaseGrowth) add(epoch int, v float64, isBase bool) {
	switch {
	case v <= 0:
		return
	case isBase:
		g.base, g.baseEpoch = v, epoch
	case g.base == 0:
		return
	case epoch >= g.searchFrom && g.baseEpoch < g.searchFrom:
		if epoch < g.searchFrom+49 {
			return
		}
		g.base, g.baseEpoch = v, epoch
	}
	g.maxPct = max(g.maxPct, 100*(v-g.base)/g.base)
}

// memory runs the smoke preset on synthetic data for n meta-epochs (warm-up for the first
// half, search afterwards), batchTasks tasks at a time as one batched network (0: task by
// task; batchWorkers such batches at once) and from CUDA graphs when graphs is set, and
// compares resident (and on CUDA, GPU) memory at epoch 50 and at the end.
func memory(dir, device string, n, batchTasks, batchWorkers int, graphs bool) (*MemoryResult, error) {
	cfg, err := config.Load(dir + "/smoke.yaml")
	if err != nil {
		return nil, err
	}
	out, err := os.MkdirTemp("", "metanas-bench")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(out)
	for _, kv := range []string{"data.dataset=synthetic", "data.synthetic.channels=1", "data.synthetic.size=28",
		"data.synthetic.classes=20", "data.synthetic.per_class=8", "run.device=" + device, "run.out=" + out,
		fmt.Sprintf("meta.epochs=%d", n), fmt.Sprintf("meta.warm_up_epochs=%d", n/2), "meta.test_every=0", "meta.test_tasks=1",
		fmt.Sprintf("run.batch_tasks=%d", batchTasks), fmt.Sprintf("run.batch_workers=%d", batchWorkers), fmt.Sprintf("run.cuda_graphs=%t", graphs)} {
		if err := cfg.Set(kv); err != nil {
			return nil, err
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tr, err := train.New(cfg, train.Options{})
	if err != nil {
		return nil, err
	}
	defer tr.Close()
	sampler, err := data.NewSampler(tr.Split.Train, cfg.Data.Ways, cfg.Data.TrainShots, cfg.Data.Queries, 1)
	if err != nil {
		return nil, err
	}
	r := &MemoryResult{Case: "smoke-synthetic", Device: device, Epochs: n, BatchTasks: batchTasks, BatchWorkers: len(tr.Batches), CUDAGraphs: graphs}
	dev := tr.Dev // parsed and checked by train.New
	gpuMem := func() float64 {
		if !dev.CUDA {
			return 0
		}
		if err := torch.Synchronize(dev); err != nil {
			return -1
		}
		return processGPUMemory(os.Getpid())
	}
	start := time.Now()
	var live int64
	pct := func(a, b float64) float64 { return 100 * (a - b) / b }
	r.SearchFrom = cfg.Meta.WarmUpEpochs // epoch e is warm-up while e < warm_up_epochs
	rssPhase, gpuPhase := phaseGrowth{searchFrom: r.SearchFrom}, phaseGrowth{searchFrom: r.SearchFrom}
	for e := 1; e <= n; e++ {
		if _, err := tr.RunEpoch(e, sampler.Batch(uint64(e), cfg.Meta.MetaBatch)); err != nil {
			return nil, err
		}
		base := e == 50 || (n < 50 && e == 1)
		if !base && e%50 != 0 && e != n {
			continue
		}
		// One sample: resident, anonymous and GPU memory; the last one (e == n) is the end.
		rss, anon, gpu := currentRSS(), procStatus("RssAnon"), gpuMem()
		u, f := cHeap()
		gpuText := ""
		if dev.CUDA {
			gpuText = fmt.Sprintf(", GPU %.0f MiB", gpu)
		}
		fmt.Fprintf(os.Stderr, "bench: memory: meta-epoch %d/%d: resident %.1f MiB (anonymous %.1f MiB), C heap in use %.1f MiB, free %.1f MiB%s, %.0f s\n",
			e, n, rss, anon, u, f, gpuText, time.Since(start).Seconds())
		if base {
			r.RSSAt50MiB, r.AnonAt50MiB, r.GPUAt50MiB = rss, anon, gpu
			r.GoHeapAt50 = goHeap()
			r.CHeapAt50, r.CFreeAt50 = u, f
			live = torch.LiveTensors()
		}
		if r.RSSAt50MiB > 0 { // from the base sample on
			r.RSSMaxMiB, r.AnonMaxMiB, r.GPUMaxMiB = max(r.RSSMaxMiB, rss), max(r.AnonMaxMiB, anon), max(r.GPUMaxMiB, gpu)
		}
		r.RSSEndMiB, r.AnonEndMiB, r.GPUEndMiB = rss, anon, gpu
		rssPhase.add(e, rss, base)
		gpuPhase.add(e, gpu, base)
	}
	r.RSSPhaseMaxGrowthPct, r.GPUPhaseMaxGrowthPct = rssPhase.maxPct, gpuPhase.maxPct
	r.GoHeapEnd = goHeap()
	r.CHeapEnd, r.CFreeEnd = cHeap()
	if p := torch.CPUPool(); p.Enabled {
		r.CPUPool, r.CPUPoolKeptEnd = true, float64(p.CachedBytes)/(1<<20)
		r.CPUPoolHitPct = 100 * float64(p.Hits) / float64(max(p.Hits+p.Misses, 1))
	}
	r.LiveTensors = torch.LiveTensors() - live
	r.GrowthPct, r.MaxGrowthPct = pct(r.RSSEndMiB, r.RSSAt50MiB), pct(r.RSSMaxMiB, r.RSSAt50MiB)
	if r.AnonAt50MiB > 0 {
		r.AnonGrowthPct, r.AnonMaxGrowthPct = pct(r.AnonEndMiB, r.AnonAt50MiB), pct(r.AnonMaxMiB, r.AnonAt50MiB)
	}
	if r.GPUAt50MiB > 0 && r.GPUEndMiB > 0 {
		r.GPUGrowthPct, r.GPUMaxGrowthPct = pct(r.GPUEndMiB, r.GPUAt50MiB), pct(r.GPUMaxMiB, r.GPUAt50MiB)
	}
	for _, b := range tr.Batches {
		r.GraphReplays += b.GraphReplays
	}
	r.Seconds = time.Since(start).Seconds()
	return r, nil
}

// processGPUMemory returns the GPU memory used by process pid in MiB, as nvidia-smi lists
// it, or -1 when nvidia-smi is missing or does not list the process.
func processGPUMemory(pid int) float64 {
	out, err := exec.Command("nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits").Output()
	if err != nil {
		return -1
	}
	return parseGPUApps(string(out), pid)
}

// parseGPUApps sums the used_memory column of nvidia-smi's "pid, used_memory" CSV lines
// that belong to pid (one line per GPU the process uses); -1 when none does.
func parseGPUApps(csv string, pid int) float64 {
	total, found := 0.0, false
	for _, line := range strings.Split(csv, "\n") {
		f := strings.Split(line, ",")
		if len(f) != 2 {
			continue
		}
		p, err1 := strconv.Atoi(strings.TrimSpace(f[0]))
		m, err2 := strconv.ParseFloat(strings.TrimSpace(f[1]), 64)
		if err1 == nil && err2 == nil && p == pid {
			total += m
			found = true
		}
	}
	if !found {
		return -1
	}
	return total
}

// goHeap is the Go heap in use after a collection, in MiB (what Go itself holds, as
// opposed to LibTorch's and malloc's memory).
func goHeap() float64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapAlloc) / (1 << 20)
}

// currentRSS reads the process's resident memory (VmRSS) in MiB.
func currentRSS() float64 { return procStatus("VmRSS") }

// peakRSS reads the process's peak resident memory (VmHWM) in MiB.
func peakRSS() float64 { return procStatus("VmHWM") }

// resetPeakRSS sets the process's peak resident memory (VmHWM) to its current resident
// memory, so that the next peakRSS covers what runs after; false where Linux refuses.
func resetPeakRSS() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

func procStatus(field string) float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var kb float64
		if _, err := fmt.Sscanf(sc.Text(), field+": %f kB", &kb); err == nil {
			return kb / 1024
		}
	}
	return 0
}

func machine(dev torch.Device) string {
	if dev.CUDA {
		if out, err := exec.Command("nvidia-smi", "--query-gpu=name", "--format=csv,noheader").Output(); err == nil {
			return strings.TrimSpace(strings.Split(string(out), "\n")[0])
		}
		return "cuda"
	}
	model := "cpu"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				model = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d cores", model, runtime.NumCPU())
}

func commit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
