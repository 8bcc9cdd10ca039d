package torch

// #include <stdlib.h>
// #include "shim.h"
import "C"

import (
	"errors"
	"fmt"
	"unsafe"
)

// The functions of this file are diagnostics of cmd/opbench's small-op chain (steps times
// y = relu(y*w + b), then y.sum() and backward): the same work with more or less of it issued
// from Go, to split what issuing ops from Go costs. x must require grad; w and b have x's
// shape.

// DiagChainCPP runs the chain iters times inside one call into C++: with held false every
// result is a value freed once nothing needs it (as a C++ program does), with held true a
// shim handle freed at the end of its iteration (as a Scope does).
func DiagChainCPP(x, w, b *Tensor, steps, iters int, held bool) error {
	if !x.Valid() || !w.Valid() || !b.Valid() {
		return fmt.Errorf("diag_chain: %w", ErrFreed)
	}
	return cerr(C.mt_diag_chain(x.h, w.h, b.h, C.int64_t(steps), C.int64_t(iters), C.bool(held)))
}

// DiagChainGo runs the chain iters times from Go with raw shim calls and no Scope: k (mul,
// add, relu) triples per call into C++ for k >= 1 (k must divide steps), or one call per op
// for k = 0; the sum, backward and freeing of each iteration are one call each.
func DiagChainGo(x, w, b *Tensor, steps, iters, k int) error {
	if !x.Valid() || !w.Valid() || !b.Valid() {
		return fmt.Errorf("diag_chain: %w", ErrFreed)
	}
	if steps < 1 || k < 0 || (k > 0 && steps%k != 0) {
		return errors.New("diag_chain: steps must be at least 1, and k 0 or a divisor of steps")
	}
	n := 3*steps + 1
	p := (*C.mt_tensor)(C.calloc(C.size_t(n), C.size_t(unsafe.Sizeof(C.mt_tensor(nil)))))
	defer C.free(unsafe.Pointer(p))
	hs := unsafe.Slice(p, n)
	for i := 0; i < iters; i++ {
		m, err := diagIter(hs, x.h, w.h, b.h, steps, k)
		C.mt_tensor_free_many(&hs[0], C.int64_t(m))
		clear(hs[:m]) // an op that fails writes no handle: its slot must read as none
		if err != nil {
			return err
		}
	}
	return nil
}

// diagIter issues one iteration into hs and returns how many of its slots to free.
func diagIter(hs []C.mt_tensor, x, w, b C.mt_tensor, steps, k int) (int, error) {
	m, y := 0, x
	for j := 0; j < steps; {
		if k == 0 {
			if err := cerr(C.mt_binary(2, y, w, &hs[m])); err != nil {
				return m, err
			}
			if err := cerr(C.mt_binary(0, hs[m], b, &hs[m+1])); err != nil {
				return m + 1, err
			}
			if err := cerr(C.mt_relu(hs[m+1], &hs[m+2])); err != nil {
				return m + 2, err
			}
			m += 3
			j++
		} else {
			if err := cerr(C.mt_diag_triples(y, w, b, C.int64_t(k), &hs[m])); err != nil {
				return m + 3*k, err
			}
			m += 3 * k
			j += k
		}
		y = hs[m-1]
	}
	if err := cerr(C.mt_reduce_all(0, y, &hs[m])); err != nil {
		return m, err
	}
	m++
	return m, cerr(C.mt_backward(hs[m-1]))
}

// divCheck returns the first n of [n0, n0+count) below 2^31 that the shim's CUDA kernels
// divide by d wrongly (their index arithmetic multiplies and shifts), or -1 (for tests).
func divCheck(d, n0, count uint32) int64 {
	return int64(C.mt_ns_div_check(C.uint32_t(d), C.uint32_t(n0), C.uint32_t(count)))
}
