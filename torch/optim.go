package torch

// #include <stdlib.h>
// #include "shim.h"
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"
)

// Optimizer updates a fixed list of parameters from their gradients (PyTorch's Adam or SGD
// update rules). Its per-parameter state lives in LibTorch and is freed by Close.
type Optimizer struct {
	h      C.mt_optim
	kind   string
	params []*Tensor
	lr     float64
}

// AdamOptions are torch.optim.Adam's settings (L2 weight decay added to the gradient).
type AdamOptions struct {
	LR, Beta1, Beta2, Eps, WeightDecay float64
}

// SGDOptions are torch.optim.SGD's settings.
type SGDOptions struct {
	LR, Momentum, Dampening, WeightDecay float64
	Nesterov                             bool
}

// NewAdam returns an Adam optimizer over params (Eps 0 means 1e-8).
func NewAdam(params []*Tensor, o AdamOptions) (*Optimizer, error) {
	if o.Eps == 0 {
		o.Eps = 1e-8
	}
	if o.LR < 0 || o.Beta1 < 0 || o.Beta1 >= 1 || o.Beta2 < 0 || o.Beta2 >= 1 || o.WeightDecay < 0 {
		return nil, fmt.Errorf("adam: invalid settings %+v (need lr >= 0, betas in [0,1), weight decay >= 0)", o)
	}
	return newOptim(0, "adam", params, o.LR, o.Beta1, o.Beta2, o.Eps, o.WeightDecay)
}

// NewSGD returns an SGD optimizer over params.
func NewSGD(params []*Tensor, o SGDOptions) (*Optimizer, error) {
	if o.LR < 0 || o.Momentum < 0 || o.WeightDecay < 0 {
		return nil, fmt.Errorf("sgd: invalid settings %+v (need lr, momentum, weight decay >= 0)", o)
	}
	nest := 0.0
	if o.Nesterov {
		nest = 1
	}
	return newOptim(1, "sgd", params, o.LR, o.Momentum, o.Dampening, nest, o.WeightDecay)
}

func newOptim(kind int, name string, params []*Tensor, lr, a, b, c, wd float64) (*Optimizer, error) {
	if err := validAll(name, params); err != nil {
		return nil, err
	}
	hs := handles(params)
	var p *C.mt_tensor
	if len(hs) > 0 {
		p = &hs[0]
	}
	var h C.mt_optim
	if err := cerr(C.mt_optim_new(C.int(kind), p, C.int64_t(len(hs)), C.double(lr), C.double(a), C.double(b), C.double(c), C.double(wd), &h)); err != nil {
		return nil, err
	}
	o := &Optimizer{h: h, kind: name, params: params, lr: lr}
	runtime.SetFinalizer(o, (*Optimizer).Close)
	return o, nil
}

var errClosedOptim = errors.New("optimizer used after Close")

// Step applies one update to every parameter that has a gradient.
func (o *Optimizer) Step() error {
	if o.h == nil {
		return errClosedOptim
	}
	return cerr(C.mt_optim_step(o.h))
}

// ZeroGrad zeroes the parameters' gradients.
func (o *Optimizer) ZeroGrad() error {
	if o.h == nil {
		return errClosedOptim
	}
	return cerr(C.mt_optim_zero_grad(o.h, C.bool(false)))
}

// SetLR changes the learning rate for the following steps.
func (o *Optimizer) SetLR(lr float64) {
	if o.h != nil {
		o.lr = lr
		C.mt_optim_set_lr(o.h, C.double(lr))
	}
}

// LR returns the current learning rate.
func (o *Optimizer) LR() float64 { return o.lr }

// SetDeviceSteps switches Adam to a step count kept on the device, one for the whole
// optimizer (every parameter with a gradient advances it), so that a step computes its bias
// corrections on the device and can be captured in a CUDA graph; Reset then zeroes the
// state in place instead of dropping it, so that a graph's addresses stay valid. Switching
// either way starts from a fresh state. The update is Adam's (PyTorch's formula) either way.
func (o *Optimizer) SetDeviceSteps(on bool) error {
	if o.h == nil {
		return errClosedOptim
	}
	return cerr(C.mt_optim_set_device_steps(o.h, C.bool(on)))
}

// Reset drops all per-parameter state (moments, step counts), as a fresh optimizer; with
// device steps it zeroes the state in place.
func (o *Optimizer) Reset() {
	if o.h != nil {
		C.mt_optim_reset(o.h)
	}
}

// Params returns the optimized parameters.
func (o *Optimizer) Params() []*Tensor { return o.params }

// Kind returns "adam" or "sgd".
func (o *Optimizer) Kind() string { return o.kind }

// Close frees the optimizer's state.
func (o *Optimizer) Close() {
	if o.h != nil {
		C.mt_optim_free(o.h)
		o.h = nil
		runtime.SetFinalizer(o, nil)
	}
}

// State returns a per-parameter state tensor of parameter i in scope s ("step",
// "exp_avg", "exp_avg_sq" for Adam; "momentum_buffer" for SGD), or nil before the first step.
func (o *Optimizer) State(s *Scope, i int, name string) (*Tensor, error) {
	if o.h == nil {
		return nil, errClosedOptim
	}
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	var out C.mt_tensor
	if err := cerr(C.mt_optim_state_get(o.h, C.int64_t(i), cn, &out)); err != nil {
		return nil, err
	}
	if out == nil {
		return nil, nil
	}
	return s.adopt(out), nil
}

// SetState replaces a per-parameter state tensor (for resuming from a checkpoint).
func (o *Optimizer) SetState(i int, name string, v *Tensor) error {
	if o.h == nil {
		return errClosedOptim
	}
	if err := v.valid("optimizer state"); err != nil {
		return err
	}
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	return cerr(C.mt_optim_state_set(o.h, C.int64_t(i), cn, v.h))
}
