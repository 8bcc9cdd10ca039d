package cells

import (
	"fmt"

	"github.com/metanas-go/metanas/torch"
)

// NormKind selects how alphas become weights.
type NormKind string

// Normalizers.
const (
	// Softmax is softmax(alpha / T), the reference default.
	Softmax NormKind = "softmax"
	// ReLUSoftmax is softmax(relu(alpha) / T): negative logits all count as zero.
	ReLUSoftmax NormKind = "relu_softmax"
	// GumbelSoftmax is softmax((alpha + g) / T) with fresh Gumbel noise g each pass.
	GumbelSoftmax NormKind = "gumbel_softmax"
)

// Schedule is the temperature annealed linearly from TMax to TMin over a task's
// MaxSteps architecture steps: T(step) = TMax - step*(TMax-TMin)/(MaxSteps-1), with step
// clamped to [0, MaxSteps-1]. The task learner owns the step counter and restarts it for
// every task.
type Schedule struct {
	TMax, TMin float64
	MaxSteps   int
}

// Temperature returns T at the given step.
func (s Schedule) Temperature(step int) float64 {
	if s.MaxSteps <= 1 {
		return s.TMax
	}
	if step < 0 {
		step = 0
	}
	if step > s.MaxSteps-1 {
		step = s.MaxSteps - 1
	}
	return s.TMax - float64(step)*(s.TMax-s.TMin)/float64(s.MaxSteps-1)
}

// CellWeights are the normalised architecture weights of one cell type: per node the op
// weights [(i+2) x ops] and pair weights [binom(i+2,2)] as device tensors (autograd
// connects them to the alphas), plus one host copy used for pruning decisions. A batched
// network of T tasks has op weights [T*(i+2) x ops] and pair weights [T, binom(i+2,2)],
// task-major in the host copies too.
type CellWeights struct {
	Ops       []*torch.Tensor
	Pairs     []*torch.Tensor // nil without pairwise weights
	HostOps   [][]float32     // node i: row-major (i+2) x ops (per task when batched)
	HostPairs [][]float32
}

// ArchWeights are the normalised weights of both cell types.
type ArchWeights struct {
	Normal, Reduce CellWeights
}

func normalize(s *torch.Scope, a *torch.Tensor, kind NormKind, div func(*torch.Tensor) *torch.Tensor, gen *torch.Generator) *torch.Tensor {
	x := a
	switch kind {
	case ReLUSoftmax:
		x = s.Relu(x)
	case GumbelSoftmax:
		// g = -log(-log(U + eps) + eps)
		u := s.RandGen(a.MustShape(), deviceOf(a), gen)
		g := s.Neg(s.Log(s.AddScalar(s.Neg(s.Log(s.AddScalar(u, 1e-20))), 1e-20)))
		x = s.Add(x, g)
	}
	return s.Softmax(div(x), -1)
}

func checkNorm(kind NormKind) error {
	switch kind {
	case Softmax, ReLUSoftmax, GumbelSoftmax:
		return nil
	}
	return fmt.Errorf("normalizer %q: use softmax, relu_softmax or gumbel_softmax", kind)
}

// normalizeAll normalises every alpha with div applied before the softmax; pairs2D gives a
// single network's pair weights the batched shape [1, pairs]. It returns the weights and
// their flattened list (for the host copy).
func (n *SearchNet) normalizeAll(s *torch.Scope, kind NormKind, div func(*torch.Tensor) *torch.Tensor, g *torch.Generator, pairs2D bool) (*ArchWeights, []*torch.Tensor) {
	w := &ArchWeights{}
	tasks := n.Reg.Tasks()
	var flat []*torch.Tensor
	fill := func(cw *CellWeights, ops, pairs []*torch.Tensor) {
		for _, a := range ops {
			t := normalize(s, a, kind, div, g)
			cw.Ops = append(cw.Ops, t)
			flat = append(flat, s.Flatten(t, 0, -1))
		}
		for _, a := range pairs {
			if tasks == 1 && !pairs2D {
				t := normalize(s, a, kind, div, g)
				cw.Pairs = append(cw.Pairs, t)
				flat = append(flat, t)
				continue
			}
			// A batched network's pair alphas [T*pairs] are normalised per task, as [T, pairs].
			t := normalize(s, s.Reshape(a, tasks, -1), kind, div, g)
			cw.Pairs = append(cw.Pairs, t)
			flat = append(flat, s.Flatten(t, 0, -1))
		}
	}
	fill(&w.Normal, n.AlphaNormal, n.AlphaPwNormal)
	fill(&w.Reduce, n.AlphaReduce, n.AlphaPwReduce)
	return w, flat
}

// NormalizeOnDevice is Normalize without the host copy, at the temperature held by the
// one-element tensor temp: nothing waits for the device, so a CUDA graph can capture it
// (and reads the temperature current at each replay). The weights carry no host values;
// a forward pass with them computes every op and input and leaves pruning to the device
// (weights at or below the threshold count as zero, per task). So it computes the same
// logits and alpha gradients as Normalize's weights, but an op pruned in every task still
// runs: its weights get zero gradients instead of none and its batch norm's running
// statistics move. Pair weights have the batched shape [Tasks, pairs] (Tasks 1 included).
func (n *SearchNet) NormalizeOnDevice(s *torch.Scope, kind NormKind, temp *torch.Tensor, gen *torch.Generator) (*ArchWeights, error) {
	if err := checkNorm(kind); err != nil {
		return nil, err
	}
	if temp == nil || temp.Numel() != 1 {
		return nil, fmt.Errorf("normalizer: the temperature must be a one-element tensor")
	}
	w, _ := n.normalizeAll(s, kind, func(x *torch.Tensor) *torch.Tensor { return s.Div(x, temp) }, gen, true)
	return w, s.Err()
}

// Normalize turns the alphas into weights at temperature temp, with one host copy of all
// of them (a single device synchronisation per call). Gumbel noise comes from gen (nil:
// LibTorch's default generator).
func (n *SearchNet) Normalize(s *torch.Scope, kind NormKind, temp float64, gen ...*torch.Generator) (*ArchWeights, error) {
	var g *torch.Generator
	if len(gen) > 0 {
		g = gen[0]
	}
	if err := checkNorm(kind); err != nil {
		return nil, err
	}
	if temp <= 0 {
		return nil, fmt.Errorf("normalizer: temperature must be > 0, got %g", temp)
	}
	tasks := n.Reg.Tasks()
	w, flat := n.normalizeAll(s, kind, func(x *torch.Tensor) *torch.Tensor { return s.DivScalar(x, temp) }, g, false)
	host, err := s.Cat(flat, 0).Float32s()
	if err != nil {
		return nil, err
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	K := len(n.Cfg.Primitives)
	off := 0
	split := func(cw *CellWeights, pairs bool) {
		for i := range cw.Ops {
			m := int(tasks) * (i + 2) * K
			cw.HostOps = append(cw.HostOps, host[off:off+m])
			off += m
		}
		if pairs {
			for i := range cw.Pairs {
				m := int(tasks) * (i + 2) * (i + 1) / 2
				cw.HostPairs = append(cw.HostPairs, host[off:off+m])
				off += m
			}
		}
	}
	split(&w.Normal, w.Normal.Pairs != nil)
	split(&w.Reduce, w.Reduce.Pairs != nil)
	return w, nil
}
