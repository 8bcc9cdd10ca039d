package torch

import (
	"os"
	"os/exec"
	"strings"
	"testing"
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
	cmd := exec.Command(os.Args[0], "-test.run=^TestGoldenCUDA$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "METANAS_CUDNN_BATCH_NORM=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("with cuDNN's batch norm: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--- PASS: TestGoldenCUDA ") {
		t.Errorf("with cuDNN's batch norm, TestGoldenCUDA did not pass:\n%s", out)
	}
}
