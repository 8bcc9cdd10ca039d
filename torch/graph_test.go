package torch

import (
	"math"
	"runtime"
	"strings"
	"testing"
)

// closeTo reports the first element of got that differs from want by more than tol
// relative (absolute near zero).
func closeTo(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		d := math.Abs(float64(got[i] - want[i]))
		if d > tol*math.Max(1, math.Abs(float64(want[i]))) || math.IsNaN(float64(got[i])) {
			t.Fatalf("%s[%d] = %g, want %g", what, i, got[i], want[i])
		}
	}
}

// TestAdamDeviceSteps checks that Adam with its step count on the device updates exactly
// as the host-counted Adam (itself checked against PyTorch by the golden cases), over
// resets, and that its Reset zeroes the state in place.
func TestAdamDeviceSteps(t *testing.T) {
	for _, o := range []AdamOptions{
		{LR: 0.05, Beta1: 0.9, Beta2: 0.999},
		{LR: 0.1, Beta1: 0, Beta2: 0.99, WeightDecay: 0.01},
	} {
		s := NewScope()
		init := [][]float32{{1, -2, 3, 0.5}, {0.25, -0.75}}
		shapes := [][]int64{{2, 2}, {2}}
		mk := func() ([]*Tensor, *Optimizer) {
			ps := []*Tensor{s.Param(init[0], shapes[0], CPU), s.Param(init[1], shapes[1], CPU)}
			opt, err := NewAdam(ps, o)
			if err != nil {
				t.Fatal(err)
			}
			return ps, opt
		}
		host, hostOpt := mk()
		dev, devOpt := mk()
		if err := devOpt.SetDeviceSteps(true); err != nil {
			t.Fatal(err)
		}
		var kept *Tensor // a state tensor fetched before a reset
		for step := 0; step < 7; step++ {
			if step == 4 {
				hostOpt.Reset()
				devOpt.Reset()
				closeTo(t, "exp_avg_sq after a device-steps reset", values(t, kept), []float32{0, 0, 0, 0}, 0)
			}
			for i := range host {
				g := make([]float32, len(init[i]))
				for k := range g {
					g[k] = float32(math.Sin(float64(step*7 + i*3 + k)))
				}
				if err := host[i].SetGrad(s.FromFloat32(g, shapes[i], CPU)); err != nil {
					t.Fatal(err)
				}
				if err := dev[i].SetGrad(s.FromFloat32(g, shapes[i], CPU)); err != nil {
					t.Fatal(err)
				}
			}
			if err := hostOpt.Step(); err != nil {
				t.Fatal(err)
			}
			if err := devOpt.Step(); err != nil {
				t.Fatal(err)
			}
			if kept == nil {
				var err error
				if kept, err = devOpt.State(s, 0, "exp_avg_sq"); err != nil || kept == nil {
					t.Fatalf("exp_avg_sq after a step: %v, %v", kept, err)
				}
			}
			for i := range host {
				closeTo(t, "parameter", values(t, dev[i]), values(t, host[i]), 1e-6)
			}
		}
		st, err := devOpt.State(s, 0, "step")
		if err != nil || st == nil {
			t.Fatalf("step state: %v, %v", st, err)
		}
		if v, _ := st.Item(); v != 3 {
			t.Errorf("device step count after a reset and 3 steps: %g, want 3", v)
		}
		if err := devOpt.SetState(0, "step", st); err == nil {
			t.Error("setting one parameter's step with device steps: no error")
		}
		// Switching back starts fresh.
		if err := devOpt.SetDeviceSteps(false); err != nil {
			t.Fatal(err)
		}
		if m, _ := devOpt.State(s, 0, "exp_avg"); m != nil {
			t.Error("state kept after switching device steps off")
		}
		hostOpt.Close()
		devOpt.Close()
		s.Close()
	}
	s := NewScope()
	defer s.Close()
	sgd, err := NewSGD([]*Tensor{s.Param([]float32{1}, []int64{1}, CPU)}, SGDOptions{LR: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sgd.Close()
	if err := sgd.SetDeviceSteps(true); err == nil || !strings.Contains(err.Error(), "Adam") {
		t.Errorf("device steps for SGD: %v", err)
	}
}

// TestGraphNeedsCUDA checks that graphs are refused, with a reason, without CUDA.
func TestGraphNeedsCUDA(t *testing.T) {
	if _, err := NewGraph(CPU); err == nil || !strings.Contains(err.Error(), "CUDA") {
		t.Errorf("graph on the CPU: %v", err)
	}
	if CUDAAvailable() {
		return
	}
	if _, err := NewGraph(Device{CUDA: true}); err == nil || !strings.Contains(err.Error(), "CUDA") {
		t.Errorf("graph without a CUDA device: %v", err)
	}
}

// TestCUDAGraphTrainStep captures a training step (forward, backward, clipping, Adam with
// device steps, a drop mask from a private generator, an in-place loss accumulator) and
// checks that replays on new inputs train exactly as the same steps run eagerly, without
// host synchronisation.
func TestCUDAGraphTrainStep(t *testing.T) {
	if !CUDAAvailable() {
		t.Skip("no CUDA device (or LibTorch built without CUDA)")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	dev := Device{CUDA: true}
	s := NewScope()
	defer s.Close()
	type net struct {
		w, b, x, acc *Tensor
		opt          *Optimizer
		gen          *Generator
	}
	mk := func() net {
		n := net{w: s.Param([]float32{0.5, -1, 2, 0.25, 1.5, -0.5}, []int64{2, 3}, dev),
			b: s.Param([]float32{0.1, -0.2, 0.3}, []int64{3}, dev),
			x: s.Zeros([]int64{4, 2}, dev), acc: s.Zeros(nil, dev)}
		var err error
		if n.opt, err = NewAdam([]*Tensor{n.w, n.b}, AdamOptions{LR: 0.05, Beta1: 0.9, Beta2: 0.999}); err != nil {
			t.Fatal(err)
		}
		if err := n.opt.SetDeviceSteps(true); err != nil {
			t.Fatal(err)
		}
		if n.gen, err = NewGenerator(7, dev); err != nil {
			t.Fatal(err)
		}
		return n
	}
	step := func(st *Scope, n net) error {
		if err := ZeroGrad([]*Tensor{n.w, n.b}, true); err != nil {
			return err
		}
		mask := st.BernoulliGen([]int64{4, 3}, 0.8, dev, n.gen)
		y := st.Mul(st.Relu(st.Add(st.Matmul(n.x, n.w), n.b)), mask)
		loss := st.Sum(st.Mul(y, y))
		if err := loss.Backward(); err != nil {
			return err
		}
		st.ClipGradNorm([]*Tensor{n.w, n.b}, 1.0)
		if err := n.opt.Step(); err != nil {
			return err
		}
		if err := n.acc.Add_(st.Detach(loss), 1); err != nil {
			return err
		}
		return st.Err()
	}
	input := func(i int) []float32 {
		v := make([]float32, 8)
		for k := range v {
			v[k] = float32(math.Cos(float64(i*8+k))) * 2
		}
		return v
	}
	eager, graphed := mk(), mk()
	defer eager.opt.Close()
	defer graphed.opt.Close()
	st := s.Child()
	// Two eager warm-up steps on the graphed copy too (state allocation, library set-up).
	for i := 0; i < 2; i++ {
		for _, n := range []net{eager, graphed} {
			st.Reset()
			if err := n.x.Copy_(st.FromFloat32(input(i), []int64{4, 2}, dev)); err != nil {
				t.Fatal(err)
			}
			if err := step(st, n); err != nil {
				t.Fatal(err)
			}
		}
	}
	g, err := NewGraph(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	st.Reset()
	if err := g.Capture([]*Generator{graphed.gen}, nil, func() error { return step(st, graphed) }); err != nil {
		t.Fatalf("capture: %v", err)
	}
	st.Reset()
	for i := 2; i < 8; i++ {
		seed := uint64(100 + i)
		eager.gen.Seed(seed)
		graphed.gen.Seed(seed)
		st.Reset()
		if err := eager.x.Copy_(st.FromFloat32(input(i), []int64{4, 2}, dev)); err != nil {
			t.Fatal(err)
		}
		if err := step(st, eager); err != nil {
			t.Fatal(err)
		}
		if err := graphed.x.Copy_(st.FromFloat32(input(i), []int64{4, 2}, dev)); err != nil {
			t.Fatal(err)
		}
		before := HostSyncs()
		if err := g.Replay(); err != nil {
			t.Fatal(err)
		}
		if d := HostSyncs() - before; d != 0 {
			t.Errorf("replay %d: %d host synchronisations", i, d)
		}
	}
	for _, p := range []struct {
		name string
		a, b *Tensor
	}{{"w", graphed.w, eager.w}, {"b", graphed.b, eager.b}, {"loss sum", graphed.acc, eager.acc}} {
		closeTo(t, p.name, values(t, p.a), values(t, p.b), 1e-5)
	}
}
