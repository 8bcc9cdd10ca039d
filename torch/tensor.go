package torch

// #include <stdlib.h>
// #include "shim.h"
import "C"

import (
	"fmt"
	"unsafe"
)

func cshape(shape []int64) (*C.int64_t, C.int) {
	if len(shape) == 0 {
		return nil, 0
	}
	return (*C.int64_t)(unsafe.Pointer(&shape[0])), C.int(len(shape))
}

func numel(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

func checkShape(op string, shape []int64) error {
	for _, d := range shape {
		if d < 0 {
			return fmt.Errorf("%s: negative dimension in shape %v", op, shape)
		}
	}
	return nil
}

// FromFloat32 copies data into a new float32 tensor of the given shape on dev.
func (s *Scope) FromFloat32(data []float32, shape []int64, dev Device) *Tensor {
	return s.fromData("from_float32", unsafe.Pointer(unsafe.SliceData(data)), len(data), Float32, shape, dev, false)
}

// FromFloat64 copies data into a new float64 tensor.
func (s *Scope) FromFloat64(data []float64, shape []int64, dev Device) *Tensor {
	return s.fromData("from_float64", unsafe.Pointer(unsafe.SliceData(data)), len(data), Float64, shape, dev, false)
}

// FromInt64 copies data into a new int64 tensor (labels, indices).
func (s *Scope) FromInt64(data []int64, shape []int64, dev Device) *Tensor {
	return s.fromData("from_int64", unsafe.Pointer(unsafe.SliceData(data)), len(data), Int64, shape, dev, false)
}

// Param copies data into a new float32 tensor that requires gradients.
func (s *Scope) Param(data []float32, shape []int64, dev Device) *Tensor {
	return s.fromData("param", unsafe.Pointer(unsafe.SliceData(data)), len(data), Float32, shape, dev, true)
}

func (s *Scope) fromData(op string, p unsafe.Pointer, n int, dt DType, shape []int64, dev Device, grad bool) *Tensor {
	if !s.ok(op) {
		return &Tensor{}
	}
	if err := checkShape(op, shape); err != nil {
		return s.fail(err)
	}
	if int64(n) != numel(shape) {
		return s.fail(fmt.Errorf("%s: %d values do not fill shape %v (%d elements)", op, n, shape, numel(shape)))
	}
	var buf [1]float64
	if p == nil {
		p = unsafe.Pointer(&buf[0])
	}
	sp, nd := cshape(shape)
	dt2, di := dev.c()
	var out C.mt_tensor
	e := C.mt_from_data(p, C.int(dt), sp, nd, dt2, di, C.bool(grad), &out)
	return s.res(e, out)
}

// FromImages turns 8-bit pixels (N,C,H,W order) into a float32 tensor scaled by scale
// (1/255 for [0,1]) on dev; the conversion runs on the device.
func (s *Scope) FromImages(pixels []uint8, shape []int64, scale float64, dev Device) *Tensor {
	if !s.ok("from_images") {
		return &Tensor{}
	}
	if int64(len(pixels)) != numel(shape) || len(pixels) == 0 {
		return s.fail(fmt.Errorf("from_images: %d pixels do not fill shape %v", len(pixels), shape))
	}
	sp, nd := cshape(shape)
	dt, di := dev.c()
	var out C.mt_tensor
	e := C.mt_from_u8_images((*C.uint8_t)(unsafe.Pointer(&pixels[0])), sp, nd, C.double(scale), dt, di, &out)
	return s.res(e, out)
}

// Full returns a float32 tensor filled with v.
func (s *Scope) Full(shape []int64, v float64, dev Device) *Tensor {
	return s.FullOf(shape, v, Float32, dev, false)
}

// FullOf returns a tensor of dtype dt filled with v, optionally requiring gradients.
func (s *Scope) FullOf(shape []int64, v float64, dt DType, dev Device, requiresGrad bool) *Tensor {
	if !s.ok("full") {
		return &Tensor{}
	}
	if err := checkShape("full", shape); err != nil {
		return s.fail(err)
	}
	sp, nd := cshape(shape)
	t, i := dev.c()
	var out C.mt_tensor
	e := C.mt_full(sp, nd, C.double(v), C.int(dt), t, i, C.bool(requiresGrad), &out)
	return s.res(e, out)
}

// Zeros returns a float32 tensor of zeros.
func (s *Scope) Zeros(shape []int64, dev Device) *Tensor { return s.Full(shape, 0, dev) }

// Ones returns a float32 tensor of ones.
func (s *Scope) Ones(shape []int64, dev Device) *Tensor { return s.Full(shape, 1, dev) }

// Randn returns a float32 tensor of standard normal samples from LibTorch's generator.
func (s *Scope) Randn(shape []int64, dev Device, requiresGrad bool) *Tensor {
	if !s.ok("randn") {
		return &Tensor{}
	}
	if err := checkShape("randn", shape); err != nil {
		return s.fail(err)
	}
	sp, nd := cshape(shape)
	t, i := dev.c()
	var out C.mt_tensor
	e := C.mt_randn(sp, nd, C.int(Float32), t, i, C.bool(requiresGrad), &out)
	return s.res(e, out)
}

// Rand returns a float32 tensor of uniform [0,1) samples.
func (s *Scope) Rand(shape []int64, dev Device) *Tensor {
	if !s.ok("rand") {
		return &Tensor{}
	}
	sp, nd := cshape(shape)
	t, i := dev.c()
	var out C.mt_tensor
	e := C.mt_rand(sp, nd, C.int(Float32), t, i, &out)
	return s.res(e, out)
}

// Bernoulli returns a float32 tensor of 0/1 samples with P(1) = p (drop-path masks).
func (s *Scope) Bernoulli(shape []int64, p float64, dev Device) *Tensor {
	if !s.ok("bernoulli") {
		return &Tensor{}
	}
	if p < 0 || p > 1 {
		return s.fail(fmt.Errorf("bernoulli: probability %g outside [0,1]", p))
	}
	sp, nd := cshape(shape)
	t, i := dev.c()
	var out C.mt_tensor
	e := C.mt_bernoulli(sp, nd, C.double(p), C.int(Float32), t, i, &out)
	return s.res(e, out)
}

// Arange returns the int64 tensor [0, 1, ..., n-1].
func (s *Scope) Arange(n int64, dev Device) *Tensor {
	if !s.ok("arange") {
		return &Tensor{}
	}
	t, i := dev.c()
	var out C.mt_tensor
	e := C.mt_arange(C.int64_t(n), C.int(Int64), t, i, &out)
	return s.res(e, out)
}

// Shape returns t's dimensions.
func (t *Tensor) Shape() ([]int64, error) {
	if err := t.valid("shape"); err != nil {
		return nil, err
	}
	var dims [8]C.int64_t
	var nd C.int
	if err := cerr(C.mt_shape(t.h, &dims[0], &nd)); err != nil {
		return nil, err
	}
	out := make([]int64, int(nd))
	for i := range out {
		out[i] = int64(dims[i])
	}
	return out, nil
}

// MustShape returns t's dimensions, or nil when t is invalid (for messages and tests).
func (t *Tensor) MustShape() []int64 {
	sh, _ := t.Shape()
	return sh
}

// Numel returns the number of elements (0 for an invalid tensor).
func (t *Tensor) Numel() int64 {
	sh, err := t.Shape()
	if err != nil {
		return 0
	}
	return numel(sh)
}

// Info describes a tensor's dtype, device and autograd flag.
type Info struct {
	DType        DType
	Device       Device
	RequiresGrad bool
	Defined      bool
}

// Info returns t's dtype, device and whether it requires gradients.
func (t *Tensor) Info() (Info, error) {
	if err := t.valid("info"); err != nil {
		return Info{}, err
	}
	var dt, devT, devI C.int
	var rg, def C.bool
	if err := cerr(C.mt_info(t.h, &dt, &devT, &devI, &rg, &def)); err != nil {
		return Info{}, err
	}
	return Info{DType: DType(dt), Device: Device{CUDA: devT == 1, Index: int(devI)}, RequiresGrad: bool(rg), Defined: bool(def)}, nil
}

// Float32s copies t (any dtype, any device) into a new Go slice of float32.
func (t *Tensor) Float32s() ([]float32, error) {
	n := t.Numel()
	if err := t.valid("float32s"); err != nil {
		return nil, err
	}
	out := make([]float32, n)
	var p unsafe.Pointer
	if n > 0 {
		p = unsafe.Pointer(&out[0])
	} else {
		return out, nil
	}
	return out, cerr(C.mt_to_host(t.h, p, C.int(Float32), C.int64_t(n)))
}

// Float64s copies t into a new Go slice of float64.
func (t *Tensor) Float64s() ([]float64, error) {
	n := t.Numel()
	if err := t.valid("float64s"); err != nil {
		return nil, err
	}
	out := make([]float64, n)
	if n == 0 {
		return out, nil
	}
	return out, cerr(C.mt_to_host(t.h, unsafe.Pointer(&out[0]), C.int(Float64), C.int64_t(n)))
}

// Int64s copies t into a new Go slice of int64.
func (t *Tensor) Int64s() ([]int64, error) {
	n := t.Numel()
	if err := t.valid("int64s"); err != nil {
		return nil, err
	}
	out := make([]int64, n)
	if n == 0 {
		return out, nil
	}
	return out, cerr(C.mt_to_host(t.h, unsafe.Pointer(&out[0]), C.int(Int64), C.int64_t(n)))
}

// Item returns the value of a one-element tensor.
func (t *Tensor) Item() (float64, error) {
	if err := t.valid("item"); err != nil {
		return 0, err
	}
	var v C.double
	err := cerr(C.mt_item(t.h, &v))
	return float64(v), err
}

// String prints the tensor as LibTorch does.
func (t *Tensor) String() string {
	if err := t.valid("string"); err != nil {
		return "<" + err.Error() + ">"
	}
	var p *C.char
	if err := cerr(C.mt_to_string(t.h, &p)); err != nil {
		return "<" + err.Error() + ">"
	}
	defer C.mt_free_str(p)
	return C.GoString(p)
}

// To converts t to dtype dt on device dev (a new tensor). A copy to a GPU does not wait
// for the host; a copy to the CPU waits for the device, so that its values can be read at
// once. (LibTorch's non-blocking copy from a GPU to the CPU returns pinned memory that the
// device fills later: read before a synchronisation, it holds whatever was there.)
func (s *Scope) To(t *Tensor, dt DType, dev Device) *Tensor {
	if !s.ok("to", t) {
		return &Tensor{}
	}
	d, i := dev.c()
	var out C.mt_tensor
	e := C.mt_to(t.h, C.int(dt), d, i, C.bool(dev.CUDA), &out)
	return s.res(e, out)
}

// PinMemory returns a page-locked copy of a CPU tensor when CUDA is present (else t itself
// as a second handle), for asynchronous host-to-device copies.
func (s *Scope) PinMemory(t *Tensor) *Tensor {
	if !s.ok("pin_memory", t) {
		return &Tensor{}
	}
	var out C.mt_tensor
	e := C.mt_pin_memory(t.h, &out)
	return s.res(e, out)
}
