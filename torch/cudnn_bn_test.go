package torch

import (
	"os"
	"testing"

	"github.com/metanas-go/metanas/internal/testutil"
)

// TestGoldenCUDACuDNNBatchNorm runs the CUDA golden cases again in a process with
// METANAS_CUDNN_BATCH_NORM=1, where batch norms without affine parameters take cuDNN's
// kernels (with an identity weight and bias): the same values and gradients, running
// statistics included.
func TestGoldenCUDACuDNNBatchNorm(t *testing.T) {
	if !CUDAAvailable() {
		t.Skip("no CUDA device (or LibTorch built without CUDA)")
	}
	if os.Getenv("METANAS_CUDNN_BATCH_NORM") == "1" {
		t.Skip("this process already runs cuDNN's batch norm")
	}
	testutil.RerunWith(t, []string{"METANAS_CUDNN_BATCH_NORM=1"}, "^TestGoldenCUDA$", "TestGoldenCUDA")
}
