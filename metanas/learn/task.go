package learn

import (
	"fmt"

	"github.com/metanas-go/metanas/cells"
	"github.com/metanas-go/metanas/metanas/config"
	"github.com/metanas-go/metanas/metanas/data"
	"github.com/metanas-go/metanas/torch"
)

// TaskSettings are the task learner's hyper-parameters for one phase (meta-train or
// meta-test).
type TaskSettings struct {
	Steps     int // task steps (passes over the support set)
	ArchSteps int // the first ArchSteps steps also update the alphas
	BatchSize int // support minibatch size
	Norm      cells.NormKind
	Schedule  cells.Schedule // temperature over the architecture steps
	Threshold float64        // forward-pass prune threshold
	DropPath  float64
	GradClip  float64 // max global norm of the weight gradients (0: off)
	ResetOpt  bool    // fresh Adam state per task
}

// Settings derives meta-train (test=false) or meta-test task settings from cfg.
func Settings(cfg config.Config, test bool) TaskSettings {
	t := cfg.Task
	s := TaskSettings{Steps: t.Steps, ArchSteps: t.MetaTrainArchSteps(), BatchSize: t.BatchSize,
		Norm: cells.NormKind(cfg.Arch.Normalizer), Threshold: cfg.Model.PruneThreshold, DropPath: cfg.Model.DropPath,
		GradClip: t.GradClip, ResetOpt: t.OptimState != config.OptimKeep}
	if test {
		s.Steps, s.ArchSteps = t.TestSteps, t.MetaTestArchSteps()
		if t.TestBatchSize > 0 {
			s.BatchSize = t.TestBatchSize
		}
		if !cfg.Model.DropPathTest {
			s.DropPath = 0
		}
	}
	s.Schedule = cells.Schedule{TMax: cfg.Arch.TMax, TMin: cfg.Arch.TMin, MaxSteps: s.ArchSteps}
	if cfg.Arch.TAnneal == config.AnnealNone {
		s.Schedule.TMin = s.Schedule.TMax
	}
	return s
}

// Worker adapts tasks on its own copy of the network with its own optimizers; workers
// run concurrently on independent tensors.
type Worker struct {
	Dev   torch.Device
	Model *Model
	WOpt  *torch.Optimizer
	AOpt  *torch.Optimizer // nil without alphas
	scope *torch.Scope     // model, optimizer state
	task  *torch.Scope     // one task's data and accumulators
	step  *torch.Scope     // one minibatch's activations
	// Temp is the temperature reached by the last adaptation (used for scoring).
	Temp float64
	cur  *taskData // tensors of the last adapted task
	curI uint64
	gen  *torch.Generator
}

// SeedTask restarts the worker's random stream (drop-path masks, Gumbel noise) for the
// next task, so that a task's randomness depends on its seed alone, not on which worker
// runs it or when.
func (w *Worker) SeedTask(seed uint64) { w.gen.Seed(seed) }

// NewWorker builds a task network and its Adam optimizers from cfg.
func NewWorker(cfg config.Config, dev torch.Device) (*Worker, error) {
	s := torch.NewScope()
	m, err := NewModel(s, dev, cfg)
	if err != nil {
		s.Close()
		return nil, err
	}
	t := cfg.Task
	gen, err := torch.NewGenerator(uint64(cfg.Run.Seed), dev)
	if err != nil {
		s.Close()
		return nil, err
	}
	w := &Worker{Dev: dev, Model: m, scope: s, task: s.Child(), step: s.Child(), Temp: cfg.Arch.TMax, gen: gen}
	w.WOpt, err = torch.NewAdam(m.Weights(), torch.AdamOptions{LR: t.WLR, Beta1: t.WBetas[0], Beta2: t.WBetas[1], WeightDecay: t.WWeightDecay})
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("task.w_lr/w_betas: %w", err)
	}
	if m.HasAlphas() {
		w.AOpt, err = torch.NewAdam(m.Alphas(), torch.AdamOptions{LR: t.ALR, Beta1: t.ABetas[0], Beta2: t.ABetas[1], WeightDecay: t.AWeightDecay})
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("task.a_lr/a_betas: %w", err)
		}
	}
	return w, nil
}

// Close frees the worker's tensors and optimizer state.
func (w *Worker) Close() {
	w.WOpt.Close()
	if w.AOpt != nil {
		w.AOpt.Close()
	}
	w.step.Close()
	w.task.Close()
	w.scope.Close()
	w.gen.Close()
}

// Load copies the meta-model's weights, alphas and buffers into the worker's network.
func (w *Worker) Load(meta *Model) error { return w.Model.Reg.CopyFrom(meta.Reg) }

// AdaptResult summarises one task adaptation.
type AdaptResult struct {
	Loss     float64 // mean support loss over all minibatches
	Accuracy float64 // support accuracy over all minibatches
}

// taskData holds a task's tensors on the device.
type taskData struct {
	sx, sy, qx, qy *torch.Tensor
	ns, nq         int64
}

func (w *Worker) upload(t *data.Task) (*taskData, error) {
	s := w.task
	ns, nq := int64(len(t.SupportY)), int64(len(t.QueryY))
	shape := func(n int64) []int64 { return []int64{n, int64(t.C), int64(t.H), int64(t.W)} }
	d := &taskData{ns: ns, nq: nq,
		sx: s.FromFloat32(t.SupportX, shape(ns), w.Dev), sy: s.FromInt64(t.SupportY, []int64{ns}, w.Dev)}
	if nq > 0 {
		d.qx, d.qy = s.FromFloat32(t.QueryX, shape(nq), w.Dev), s.FromInt64(t.QueryY, []int64{nq}, w.Dev)
	}
	return d, s.Err()
}

// Adapt trains the worker's network on the task's support set: Steps passes in minibatches,
// one forward/backward per minibatch serving both the weight update and, during the first
// ArchSteps steps when adaptAlphas is set, the alpha update (first-order DARTS). The
// temperature schedule restarts for each task and advances after each architecture step.
// The task's tensors stay available for Score until the next Adapt.
func (w *Worker) Adapt(t *data.Task, ts TaskSettings, adaptAlphas bool) (AdaptResult, error) {
	defer torch.PinThread()() // the same gradient sums whatever the scheduler does
	w.task.Reset()
	if ts.ResetOpt {
		w.WOpt.Reset()
		if w.AOpt != nil {
			w.AOpt.Reset()
		}
	}
	m := w.Model
	archOn := adaptAlphas && m.HasAlphas() && ts.ArchSteps > 0
	alphas := m.Alphas()
	setArch := func(on bool) error { return setRequiresGrad(alphas, on) }
	d, err := w.upload(t)
	if err != nil {
		return AdaptResult{}, err
	}
	w.cur, w.curI = d, t.Index
	params := append(m.Weights(), m.Alphas()...)
	weights := m.Weights()
	bs := int64(ts.BatchSize)
	if bs <= 0 || bs > d.ns {
		bs = d.ns
	}
	ctx := &cells.Ctx{S: w.step, Train: true, DropPath: ts.DropPath, Gen: w.gen}
	ts2 := w.task
	lossSum := ts2.Zeros(nil, w.Dev)
	correct := ts2.Zeros(nil, w.Dev)
	batches := 0
	archStep := 0
	// While the alphas are fixed (warm-up, weight-only steps), their normalised weights are
	// computed once in the task scope and reused: no normalisation and no host copy per step.
	var fixed *cells.ArchWeights
	fixedTemp := -1.0
	gen := (*torch.Generator)(nil)
	if ts.Norm == cells.GumbelSoftmax {
		gen = w.gen // fresh noise every pass: never reuse
	}
	for step := 0; step < ts.Steps; step++ {
		arch := archOn && step < ts.ArchSteps
		if err := setArch(arch); err != nil {
			return AdaptResult{}, err
		}
		temp := ts.Schedule.Temperature(archStep)
		a := Arch{Norm: ts.Norm, Temp: temp, Threshold: ts.Threshold}
		if !arch && m.HasAlphas() && gen == nil && (fixed == nil || fixedTemp != temp) {
			if fixed, err = m.Search.Normalize(w.task, ts.Norm, temp); err != nil {
				return AdaptResult{}, err
			}
			fixedTemp = temp
		}
		for off := int64(0); off < d.ns; off += bs {
			n := bs
			if off+n > d.ns {
				n = d.ns - off
			}
			s := w.step
			s.Reset()
			x, y := s.Narrow(d.sx, 0, off, n), s.Narrow(d.sy, 0, off, n)
			var pre *cells.ArchWeights
			if !arch {
				pre = fixed
			}
			logits, _, err := m.Forward(ctx, x, a, pre)
			if err != nil {
				return AdaptResult{}, err
			}
			loss := s.CrossEntropy(logits, y)
			if err := torch.ZeroGrad(params, true); err != nil {
				return AdaptResult{}, err
			}
			if err := loss.Backward(); err != nil {
				return AdaptResult{}, err
			}
			if ts.GradClip > 0 {
				s.ClipGradNorm(weights, ts.GradClip)
			}
			if err := w.WOpt.Step(); err != nil {
				return AdaptResult{}, err
			}
			if arch {
				if err := w.AOpt.Step(); err != nil {
					return AdaptResult{}, err
				}
			}
			hit := s.SumDims(s.Compare(s.Argmax(logits, 1, false), torch.Eq, y), false, 0)
			lossSum = ts2.Add(lossSum, s.Detach(loss))
			correct = ts2.Add(correct, s.To(hit, torch.Float32, w.Dev))
			if err := s.Err(); err != nil {
				return AdaptResult{}, err
			}
			batches++
		}
		if arch {
			archStep++
		}
	}
	w.Temp = ts.Schedule.Temperature(archStep)
	if err := setArch(true); err != nil {
		return AdaptResult{}, err
	}
	if err := ts2.Err(); err != nil {
		return AdaptResult{}, err
	}
	host, err := ts2.Stack([]*torch.Tensor{lossSum, correct}, 0).Float64s()
	if err != nil {
		return AdaptResult{}, err
	}
	return AdaptResult{Loss: host[0] / float64(batches), Accuracy: host[1] / float64(int64(ts.Steps)*d.ns)}, nil
}

// setRequiresGrad turns gradient recording of ts on or off.
func setRequiresGrad(ts []*torch.Tensor, on bool) error {
	for _, t := range ts {
		if err := t.SetRequiresGrad(on); err != nil {
			return err
		}
	}
	return nil
}

// Score is the outcome of a meta-test task.
type Score struct {
	Accuracy     float64
	Genotype     string // empty for fixed networks
	ActiveParams int64  // weights left after hard pruning (all weights for fixed networks)
}

// Score evaluates the adapted network on the task's query set after hard pruning at
// threshold (ops and input pairs with weight <= threshold removed), with batch norm in
// training mode (transductive) when bnTrain is set, else with running statistics.
func (w *Worker) Score(t *data.Task, norm cells.NormKind, threshold float64, bnTrain bool) (Score, error) {
	s := w.step
	s.Reset()
	d := w.cur
	if d == nil || w.curI != t.Index {
		w.task.Reset()
		var err error
		if d, err = w.upload(t); err != nil {
			return Score{}, err
		}
		w.cur, w.curI = d, t.Index
	}
	if d.qx == nil {
		return Score{}, fmt.Errorf("task %d has no query set", t.Index)
	}
	var out Score
	err := torch.NoGrad(func() error {
		ctx := &cells.Ctx{S: s, Train: bnTrain, Gen: w.gen}
		logits, aw, err := w.Model.Forward(ctx, d.qx, Arch{Norm: norm, Temp: w.Temp, Threshold: threshold})
		if err != nil {
			return err
		}
		hit := s.SumDims(s.Compare(s.Argmax(logits, 1, false), torch.Eq, d.qy), false, 0)
		v, err := hit.Float64s()
		if err != nil {
			return err
		}
		out.Accuracy = v[0] / float64(d.nq)
		if aw != nil {
			g, err := w.Model.Search.Genotype(aw)
			if err != nil {
				return err
			}
			out.Genotype = g.String()
			out.ActiveParams = w.Model.Search.ActiveParams(aw, threshold)
		} else {
			out.ActiveParams = w.Model.Reg.Count(cells.Weight)
		}
		return s.Err()
	})
	return out, err
}
