package torch

import (
	"errors"
	"math"
	"runtime"
	"sync"
	"testing"
	"time"
)

func values(t *testing.T, x *Tensor) []float32 {
	t.Helper()
	v, err := x.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// near fails the test at the first value of got farther than tol*(1+|want|) from want.
func near(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range want {
		if math.Abs(float64(got[i]-want[i])) > tol*(1+math.Abs(float64(want[i]))) {
			t.Fatalf("%s[%d] = %g, want %g", what, i, got[i], want[i])
		}
	}
}

func TestScopeCloseFreesEverything(t *testing.T) {
	start := LiveTensors()
	s := NewScope()
	x := s.Ones([]int64{4, 4}, CPU)
	for i := 0; i < 10; i++ {
		x = s.AddScalar(s.Relu(x), 1)
	}
	v, i := s.TopK(x, 2, 1, true)
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if got, want := LiveTensors()-start, int64(23); got != want {
		t.Errorf("%d live tensors, want %d", got, want)
	}
	if s.Len() != 23 {
		t.Errorf("Len = %d, want 23", s.Len())
	}
	s.Close()
	s.Close() // twice is harmless
	if LiveTensors() != start {
		t.Errorf("live tensors %d after Close, want %d", LiveTensors(), start)
	}
	for _, x := range []*Tensor{x, v, i} {
		if x.Valid() {
			t.Error("tensor valid after Close")
		}
	}
	// Ops on a closed scope are errors, not crashes.
	if out := s.Ones([]int64{1}, CPU); out.Valid() || s.Err() == nil {
		t.Errorf("op on a closed scope: valid %v, err %v", out.Valid(), s.Err())
	}
	if LiveTensors() != start {
		t.Errorf("op on a closed scope allocated a tensor")
	}
}

func TestScopeKeep(t *testing.T) {
	start := LiveTensors()
	parent := NewScope()
	child := parent.Child()
	a := child.FromFloat32([]float32{1, 2, 3}, []int64{3}, CPU)
	b := child.MulScalar(a, 2)
	tmp := child.AddScalar(b, 1)
	if got := child.Keep(a, b); got != a {
		t.Error("Keep does not return its first argument")
	}
	if child.Len() != 1 || parent.Len() != 2 {
		t.Errorf("after Keep: child owns %d, parent %d; want 1 and 2", child.Len(), parent.Len())
	}
	child.Close()
	if tmp.Valid() {
		t.Error("the tensor not kept survived the child's Close")
	}
	if !a.Valid() || !b.Valid() {
		t.Fatal("kept tensors freed with the child")
	}
	if v := values(t, b); v[0] != 2 || v[1] != 4 || v[2] != 6 {
		t.Errorf("kept tensor holds %v", v)
	}
	if LiveTensors()-start != 2 {
		t.Errorf("%d live tensors, want 2", LiveTensors()-start)
	}
	// Keep from a root scope is an error, and the tensor stays where it was.
	parent.Keep(a)
	if parent.Err() == nil {
		t.Error("Keep without a parent: no error")
	}
	parent.Close()
	if a.Valid() || LiveTensors() != start {
		t.Errorf("after the parent's Close: a valid %v, live %d want %d", a.Valid(), LiveTensors(), start)
	}
}

func TestScopeMoveTo(t *testing.T) {
	start := LiveTensors()
	s1, s2 := NewScope(), NewScope()
	x := s1.Ones([]int64{2}, CPU)
	y := s1.Ones([]int64{2}, CPU)
	x.MoveTo(s2)
	if s1.Len() != 1 || s2.Len() != 1 {
		t.Errorf("after MoveTo: s1 owns %d, s2 %d", s1.Len(), s2.Len())
	}
	s1.Close()
	if !x.Valid() || y.Valid() {
		t.Fatalf("after s1.Close: moved valid %v, other valid %v", x.Valid(), y.Valid())
	}
	// Moving back and forth never frees twice.
	s3 := NewScope()
	x.MoveTo(s3)
	x.MoveTo(s2)
	x.MoveTo(s2)
	s3.Close()
	if !x.Valid() || s2.Len() != 1 {
		t.Fatalf("tensor moved on from s3 was freed by s3.Close (valid %v, s2 owns %d)", x.Valid(), s2.Len())
	}
	// Moving into a closed scope frees the tensor instead of leaking it.
	z := s2.Ones([]int64{2}, CPU)
	z.MoveTo(s1)
	if z.Valid() || LiveTensors()-start != 1 {
		t.Errorf("tensor moved into a closed scope: valid %v, live %d want %d", z.Valid(), LiveTensors(), start+1)
	}
	s2.Close()
	if x.Valid() || LiveTensors() != start {
		t.Errorf("after s2.Close: valid %v, live %d want %d", x.Valid(), LiveTensors(), start)
	}
	var nilT *Tensor
	nilT.MoveTo(s2) // no-op
}

func TestScopeMoveToConcurrent(t *testing.T) {
	start := LiveTensors()
	shared := NewScope()
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := NewScope()
			defer s.Close()
			for i := 0; i < 50; i++ {
				s.Ones([]int64{2}, CPU).MoveTo(shared)
			}
		}()
	}
	wg.Wait()
	if shared.Len() != 200 || LiveTensors()-start != 200 {
		t.Errorf("shared owns %d, %d live; want 200", shared.Len(), LiveTensors()-start)
	}
	shared.Close()
	if LiveTensors() != start {
		t.Errorf("live %d, want %d", LiveTensors(), start)
	}
}

func TestScopeReset(t *testing.T) {
	start := LiveTensors()
	root := NewScope()
	defer root.Close()
	keep := root.Ones([]int64{2}, CPU)
	s := root.Child()
	defer s.Close()
	for i := 0; i < 100; i++ {
		x := s.MulScalar(keep, float64(i))
		s.Relu(x)
		if i == 50 {
			s.Add(x, s.Ones([]int64{3}, CPU)) // error: cleared by Reset
		}
		s.Reset()
		if x.Valid() {
			t.Fatal("tensor valid after Reset")
		}
		if s.Err() != nil {
			t.Fatalf("Reset kept the error %v", s.Err())
		}
	}
	if LiveTensors()-start != 1 || s.Len() != 0 {
		t.Errorf("after the loop: %d live, child owns %d", LiveTensors()-start, s.Len())
	}
	// Keep from a reset scope still works.
	y := s.Keep(s.AddScalar(keep, 1))
	s.Reset()
	if !y.Valid() || values(t, y)[0] != 2 {
		t.Error("tensor kept before Reset was freed")
	}
}

// TestScopeResetStaleHandles: tensors of an earlier iteration stay freed however many
// tensors later iterations create (the structs of new tensors never reuse old ones), and
// using them is an error, not another tensor's values.
func TestScopeResetStaleHandles(t *testing.T) {
	s := NewScope()
	defer s.Close()
	var old []*Tensor
	for i := 0; i < 3*tensorBlock; i++ {
		old = append(old, s.Full([]int64{1}, float64(i), CPU))
	}
	s.Reset()
	for i := 0; i < 3*tensorBlock; i++ {
		s.Full([]int64{1}, -1, CPU)
	}
	for i, x := range old {
		if x.Valid() {
			t.Fatalf("tensor %d of before Reset is valid again", i)
		}
	}
	s.Relu(old[5])
	wantErrContains(t, s.Err(), "relu", "freed")
}

func TestWith(t *testing.T) {
	start := LiveTensors()
	root := NewScope()
	var inner, kept *Tensor
	err := With(root, func(c *Scope) error {
		inner = c.Ones([]int64{3}, CPU)
		kept = c.Keep(c.MulScalar(inner, 5))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if inner.Valid() || !kept.Valid() || values(t, kept)[2] != 5 {
		t.Errorf("With: inner valid %v, kept valid %v", inner.Valid(), kept.Valid())
	}
	sentinel := errors.New("sentinel")
	if err := With(root, func(c *Scope) error { c.Ones([]int64{2}, CPU); return sentinel }); err != sentinel {
		t.Errorf("With returned %v, want f's error", err)
	}
	// A nil parent makes a root scope; its tensors are freed at the end.
	if err := With(nil, func(c *Scope) error { c.Ones([]int64{2}, CPU); return nil }); err != nil {
		t.Error(err)
	}
	root.Close()
	if LiveTensors() != start {
		t.Errorf("live %d, want %d", LiveTensors(), start)
	}
}

func TestScopeFinalizer(t *testing.T) {
	runtime.GC() // finalize what earlier tests dropped
	before := LiveTensors()
	func() {
		s := NewScope()
		s.Ones([]int64{8}, CPU)
		s.Ones([]int64{8}, CPU)
	}()
	if LiveTensors() != before+2 {
		t.Fatalf("live %d, want %d", LiveTensors(), before+2)
	}
	// Read the shim's counter, not the tensors: the finalizer runs on another goroutine.
	for i := 0; i < 50 && LiveTensors() > before; i++ {
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
	if LiveTensors() > before {
		t.Errorf("a dropped scope's tensors were not freed by its finalizer: live %d, want %d", LiveTensors(), before)
	}
}

func TestNoGrad(t *testing.T) {
	s := NewScope()
	defer s.Close()
	p := s.Param([]float32{1, -2, 3}, []int64{3}, CPU)
	var inside *Tensor
	err := NoGrad(func() error {
		inside = s.Sum(s.Mul(p, p))
		info, err := inside.Info()
		if err != nil {
			return err
		}
		if info.RequiresGrad {
			t.Error("tensor computed inside NoGrad requires grad")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := inside.Backward(); err == nil {
		t.Error("backward through a NoGrad result: no error")
	}
	if g := s.Grad(p); g != nil {
		t.Errorf("parameter got a gradient through NoGrad: %v", values(t, g))
	}
	// Grad mode is back on afterwards.
	outside := s.Sum(s.Mul(p, p))
	if info, _ := outside.Info(); !info.RequiresGrad {
		t.Fatal("grad mode not restored after NoGrad")
	}
	if err := outside.Backward(); err != nil {
		t.Fatal(err)
	}
	if g := values(t, s.Grad(p)); g[0] != 2 || g[1] != -4 || g[2] != 6 {
		t.Errorf("grad %v, want [2 -4 6]", g)
	}
	// NoGrad returns f's error and nests.
	sentinel := errors.New("x")
	if err := NoGrad(func() error { return NoGrad(func() error { return sentinel }) }); err != sentinel {
		t.Errorf("NoGrad returned %v", err)
	}
	if info, _ := s.Mul(p, p).Info(); !info.RequiresGrad {
		t.Error("grad mode not restored after nested NoGrad")
	}
}

func TestAutogradBasics(t *testing.T) {
	s := NewScope()
	defer s.Close()
	p := s.Param([]float32{1, 2}, []int64{2}, CPU)
	if g := s.Grad(p); g != nil {
		t.Error("gradient before any backward")
	}
	d := s.Detach(p)
	if info, _ := d.Info(); info.RequiresGrad {
		t.Error("detached tensor requires grad")
	}
	c := s.Clone(p)
	if info, _ := c.Info(); !info.RequiresGrad {
		t.Error("clone of a parameter does not require grad")
	}
	loss := s.Sum(s.MulScalar(c, 3))
	if err := loss.Backward(); err != nil {
		t.Fatal(err)
	}
	if err := s.Sum(s.MulScalar(p, 1)).Backward(); err != nil {
		t.Fatal(err)
	}
	if g := values(t, s.Grad(p)); g[0] != 4 || g[1] != 4 {
		t.Errorf("accumulated grad %v, want [4 4]", g)
	}
	if err := ZeroGrad([]*Tensor{p}, false); err != nil {
		t.Fatal(err)
	}
	if g := values(t, s.Grad(p)); g[0] != 0 || g[1] != 0 {
		t.Errorf("grad after ZeroGrad %v", g)
	}
	if err := ZeroGrad([]*Tensor{p}, true); err != nil {
		t.Fatal(err)
	}
	if s.Grad(p) != nil {
		t.Error("grad not dropped by ZeroGrad(setToNone)")
	}
	if err := p.SetRequiresGrad(false); err != nil {
		t.Fatal(err)
	}
	if err := s.Sum(p).Backward(); err == nil {
		t.Error("backward of a tensor without grad_fn: no error")
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
}
