package cells

import (
	"fmt"
	"sync/atomic"

	"github.com/metanas-go/metanas/cells/genotype"
	"github.com/metanas-go/metanas/torch"
)

// Op is a candidate operation of the search space.
type Op interface {
	// Forward applies the op.
	Forward(c *Ctx, x *torch.Tensor) *torch.Tensor
	// Identity reports whether the op passes its input through unchanged (no drop-path).
	Identity() bool
	// Params returns the op's trainable tensors.
	Params() []*torch.Tensor
}

// reluInput is implemented by ops that begin with a ReLU of their input. ForwardReLU takes
// that ReLU's output, so that a search cell computes the ReLU of each state once for all the
// ops that read it (the same values; one ReLU and its backward instead of several).
type reluInput interface {
	ForwardReLU(c *Ctx, rx *torch.Tensor) *torch.Tensor
}

// NewOp registers the primitive named name with c channels and the given stride under r.
// affine selects affine batch norm (false inside search cells).
func NewOp(r *Registry, name string, c int64, stride int64, affine bool) (Op, error) {
	if c <= 0 {
		return nil, fmt.Errorf("op %s: channels must be > 0, got %d", name, c)
	}
	if stride != 1 && stride != 2 {
		return nil, fmt.Errorf("op %s: stride must be 1 or 2, got %d", name, stride)
	}
	switch name {
	case genotype.OpMaxPool3x3:
		return &poolBN{max: true, stride: stride, bn: NewBatchNorm(r.Sub("bn"), c, affine)}, nil
	case genotype.OpAvgPool3x3:
		return &poolBN{stride: stride, bn: NewBatchNorm(r.Sub("bn"), c, affine)}, nil
	case genotype.OpSkip:
		if stride == 1 {
			return identity{}, nil
		}
		return NewFactorizedReduce(r, c, c, affine)
	case genotype.OpConv3x3:
		return newDilConv(r, c, c, 3, stride, 1, 1, affine), nil
	case genotype.OpDilConv3x3:
		return newDilConv(r, c, c, 3, stride, 2, 2, affine), nil
	case genotype.OpDilConv5x5:
		return newDilConv(r, c, c, 5, stride, 4, 2, affine), nil
	case genotype.OpSepConv3x3:
		return newSepConv(r, c, 3, stride, 1, affine), nil
	case genotype.OpSepConv5x5:
		return newSepConv(r, c, 5, stride, 2, affine), nil
	case genotype.OpConv1x5And5x1:
		return newFacConv(r, c, stride, affine), nil
	case genotype.OpNone:
		return zeroOp{stride: stride}, nil
	}
	return nil, fmt.Errorf("unknown op %q (known: %v)", name, genotype.KnownOps())
}

type identity struct{}

func (identity) Forward(c *Ctx, x *torch.Tensor) *torch.Tensor { return x }
func (identity) Identity() bool                                { return true }
func (identity) Params() []*torch.Tensor                       { return nil }

type zeroOp struct{ stride int64 }

func (z zeroOp) Forward(c *Ctx, x *torch.Tensor) *torch.Tensor {
	s := c.S
	if z.stride == 1 {
		return s.MulScalar(x, 0)
	}
	y := s.Slice(s.Slice(x, 2, 0, 1<<40, z.stride), 3, 0, 1<<40, z.stride)
	return s.MulScalar(y, 0)
}
func (zeroOp) Identity() bool          { return false }
func (zeroOp) Params() []*torch.Tensor { return nil }

type poolBN struct {
	max    bool
	stride int64
	bn     *BatchNorm
}

func (p *poolBN) Forward(c *Ctx, x *torch.Tensor) *torch.Tensor {
	return p.bn.Forward(c, p.forwardPreNorm(c, x, nil))
}

// kind is 0 for the max pool, 1 for the average pool.
func (p *poolBN) kind() int {
	if p.max {
		return 0
	}
	return 1
}

func (p *poolBN) Identity() bool          { return false }
func (p *poolBN) Params() []*torch.Tensor { return p.bn.Params() }

// dilConv is ReLU, depthwise k x k conv (stride, padding, dilation), pointwise 1x1 conv, BN:
// keys net.1.weight, net.2.weight, net.3.*.
type dilConv struct {
	dw, pw                 *torch.Tensor
	k, stride, pad, dilate int64
	cin                    int64
	bn                     *BatchNorm
}

func newDilConv(r *Registry, cin, cout, k, stride, pad, dilate int64, affine bool) *dilConv {
	n := r.Sub("net")
	d := &dilConv{k: k, stride: stride, pad: pad, dilate: dilate, cin: cin}
	d.dw = n.Sub("1").ConvWeight("weight", cin, cin, cin, k, k)
	d.pw = n.Sub("2").ConvWeight("weight", cout, cin, 1, 1, 1)
	d.bn = NewBatchNorm(n.Sub("3"), cout, affine)
	return d
}

func (d *dilConv) Forward(c *Ctx, x *torch.Tensor) *torch.Tensor {
	return d.ForwardReLU(c, c.S.Relu(x))
}

// ForwardReLU applies the op after its ReLU.
func (d *dilConv) ForwardReLU(c *Ctx, y *torch.Tensor) *torch.Tensor {
	return d.bn.Forward(c, d.forwardPreNorm(c, nil, y))
}
func (d *dilConv) Identity() bool { return false }
func (d *dilConv) Params() []*torch.Tensor {
	return append([]*torch.Tensor{d.dw, d.pw}, d.bn.Params()...)
}

// normReLUs counts the fused batch norm + ReLU calls of sep_conv's middle layers (for
// tests).
var normReLUs atomic.Int64

// sepConv is two dilConv blocks (dilation 1), the second at stride 1: keys net.0.*, net.1.*.
type sepConv struct{ a, b *dilConv }

func newSepConv(r *Registry, c, k, stride, pad int64, affine bool) *sepConv {
	n := r.Sub("net")
	return &sepConv{a: newDilConv(n.Sub("0"), c, c, k, stride, pad, 1, affine), b: newDilConv(n.Sub("1"), c, c, k, 1, pad, 1, affine)}
}

func (p *sepConv) Forward(c *Ctx, x *torch.Tensor) *torch.Tensor {
	return p.ForwardReLU(c, c.S.Relu(x))
}

// ForwardReLU applies the op after its first ReLU.
func (p *sepConv) ForwardReLU(c *Ctx, rx *torch.Tensor) *torch.Tensor {
	return p.b.ForwardReLU(c, p.midReLU(c, rx))
}

// midReLU is the first block's output after the second block's ReLU. Where the fused
// kernels run (fusedFor) and the block's batch norm has no affine tensors, the batch norm
// and the ReLU are one call (torch.NormReLU). Otherwise the batch norm's output is freed at
// once: the ReLU's backward reads its own output, the batch norm's its input, so only this
// handle held it (an activation per op until the step's end).
func (p *sepConv) midReLU(c *Ctx, rx *torch.Tensor) *torch.Tensor {
	bn := p.a.bn
	pre := p.a.forwardPreNorm(c, nil, rx)
	if bn.Weight == nil && bn.RunMean != nil && fusedFor(c, pre) {
		bn.count++
		normReLUs.Add(1)
		return c.S.NormReLU(pre, bn.RunMean, bn.RunVar, bn.Momentum, bn.Eps)
	}
	mid := bn.Forward(c, pre)
	y := c.S.Relu(mid)
	mid.Free()
	return y
}
func (p *sepConv) Identity() bool          { return false }
func (p *sepConv) Params() []*torch.Tensor { return append(p.a.Params(), p.b.Params()...) }

// facConv is conv_1x5_5x1: ReLU, conv (1,5) stride s padding (0,2), conv (5,1) padding (2,0), BN.
type facConv struct {
	w1, w2 *torch.Tensor
	stride int64
	bn     *BatchNorm
}

func newFacConv(r *Registry, c, stride int64, affine bool) *facConv {
	n := r.Sub("net")
	return &facConv{
		w1: n.Sub("1").ConvWeight("weight", c, c, 1, 1, 5), w2: n.Sub("2").ConvWeight("weight", c, c, 1, 5, 1),
		stride: stride, bn: NewBatchNorm(n.Sub("3"), c, affine),
	}
}

func (f *facConv) Forward(c *Ctx, x *torch.Tensor) *torch.Tensor {
	return f.ForwardReLU(c, c.S.Relu(x))
}

// ForwardReLU applies the op after its ReLU.
func (f *facConv) ForwardReLU(c *Ctx, y *torch.Tensor) *torch.Tensor {
	return f.bn.Forward(c, f.forwardPreNorm(c, nil, y))
}
func (f *facConv) Identity() bool { return false }
func (f *facConv) Params() []*torch.Tensor {
	return append([]*torch.Tensor{f.w1, f.w2}, f.bn.Params()...)
}

// FactorizedReduce halves the spatial size: ReLU, two 1x1 stride-2 convs with cout/2
// outputs each (the second on the input shifted by one pixel along every even-sized
// dimension), concatenated, BN. Keys conv1.weight, conv2.weight, bn.*.
type FactorizedReduce struct {
	w1, w2 *torch.Tensor
	bn     *BatchNorm
}

// NewFactorizedReduce registers a FactorizedReduce under r.
func NewFactorizedReduce(r *Registry, cin, cout int64, affine bool) (*FactorizedReduce, error) {
	if cout%2 != 0 {
		return nil, fmt.Errorf("factorized reduce: output channels must be even, got %d", cout)
	}
	return &FactorizedReduce{
		w1: r.Sub("conv1").ConvWeight("weight", cout/2, cin, 1, 1, 1),
		w2: r.Sub("conv2").ConvWeight("weight", cout/2, cin, 1, 1, 1),
		bn: NewBatchNorm(r.Sub("bn"), cout, affine),
	}, nil
}

// Forward applies the op.
func (f *FactorizedReduce) Forward(c *Ctx, x *torch.Tensor) *torch.Tensor {
	return f.ForwardReLU(c, c.S.Relu(x))
}

// ForwardReLU applies the op after its ReLU.
func (f *FactorizedReduce) ForwardReLU(c *Ctx, y *torch.Tensor) *torch.Tensor {
	return f.bn.Forward(c, f.forwardPreNorm(c, nil, y))
}

// forwardPreNorm is the op up to its batch norm, from y, the ReLU of its input (tailNorm).
func (f *FactorizedReduce) forwardPreNorm(c *Ctx, _, y *torch.Tensor) *torch.Tensor {
	s := c.S
	if sh := y.MustShape(); len(sh) == 4 && sh[2]%2 == 0 && sh[3]%2 == 0 && torch.FactorizedReducePatch(deviceOf(y)) {
		// The same halves, concatenated per task, from one convolution.
		return s.FactorizedReduce(y, f.w1, f.w2, c.tasks())
	}
	st := torch.Conv{Stride: [2]int64{2, 2}}
	a := c.conv(y, f.w1, st)
	shifted := y
	if sh := y.MustShape(); len(sh) == 4 {
		if sh[2]%2 == 0 {
			shifted = s.Slice(shifted, 2, 1, sh[2], 1)
		}
		if sh[3]%2 == 0 {
			shifted = s.Slice(shifted, 3, 1, sh[3], 1)
		}
	}
	b := c.conv(shifted, f.w2, st)
	y2 := c.catChannels([]*torch.Tensor{a, b})
	// The halves were copied and no backward pass reads them.
	a.Free()
	b.Free()
	return y2
}

// Identity reports false.
func (f *FactorizedReduce) Identity() bool { return false }

// Params returns the trainable tensors.
func (f *FactorizedReduce) Params() []*torch.Tensor {
	return append([]*torch.Tensor{f.w1, f.w2}, f.bn.Params()...)
}

// cellPreproc is a cell's input preprocessing (keys preproc0.*, preproc1.*): pre0 for the
// output of the cell two back (a FactorizedReduce when the previous cell reduced, so that
// both inputs have one size), pre1 for the previous cell's output.
type cellPreproc struct {
	pre0 Op
	pre1 *StdConv
}

// newCellPreproc registers preproc0 before preproc1 (the state_dict order).
func newCellPreproc(r *Registry, cpp, cp, c int64, reductionPrev, affine bool) (cellPreproc, error) {
	var p cellPreproc
	if reductionPrev {
		fr, err := NewFactorizedReduce(r.Sub("preproc0"), cpp, c, affine)
		if err != nil {
			return cellPreproc{}, err
		}
		p.pre0 = fr
	} else {
		p.pre0 = NewStdConv(r.Sub("preproc0"), cpp, c, affine)
	}
	p.pre1 = NewStdConv(r.Sub("preproc1"), cp, c, affine)
	return p, nil
}

// preprocess returns the cell's first two states.
func (p cellPreproc) preprocess(c *Ctx, s0, s1 *torch.Tensor) []*torch.Tensor {
	return []*torch.Tensor{p.pre0.Forward(c, s0), p.pre1.Forward(c, s1)}
}

// preprocessReLU is preprocess from the ReLUs of s0 and s1 (both preprocessing ops begin
// with one: StdConv, FactorizedReduce).
func (p cellPreproc) preprocessReLU(c *Ctx, r0, r1 *torch.Tensor) []*torch.Tensor {
	return []*torch.Tensor{p.pre0.(reluInput).ForwardReLU(c, r0), p.pre1.ForwardReLU(c, r1)}
}

// newStem registers a network's stem (keys 0.weight, 1.*): a 3x3 convolution (padding 1,
// no bias) from in to out channels and an affine batch norm.
func newStem(r *Registry, in, out int64) (*torch.Tensor, *BatchNorm) {
	return r.Sub("0").ConvWeight("weight", out, in, 1, 3, 3), NewBatchNorm(r.Sub("1"), out, true)
}

// stemForward applies the stem of newStem.
func stemForward(c *Ctx, x, w *torch.Tensor, bn *BatchNorm) *torch.Tensor {
	return bn.Forward(c, c.conv(x, w, torch.Conv{Padding: [2]int64{1, 1}}))
}

// StdConv is ReLU, 1x1 conv, BN (keys net.1.weight, net.2.*): cell-input preprocessing.
type StdConv struct {
	w  *torch.Tensor
	bn *BatchNorm
}

// NewStdConv registers a StdConv under r.
func NewStdConv(r *Registry, cin, cout int64, affine bool) *StdConv {
	n := r.Sub("net")
	return &StdConv{w: n.Sub("1").ConvWeight("weight", cout, cin, 1, 1, 1), bn: NewBatchNorm(n.Sub("2"), cout, affine)}
}

// Forward applies the op.
func (p *StdConv) Forward(c *Ctx, x *torch.Tensor) *torch.Tensor {
	return p.ForwardReLU(c, c.S.Relu(x))
}

// ForwardReLU applies the op after its ReLU.
func (p *StdConv) ForwardReLU(c *Ctx, rx *torch.Tensor) *torch.Tensor {
	return p.bn.Forward(c, c.conv(rx, p.w, torch.Conv{}))
}

// Identity reports false.
func (p *StdConv) Identity() bool { return false }

// Params returns the trainable tensors.
func (p *StdConv) Params() []*torch.Tensor { return append([]*torch.Tensor{p.w}, p.bn.Params()...) }

// DropPath multiplies each sample of x by a Bernoulli(1-p)/(1-p) mask (training only).
func DropPath(c *Ctx, x *torch.Tensor) *torch.Tensor {
	if c.DropPath <= 0 || !c.Train {
		return x
	}
	sh := x.MustShape()
	if len(sh) == 0 {
		return x
	}
	keep := 1 - c.DropPath
	mask := c.S.BernoulliGen([]int64{sh[0], 1, 1, 1}, keep, deviceOf(x), c.Gen)
	return c.S.Mul(x, c.S.DivScalar(mask, keep))
}

func deviceOf(x *torch.Tensor) torch.Device {
	info, err := x.Info()
	if err != nil {
		return torch.CPU
	}
	return info.Device
}
