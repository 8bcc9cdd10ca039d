package torch

import (
	"errors"
	"strings"
	"testing"
)

func wantErrContains(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not contain %q", err, p)
		}
	}
}

// TestShapeErrors: a failing op records an error naming the op and the input shapes, and
// returns an invalid tensor.
func TestShapeErrors(t *testing.T) {
	cases := []struct {
		name string
		run  func(s *Scope) *Tensor
		want []string
	}{
		{"add [2,2]+[3]", func(s *Scope) *Tensor {
			return s.Add(s.Ones([]int64{2, 2}, CPU), s.Ones([]int64{3}, CPU))
		}, []string{"add", "[2, 2]", "[3]"}},
		{"mul [2,3]*[4,1,2]", func(s *Scope) *Tensor {
			return s.Mul(s.Ones([]int64{2, 3}, CPU), s.Ones([]int64{4, 1, 2}, CPU))
		}, []string{"mul", "[2, 3]", "[4, 1, 2]"}},
		{"conv2d channels", func(s *Scope) *Tensor {
			return s.Conv2d(s.Ones([]int64{1, 3, 5, 5}, CPU), s.Ones([]int64{4, 2, 3, 3}, CPU), nil, Conv{Padding: [2]int64{1, 1}})
		}, []string{"conv2d", "[1, 3, 5, 5]", "[4, 2, 3, 3]", "channels"}},
		{"conv2d groups", func(s *Scope) *Tensor {
			return s.Conv2d(s.Ones([]int64{1, 4, 5, 5}, CPU), s.Ones([]int64{4, 1, 3, 3}, CPU), nil, Conv{Groups: 3})
		}, []string{"conv2d", "[1, 4, 5, 5]"}},
		{"linear features", func(s *Scope) *Tensor {
			return s.Linear(s.Ones([]int64{2, 5}, CPU), s.Ones([]int64{3, 4}, CPU), nil)
		}, []string{"linear", "[2, 5]", "[3, 4]"}},
		{"cat sizes", func(s *Scope) *Tensor {
			return s.Cat([]*Tensor{s.Ones([]int64{2, 3}, CPU), s.Ones([]int64{3, 4}, CPU)}, 0)
		}, []string{"cat", "[2, 3]", "[3, 4]"}},
		{"view numel", func(s *Scope) *Tensor { return s.View(s.Ones([]int64{2, 3}, CPU), 4, 2) }, []string{"view", "[2, 3]"}},
		{"narrow range", func(s *Scope) *Tensor { return s.Narrow(s.Ones([]int64{2, 3}, CPU), 1, 2, 5) }, []string{"narrow", "[2, 3]"}},
		{"cross_entropy targets", func(s *Scope) *Tensor {
			return s.CrossEntropy(s.Ones([]int64{4, 3}, CPU), s.FromInt64([]int64{0, 1}, []int64{2}, CPU))
		}, []string{"cross_entropy", "[4, 3]", "[2]"}},
		{"batch_norm eval without stats", func(s *Scope) *Tensor {
			return s.BatchNorm(s.Ones([]int64{2, 3, 2, 2}, CPU), nil, nil, nil, nil, false, 0.1, 1e-5)
		}, []string{"batch_norm", "[2, 3, 2, 2]"}},
		{"topk k too large", func(s *Scope) *Tensor { v, _ := s.TopK(s.Ones([]int64{2, 3}, CPU), 5, 1, true); return v }, []string{"topk", "[2, 3]"}},
		{"max_dim two dims", func(s *Scope) *Tensor {
			return s.reduceDims(2, "max", s.Ones([]int64{2, 3}, CPU), []int64{0, 1}, false)
		}, []string{"one dim"}},
		{"mean no dims", func(s *Scope) *Tensor { return s.MeanDims(s.Ones([]int64{2, 3}, CPU), false) }, []string{"mean", "no dims"}},
		{"bernoulli p", func(s *Scope) *Tensor { return s.Bernoulli([]int64{2}, 1.5, CPU) }, []string{"bernoulli", "1.5"}},
		{"negative shape", func(s *Scope) *Tensor { return s.Full([]int64{2, -1}, 0, CPU) }, []string{"full", "negative"}},
		{"cat of nothing", func(s *Scope) *Tensor { return s.Cat(nil, 0) }, []string{"cat", "no tensors"}},
		{"nil tensor", func(s *Scope) *Tensor { return s.Relu(nil) }, []string{"relu", "nil tensor"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := NewScope()
			defer s.Close()
			out := c.run(s)
			if out == nil || out.Valid() {
				t.Errorf("failed op returned a valid tensor %v", out)
			}
			wantErrContains(t, s.Err(), c.want...)
			if strings.Contains(s.Err().Error(), "Exception raised from") {
				t.Errorf("error keeps LibTorch's backtrace: %q", s.Err())
			}
		})
	}
}

// TestFromSliceLength: data that does not fill the shape is an error, not a read past the
// Go slice.
func TestFromSliceLength(t *testing.T) {
	cases := []struct {
		name string
		run  func(s *Scope) *Tensor
		want []string
	}{
		{"float32 short", func(s *Scope) *Tensor { return s.FromFloat32([]float32{1, 2, 3}, []int64{2, 2}, CPU) }, []string{"from_float32", "3 values", "[2 2]", "4 elements"}},
		{"float32 long", func(s *Scope) *Tensor { return s.FromFloat32(make([]float32, 7), []int64{2, 3}, CPU) }, []string{"7 values", "6 elements"}},
		{"float64", func(s *Scope) *Tensor { return s.FromFloat64([]float64{1}, []int64{3}, CPU) }, []string{"from_float64", "1 values"}},
		{"int64", func(s *Scope) *Tensor { return s.FromInt64([]int64{1, 2}, []int64{3}, CPU) }, []string{"from_int64", "2 values"}},
		{"param", func(s *Scope) *Tensor { return s.Param(nil, []int64{1}, CPU) }, []string{"param", "0 values"}},
		{"images", func(s *Scope) *Tensor { return s.FromImages([]uint8{1, 2}, []int64{1, 1, 2, 2}, 1, CPU) }, []string{"from_images", "2 pixels"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := NewScope()
			defer s.Close()
			before := LiveTensors()
			if out := c.run(s); out.Valid() {
				t.Error("got a valid tensor")
			}
			wantErrContains(t, s.Err(), c.want...)
			if LiveTensors() != before {
				t.Errorf("live tensors %d, want %d", LiveTensors(), before)
			}
		})
	}
	// The empty tensor is fine.
	s := NewScope()
	defer s.Close()
	e := s.FromFloat32(nil, []int64{0, 3}, CPU)
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := e.Float32s(); err != nil || len(v) != 0 {
		t.Errorf("empty tensor: %v, %v", v, err)
	}
}

// TestUseAfterFree: a tensor freed by its scope or by Free is an ErrFreed error everywhere,
// never a crash.
func TestUseAfterFree(t *testing.T) {
	start := LiveTensors()
	closed := NewScope()
	dead := closed.FromFloat32([]float32{1, 2, 3, 4}, []int64{2, 2}, CPU)
	closed.Close()
	if dead.Valid() {
		t.Fatal("tensor still valid after its scope closed")
	}

	s := NewScope()
	defer s.Close()
	freed := s.Ones([]int64{3}, CPU)
	freed.Free()
	freed.Free() // twice is harmless
	if freed.Valid() {
		t.Fatal("tensor valid after Free")
	}
	live := s.Ones([]int64{2, 2}, CPU)

	for _, tc := range []struct {
		name string
		x    *Tensor
	}{{"closed scope", dead}, {"Free", freed}} {
		x := tc.x
		checks := map[string]func() error{
			"op": func() error {
				c := s.Child()
				defer c.Close()
				if out := c.Relu(x); out.Valid() {
					return errors.New("valid result")
				}
				return c.Err()
			},
			"binary op": func() error {
				c := s.Child()
				defer c.Close()
				c.Add(live, x)
				return c.Err()
			},
			"Float32s":   func() error { _, err := x.Float32s(); return err },
			"Int64s":     func() error { _, err := x.Int64s(); return err },
			"Item":       func() error { _, err := x.Item(); return err },
			"Shape":      func() error { _, err := x.Shape(); return err },
			"Info":       func() error { _, err := x.Info(); return err },
			"Backward":   func() error { return x.Backward() },
			"SetGrad":    func() error { return live.SetGrad(x) },
			"Copy_":      func() error { return live.Copy_(x) },
			"Lerp_":      func() error { return x.Lerp_(live, 0.5) },
			"ForeachAdd": func() error { return ForeachAdd([]*Tensor{live}, []*Tensor{x}, 1) },
			"ZeroGrad":   func() error { return ZeroGrad([]*Tensor{x}, false) },
			"Save":       func() error { return Save(t.TempDir()+"/x.pt", []Named{{"x", x}}) },
			"Adam":       func() error { _, err := NewAdam([]*Tensor{x}, AdamOptions{LR: 1}); return err },
			"Gotorch":    func() error { _, err := x.Gotorch(); return err },
		}
		for name, f := range checks {
			if err := f(); !errors.Is(err, ErrFreed) {
				t.Errorf("%s: %s: error %v, want ErrFreed", tc.name, name, err)
			}
		}
		if x.Numel() != 0 || x.MustShape() != nil {
			t.Errorf("%s: Numel %d, MustShape %v of a freed tensor", tc.name, x.Numel(), x.MustShape())
		}
		if !strings.Contains(x.String(), "freed") {
			t.Errorf("%s: String() = %q", tc.name, x.String())
		}
	}
	live.Free()
	s.Close()
	if got := LiveTensors(); got != start {
		t.Errorf("live tensors %d, want %d (double free or leak)", got, start)
	}
}

// TestStickyError: after a failure, later ops of the scope return invalid tensors without
// running, and Err keeps the first error until Reset or ClearErr.
func TestStickyError(t *testing.T) {
	s := NewScope()
	defer s.Close()
	a := s.Ones([]int64{2, 2}, CPU)
	bad := s.Add(a, s.Ones([]int64{3}, CPU))
	first := s.Err()
	wantErrContains(t, first, "[2, 2]", "[3]")
	if bad.Valid() {
		t.Fatal("failed op returned a valid tensor")
	}
	n := LiveTensors()
	r := s.Relu(a)
	c := s.Conv2d(a, a, nil, Conv{}) // would fail differently
	v, i := s.TopK(a, 1, 0, true)
	x := s.FromFloat32([]float32{1}, []int64{1}, CPU)
	for k, out := range []*Tensor{r, c, v, i, x} {
		if out.Valid() {
			t.Errorf("op %d after the error returned a valid tensor", k)
		}
	}
	if LiveTensors() != n {
		t.Errorf("ops after the error allocated %d tensors", LiveTensors()-n)
	}
	if s.Err() != first {
		t.Errorf("error replaced: %v, first %v", s.Err(), first)
	}
	// An error-producing Keep does not replace the first error either.
	s.Keep(a)
	if s.Err() != first {
		t.Errorf("error replaced by Keep: %v", s.Err())
	}
	// The tensors created before the error are still usable directly.
	if vals, err := a.Float32s(); err != nil || len(vals) != 4 || vals[0] != 1 {
		t.Errorf("earlier tensor: %v, %v", vals, err)
	}
	s.ClearErr()
	if got := s.Relu(a); !got.Valid() || s.Err() != nil {
		t.Errorf("after ClearErr: valid %v, err %v", got.Valid(), s.Err())
	}
	// With returns the child's first error.
	err := With(s, func(c *Scope) error {
		c.Linear(a, c.Ones([]int64{3, 5}, CPU), nil)
		c.Relu(a)
		return nil
	})
	wantErrContains(t, err, "linear", "[2, 2]", "[3, 5]")
	if s.Err() != nil {
		t.Errorf("child error leaked into the parent: %v", s.Err())
	}
}

func TestMiscErrors(t *testing.T) {
	s := NewScope()
	defer s.Close()
	if _, err := s.Ones([]int64{3}, CPU).Item(); err == nil {
		t.Error("Item of a 3-element tensor: no error")
	}
	if _, err := NewAdam(nil, AdamOptions{LR: 1, Beta1: 1}); err == nil {
		t.Error("Adam with beta1 = 1: no error")
	}
	if _, err := NewSGD(nil, SGDOptions{LR: -1}); err == nil {
		t.Error("SGD with lr < 0: no error")
	}
	p := s.Param([]float32{1, 2}, []int64{2}, CPU)
	o, err := NewAdam([]*Tensor{p}, AdamOptions{LR: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.State(s, 5, "exp_avg"); err == nil {
		t.Error("state of parameter 5 of 1: no error")
	}
	if _, err := o.State(s, 0, "nonsense"); err == nil {
		t.Error("unknown state name: no error")
	}
	if err := o.SetState(0, "exp_avg", s.Ones([]int64{3}, CPU)); err == nil || !strings.Contains(err.Error(), "[3]") {
		t.Errorf("state of the wrong shape: %v", err)
	}
	o.Close()
	o.Close()
	if err := o.Step(); err == nil {
		t.Error("Step after Close: no error")
	}
	a, b := s.Ones([]int64{2}, CPU), s.Ones([]int64{3}, CPU)
	if err := ForeachLerp([]*Tensor{a}, []*Tensor{b}, 0.5); err == nil || !strings.Contains(err.Error(), "shapes differ") {
		t.Errorf("foreach lerp of mismatched shapes: %v", err)
	}
	if err := ForeachLerp([]*Tensor{a}, []*Tensor{a, b}, 0.5); err == nil {
		t.Error("foreach lerp of lists of different lengths: no error")
	}
	if err := ForeachLerpMean([]*Tensor{a}, [][]*Tensor{{a}, {b}}, 0.5); err == nil {
		t.Error("lerp mean with a mismatched task: no error")
	}
	if err := ForeachLerpMean([]*Tensor{a}, [][]*Tensor{{a, a}}, 0.5); err == nil {
		t.Error("lerp mean with a task list of another length: no error")
	}
	if err := ForeachLerpMean([]*Tensor{a}, nil, 0.5); err == nil {
		t.Error("lerp mean without tasks: no error")
	}
	if err := a.Add_(b, 1); err == nil || !strings.Contains(err.Error(), "[2]") {
		t.Errorf("add_ of mismatched shapes: %v", err)
	}
	if _, err := ParseDevice("tpu"); err == nil {
		t.Error("ParseDevice(tpu): no error")
	}
	if d, err := ParseDevice("cuda:1"); err != nil || d != (Device{CUDA: true, Index: 1}) {
		t.Errorf("ParseDevice(cuda:1) = %v, %v", d, err)
	}
	if !CUDAAvailable() {
		if err := (Device{CUDA: true}).Check(); err == nil {
			t.Error("Device.Check of CUDA without a GPU: no error")
		}
		c := s.Child()
		defer c.Close()
		if c.Ones([]int64{2}, Device{CUDA: true}); c.Err() == nil {
			t.Error("tensor on CUDA without a GPU: no error")
		}
	}
	if s.Err() != nil {
		t.Fatal(s.Err())
	}
}
