package torch

// #include "shim.h"
import "C"

import "runtime"

// Generator is a private random stream on one device, so that concurrent tasks draw
// reproducible random numbers (drop-path masks, Gumbel noise) whatever their scheduling.
type Generator struct {
	h   C.mt_generator
	dev Device
}

// NewGenerator returns a generator on dev seeded with seed.
func NewGenerator(seed uint64, dev Device) (*Generator, error) {
	t, i := dev.c()
	var h C.mt_generator
	if err := cerr(C.mt_generator_new(C.uint64_t(seed), t, i, &h)); err != nil {
		return nil, err
	}
	g := &Generator{h: h, dev: dev}
	runtime.SetFinalizer(g, (*Generator).Close)
	return g, nil
}

// Seed restarts the stream from seed.
func (g *Generator) Seed(seed uint64) {
	if g != nil && g.h != nil {
		C.mt_generator_seed(g.h, C.uint64_t(seed))
	}
}

// Close frees the generator.
func (g *Generator) Close() {
	if g != nil && g.h != nil {
		C.mt_generator_free(g.h)
		g.h = nil
		runtime.SetFinalizer(g, nil)
	}
}

func (g *Generator) handle() C.mt_generator {
	if g == nil {
		return nil
	}
	return g.h
}

// BernoulliGen is Bernoulli drawing from g (nil: LibTorch's default generator).
func (s *Scope) BernoulliGen(shape []int64, p float64, dev Device, g *Generator) *Tensor {
	if !s.ok("bernoulli") {
		return &Tensor{}
	}
	sp, nd := cshape(shape)
	t, i := dev.c()
	var out C.mt_tensor
	e := C.mt_bernoulli_gen(sp, nd, C.double(p), C.int(Float32), t, i, g.handle(), &out)
	return s.res(e, out)
}

// RandGen is Rand drawing from g (nil: LibTorch's default generator).
func (s *Scope) RandGen(shape []int64, dev Device, g *Generator) *Tensor {
	if !s.ok("rand") {
		return &Tensor{}
	}
	sp, nd := cshape(shape)
	t, i := dev.c()
	var out C.mt_tensor
	e := C.mt_rand_gen(sp, nd, C.int(Float32), t, i, g.handle(), &out)
	return s.res(e, out)
}
