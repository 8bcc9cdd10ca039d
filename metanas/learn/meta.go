package learn

import (
	"fmt"
	"math"

	"github.com/metanas-go/metanas/cells"
	"github.com/metanas-go/metanas/metanas/config"
	"github.com/metanas-go/metanas/metanas/data"
	"github.com/metanas-go/metanas/torch"
)

// MetaLearner turns a meta-batch of adapted tasks into an update of the meta-model.
// MetaNAS is agnostic to it: REPTILE and first-order MAML share this interface.
type MetaLearner interface {
	// Name returns "reptile" or "fomaml".
	Name() string
	// Begin starts a meta-batch.
	Begin() error
	// Add records a task adapted by w (its network holds the adapted parameters).
	Add(w *Worker, t *data.Task) error
	// Step updates meta with learning rates wLR (weights) and aLR (alphas) and returns
	// the number of tasks it averaged.
	Step(meta *Model, wLR, aLR float64) (int, error)
	// Close frees the learner's accumulators.
	Close()
}

// accumulators sums per-task tensors of the meta-model's shapes.
type accumulators struct {
	s       *torch.Scope
	w, a, b []*torch.Tensor
	n       int
}

func newAccumulators(meta *Model) *accumulators {
	s := torch.NewScope()
	zeros := func(ts []*torch.Tensor) []*torch.Tensor {
		out := make([]*torch.Tensor, len(ts))
		for i, t := range ts {
			out[i] = s.MulScalar(s.Detach(t), 0)
		}
		return out
	}
	return &accumulators{s: s, w: zeros(meta.Weights()), a: zeros(meta.Alphas()), b: zeros(meta.Reg.RunningStats())}
}

func (acc *accumulators) zero() error {
	acc.n = 0
	for _, l := range [][]*torch.Tensor{acc.w, acc.a, acc.b} {
		if err := torch.ForeachMulScalar(l, 0); err != nil {
			return err
		}
	}
	return acc.s.Err()
}

// addBuffers adds the task network's running statistics (averaged into the meta-model
// by both learners).
func (acc *accumulators) addBuffers(w *Worker) error {
	return torch.ForeachAdd(acc.b, w.Model.Reg.RunningStats(), 1)
}

// Reptile is REPTILE on weights and alphas: meta += lr * mean_tasks(task - meta).
type Reptile struct{ acc *accumulators }

// NewReptile returns a REPTILE meta-learner for meta.
func NewReptile(meta *Model) *Reptile { return &Reptile{acc: newAccumulators(meta)} }

// Name returns "reptile".
func (r *Reptile) Name() string { return "reptile" }

// Begin zeroes the sums.
func (r *Reptile) Begin() error { return r.acc.zero() }

// Add sums the task's adapted weights, alphas and running statistics.
func (r *Reptile) Add(w *Worker, _ *data.Task) error {
	m := w.Model
	if err := torch.ForeachAdd(r.acc.w, m.Weights(), 1); err != nil {
		return err
	}
	if err := torch.ForeachAdd(r.acc.a, m.Alphas(), 1); err != nil {
		return err
	}
	r.acc.n++
	return r.acc.addBuffers(w)
}

// Step moves the meta-model towards the mean of the adapted tasks.
func (r *Reptile) Step(meta *Model, wLR, aLR float64) (int, error) {
	n := r.acc.n
	if n == 0 {
		return 0, fmt.Errorf("reptile: no tasks in the meta-batch")
	}
	inv := 1 / float64(n)
	for _, l := range [][]*torch.Tensor{r.acc.w, r.acc.a, r.acc.b} {
		if err := torch.ForeachMulScalar(l, inv); err != nil {
			return 0, err
		}
	}
	if err := torch.ForeachLerp(meta.Weights(), r.acc.w, wLR); err != nil {
		return 0, err
	}
	if err := torch.ForeachLerp(meta.Alphas(), r.acc.a, aLR); err != nil {
		return 0, err
	}
	return n, torch.ForeachCopy(meta.Reg.RunningStats(), r.acc.b)
}

// Close frees the sums.
func (r *Reptile) Close() { r.acc.s.Close() }

// FOMAML is first-order MAML: meta -= lr * mean_tasks(grad of the query loss at the
// adapted parameters).
type FOMAML struct {
	acc  *accumulators
	norm Arch
}

// NewFOMAML returns a first-order MAML meta-learner for meta; arch says how the query
// forward pass normalises and prunes the alphas.
func NewFOMAML(meta *Model, arch Arch) *FOMAML {
	return &FOMAML{acc: newAccumulators(meta), norm: arch}
}

// Name returns "fomaml".
func (f *FOMAML) Name() string { return "fomaml" }

// Begin zeroes the gradient sums.
func (f *FOMAML) Begin() error { return f.acc.zero() }

// Add computes the query-set loss gradient at the task's adapted parameters and sums it.
func (f *FOMAML) Add(w *Worker, t *data.Task) error {
	defer torch.PinThread()() // the same gradient sums whatever the scheduler does
	d := w.cur
	if d == nil || w.curI != t.Index || d.qx == nil {
		return fmt.Errorf("fomaml: task %d was not adapted by this worker or has no query set", t.Index)
	}
	m := w.Model
	s := w.step
	s.Reset()
	params := append(m.Weights(), m.Alphas()...)
	if err := torch.ZeroGrad(params, false); err != nil {
		return err
	}
	a := f.norm
	a.Temp = w.Temp
	logits, _, err := m.Forward(&cells.Ctx{S: s, Train: true, Gen: w.gen}, d.qx, a)
	if err != nil {
		return err
	}
	if err := s.CrossEntropy(logits, d.qy).Backward(); err != nil {
		return err
	}
	grads := func(ps []*torch.Tensor) []*torch.Tensor {
		out := make([]*torch.Tensor, len(ps))
		for i, p := range ps {
			g := s.Grad(p)
			if g == nil {
				g = s.MulScalar(s.Detach(p), 0)
			}
			out[i] = g
		}
		return out
	}
	if err := torch.ForeachAdd(f.acc.w, grads(m.Weights()), 1); err != nil {
		return err
	}
	if err := torch.ForeachAdd(f.acc.a, grads(m.Alphas()), 1); err != nil {
		return err
	}
	f.acc.n++
	if err := s.Err(); err != nil {
		return err
	}
	return f.acc.addBuffers(w)
}

// Step applies the mean gradient with plain SGD.
func (f *FOMAML) Step(meta *Model, wLR, aLR float64) (int, error) {
	n := f.acc.n
	if n == 0 {
		return 0, fmt.Errorf("fomaml: no tasks in the meta-batch")
	}
	inv := 1 / float64(n)
	if err := torch.ForeachAdd(meta.Weights(), f.acc.w, -wLR*inv); err != nil {
		return 0, err
	}
	if err := torch.ForeachAdd(meta.Alphas(), f.acc.a, -aLR*inv); err != nil {
		return 0, err
	}
	if err := torch.ForeachMulScalar(f.acc.b, inv); err != nil {
		return 0, err
	}
	return n, torch.ForeachCopy(meta.Reg.RunningStats(), f.acc.b)
}

// Close frees the sums.
func (f *FOMAML) Close() { f.acc.s.Close() }

// NewMetaLearner returns the meta-learner cfg.Meta.Learner names.
func NewMetaLearner(cfg config.Config, meta *Model) (MetaLearner, error) {
	switch cfg.Meta.Learner {
	case config.LearnerReptile:
		return NewReptile(meta), nil
	case config.LearnerFOMAML:
		ts := Settings(cfg, false)
		return NewFOMAML(meta, Arch{Norm: ts.Norm, Threshold: ts.Threshold}), nil
	}
	return nil, fmt.Errorf("meta.learner %q: use reptile or fomaml", cfg.Meta.Learner)
}

// MetaLR returns the meta learning rate lr0 at meta-epoch epoch (1-based) of epochs under
// the annealing schedule: none, linear (to 0) or cosine (half cosine to 0).
func MetaLR(lr0 float64, anneal config.Anneal, epoch, epochs int) float64 {
	if epochs <= 1 {
		return lr0
	}
	frac := float64(epoch-1) / float64(epochs)
	switch anneal {
	case config.AnnealLinear:
		return lr0 * (1 - frac)
	case config.AnnealCosine:
		return lr0 * 0.5 * (1 + math.Cos(math.Pi*frac))
	}
	return lr0
}
