package cells

import "github.com/metanas-go/metanas/torch"

// Ctx carries what a forward pass needs besides its input: the scope receiving
// activations, the batch-norm mode and the drop-path probability.
type Ctx struct {
	S *torch.Scope
	// Train selects batch statistics in batch norm (and updates the running statistics).
	Train bool
	// DropPath is the drop-path probability applied after each non-identity op inside
	// MixedOps and discrete cells (0 disables it).
	DropPath float64
	// Gen is the random stream of drop-path masks and Gumbel noise (nil: LibTorch's
	// default generator).
	Gen *torch.Generator
}

// BatchNorm is a 2-d batch norm with running statistics (eps 1e-5, momentum 0.1).
type BatchNorm struct {
	Weight, Bias      *torch.Tensor // nil when not affine
	RunMean, RunVar   *torch.Tensor
	NumBatchesTracked *torch.Tensor
	count             int64
	Eps, Momentum     float64
}

// NewBatchNorm registers a batch norm of c channels under r.
func NewBatchNorm(r *Registry, c int64, affine bool) *BatchNorm {
	s := r.s
	bn := &BatchNorm{Eps: 1e-5, Momentum: 0.1}
	if affine {
		bn.Weight = s.FullOf([]int64{c}, 1, torch.Float32, r.dev, true)
		r.add("weight", bn.Weight, Weight)
		bn.Bias = s.FullOf([]int64{c}, 0, torch.Float32, r.dev, true)
		r.add("bias", bn.Bias, Weight)
	}
	bn.RunMean = r.add("running_mean", s.Zeros([]int64{c}, r.dev), Buffer)
	bn.RunVar = r.add("running_var", s.Ones([]int64{c}, r.dev), Buffer)
	bn.NumBatchesTracked = r.add("num_batches_tracked", s.FullOf(nil, 0, torch.Int64, r.dev, false), Buffer)
	r.st.entries[len(r.st.entries)-1].bn = bn
	return bn
}

// Forward normalises x.
func (b *BatchNorm) Forward(c *Ctx, x *torch.Tensor) *torch.Tensor {
	if c.Train {
		b.count++
	}
	return c.S.BatchNorm(x, b.Weight, b.Bias, b.RunMean, b.RunVar, c.Train, b.Momentum, b.Eps)
}

// Params returns the trainable tensors (none when not affine).
func (b *BatchNorm) Params() []*torch.Tensor {
	if b.Weight == nil {
		return nil
	}
	return []*torch.Tensor{b.Weight, b.Bias}
}
