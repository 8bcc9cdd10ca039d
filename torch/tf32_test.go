package torch

import (
	"testing"

	"github.com/metanas-go/metanas/internal/testutil"
)

// TestTF32MatmulSetting: METANAS_TF32_MATMUL is off unless set to 1 (0 and other values
// keep matrix products in float32).
func TestTF32MatmulSetting(t *testing.T) {
	want := map[string]bool{"": false, "1": true, "0": false, "on": false}
	testutil.CheckSetting(t, "METANAS_TF32_MATMUL", "TestTF32MatmulSetting", want, "TF32Matmul()", TF32Matmul)
}

// TestCUDATF32Matmul: on a GPU, SetAllowTF32's matmul switch reaches cuBLAS's batched
// products (what the 1x1 convolutions and node sums of a batched network run): 1 + 2^-12
// times 1, summed over 128 terms, is 128 + 2^-5 in float32 and 128 in TF32 (a 10-bit
// mantissa rounds the factor to 1; products this large take cuBLAS's tensor-core kernels).
func TestCUDATF32Matmul(t *testing.T) {
	if !CUDAAvailable() {
		t.Skip("no CUDA device (or LibTorch built without CUDA)")
	}
	dev := Device{CUDA: true}
	s := NewScope()
	defer s.Close()
	const n = 128
	a := make([]float32, 4*n*n)
	for i := range a {
		a[i] = 1 + 1.0/4096
	}
	x := s.FromFloat32(a, []int64{4, n, n}, dev)
	ones := s.AddScalar(s.Zeros([]int64{4, n, n}, dev), 1)
	product := func(tf32 bool) float32 {
		t.Helper()
		SetAllowTF32(true, tf32)
		defer SetAllowTF32(true, false)
		v, err := s.To(s.Matmul(x, ones), Float32, CPU).Float32s()
		if err != nil {
			t.Fatal(err)
		}
		return v[0]
	}
	if got, want := product(false), float32(n+n/4096.0); got != want {
		t.Errorf("float32 product = %.8g, want %.8g", got, want)
	}
	if got := product(true); got != n {
		t.Errorf("TF32 product = %.8g, want %d (the factor rounded to 1)", got, n)
	}
}
