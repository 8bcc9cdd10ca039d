package main

import (
	"fmt"
	"syscall"
	"time"

	"github.com/metanas-go/metanas/torch"
)

// chainSteps is the number of (mul, add, relu) triples of the chain case.
const chainSteps = 200

// goBench is one case issued through the torch package.
type goBench struct {
	dev    torch.Device
	inputs *torch.Scope // the case's fixed tensors
	s      *torch.Scope // one iteration's tensors; Reset after each iteration
	step   func() error
	ops    int
}

// newGoBench prepares case c on dev. With eagerFree the chain frees each mul and add result
// as soon as it is consumed, as C++ and Python do, instead of when the scope is Reset (a
// diagnostic that isolates the cost of holding an iteration's intermediates to its end).
func newGoBench(c string, dev torch.Device, eagerFree bool) (*goBench, error) {
	torch.ManualSeed(1)
	g := &goBench{dev: dev, inputs: torch.NewScope(), s: torch.NewScope(), ops: opsPerIter(c)}
	in, s := g.inputs, g.s
	switch c {
	case "chain":
		x := in.Randn([]int64{64, 28}, dev, true)
		w := in.Full([]int64{64, 28}, 0.9, dev)
		b := in.Full([]int64{64, 28}, 0.1, dev)
		g.step = func() error { return chainIter(s, x, w, b, eagerFree) }
	case "conv":
		x := in.Randn([]int64{20, 28, 28, 28}, dev, false)
		w := in.MulScalar(in.Randn([]int64{28, 28, 3, 3}, dev, false), 0.1)
		if err := in.Err(); err == nil {
			if err := w.SetRequiresGrad(true); err != nil {
				g.close()
				return nil, err
			}
		}
		geom := torch.Conv{Padding: [2]int64{1, 1}}
		g.step = func() error {
			loss := s.Sum(s.Conv2d(x, w, nil, geom))
			if err := s.Err(); err != nil {
				return err
			}
			err := loss.Backward()
			s.Reset()
			return err
		}
	default:
		g.close()
		return nil, fmt.Errorf("unknown case %q", c)
	}
	if err := in.Err(); err != nil {
		g.close()
		return nil, err
	}
	return g, nil
}

// chainIter is one iteration of the chain case in scope s, which it resets at the end. With
// eagerFree it frees each mul and add result as soon as it is consumed.
func chainIter(s *torch.Scope, x, w, b *torch.Tensor, eagerFree bool) error {
	y := x
	if eagerFree {
		for k := 0; k < chainSteps; k++ {
			m := s.Mul(y, w)
			a := s.Add(m, b)
			m.Free()
			y = s.Relu(a)
			a.Free()
		}
	} else {
		for k := 0; k < chainSteps; k++ {
			y = s.Relu(s.Add(s.Mul(y, w), b))
		}
	}
	loss := s.Sum(y)
	if err := s.Err(); err != nil {
		return err
	}
	err := loss.Backward()
	s.Reset()
	return err
}

func (g *goBench) close() {
	g.s.Close()
	g.inputs.Close()
}

// warm runs n untimed iterations.
func (g *goBench) warm(n int) error {
	for i := 0; i < n; i++ {
		if err := g.step(); err != nil {
			return err
		}
	}
	return g.sync()
}

func (g *goBench) sync() error {
	if g.dev.CUDA {
		return torch.Synchronize(g.dev)
	}
	return nil
}

// trial times iters iterations; it returns microseconds per forward op of wall time and of
// the process's CPU time.
func (g *goBench) trial(iters int) (wall, cpu float64, err error) {
	c0 := cpuTime()
	t0 := time.Now()
	for i := 0; i < iters; i++ {
		if err := g.step(); err != nil {
			return 0, 0, err
		}
	}
	if err := g.sync(); err != nil {
		return 0, 0, err
	}
	n := float64(iters * g.ops)
	return float64(time.Since(t0).Nanoseconds()) / 1e3 / n, float64((cpuTime() - c0).Nanoseconds()) / 1e3 / n, nil
}

// cpuTime returns the CPU time (user and system) of the whole process.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
