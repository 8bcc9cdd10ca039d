package config

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// Omniglot has 20 drawings of every character.
const omniglotPerClass = 20

// MiniImagenet's smallest split (meta-validation) has 16 classes, its
// meta-test split 20.
const miniImagenetTestClasses = 20

var devicePattern = regexp.MustCompile(`^(cpu|cuda(:[0-9]+)?)$`)

// ParseDevice splits a device name into its kind and index: "cpu" gives
// ("cpu", 0), "cuda" gives ("cuda", 0) and "cuda:N" gives ("cuda", N).
func ParseDevice(s string) (kind string, index int, err error) {
	if !devicePattern.MatchString(s) {
		return "", 0, fmt.Errorf("unknown device %q; want cpu, cuda or cuda:N", s)
	}
	kind, idx, ok := strings.Cut(s, ":")
	if !ok {
		return kind, 0, nil
	}
	index, err = strconv.Atoi(idx)
	if err != nil {
		return "", 0, fmt.Errorf("device %q: bad index: %w", s, err)
	}
	return kind, index, nil
}

// Validate checks the whole configuration and returns every problem found,
// as Errors (each an *Error naming the field, where its value came from and
// what to do), or nil when the configuration is usable.
func (c *Config) Validate() error {
	v := &validator{c: c}
	v.data()
	v.model()
	v.arch()
	v.task()
	v.meta()
	v.run()
	return v.errs.orNil()
}

// validator collects problems found in a Config.
type validator struct {
	c    *Config
	errs Errors
}

// fail records a problem with field.
func (v *validator) fail(field, format string, args ...any) {
	o := v.c.originOf(field)
	v.errs = append(v.errs, &Error{File: o.file, Line: o.line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// oneOf checks that got is among allowed.
func (v *validator) oneOf(field, got string, allowed ...string) bool {
	for _, a := range allowed {
		if got == a {
			return true
		}
	}
	v.fail(field, "unknown value %q; use one of: %s", got, strings.Join(allowed, ", "))
	return false
}

// atLeast checks got >= lo; hint says what the field is for.
func (v *validator) atLeast(field string, got, lo int, hint string) bool {
	if got >= lo {
		return true
	}
	v.fail(field, "must be at least %d, got %d; %s", lo, got, hint)
	return false
}

// finite checks that got is a finite number.
func (v *validator) finite(field string, got float64) bool {
	if math.IsNaN(got) || math.IsInf(got, 0) {
		v.fail(field, "must be a finite number, got %v", got)
		return false
	}
	return true
}

// positive checks got > 0.
func (v *validator) positive(field string, got float64, hint string) bool {
	if !v.finite(field, got) {
		return false
	}
	if got <= 0 {
		v.fail(field, "must be greater than 0, got %v; %s", got, hint)
		return false
	}
	return true
}

// nonNegative checks got >= 0.
func (v *validator) nonNegative(field string, got float64, hint string) bool {
	if !v.finite(field, got) {
		return false
	}
	if got < 0 {
		v.fail(field, "must not be negative, got %v; %s", got, hint)
		return false
	}
	return true
}

// fraction checks 0 <= got < 1.
func (v *validator) fraction(field string, got float64, hint string) bool {
	if !v.finite(field, got) {
		return false
	}
	if got < 0 || got >= 1 {
		v.fail(field, "must be in [0, 1), got %v; %s", got, hint)
		return false
	}
	return true
}

func (v *validator) data() {
	d := v.c.Data
	dsOK := v.oneOf("data.dataset", string(d.Dataset), string(Omniglot), string(MiniImagenet), string(Synthetic))
	v.atLeast("data.ways", d.Ways, 2, "a task needs at least two classes, for example 5 or 20")
	v.atLeast("data.shots", d.Shots, 1, "set the meta-test support examples per class, usually 1 or 5")
	v.atLeast("data.train_shots", d.TrainShots, 1, "set the meta-train support examples per class (15 in the reference)")
	v.atLeast("data.queries", d.Queries, 1, "set the query examples per class (1 in the reference)")
	v.atLeast("data.image_size", d.ImageSize, 0, "use 0 for the data set's standard size")
	v.oneOf("data.resize", string(d.Resize), string(ResizeBilinear), string(ResizeArea))
	if !dsOK {
		return
	}
	if d.Vinyals && d.Dataset != Omniglot {
		v.fail("data.vinyals", "the Vinyals split exists only for Omniglot; set it to false")
	}
	needed := max(d.Shots, d.TrainShots) + d.Queries
	switch d.Dataset {
	case Omniglot:
		if d.Shots >= 1 && d.TrainShots >= 1 && d.Queries >= 1 && needed > omniglotPerClass {
			field := "data.train_shots"
			if d.Shots > d.TrainShots {
				field = "data.shots"
			}
			v.fail(field, "shots plus queries per class is %d, but Omniglot has only %d examples per class; lower it", needed, omniglotPerClass)
		}
	case MiniImagenet:
		if d.Ways > miniImagenetTestClasses {
			v.fail("data.ways", "MiniImagenet's meta-test split has only %d classes, got %d ways; use at most %d (5 in the reference)",
				miniImagenetTestClasses, d.Ways, miniImagenetTestClasses)
		}
	case Synthetic:
		s := d.Synthetic
		v.atLeast("data.synthetic.channels", s.Channels, 1, "set the image channels, for example 1")
		v.atLeast("data.synthetic.size", s.Size, 1, "set the image side in pixels, for example 28")
		if v.atLeast("data.synthetic.classes", s.Classes, 2, "set the number of generated classes, for example 100") &&
			d.Ways >= 2 && s.Classes < d.Ways {
			v.fail("data.synthetic.classes", "got %d classes for %d-way tasks; raise it to at least data.ways", s.Classes, d.Ways)
		}
		if v.atLeast("data.synthetic.per_class", s.PerClass, 1, "set the examples per class, for example 20") &&
			d.Shots >= 1 && d.TrainShots >= 1 && d.Queries >= 1 && s.PerClass < needed {
			v.fail("data.synthetic.per_class", "got %d, but tasks need %d examples per class (max(shots, train_shots) + queries); raise it", s.PerClass, needed)
		}
	}
}

func (v *validator) model() {
	m := v.c.Model
	kindOK := v.oneOf("model.kind", string(m.Kind), string(ModelSearch), string(ModelDiscrete), string(ModelCNN))
	if !kindOK {
		return
	}
	if m.Kind == ModelCNN {
		v.atLeast("model.cnn_channels", m.CNNChannels, 1, "set the filters per block (64 in the REPTILE baseline)")
		v.atLeast("model.cnn_blocks", m.CNNBlocks, 1, "set the number of conv blocks (4 in the REPTILE baseline)")
		return
	}
	v.oneOf("model.primitives", string(m.Primitives), string(PrimitivesFewShot), string(PrimitivesDARTS))
	chOK := v.atLeast("model.channels", m.Channels, 1, "set the channels of the first cell (28 in the reference)")
	layersOK := v.atLeast("model.layers", m.Layers, 1, "set the number of cells (4 in the reference)")
	if m.Kind == ModelSearch {
		v.atLeast("model.nodes", m.Nodes, 1, "set the intermediate nodes per cell (3 in the reference)")
	}
	v.atLeast("model.feature_scale_rate", m.FeatureScaleRate, 1, "use 1 to keep the channels constant")
	v.atLeast("model.stem_multiplier", m.StemMultiplier, 1, "use 3 as in the reference")
	if layersOK {
		prev := -1
		for i, r := range m.Reductions {
			switch {
			case r < 0 || r >= m.Layers:
				v.fail("model.reductions", "index %d (entry %d) is out of range; reduction cells are numbered 0 to %d (model.layers-1)", r, i, m.Layers-1)
			case r <= prev:
				v.fail("model.reductions", "indices must be strictly increasing without repeats, got %v", m.Reductions)
			}
			prev = r
		}
	}
	if chOK && len(m.Reductions) > 0 && m.Channels%2 != 0 {
		v.fail("model.channels", "must be even when there are reduction cells (FactorizedReduce splits the channels in two), got %d", m.Channels)
	}
	if m.Kind == ModelDiscrete && strings.TrimSpace(m.Genotype) == "" {
		v.fail("model.genotype", "a discrete model needs a genotype; give a published name (metanas_og_v2, metanas_in_v2, auto_meta) or a Genotype(...) string")
	}
	v.fraction("model.drop_path", m.DropPath, "use 0 to disable drop-path (0.2 in the reference)")
	v.fraction("model.prune_threshold", m.PruneThreshold, "operation weights lie in [0, 1]; use 0 to disable pruning (0.01 in the reference)")
}

func (v *validator) arch() {
	a := v.c.Arch
	v.oneOf("arch.normalizer", string(a.Normalizer), string(NormSoftmax), string(NormReLUSoftmax), string(NormGumbelSoftmax))
	v.oneOf("arch.t_anneal", string(a.TAnneal), string(AnnealLinear), string(AnnealNone))
	maxOK := v.positive("arch.t_max", a.TMax, "the temperature divides the alphas (1.0 in the reference)")
	minOK := v.positive("arch.t_min", a.TMin, "the temperature divides the alphas (0.05 Omniglot, 0.1 MiniImagenet)")
	if maxOK && minOK && a.TMin > a.TMax {
		v.fail("arch.t_min", "must not exceed arch.t_max (%v), got %v; lower t_min or raise t_max", a.TMax, a.TMin)
	}
	v.nonNegative("arch.alpha_init_std", a.AlphaInitStd, "use 1e-3 as in the reference")
}

func (v *validator) task() {
	t := v.c.Task
	if v.atLeast("task.steps", t.Steps, 1, "set the task steps per meta-train task (5 in the reference)") {
		v.stepsWithin("task.arch_steps", t.ArchSteps, t.Steps, "task.steps")
	}
	if v.atLeast("task.test_steps", t.TestSteps, 1, "set the task steps per meta-test task (100 in the reference)") {
		v.stepsWithin("task.test_arch_steps", t.TestArchSteps, t.TestSteps, "task.test_steps")
	}
	v.atLeast("task.batch_size", t.BatchSize, 1, "set the support-set minibatch size (20 in the reference)")
	v.atLeast("task.test_batch_size", t.TestBatchSize, 1, "set the meta-test minibatch size (10 for Omniglot in the reference)")
	v.positive("task.w_lr", t.WLR, "set the task learning rate of the weights, for example 0.005")
	v.nonNegative("task.a_lr", t.ALR, "set the task learning rate of the alphas, for example 0.005, or 0 to freeze them")
	for i, b := range t.WBetas {
		v.fraction("task.w_betas", b, fmt.Sprintf("Adam beta %d must lie in [0, 1), for example [0.0, 0.999]", i+1))
	}
	for i, b := range t.ABetas {
		v.fraction("task.a_betas", b, fmt.Sprintf("Adam beta %d must lie in [0, 1), for example [0.0, 0.999]", i+1))
	}
	v.nonNegative("task.w_weight_decay", t.WWeightDecay, "use 0 for no weight decay")
	v.nonNegative("task.a_weight_decay", t.AWeightDecay, "use 0 for no weight decay (0.001 in the reference)")
	v.nonNegative("task.grad_clip", t.GradClip, "use 0 to disable clipping (5.0 in the reference)")
	v.oneOf("task.optim_state", string(t.OptimState), string(OptimReset), string(OptimKeep))
}

// stepsWithin checks an architecture-step count against its step count.
func (v *validator) stepsWithin(field string, got, steps int, stepsField string) {
	if got < AllSteps || got > steps {
		v.fail(field, "must be -1 (all steps) or between 0 and %s (%d), got %d", stepsField, steps, got)
	}
}

func (v *validator) meta() {
	m := v.c.Meta
	v.oneOf("meta.learner", string(m.Learner), string(LearnerReptile), string(LearnerFOMAML))
	epochsOK := v.atLeast("meta.epochs", m.Epochs, 1, "set the number of meta-epochs (30000 in the reference)")
	if v.atLeast("meta.warm_up_epochs", m.WarmUpEpochs, 0, "use 0 to adapt the architecture from the start") &&
		epochsOK && m.WarmUpEpochs > m.Epochs {
		v.fail("meta.warm_up_epochs", "must not exceed meta.epochs (%d), got %d; the reference warms up for half the epochs", m.Epochs, m.WarmUpEpochs)
	}
	v.atLeast("meta.meta_batch", m.MetaBatch, 1, "set the tasks per meta-epoch (10 in the reference)")
	v.positive("meta.w_lr", m.WLR, "set the meta learning rate of the weights (1.0 in the reference)")
	v.nonNegative("meta.a_lr", m.ALR, "set the meta learning rate of the alphas (0.6 in the reference)")
	v.oneOf("meta.anneal", string(m.Anneal), string(AnnealNone), string(AnnealLinear), string(AnnealCosine))
	v.atLeast("meta.test_every", m.TestEvery, 0, "use 0 to meta-test only at the end")
	v.atLeast("meta.test_tasks", m.TestTasks, 1, "set the tasks per intermediate meta-test (25 in the reference)")
	v.atLeast("meta.final_test_tasks", m.FinalTestTasks, 0, "use 0 to skip the final meta-test")
	v.fraction("meta.prune_threshold", m.PruneThreshold, "use 0 to disable pruning (0.01 in the reference)")
	v.fraction("meta.test_prune_threshold", m.TestPruneThreshold, "use 0 to disable pruning (0.05 in the reference)")
	v.oneOf("meta.eval_bn", string(m.EvalBN), string(BNTrain), string(BNEval))
}

func (v *validator) run() {
	r := v.c.Run
	if _, _, err := ParseDevice(r.Device); err != nil {
		v.fail("run.device", "unknown device %q; use cpu, cuda or cuda:N", r.Device)
	}
	if strings.TrimSpace(r.Out) == "" {
		v.fail("run.out", "set a run directory for logs and checkpoints, for example runs/og_metanas")
	}
	v.atLeast("run.threads", r.Threads, 0, "use 0 to let the runtime decide")
	v.atLeast("run.workers", r.Workers, 0, "use 0 to pick one worker per two CPU cores")
	v.atLeast("run.checkpoint_every", r.CheckpointEvery, 0, "use 0 to checkpoint at every meta-test")
	v.atLeast("run.log_every", r.LogEvery, 1, "set how often to log, in meta-epochs (50 in the reference)")
	if v.atLeast("run.batch_tasks", r.BatchTasks, 0, "use 0 to adapt task by task") && r.BatchTasks > 1 {
		c := v.c
		switch {
		case c.Meta.MetaBatch > 0 && c.Meta.MetaBatch%r.BatchTasks != 0:
			v.fail("run.batch_tasks", "must divide meta.meta_batch (%d), got %d", c.Meta.MetaBatch, r.BatchTasks)
		case c.Model.Kind != ModelSearch:
			v.fail("run.batch_tasks", "needs the search network (model.kind search), got model.kind %s; set run.batch_tasks: 0", c.Model.Kind)
		case c.Meta.Learner != LearnerReptile:
			v.fail("run.batch_tasks", "needs meta.learner reptile, got %s; set run.batch_tasks: 0", c.Meta.Learner)
		case c.Task.OptimState != OptimReset:
			v.fail("run.batch_tasks", "needs task.optim_state reset (a batch adapts its tasks side by side, so no Adam state can pass from task to task); set run.batch_tasks: 0")
		}
	}
	if v.atLeast("run.batch_workers", r.BatchWorkers, 0, "use 0 to adapt one batch at a time") && r.BatchWorkers > 1 && r.BatchTasks < 2 {
		v.fail("run.batch_workers", "needs run.batch_tasks > 1 (it runs batches side by side), got %d; set run.batch_workers: 0", r.BatchTasks)
	}
	v.oneOf("run.precision", string(r.Precision), string(PrecisionFloat32), string(PrecisionBF16))
	if r.CUDAGraphs {
		switch {
		case r.BatchTasks < 2:
			v.fail("run.cuda_graphs", "needs run.batch_tasks > 1 (graphs replay the batched network's steps), got %d; set run.cuda_graphs: false", r.BatchTasks)
		case !strings.HasPrefix(r.Device, "cuda"):
			v.fail("run.cuda_graphs", "needs a CUDA device, run.device is %q; set run.cuda_graphs: false", r.Device)
		}
	}
}
