package learn

import (
	"fmt"

	"github.com/metanas-go/metanas/cells"
	"github.com/metanas-go/metanas/metanas/config"
	"github.com/metanas-go/metanas/metanas/data"
	"github.com/metanas-go/metanas/torch"
)

// BatchWorker adapts the tasks of a meta-batch together, as one batched search network
// (cells.SearchConfig.Tasks): each task keeps its own weights, alphas, Adam state,
// gradient clipping and pruning, but every op runs once for all of them, so one step's
// per-op cost serves every task. For the tasks it equals Worker.Adapt run on each, except
// that drop-path masks and Gumbel noise come from one random stream, and that an op pruned
// for one task while another task still uses it gets a zero gradient for the first task
// (which Adam's momentum and weight decay still move) instead of none.
type BatchWorker struct {
	Dev   torch.Device
	Tasks int
	Model *Model
	WOpt  *torch.Optimizer
	AOpt  *torch.Optimizer
	scope *torch.Scope
	task  *torch.Scope
	step  *torch.Scope
	gen   *torch.Generator
	// Temp is the temperature reached by the last adaptation.
	Temp float64
	// GraphErr is why CUDA graphs were turned off after UseGraphs(true) (a failed capture),
	// nil while they work or were never asked for.
	GraphErr error
	// GraphReplays counts the steps replayed from a captured CUDA graph.
	GraphReplays int64
	// Adapted counts the batches adapted (Adapt calls that succeeded).
	Adapted int64
	// GraphSkip says why the last adaptation ran eagerly although graphs are on
	// (Gumbel-softmax draws its noise outside what a graph can replay), "" when it could
	// use them or graphs are off.
	GraphSkip string
	graphs    graphMode
	fixedG    *stepGraph // steps with fixed alphas
	archG     *stepGraph // steps that adapt the alphas
	// The same for the last, smaller minibatch of a support set that the batch size does
	// not divide (a graph replays one shape).
	fixedR, archR *stepGraph
	// Per-task sums of the support loss and hits over an adaptation, and the class
	// indices [1, classes]: static, so that captured steps can use them.
	loss, correct, classes *torch.Tensor
	// Gate, when set, is shared with the other batch workers that run at the same time:
	// Load, Adapt, Score and Reptile.AddBatch hold it shared, a capture exclusively.
	Gate *DeviceGate
}

// NewBatchWorker builds a batched network of tasks tasks with its Adam optimizers.
func NewBatchWorker(cfg config.Config, dev torch.Device, tasks int) (*BatchWorker, error) {
	if tasks < 1 {
		return nil, fmt.Errorf("batched tasks: need at least 1 task, got %d", tasks)
	}
	if cfg.Model.Kind != config.ModelSearch {
		return nil, fmt.Errorf("model.kind %q: batched tasks need the search network (model.kind search)", cfg.Model.Kind)
	}
	s := torch.NewScope()
	m, err := newModel(s, dev, cfg, tasks)
	if err != nil {
		s.Close()
		return nil, err
	}
	gen, err := torch.NewGenerator(uint64(cfg.Run.Seed), dev)
	if err != nil {
		s.Close()
		return nil, err
	}
	b := &BatchWorker{Dev: dev, Tasks: tasks, Model: m, scope: s, task: s.Child(), step: s.Child(), gen: gen, Temp: cfg.Arch.TMax,
		loss: s.Zeros([]int64{int64(tasks)}, dev), correct: s.Zeros([]int64{int64(tasks)}, dev)}
	b.classes = s.Reshape(s.Arange(int64(m.Search.Cfg.Classes), dev), 1, int64(m.Search.Cfg.Classes))
	if err := s.Err(); err != nil {
		gen.Close()
		s.Close()
		return nil, err
	}
	t := cfg.Task
	// Adam works elementwise: one optimizer over the stacked tensors is one per task.
	b.WOpt, err = torch.NewAdam(m.Weights(), torch.AdamOptions{LR: t.WLR, Beta1: t.WBetas[0], Beta2: t.WBetas[1], WeightDecay: t.WWeightDecay})
	if err == nil {
		b.AOpt, err = torch.NewAdam(m.Alphas(), torch.AdamOptions{LR: t.ALR, Beta1: t.ABetas[0], Beta2: t.ABetas[1], WeightDecay: t.AWeightDecay})
	}
	if err != nil {
		if b.WOpt != nil {
			b.WOpt.Close()
		}
		gen.Close()
		s.Close()
		return nil, fmt.Errorf("task optimizer: %w", err)
	}
	return b, nil
}

// Close frees the network, optimizer state and task tensors.
func (b *BatchWorker) Close() {
	b.dropGraphs()
	b.WOpt.Close()
	b.AOpt.Close()
	b.step.Close()
	b.task.Close()
	b.scope.Close()
	b.gen.Close()
}

// SeedTask restarts the random stream (drop-path masks, Gumbel noise) for the next batch.
func (b *BatchWorker) SeedTask(seed uint64) { b.gen.Seed(seed) }

// Load copies the meta-model into every task's copy.
func (b *BatchWorker) Load(meta *Model) error {
	defer b.Gate.Shared()()
	return b.Model.Reg.CopyFrom(meta.Reg)
}

// stackTasks concatenates the tasks' support sets (query sets when query is set) on the
// host: images [T, n, C, H, W] and labels [T, n], checking that every task has task 0's
// shapes and a non-empty set.
func stackTasks(tasks []data.Task, query bool) (xs []float32, ys []int64, shape []int64, err error) {
	set := func(t *data.Task) ([]float32, []int64) {
		if query {
			return t.QueryX, t.QueryY
		}
		return t.SupportX, t.SupportY
	}
	what := map[bool]string{false: "support", true: "query"}[query]
	t0 := &tasks[0]
	x0, y0 := set(t0)
	n := len(y0)
	for i := range tasks {
		t := &tasks[i]
		x, y := set(t)
		if n == 0 || len(y) != n || len(x) != len(x0) || t.C != t0.C || t.H != t0.H || t.W != t0.W {
			return nil, nil, nil, fmt.Errorf("batched tasks: task %d has %d %s images of %dx%dx%d, task 0 %d of %dx%dx%d (a batch needs one non-empty shape)",
				t.Index, len(y), what, t.C, t.H, t.W, n, t0.C, t0.H, t0.W)
		}
		xs = append(xs, x...)
		ys = append(ys, y...)
	}
	return xs, ys, []int64{int64(len(tasks)), int64(n), int64(t0.C), int64(t0.H), int64(t0.W)}, nil
}

// upload puts the tasks' support sets (query sets when query is set) on the device:
// x [T, n, C, H, W], y [T, n].
func (b *BatchWorker) upload(s *torch.Scope, tasks []data.Task, query bool) (x, y *torch.Tensor, err error) {
	xs, ys, shape, err := stackTasks(tasks, query)
	if err != nil {
		return nil, nil, err
	}
	x, y = s.FromFloat32(xs, shape, b.Dev), s.FromInt64(ys, shape[:2], b.Dev)
	return x, y, s.Err()
}

// Adapt trains every task's copy on its support set, exactly as Worker.Adapt does for one
// task (same steps, minibatches, temperature schedule and updates); tasks must number
// b.Tasks and share one shape.
func (b *BatchWorker) Adapt(tasks []data.Task, ts TaskSettings, adaptAlphas bool) ([]AdaptResult, error) {
	if len(tasks) != b.Tasks {
		return nil, fmt.Errorf("batched tasks: %d tasks for a network of %d", len(tasks), b.Tasks)
	}
	defer b.Gate.Shared()()
	defer torch.PinThread()() // the same gradient sums whatever the scheduler does
	b.task.Reset()
	b.WOpt.Reset()
	b.AOpt.Reset()
	m := b.Model
	T := int64(b.Tasks)
	archOn := adaptAlphas && ts.ArchSteps > 0
	alphas := m.Alphas()
	setArch := func(on bool) error { return setRequiresGrad(alphas, on) }
	sx, sy, err := b.upload(b.task, tasks, false)
	if err != nil {
		return nil, err
	}
	sh := sx.MustShape() // [T, ns, C, H, W]
	ns, C, H, W := sh[1], sh[2], sh[3], sh[4]
	bs := int64(ts.BatchSize)
	if bs <= 0 || bs > ns {
		bs = ns
	}
	ctx := &cells.Ctx{S: b.step, Train: true, DropPath: ts.DropPath, Gen: b.gen, Tasks: T}
	tsc := b.task
	for _, acc := range []*torch.Tensor{b.loss, b.correct} {
		if err := acc.Fill_(0); err != nil {
			return nil, err
		}
	}
	batches := 0
	archStep := 0
	var fixed *cells.ArchWeights
	fixedTemp := -1.0
	var gen *torch.Generator
	if ts.Norm == cells.GumbelSoftmax {
		gen = b.gen
	}
	// With graphs on, every step runs on static buffers, from a captured CUDA graph after
	// the first steps: one graph for steps with fixed alphas, one for steps that adapt them
	// (their weights normalised on the device, pruning on the device).
	graphed := b.graphs != graphsOff && gen == nil
	b.GraphSkip = ""
	if b.graphs != graphsOff && gen != nil {
		b.GraphSkip = "Gumbel-softmax normalisation (arch.normalizer) runs without graphs"
	}
	for _, o := range []*torch.Optimizer{b.WOpt, b.AOpt} {
		if err := o.SetDeviceSteps(graphed); err != nil {
			return nil, err
		}
	}
	if err := b.dropIdleGraphs(graphed && (!archOn || ts.ArchSteps < ts.Steps), graphed && archOn); err != nil {
		return nil, err
	}
	// Full minibatches and, where the batch size does not divide the support set, the
	// last smaller one: each shape has its own buffers and graphs.
	shape := []int64{bs, T * C, H, W}
	rem := ns % bs
	remShape := []int64{rem, T * C, H, W}
	var fg, fr *stepGraph
	for step := 0; step < ts.Steps; step++ {
		arch := archOn && step < ts.ArchSteps
		if err := setArch(arch); err != nil {
			return nil, err
		}
		temp := ts.Schedule.Temperature(archStep)
		a := Arch{Norm: ts.Norm, Temp: temp, Threshold: ts.Threshold}
		if !arch && gen == nil && (fixed == nil || fixedTemp != temp) {
			if fixed, err = m.Search.Normalize(tsc, ts.Norm, temp); err != nil {
				return nil, err
			}
			fixedTemp = temp
			if graphed {
				if fg, err = b.fixedGraph(&b.fixedG, fixed, ts, shape); err != nil {
					return nil, err
				}
				if rem > 0 {
					if fr, err = b.fixedGraph(&b.fixedR, fixed, ts, remShape); err != nil {
						return nil, err
					}
				}
			}
		}
		var ag, ar *stepGraph
		if arch && graphed {
			if ag, err = b.archGraph(&b.archG, ts, shape, temp); err != nil {
				return nil, err
			}
			if rem > 0 {
				if ar, err = b.archGraph(&b.archR, ts, remShape, temp); err != nil {
					return nil, err
				}
			}
		}
		for off := int64(0); off < ns; off += bs {
			n := min(bs, ns-off)
			// The buffers of this minibatch's shape, and those of the other shape of the
			// same kind (nil when every minibatch is whole), which a capture waits for.
			ag, fg, agOther, fgOther := ag, fg, ar, fr
			if n < bs {
				ag, fg, agOther, fgOther = ar, fr, ag, fg
			}
			s := b.step
			s.Reset()
			// [T, n, C, H, W] -> [n, T*C, H, W]: each task's images in its own channels.
			x := s.Reshape(s.Permute(s.Narrow(sx, 1, off, n), 1, 0, 2, 3, 4), n, T*C, H, W)
			y := s.Reshape(s.Narrow(sy, 1, off, n), T*n, 1)
			var err error
			switch {
			case ag != nil:
				err = b.graphStep(ag, agOther, x, y, func() error {
					w, err := m.Search.NormalizeOnDevice(ctx.S, ts.Norm, ag.temp, nil)
					if err != nil {
						return err
					}
					return b.trainStep(ctx, ag.x, ag.y, a, w, true, ts.GradClip)
				})
			case fg != nil && !arch:
				err = b.graphStep(fg, fgOther, x, y, func() error {
					return b.trainStep(ctx, fg.x, fg.y, a, fg.pre, false, ts.GradClip)
				})
			default:
				var pre *cells.ArchWeights
				if !arch {
					pre = fixed
				}
				err = b.trainStep(ctx, x, y, a, pre, arch, ts.GradClip)
			}
			if err != nil {
				return nil, err
			}
			batches++
		}
		if arch {
			archStep++
		}
	}
	b.Temp = ts.Schedule.Temperature(archStep)
	if err := setArch(true); err != nil {
		return nil, err
	}
	host, err := tsc.Stack([]*torch.Tensor{b.loss, b.correct}, 0).Float64s()
	if err != nil {
		return nil, err
	}
	b.Adapted++
	out := make([]AdaptResult, T)
	for i := range out {
		out[i] = AdaptResult{Loss: host[i] / float64(batches), Accuracy: host[int(T)+i] / float64(int64(ts.Steps)*ns)}
	}
	return out, nil
}

// trainStep runs one minibatch step of every task: forward (with the normalised weights
// pre, or the alphas normalised by the pass when pre is nil), per-task cross-entropy,
// backward, per-task clipping, Adam on the weights (and on the alphas when arch is set);
// it adds each task's loss and hit count to b.loss and b.correct in place. With pre given
// and normalised on the device it issues no host synchronisation, so that a CUDA graph
// can capture it.
func (b *BatchWorker) trainStep(ctx *cells.Ctx, x, y *torch.Tensor, a Arch, pre *cells.ArchWeights, arch bool, clip float64) error {
	s := ctx.S
	m := b.Model
	T := int64(b.Tasks)
	K := int64(m.Search.Cfg.Classes)
	n := x.MustShape()[0]
	weights := m.Weights()
	logits, _, err := m.Forward(ctx, x, a, pre) // [T, n, K]
	if err != nil {
		return err
	}
	flat := s.Reshape(logits, T*n, K)
	// Per task the mean cross-entropy; their sum gives each task its own gradient.
	nll := s.Neg(s.SumDims(s.Mul(s.LogSoftmax(flat, 1), s.Compare(y, torch.Eq, b.classes)), false, 1))
	perTask := s.MeanDims(s.Reshape(nll, T, n), false, 1)
	loss := s.Sum(perTask)
	if err := torch.ZeroGrad(append(weights, m.Alphas()...), true); err != nil {
		return err
	}
	if err := loss.Backward(); err != nil {
		return err
	}
	if clip > 0 {
		s.ClipGradNormTasks(weights, T, clip)
	}
	if err := b.WOpt.Step(); err != nil {
		return err
	}
	if arch {
		if err := b.AOpt.Step(); err != nil {
			return err
		}
	}
	hit := s.Compare(s.Reshape(s.Argmax(flat, 1, false), T*n, 1), torch.Eq, y)
	hits := s.SumDims(s.To(s.Reshape(hit, T, n), torch.Float32, b.Dev), false, 1)
	if err := b.loss.Add_(s.Detach(perTask), 1); err != nil {
		return err
	}
	if err := b.correct.Add_(hits, 1); err != nil {
		return err
	}
	return s.Err()
}

// Score evaluates every task's adapted network on its query set, as Worker.Score does for
// one task: hard pruning at threshold per task, batch norm in training mode when bnTrain
// is set; each task's genotype and active weights from its own architecture weights.
func (b *BatchWorker) Score(tasks []data.Task, norm cells.NormKind, threshold float64, bnTrain bool) ([]Score, error) {
	if len(tasks) != b.Tasks {
		return nil, fmt.Errorf("batched tasks: %d tasks for a network of %d", len(tasks), b.Tasks)
	}
	defer b.Gate.Shared()()
	s := b.step
	s.Reset()
	T := int64(b.Tasks)
	out := make([]Score, b.Tasks)
	err := torch.NoGrad(func() error {
		qx, qy, err := b.upload(s, tasks, true)
		if err != nil {
			return err
		}
		sh := qx.MustShape() // [T, N, C, H, W]
		N := sh[1]
		x := s.Reshape(s.Permute(qx, 1, 0, 2, 3, 4), N, T*sh[2], sh[3], sh[4])
		ctx := &cells.Ctx{S: s, Train: bnTrain, Gen: b.gen, Tasks: T}
		logits, aw, err := b.Model.Forward(ctx, x, Arch{Norm: norm, Temp: b.Temp, Threshold: threshold})
		if err != nil {
			return err
		}
		hit := s.Compare(s.Argmax(logits, 2, false), torch.Eq, qy) // [T, N]
		v, err := s.SumDims(s.To(hit, torch.Float32, b.Dev), false, 1).Float64s()
		if err != nil {
			return err
		}
		for i := range out {
			out[i].Accuracy = v[i] / float64(N)
			tw, err := aw.TaskHost(i, b.Tasks)
			if err != nil {
				return err
			}
			g, err := b.Model.Search.Genotype(tw)
			if err != nil {
				return err
			}
			out[i].Genotype = g.String()
			out[i].ActiveParams = b.Model.Search.ActiveParams(tw, threshold)
		}
		return s.Err()
	})
	return out, err
}

// BatchAdder is a meta-learner that can take a whole adapted batch at once.
type BatchAdder interface {
	// AddBatch records every task adapted by b.
	AddBatch(b *BatchWorker) error
}

// AddBatch sums the adapted weights, alphas and running statistics of every task of b.
func (r *Reptile) AddBatch(b *BatchWorker) error {
	defer b.Gate.Shared()()
	m := b.Model
	T := int64(b.Tasks)
	for _, l := range []struct{ acc, src []*torch.Tensor }{
		{r.acc.w, m.Weights()}, {r.acc.a, m.Alphas()}, {r.acc.b, m.Reg.RunningStats()},
	} {
		if err := torch.ForeachAddTaskSum(l.acc, l.src, T); err != nil {
			return err
		}
	}
	r.acc.n += b.Tasks
	return nil
}
