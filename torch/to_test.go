package torch

import (
	"math"
	"testing"
)

// TestToHostCUDA checks that a tensor copied from the GPU to the CPU with To holds its
// values when read at once, while the GPU is still busy with queued work: LibTorch's
// non-blocking copy to the CPU would leave them to arrive later.
func TestToHostCUDA(t *testing.T) {
	if !CUDAAvailable() {
		t.Skip("no CUDA device (or LibTorch built without CUDA)")
	}
	dev := Device{CUDA: true}
	s := NewScope()
	defer s.Close()
	a := s.Randn([]int64{2048, 2048}, dev, false)
	y := a
	for i := 0; i < 20; i++ { // tens of milliseconds of queued products
		y = s.Tanh(s.Matmul(y, a))
	}
	h := s.To(y, Float32, CPU) // the device is still busy here
	got, err := h.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	want, err := y.Float32s() // a blocking copy
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if math.Abs(float64(got[i]-want[i])) > 1e-6 {
			t.Fatalf("element %d read right after To(CPU): %g, after the device finished: %g", i, got[i], want[i])
		}
	}
}
