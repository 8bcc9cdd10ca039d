package torch

// #include "shim.h"
import "C"

import (
	"errors"
	"fmt"
	"runtime"
)

// PinThread locks the calling goroutine to its OS thread until the returned function runs
// (calls nest). Run a forward pass and its backward pass pinned: LibTorch numbers autograd
// nodes with a counter per OS thread and runs a backward pass's ready nodes in the order of
// those numbers, so a forward pass issued from a goroutine that moves between threads
// draws from several counters, and the order in which gradients are summed (their
// rounding) would depend on the scheduler.
func PinThread() (unpin func()) {
	runtime.LockOSThread()
	return runtime.UnlockOSThread
}

// SetRequiresGrad turns gradient recording for t on or off.
func (t *Tensor) SetRequiresGrad(on bool) error {
	if err := t.valid("set_requires_grad"); err != nil {
		return err
	}
	return cerr(C.mt_set_requires_grad(t.h, C.bool(on)))
}

// Backward accumulates the gradient of the scalar t into the leaves' grads.
func (t *Tensor) Backward() error {
	if err := t.valid("backward"); err != nil {
		return err
	}
	return cerr(C.mt_backward(t.h))
}

// Grad returns t's accumulated gradient as a tensor of s sharing its storage, or nil when
// t has no gradient yet.
func (s *Scope) Grad(t *Tensor) *Tensor {
	if !s.ok("grad", t) {
		return &Tensor{}
	}
	var out C.mt_tensor
	if err := cerr(C.mt_grad(t.h, &out)); err != nil {
		return s.fail(err)
	}
	if out == nil {
		return nil
	}
	return s.adopt(out)
}

// SetGrad replaces t's gradient with a copy of g (nil clears it).
func (t *Tensor) SetGrad(g *Tensor) error {
	if err := t.valid("set_grad"); err != nil {
		return err
	}
	if g != nil {
		if err := g.valid("set_grad"); err != nil {
			return err
		}
	}
	return cerr(C.mt_set_grad(t.h, optH(g)))
}

// Detach returns t without autograd history (sharing storage).
func (s *Scope) Detach(t *Tensor) *Tensor {
	return s.unary("detach", t, func(a C.mt_tensor, o *C.mt_tensor) *C.char { return C.mt_detach(a, o) })
}

// Clone returns a copy of t (recorded by autograd).
func (s *Scope) Clone(t *Tensor) *Tensor {
	return s.unary("clone", t, func(a C.mt_tensor, o *C.mt_tensor) *C.char { return C.mt_clone(a, o) })
}

// Alias returns a second handle of s to the same tensor as t (same storage, same autograd
// identity), so that s can own it independently of t's scope.
func (s *Scope) Alias(t *Tensor) *Tensor {
	return s.unary("alias", t, func(a C.mt_tensor, o *C.mt_tensor) *C.char { return C.mt_alias(a, o) })
}

// ClipGradNorm scales the gradients of params so that their global L2 norm is at most
// maxNorm (PyTorch's clip_grad_norm_ rule, without a host synchronisation) and returns the
// norm before clipping as a 0-d tensor.
func (s *Scope) ClipGradNorm(params []*Tensor, maxNorm float64) *Tensor {
	if !s.ok("clip_grad_norm", params...) {
		return &Tensor{}
	}
	if len(params) == 0 {
		return s.Zeros(nil, CPU)
	}
	hs := handles(params)
	var out C.mt_tensor
	e := C.mt_clip_grad_norm(&hs[0], C.int64_t(len(hs)), C.double(maxNorm), &out)
	return s.res(e, out)
}

// Copy_ copies src into t in place (no autograd).
func (t *Tensor) Copy_(src *Tensor) error {
	if err := errors.Join(t.valid("copy_"), src.valid("copy_")); err != nil {
		return err
	}
	return cerr(C.mt_copy_(t.h, src.h))
}

// Add_ adds alpha*src to t in place (no autograd).
func (t *Tensor) Add_(src *Tensor, alpha float64) error {
	if err := errors.Join(t.valid("add_"), src.valid("add_")); err != nil {
		return err
	}
	return cerr(C.mt_add_(t.h, src.h, C.double(alpha)))
}

// MulScalar_ multiplies t by v in place.
func (t *Tensor) MulScalar_(v float64) error {
	if err := t.valid("mul_"); err != nil {
		return err
	}
	return cerr(C.mt_mul_scalar_(t.h, C.double(v)))
}

// Lerp_ moves t towards end in place: t += w*(end - t).
func (t *Tensor) Lerp_(end *Tensor, w float64) error {
	if err := errors.Join(t.valid("lerp_"), end.valid("lerp_")); err != nil {
		return err
	}
	return cerr(C.mt_lerp_(t.h, end.h, C.double(w)))
}

// Fill_ sets every element of t to v.
func (t *Tensor) Fill_(v float64) error {
	if err := t.valid("fill_"); err != nil {
		return err
	}
	return cerr(C.mt_fill_(t.h, C.double(v)))
}

func validAll(op string, ts []*Tensor) error {
	for i, t := range ts {
		if err := t.valid(op); err != nil {
			return fmt.Errorf("tensor %d: %w", i, err)
		}
	}
	return nil
}

// ZeroGrad zeroes (or, with setToNone, drops) the gradients of ts in one call.
func ZeroGrad(ts []*Tensor, setToNone bool) error {
	if len(ts) == 0 {
		return nil
	}
	if err := validAll("zero_grad", ts); err != nil {
		return err
	}
	hs := handles(ts)
	return cerr(C.mt_foreach_zero_grad(&hs[0], C.int64_t(len(hs)), C.bool(setToNone)))
}

func pairs(op string, dst, src []*Tensor) ([]C.mt_tensor, []C.mt_tensor, error) {
	if len(dst) != len(src) {
		return nil, nil, fmt.Errorf("%s: %d destinations, %d sources", op, len(dst), len(src))
	}
	if err := errors.Join(validAll(op, dst), validAll(op, src)); err != nil {
		return nil, nil, err
	}
	return handles(dst), handles(src), nil
}

// ForeachCopy copies src[i] into dst[i] for every i, in one call.
func ForeachCopy(dst, src []*Tensor) error {
	d, s, err := pairs("foreach_copy_", dst, src)
	if err != nil || len(d) == 0 {
		return err
	}
	return cerr(C.mt_foreach_copy_(&d[0], &s[0], C.int64_t(len(d))))
}

// ForeachAdd adds alpha*src[i] to dst[i] for every i, in one call.
func ForeachAdd(dst, src []*Tensor, alpha float64) error {
	d, s, err := pairs("foreach_add_", dst, src)
	if err != nil || len(d) == 0 {
		return err
	}
	return cerr(C.mt_foreach_add_(&d[0], &s[0], C.int64_t(len(d)), C.double(alpha)))
}

// ForeachMulScalar multiplies every dst[i] by v, in one call.
func ForeachMulScalar(dst []*Tensor, v float64) error {
	if len(dst) == 0 {
		return nil
	}
	if err := validAll("foreach_mul_", dst); err != nil {
		return err
	}
	d := handles(dst)
	return cerr(C.mt_foreach_mul_scalar_(&d[0], C.int64_t(len(d)), C.double(v)))
}

// ForeachLerp moves every dst[i] towards end[i]: dst += w*(end - dst), in one call.
func ForeachLerp(dst, end []*Tensor, w float64) error {
	d, e, err := pairs("foreach_lerp_", dst, end)
	if err != nil || len(d) == 0 {
		return err
	}
	return cerr(C.mt_foreach_lerp_(&d[0], &e[0], C.int64_t(len(d)), C.double(w)))
}

// ForeachLerpMean moves every dst[i] towards the mean of srcs[k][i] over k:
// dst += w*(mean_k srcs[k][i] - dst), the REPTILE meta-update, in one call.
func ForeachLerpMean(dst []*Tensor, srcs [][]*Tensor, w float64) error {
	if len(srcs) == 0 {
		return errors.New("foreach_lerp_mean_: no source lists")
	}
	flat := make([]*Tensor, 0, len(dst)*len(srcs))
	for k, src := range srcs {
		if len(src) != len(dst) {
			return fmt.Errorf("foreach_lerp_mean_: source list %d has %d tensors, destination %d", k, len(src), len(dst))
		}
		flat = append(flat, src...)
	}
	if len(dst) == 0 {
		return nil
	}
	if err := errors.Join(validAll("foreach_lerp_mean_", dst), validAll("foreach_lerp_mean_", flat)); err != nil {
		return err
	}
	d, s := handles(dst), handles(flat)
	return cerr(C.mt_foreach_lerp_mean_(&d[0], &s[0], C.int64_t(len(dst)), C.int64_t(len(srcs)), C.double(w)))
}
