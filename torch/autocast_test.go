package torch

import (
	"math"
	"testing"
)

// TestAutocast checks autocast on the CPU with values whose rounding tells the types
// apart: 1 + 2^-10 is a float32 but not a bfloat16 (8 bits of mantissa), so a 1x1
// convolution by one returns it in float32 and 1 in bfloat16.
func TestAutocast(t *testing.T) { autocastCheck(t, CPU) }

// TestCUDAAutocast is TestAutocast on CUDA (1 + 2^-10 is a TF32 value too, so TF32
// convolutions return it exactly), with LibTorch's mixed-type batch norm.
func TestCUDAAutocast(t *testing.T) {
	if !CUDAAvailable() {
		t.Skip("no CUDA device (or LibTorch built without CUDA)")
	}
	autocastCheck(t, Device{CUDA: true})
}

func autocastCheck(t *testing.T, dev Device) {
	s := NewScope()
	defer s.Close()
	const fine = 1 + 1.0/1024
	x := s.FromFloat32([]float32{fine, 2, -3, fine}, []int64{1, 1, 2, 2}, dev)
	w := s.FromFloat32([]float32{1}, []int64{1, 1, 1, 1}, dev)
	if err := w.SetRequiresGrad(true); err != nil {
		t.Fatal(err)
	}
	conv := func(name string, wantType DType, want []float32) *Tensor {
		t.Helper()
		y := s.Conv2d(x, w, nil, Conv{})
		info, err := y.Info()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if info.DType != wantType {
			t.Errorf("%s: conv2d returned %v, want %v", name, info.DType, wantType)
		}
		got, err := y.Float32s()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("%s: y[%d] = %v, want %v", name, i, got[i], want[i])
			}
		}
		return y
	}
	exact := []float32{fine, 2, -3, fine}
	rounded := []float32{1, 2, -3, 1}
	conv("before", Float32, exact)

	restore, err := Autocast(dev, BFloat16)
	if err != nil {
		t.Fatal(err)
	}
	y := conv("inside", BFloat16, rounded)
	// A nested autocast's restore leaves the outer one on.
	inner, err := Autocast(dev, BFloat16)
	if err != nil {
		t.Fatal(err)
	}
	inner()
	conv("after the inner restore", BFloat16, rounded)

	// A batch norm of the bfloat16 output: bfloat16 out, float32 running statistics
	// moved by momentum 0.1 toward the batch mean (1+2-3+1)/4 = 0.25.
	rm := s.Zeros([]int64{1}, dev)
	rv := s.Ones([]int64{1}, dev)
	bn := s.BatchNorm(y, nil, nil, rm, rv, true, 0.1, 1e-5)
	restore()
	if info, err := bn.Info(); err != nil || info.DType != BFloat16 {
		t.Errorf("batch norm of a bfloat16 input: %v, %v; want bfloat16", info.DType, err)
	}
	if info, err := rm.Info(); err != nil || info.DType != Float32 {
		t.Errorf("running mean: %v, %v; want float32", info.DType, err)
	}
	if m, err := rm.Float32s(); err != nil || math.Abs(float64(m[0])-0.025) > 1e-6 {
		t.Errorf("running mean = %v (%v), want 0.025", m, err)
	}

	conv("after restore", Float32, exact)

	// The gradient of a float32 weight through a bfloat16 convolution is float32:
	// d sum(y) / dw = sum(x) = 1 + 2 - 3 + 1 (x as bfloat16).
	if err := s.Sum(y).Backward(); err != nil {
		t.Fatal(err)
	}
	g := s.Grad(w)
	if info, err := g.Info(); err != nil || info.DType != Float32 {
		t.Errorf("weight gradient: %v, %v; want float32", info.DType, err)
	}
	if v, err := g.Float32s(); err != nil || v[0] != 1 {
		t.Errorf("weight gradient = %v (%v), want [1]", v, err)
	}

	if _, err := Autocast(dev, Float32); err == nil {
		t.Error("Autocast to float32: no error")
	}
}
