package torch

// #include "shim.h"
import "C"

import (
	"fmt"
	"runtime"
)

// Autocast makes the calling goroutine's ops on devices of d's kind run in dt (BFloat16 or
// Float16) where LibTorch's autocast lowers them: convolutions and matrix products compute
// in dt and return dt, ops that need the range stay in float32 (softmax, the losses), and
// most others (batch norm, pools, ReLU) run in the type they are given. Casts are not
// cached, so weights changed in place between calls are cast afresh. Autocast is a setting
// of the OS thread: the goroutine stays locked to its thread until restore, which puts the
// thread's previous setting back. On the CPU the shim's own float32 kernels stand aside
// meanwhile (LibTorch's run in dt). Backward passes run in the types of their forward ops
// whether or not they run inside.
func Autocast(d Device, dt DType) (restore func(), err error) {
	if dt != BFloat16 && dt != Float16 {
		return nil, fmt.Errorf("autocast: %v is not a 16-bit float type (use bfloat16 or float16)", dt)
	}
	runtime.LockOSThread()
	var on, cache C.bool
	var prev C.int
	if err := cerr(C.mt_autocast(C.bool(d.CUDA), true, C.int(dt), false, &on, &prev, &cache)); err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	return func() {
		var a, b C.bool
		var c C.int
		// The previous settings came from LibTorch (a 16-bit type where autocast was on),
		// so restoring them cannot fail; a type the shim has no code for (-1) is replaced
		// by one it has.
		if prev < 0 {
			prev = C.int(BFloat16)
		}
		_ = cerr(C.mt_autocast(C.bool(d.CUDA), on, prev, cache, &a, &c, &b))
		runtime.UnlockOSThread()
	}, nil
}
