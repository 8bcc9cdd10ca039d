package torch

// #include "shim.h"
import "C"

import (
	"errors"
	"fmt"
	"unsafe"
)

// unary runs a shim op of one input.
func (s *Scope) unary(op string, x *Tensor, f func(C.mt_tensor, *C.mt_tensor) *C.char) *Tensor {
	if !s.ok(op, x) {
		return &Tensor{}
	}
	out := s.out()
	e := f(x.h, out)
	return s.res(e, *out)
}

// binary runs a shim op of two inputs.
func (s *Scope) binary(op string, a, b *Tensor, f func(C.mt_tensor, C.mt_tensor, *C.mt_tensor) *C.char) *Tensor {
	if !s.ok(op, a, b) {
		return &Tensor{}
	}
	out := s.out()
	e := f(a.h, b.h, out)
	return s.res(e, *out)
}

// okOpt checks optional inputs: nil is allowed, a freed tensor is not.
func (s *Scope) okOpt(op string, ts ...*Tensor) bool {
	for _, t := range ts {
		if t != nil && t.h == nil {
			s.setErr(fmt.Errorf("%s: %w", op, ErrFreed))
			return false
		}
	}
	return true
}

// Conv holds conv2d's geometry; zero values mean stride 1, no padding, dilation 1, groups 1.
type Conv struct {
	Stride, Padding, Dilation [2]int64
	Groups                    int64
}

// Conv2d convolves x (N,C,H,W) with w (O,C/groups,kh,kw), plus bias b when not nil.
func (s *Scope) Conv2d(x, w, b *Tensor, c Conv) *Tensor {
	if !s.ok("conv2d", x, w) || !s.okOpt("conv2d", b) {
		return &Tensor{}
	}
	st, dl := c.Stride, c.Dilation
	if st == [2]int64{} {
		st = [2]int64{1, 1}
	}
	if dl == [2]int64{} {
		dl = [2]int64{1, 1}
	}
	g := c.Groups
	if g == 0 {
		g = 1
	}
	out := s.out()
	e := C.mt_conv2d(x.h, w.h, optH(b), C.int64_t(st[0]), C.int64_t(st[1]), C.int64_t(c.Padding[0]), C.int64_t(c.Padding[1]),
		C.int64_t(dl[0]), C.int64_t(dl[1]), C.int64_t(g), out)
	return s.res(e, *out)
}

// FactorizedReduce computes the two halves of a FactorizedReduce of x ([N, C, H, W], H and W
// even) at once: the bias-free 1x1 convolutions at stride 2 of x by w1 and of x shifted by
// one pixel down and right by w2 (each [groups*co, C/groups, 1, 1]), as one 2x2
// convolution at stride 2 whose kernels hold w1 at tap (0, 0) and w2 at tap (1, 1). The
// result [N, groups*2*co, H/2, W/2] holds each group's w1 outputs, then its w2 outputs:
// the halves concatenated per group. See FactorizedReducePatch for where the network
// uses it.
func (s *Scope) FactorizedReduce(x, w1, w2 *Tensor, groups int64) *Tensor {
	if !s.ok("factorized_reduce", x, w1, w2) {
		return &Tensor{}
	}
	out := s.out()
	return s.res(C.mt_factorized_reduce(x.h, w1.h, w2.h, C.int64_t(groups), out), *out)
}

// BatchNorm normalises x over (N,H,W) per channel. weight, bias and the running statistics
// may be nil. In training mode the batch statistics are used and the running ones updated
// in place with momentum; in eval mode the running statistics are used.
func (s *Scope) BatchNorm(x, weight, bias, runMean, runVar *Tensor, training bool, momentum, eps float64) *Tensor {
	if !s.ok("batch_norm", x) || !s.okOpt("batch_norm", weight, bias, runMean, runVar) {
		return &Tensor{}
	}
	out := s.out()
	e := C.mt_batch_norm(x.h, optH(weight), optH(bias), optH(runMean), optH(runVar), C.bool(training), C.double(momentum), C.double(eps), out)
	return s.res(e, *out)
}

// Relu returns max(x, 0).
func (s *Scope) Relu(x *Tensor) *Tensor {
	return s.unary("relu", x, func(a C.mt_tensor, o *C.mt_tensor) *C.char { return C.mt_relu(a, o) })
}

// MaxPool2d pools with a square kernel k, stride st and padding p.
func (s *Scope) MaxPool2d(x *Tensor, k, st, p int64) *Tensor {
	return s.unary("max_pool2d", x, func(a C.mt_tensor, o *C.mt_tensor) *C.char {
		return C.mt_max_pool2d(a, C.int64_t(k), C.int64_t(st), C.int64_t(p), o)
	})
}

// AvgPool2d averages with a square kernel; countIncludePad=false divides by the number of
// real (unpadded) elements, as MetaNAS's pooling ops do.
func (s *Scope) AvgPool2d(x *Tensor, k, st, p int64, countIncludePad bool) *Tensor {
	return s.unary("avg_pool2d", x, func(a C.mt_tensor, o *C.mt_tensor) *C.char {
		return C.mt_avg_pool2d(a, C.int64_t(k), C.int64_t(st), C.int64_t(p), C.bool(countIncludePad), o)
	})
}

// AdaptiveAvgPool2d averages to an oh x ow output.
func (s *Scope) AdaptiveAvgPool2d(x *Tensor, oh, ow int64) *Tensor {
	return s.unary("adaptive_avg_pool2d", x, func(a C.mt_tensor, o *C.mt_tensor) *C.char {
		return C.mt_adaptive_avg_pool2d(a, C.int64_t(oh), C.int64_t(ow), o)
	})
}

// Linear returns x w^T + b (b may be nil).
func (s *Scope) Linear(x, w, b *Tensor) *Tensor {
	if !s.ok("linear", x, w) || !s.okOpt("linear", b) {
		return &Tensor{}
	}
	out := s.out()
	e := C.mt_linear(x.h, w.h, optH(b), out)
	return s.res(e, *out)
}

// Softmax normalises over dim.
func (s *Scope) Softmax(x *Tensor, dim int64) *Tensor {
	return s.unary("softmax", x, func(a C.mt_tensor, o *C.mt_tensor) *C.char { return C.mt_softmax(a, C.int64_t(dim), o) })
}

// LogSoftmax returns log(softmax(x)) over dim.
func (s *Scope) LogSoftmax(x *Tensor, dim int64) *Tensor {
	return s.unary("log_softmax", x, func(a C.mt_tensor, o *C.mt_tensor) *C.char { return C.mt_log_softmax(a, C.int64_t(dim), o) })
}

// CrossEntropy returns the mean cross-entropy of logits (N,K) against int64 targets (N).
func (s *Scope) CrossEntropy(logits, target *Tensor) *Tensor {
	return s.binary("cross_entropy", logits, target, func(a, b C.mt_tensor, o *C.mt_tensor) *C.char { return C.mt_cross_entropy(a, b, o) })
}

func (s *Scope) list(op string, ts []*Tensor, f func(*C.mt_tensor, C.int64_t, *C.mt_tensor) *C.char) *Tensor {
	if !s.ok(op, ts...) {
		return &Tensor{}
	}
	if len(ts) == 0 {
		return s.fail(fmt.Errorf("%s: no tensors", op))
	}
	hs := handles(ts)
	out := s.out()
	e := f(&hs[0], C.int64_t(len(hs)), out)
	return s.res(e, *out)
}

// Cat concatenates along dim.
func (s *Scope) Cat(ts []*Tensor, dim int64) *Tensor {
	return s.list("cat", ts, func(h *C.mt_tensor, n C.int64_t, o *C.mt_tensor) *C.char { return C.mt_cat(h, n, C.int64_t(dim), o) })
}

// AdjacentCat concatenates ts along their first dimension. Where they lie back to back in
// one storage (contiguous, in order: see Scope.Adjacent) the result reads that storage
// without a copy, and its backward pass hands each input its slice of the gradient;
// otherwise it is Cat.
func (s *Scope) AdjacentCat(ts []*Tensor) *Tensor {
	return s.list("adjacent_cat", ts, func(h *C.mt_tensor, n C.int64_t, o *C.mt_tensor) *C.char { return C.mt_adjacent_cat(h, n, o) })
}

// Adjacent returns copies of ts (same values, shapes and requires-grad setting; detached
// leaves) that lie back to back in one new storage, in order, so that AdjacentCat of them
// needs no copy while they keep it (in-place updates keep it; replacing a tensor does not).
func (s *Scope) Adjacent(ts []*Tensor) []*Tensor {
	var err error
	if len(ts) == 0 {
		err = errors.New("adjacent: no tensors")
	}
	return s.outputs("adjacent", ts, len(ts), err, func(res *C.mt_tensor) *C.char {
		hs := handles(ts)
		return C.mt_adjacent_leaves(&hs[0], C.int64_t(len(hs)), res)
	})
}

// outputs runs a shim op of inputs ins that writes n output handles (f gets room for
// them) and returns them adopted; after a failure (of the scope, an input, pre, or the op)
// it returns n empty tensors and the scope holds the error.
func (s *Scope) outputs(op string, ins []*Tensor, n int, pre error, f func(*C.mt_tensor) *C.char) []*Tensor {
	out := make([]*Tensor, max(n, 0))
	for i := range out {
		out[i] = &Tensor{}
	}
	if !s.ok(op, ins...) {
		return out
	}
	if pre != nil {
		s.fail(pre)
		return out
	}
	res := make([]C.mt_tensor, n)
	if e := f(&res[0]); e != nil {
		s.fail(cerr(e))
		return out
	}
	for i, h := range res {
		out[i] = s.adopt(h)
	}
	return out
}

// Stack stacks along a new dim.
func (s *Scope) Stack(ts []*Tensor, dim int64) *Tensor {
	return s.list("stack", ts, func(h *C.mt_tensor, n C.int64_t, o *C.mt_tensor) *C.char { return C.mt_stack(h, n, C.int64_t(dim), o) })
}

// Slice returns x[..., start:end:step, ...] along dim (a view).
func (s *Scope) Slice(x *Tensor, dim, start, end, step int64) *Tensor {
	return s.unary("slice", x, func(a C.mt_tensor, o *C.mt_tensor) *C.char {
		return C.mt_slice(a, C.int64_t(dim), C.int64_t(start), C.int64_t(end), C.int64_t(step), o)
	})
}

// Narrow returns length elements from start along dim (a view).
func (s *Scope) Narrow(x *Tensor, dim, start, length int64) *Tensor {
	return s.unary("narrow", x, func(a C.mt_tensor, o *C.mt_tensor) *C.char {
		return C.mt_narrow(a, C.int64_t(dim), C.int64_t(start), C.int64_t(length), o)
	})
}

// RepeatStates returns xs ([N, C, ...] each, one shape) each repeated r times along the
// channels: [N, len(xs)*r*C, ...], copy i of tensor m at channels [(m*r+i)*C, (m*r+i+1)*C).
// One copy forward; the backward pass sums each tensor's copies' gradients in one reduction
// (where r readers would add r gradients).
func (s *Scope) RepeatStates(xs []*Tensor, r int64) *Tensor {
	return s.list("repeat_states", xs, func(h *C.mt_tensor, n C.int64_t, o *C.mt_tensor) *C.char {
		return C.mt_repeat_states(h, n, C.int64_t(r), o)
	})
}

// RepeatStatesFan is RepeatStates for readers readers: it returns readers tensors that share
// one copy (with one tensor, r 1 and no ReLU, xs[0]'s memory), so that autograd hands each
// reader's gradient to one backward pass, which sums every reader's gradient of each
// tensor's copies at once, reading each gradient once, where separate readers of one
// tensor would add their gradients one by one. With relu the copies are of the tensors'
// ReLUs, written by one pass per tensor (no ReLU tensor is made), and the backward pass
// applies the ReLU's gradient in the same sum (for one tensor repeated once reading the
// ReLU for its mask, not the tensor, which autograd then does not keep). Each returned
// tensor is freed on its own.
// It needs the shim's kernels for the device (NodeNormSumOn); with relu, at most 32
// tensors.
func (s *Scope) RepeatStatesFan(xs []*Tensor, r, readers int64, relu bool) []*Tensor {
	var err error
	if len(xs) == 0 || readers < 1 {
		err = fmt.Errorf("repeat_fan: %d tensors for %d readers; needs at least one of each", len(xs), readers)
	}
	return s.outputs("repeat_fan", xs, int(readers), err, func(res *C.mt_tensor) *C.char {
		hs := handles(xs)
		return C.mt_repeat_fan(&hs[0], C.int64_t(len(hs)), C.int64_t(r), C.int64_t(readers), C.bool(relu), res)
	})
}

// NormReLU is BatchNorm in training without affine tensors followed by Relu, fused: the
// running statistics (contiguous float32 [C]) move as BatchNorm's; forward one pass for the
// statistics and one that writes the ReLU of the normalised x, backward two passes (the
// ReLU's mask recomputed from x), where the two calls make a normalised tensor that a ReLU
// reads and, backward, a ReLU pass of three reads and writes. x is float32, bfloat16 or
// float16. It needs the shim's kernels for the device (NodeNormSumOn).
func (s *Scope) NormReLU(x, runMean, runVar *Tensor, momentum, eps float64) *Tensor {
	if !s.ok("norm_relu", x, runMean, runVar) {
		return &Tensor{}
	}
	out := s.out()
	e := C.mt_norm_relu(x.h, runMean.h, runVar.h, C.double(momentum), C.double(eps), out)
	return s.res(e, *out)
}

// SplitChannels returns x ([N, parts*C, ...]) as parts views [N, C, ...] along its channels,
// made by one split: the parts' gradients come back as one concatenation, where a narrow
// per part would spread each part's gradient over zeros of x's size and add them up. With
// tasks > 0 each part is [N, tasks, C/tasks, ...] instead (see NodeBatchNorm, which takes
// such parts: their gradients, strided along the tasks, then need no copy).
func (s *Scope) SplitChannels(x *Tensor, parts, tasks int64) []*Tensor {
	var err error
	if parts < 1 {
		err = fmt.Errorf("split_channels: parts must be >= 1, got %d", parts)
	}
	return s.outputs("split_channels", []*Tensor{x}, int(parts), err, func(res *C.mt_tensor) *C.char {
		return C.mt_split_channels(x.h, C.int64_t(parts), C.int64_t(tasks), res)
	})
}

func (s *Scope) shaped(op string, x *Tensor, shape []int64, f func(C.mt_tensor, *C.int64_t, C.int, *C.mt_tensor) *C.char) *Tensor {
	if !s.ok(op, x) {
		return &Tensor{}
	}
	sp, nd := cshape(shape)
	out := s.out()
	e := f(x.h, sp, nd, out)
	return s.res(e, *out)
}

// Reshape returns x with a new shape (-1 infers one dimension).
func (s *Scope) Reshape(x *Tensor, shape ...int64) *Tensor {
	return s.shaped("reshape", x, shape, func(a C.mt_tensor, p *C.int64_t, n C.int, o *C.mt_tensor) *C.char { return C.mt_reshape(a, p, n, o) })
}

// View returns a view of x with a new shape.
func (s *Scope) View(x *Tensor, shape ...int64) *Tensor {
	return s.shaped("view", x, shape, func(a C.mt_tensor, p *C.int64_t, n C.int, o *C.mt_tensor) *C.char { return C.mt_view(a, p, n, o) })
}

// Permute reorders dimensions.
func (s *Scope) Permute(x *Tensor, dims ...int64) *Tensor {
	return s.shaped("permute", x, dims, func(a C.mt_tensor, p *C.int64_t, n C.int, o *C.mt_tensor) *C.char { return C.mt_permute(a, p, n, o) })
}

// Flatten merges dims start..end (inclusive; -1 is the last).
func (s *Scope) Flatten(x *Tensor, start, end int64) *Tensor {
	return s.unary("flatten", x, func(a C.mt_tensor, o *C.mt_tensor) *C.char {
		return C.mt_flatten(a, C.int64_t(start), C.int64_t(end), o)
	})
}

// Contiguous returns x laid out contiguously.
func (s *Scope) Contiguous(x *Tensor) *Tensor {
	return s.unary("contiguous", x, func(a C.mt_tensor, o *C.mt_tensor) *C.char { return C.mt_contiguous(a, o) })
}

// IndexSelect picks entries of x along dim at the int64 indices.
func (s *Scope) IndexSelect(x *Tensor, dim int64, index *Tensor) *Tensor {
	return s.binary("index_select", x, index, func(a, b C.mt_tensor, o *C.mt_tensor) *C.char { return C.mt_index_select(a, C.int64_t(dim), b, o) })
}

func (s *Scope) bin(op int, name string, a, b *Tensor) *Tensor {
	return s.binary(name, a, b, func(x, y C.mt_tensor, o *C.mt_tensor) *C.char { return C.mt_binary(C.int(op), x, y, o) })
}

// Add returns a + b (broadcasting).
func (s *Scope) Add(a, b *Tensor) *Tensor { return s.bin(0, "add", a, b) }

// Sub returns a - b.
func (s *Scope) Sub(a, b *Tensor) *Tensor { return s.bin(1, "sub", a, b) }

// Mul returns a * b elementwise.
func (s *Scope) Mul(a, b *Tensor) *Tensor { return s.bin(2, "mul", a, b) }

// Div returns a / b elementwise.
func (s *Scope) Div(a, b *Tensor) *Tensor { return s.bin(3, "div", a, b) }

// Maximum returns the elementwise maximum.
func (s *Scope) Maximum(a, b *Tensor) *Tensor { return s.bin(4, "maximum", a, b) }

// Minimum returns the elementwise minimum.
func (s *Scope) Minimum(a, b *Tensor) *Tensor { return s.bin(5, "minimum", a, b) }

// AddScaled returns a + alpha*b.
func (s *Scope) AddScaled(a, b *Tensor, alpha float64) *Tensor {
	return s.binary("add", a, b, func(x, y C.mt_tensor, o *C.mt_tensor) *C.char { return C.mt_add_scaled(x, y, C.double(alpha), o) })
}

func (s *Scope) scalar(op int, name string, a *Tensor, v float64) *Tensor {
	return s.unary(name, a, func(x C.mt_tensor, o *C.mt_tensor) *C.char { return C.mt_binary_scalar(C.int(op), x, C.double(v), o) })
}

// AddScalar returns a + v.
func (s *Scope) AddScalar(a *Tensor, v float64) *Tensor { return s.scalar(0, "add_scalar", a, v) }

// SubScalar returns a - v.
func (s *Scope) SubScalar(a *Tensor, v float64) *Tensor { return s.scalar(1, "sub_scalar", a, v) }

// MulScalar returns a * v.
func (s *Scope) MulScalar(a *Tensor, v float64) *Tensor { return s.scalar(2, "mul_scalar", a, v) }

// DivScalar returns a / v.
func (s *Scope) DivScalar(a *Tensor, v float64) *Tensor { return s.scalar(3, "div_scalar", a, v) }

// ClampMin returns max(a, v).
func (s *Scope) ClampMin(a *Tensor, v float64) *Tensor { return s.scalar(4, "clamp_min", a, v) }

// ClampMax returns min(a, v).
func (s *Scope) ClampMax(a *Tensor, v float64) *Tensor { return s.scalar(5, "clamp_max", a, v) }

// Pow returns a ** v.
func (s *Scope) Pow(a *Tensor, v float64) *Tensor { return s.scalar(6, "pow", a, v) }

func (s *Scope) un(op int, name string, a *Tensor) *Tensor {
	return s.unary(name, a, func(x C.mt_tensor, o *C.mt_tensor) *C.char { return C.mt_unary(C.int(op), x, o) })
}

// Neg returns -a.
func (s *Scope) Neg(a *Tensor) *Tensor { return s.un(0, "neg", a) }

// Exp returns e**a.
func (s *Scope) Exp(a *Tensor) *Tensor { return s.un(1, "exp", a) }

// Log returns the natural logarithm.
func (s *Scope) Log(a *Tensor) *Tensor { return s.un(2, "log", a) }

// Sqrt returns the square root.
func (s *Scope) Sqrt(a *Tensor) *Tensor { return s.un(3, "sqrt", a) }

// Abs returns |a|.
func (s *Scope) Abs(a *Tensor) *Tensor { return s.un(4, "abs", a) }

// Sigmoid returns 1/(1+e**-a).
func (s *Scope) Sigmoid(a *Tensor) *Tensor { return s.un(5, "sigmoid", a) }

// Tanh returns tanh(a).
func (s *Scope) Tanh(a *Tensor) *Tensor { return s.un(6, "tanh", a) }

// Square returns a*a.
func (s *Scope) Square(a *Tensor) *Tensor { return s.un(7, "square", a) }

// Cmp is a comparison.
type Cmp int

// Comparisons for Compare and CompareScalar.
const (
	Eq Cmp = iota
	Ne
	Lt
	Le
	Gt
	Ge
)

// Compare returns the bool mask a <cmp> b.
func (s *Scope) Compare(a *Tensor, c Cmp, b *Tensor) *Tensor {
	return s.binary("compare", a, b, func(x, y C.mt_tensor, o *C.mt_tensor) *C.char { return C.mt_compare(C.int(c), x, y, o) })
}

// CompareScalar returns the bool mask a <cmp> v.
func (s *Scope) CompareScalar(a *Tensor, c Cmp, v float64) *Tensor {
	return s.unary("compare", a, func(x C.mt_tensor, o *C.mt_tensor) *C.char {
		return C.mt_compare_scalar(C.int(c), x, C.double(v), o)
	})
}

// Where picks a where cond is true, else b.
func (s *Scope) Where(cond, a, b *Tensor) *Tensor {
	if !s.ok("where", cond, a, b) {
		return &Tensor{}
	}
	out := s.out()
	e := C.mt_where(cond.h, a.h, b.h, out)
	return s.res(e, *out)
}

func (s *Scope) reduceAll(op int, name string, x *Tensor) *Tensor {
	return s.unary(name, x, func(a C.mt_tensor, o *C.mt_tensor) *C.char { return C.mt_reduce_all(C.int(op), a, o) })
}

func (s *Scope) reduceDims(op int, name string, x *Tensor, dims []int64, keep bool) *Tensor {
	if len(dims) == 0 {
		return s.fail(fmt.Errorf("%s: no dims given", name))
	}
	return s.unary(name, x, func(a C.mt_tensor, o *C.mt_tensor) *C.char {
		return C.mt_reduce_dims(C.int(op), a, (*C.int64_t)(unsafe.Pointer(&dims[0])), C.int(len(dims)), C.bool(keep), o)
	})
}

// Sum returns the sum of all elements.
func (s *Scope) Sum(x *Tensor) *Tensor { return s.reduceAll(0, "sum", x) }

// Mean returns the mean of all elements.
func (s *Scope) Mean(x *Tensor) *Tensor { return s.reduceAll(1, "mean", x) }

// Max returns the largest element.
func (s *Scope) Max(x *Tensor) *Tensor { return s.reduceAll(2, "max", x) }

// Min returns the smallest element.
func (s *Scope) Min(x *Tensor) *Tensor { return s.reduceAll(3, "min", x) }

// SumDims sums over dims.
func (s *Scope) SumDims(x *Tensor, keepdim bool, dims ...int64) *Tensor {
	return s.reduceDims(0, "sum", x, dims, keepdim)
}

// MeanDims averages over dims.
func (s *Scope) MeanDims(x *Tensor, keepdim bool, dims ...int64) *Tensor {
	return s.reduceDims(1, "mean", x, dims, keepdim)
}

// MaxDim returns the maxima along dim.
func (s *Scope) MaxDim(x *Tensor, dim int64, keepdim bool) *Tensor {
	return s.reduceDims(2, "max", x, []int64{dim}, keepdim)
}

// Argmax returns the int64 indices of the maxima along dim.
func (s *Scope) Argmax(x *Tensor, dim int64, keepdim bool) *Tensor {
	return s.unary("argmax", x, func(a C.mt_tensor, o *C.mt_tensor) *C.char { return C.mt_argmax(a, C.int64_t(dim), C.bool(keepdim), o) })
}

// TopK returns the k largest (or smallest) values along dim and their indices, sorted.
func (s *Scope) TopK(x *Tensor, k, dim int64, largest bool) (values, indices *Tensor) {
	if !s.ok("topk", x) {
		return &Tensor{}, &Tensor{}
	}
	var v, i C.mt_tensor
	if err := cerr(C.mt_topk(x.h, C.int64_t(k), C.int64_t(dim), C.bool(largest), &v, &i)); err != nil {
		return s.fail(err), &Tensor{}
	}
	return s.adopt(v), s.adopt(i)
}

// Norm returns the Euclidean norm of all elements.
func (s *Scope) Norm(x *Tensor) *Tensor {
	return s.unary("norm", x, func(a C.mt_tensor, o *C.mt_tensor) *C.char { return C.mt_norm(a, o) })
}

// MixedNode computes a search-cell node from the outputs of its active ops in one call;
// see mt_mixed_node in shim.h. inc is the [P x nIn] incidence matrix of active pairs (nil
// with wpair nil), idx[m] = input*K + op for outs[m], droppable[m] whether outs[m] takes
// drop-path, drawn from gen (nil: the default generator).
func (s *Scope) MixedNode(outs []*Tensor, wpair, wops *Tensor, inc []float32, nIn int, idx []int64, droppable []bool, dropProb float64, gen *Generator) *Tensor {
	a, ok := s.mixedArgs("mixed_node", nil, outs, wpair, wops, inc, nIn, idx, droppable)
	if !ok {
		return &Tensor{}
	}
	out := s.out()
	e := C.mt_mixed_node(&a.hs[0], C.int64_t(len(outs)), optH(wpair), wops.h, a.inc, C.int64_t(a.p), C.int64_t(nIn),
		(*C.int64_t)(unsafe.Pointer(&idx[0])), &a.drop[0], C.double(dropProb), gen.handle(), out)
	return s.res(e, *out)
}

// mixedCall holds the C arguments of a fused node.
type mixedCall struct {
	hs   []C.mt_tensor
	inc  *C.float
	p    int
	drop []C.uint8_t
}

// mixedArgs checks a fused node's arguments and converts them for C.
// stacked, when set, holds columns of idx before those of outs (the shim checks how many).
func (s *Scope) mixedArgs(op string, stacked *Tensor, outs []*Tensor, wpair, wops *Tensor, inc []float32, nIn int, idx []int64, droppable []bool) (mixedCall, bool) {
	if !s.ok(op, outs...) || !s.ok(op, wops) || !s.okOpt(op, wpair, stacked) {
		return mixedCall{}, false
	}
	m := len(idx)
	if m == 0 || (stacked == nil && len(outs) != m) || len(droppable) != m {
		s.fail(fmt.Errorf("%s: %d outputs, %d indices, %d drop flags", op, len(outs), len(idx), len(droppable)))
		return mixedCall{}, false
	}
	inc0, p, err := incidenceArg(wpair, inc, nIn)
	if err != nil {
		s.fail(fmt.Errorf("%s: %w", op, err))
		return mixedCall{}, false
	}
	return mixedCall{hs: outHandles(outs), inc: inc0, p: p, drop: dropFlags(droppable)}, true
}

// incidenceArg converts a node's pair incidence for C: nil and 0 pairs without pair
// weights, else inc must be pairs rows of nIn values.
func incidenceArg(wpair *Tensor, inc []float32, nIn int) (*C.float, int, error) {
	if wpair == nil {
		return nil, 0, nil
	}
	if nIn <= 0 || len(inc)%nIn != 0 || len(inc) == 0 {
		return nil, 0, fmt.Errorf("incidence of %d values for %d inputs", len(inc), nIn)
	}
	return (*C.float)(unsafe.Pointer(&inc[0])), len(inc) / nIn, nil
}

// dropFlags converts drop-path flags for C.
func dropFlags(droppable []bool) []C.uint8_t {
	drop := make([]C.uint8_t, len(droppable))
	for i, d := range droppable {
		if d {
			drop[i] = 1
		}
	}
	return drop
}

// outHandles returns the handles of outs, or one nil handle when there are none (so that
// &hs[0] stays valid; the shim then reads none).
func outHandles(outs []*Tensor) []C.mt_tensor {
	if hs := handles(outs); len(hs) > 0 {
		return hs
	}
	return []C.mt_tensor{nil}
}
