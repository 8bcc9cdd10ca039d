package cells

import (
	"runtime"

	"github.com/metanas-go/metanas/torch"
)

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
	// Tasks is the number of tasks a batched network trains at once (0 or 1: one). A
	// batched network's activations hold the tasks' channels side by side, [N, Tasks*C,
	// H, W], and its weights the tasks' copies stacked along their first dimension, so
	// that every convolution is one grouped convolution over all tasks.
	Tasks int64
	// coefs are the node weights a search network's forward pass computed (nil outside
	// one): cells of one type share their architecture weights, so a later cell of the type
	// reuses what an earlier one computed for the same op columns.
	coefs map[coefKey]*torch.Tensor
}

// dropProb returns the drop-path probability of the pass (0 outside training).
func (c *Ctx) dropProb() float64 {
	if !c.Train {
		return 0
	}
	return c.DropPath
}

// tasks returns the number of tasks of the pass (at least 1).
func (c *Ctx) tasks() int64 { return max(1, c.Tasks) }

// forkBranches opens a fork of branch streams (torch.Scope.ForkBranches) on x's device and
// returns the number of branches: 0 unless METANAS_BRANCH_STREAMS is set and x is on CUDA.
// A fork belongs to an OS thread: the goroutine stays locked to its thread until
// joinBranches.
func (c *Ctx) forkBranches(x *torch.Tensor) int {
	if torch.BranchStreams() < 2 {
		return 0
	}
	runtime.LockOSThread()
	n := c.S.ForkBranches(deviceOf(x))
	if n == 0 {
		runtime.UnlockOSThread()
	}
	return n
}

// joinBranches closes the fork of forkBranches, the trunk waiting for outs.
func (c *Ctx) joinBranches(outs []*torch.Tensor) {
	c.S.JoinBranches(outs)
	runtime.UnlockOSThread()
}

// conv applies a bias-free convolution, grouped per task in a batched pass.
func (c *Ctx) conv(x, w *torch.Tensor, geom torch.Conv) *torch.Tensor {
	if t := c.tasks(); t > 1 {
		geom.Groups = max(1, geom.Groups) * t
	}
	return c.S.Conv2d(x, w, nil, geom)
}

// catChannels concatenates activations along the channel axis; in a batched pass each
// task's channels stay together ([N, T*C1, H, W] and [N, T*C2, H, W] give
// [N, T*(C1+C2), H, W], task-major).
func (c *Ctx) catChannels(xs []*torch.Tensor) *torch.Tensor {
	t := c.tasks()
	s := c.S
	if t == 1 || len(xs) == 0 {
		return s.Cat(xs, 1)
	}
	sh := xs[0].MustShape()
	if len(sh) != 4 {
		return s.Cat(xs, 1)
	}
	views := make([]*torch.Tensor, len(xs))
	var ch int64
	for i, x := range xs {
		xsh := x.MustShape()
		if len(xsh) != 4 {
			return s.Cat(xs, 1) // let LibTorch name the mismatch
		}
		views[i] = s.Reshape(x, xsh[0], t, xsh[1]/t, xsh[2], xsh[3])
		ch += xsh[1]
	}
	cat := s.Cat(views, 2)
	out := s.Reshape(cat, sh[0], ch, sh[2], sh[3])
	// Handles of views keep their tensors' memory until the scope ends: the views of the
	// inputs (the cat copied them) and the cat itself (out is a view of it, and holds it).
	for _, v := range views {
		v.Free()
	}
	cat.Free()
	return out
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
	sh := r.stacked([]int64{c})
	if affine {
		bn.Weight = s.FullOf(sh, 1, torch.Float32, r.dev, true)
		r.add("weight", bn.Weight, Weight)
		bn.Bias = s.FullOf(sh, 0, torch.Float32, r.dev, true)
		r.add("bias", bn.Bias, Weight)
	}
	bn.RunMean = r.add("running_mean", s.Zeros(sh, r.dev), Buffer)
	bn.RunVar = r.add("running_var", s.Ones(sh, r.dev), Buffer)
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
