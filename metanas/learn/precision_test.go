package learn

import (
	"fmt"
	"math"
	"os"
	"testing"

	"github.com/metanas-go/metanas/cells"
	"github.com/metanas-go/metanas/internal/testutil"
	"github.com/metanas-go/metanas/torch"
)

// TestForwardBF16 compares one forward and backward pass of a search network with
// run.precision bf16 against float32 from the same weights and input, one task and a batch
// of 3: the logits come back float32 and within bfloat16's precision of float32's (but not
// equal to them: the convolutions ran in bfloat16), and the gradients of the weights and of
// the alphas point the same way (cosine similarity at least 0.99).
func TestForwardBF16(t *testing.T) { forwardBF16(t, torch.CPU) }

// TestForwardBF16CUDASwitches runs TestForwardBF16 again with CUDA's two default switches
// on the CPU (METANAS_NODE_BATCH_NORM=1, METANAS_POINTWISE=matmul): the stacked node batch
// norm and node sum, and the 1x1 convolutions as matrix products, under autocast; and once
// more with METANAS_NODE_FUSED=1 (the fused node batch norm and sum on bfloat16 members).
func TestForwardBF16CUDASwitches(t *testing.T) {
	if os.Getenv("METANAS_NODE_BATCH_NORM") != "" || os.Getenv("METANAS_POINTWISE") != "" {
		t.Skip("the switches are set in this process")
	}
	for _, fused := range []string{"0", "1"} {
		t.Run("METANAS_NODE_FUSED="+fused, func(t *testing.T) {
			testutil.RerunWith(t, []string{"METANAS_NODE_BATCH_NORM=1", "METANAS_POINTWISE=matmul", "METANAS_NODE_FUSED=" + fused},
				"^TestForwardBF16$", "TestForwardBF16")
		})
	}
}

// TestCUDAForwardBF16 is TestForwardBF16 on CUDA (float32 there: TF32 convolutions).
func TestCUDAForwardBF16(t *testing.T) {
	if !torch.CUDAAvailable() {
		t.Skip("no CUDA device (or LibTorch built without CUDA)")
	}
	forwardBF16(t, torch.Device{CUDA: true})
}

func forwardBF16(t *testing.T, dev torch.Device) {
	// Under TestForwardBF16CUDASwitches: the switches took effect.
	if os.Getenv("METANAS_NODE_BATCH_NORM") == "1" && !cells.NodeBatchNorm(dev) ||
		os.Getenv("METANAS_POINTWISE") == "matmul" && !torch.PointwiseMatmul(dev) {
		t.Fatal("METANAS_NODE_BATCH_NORM or METANAS_POINTWISE is set but not in effect")
	}
	for _, tasks := range []int{1, 3} {
		t.Run(fmt.Sprintf("tasks=%d", tasks), func(t *testing.T) {
			var logits [2][]float32
			var grads [2][2][]float32 // [precision][weights, alphas]
			for i, p := range []string{"float32", "bf16"} {
				cfg := tinyConfig(t)
				if err := cfg.Set("run.precision=" + p); err != nil {
					t.Fatal(err)
				}
				s := torch.NewScope()
				defer s.Close()
				torch.ManualSeed(11)
				m, err := newModel(s, dev, cfg, tasks)
				if err != nil {
					t.Fatal(err)
				}
				if want := []torch.DType{torch.Float32, torch.BFloat16}[i]; m.Autocast != want {
					t.Fatalf("%s: model autocasts to %v, want %v", p, m.Autocast, want)
				}
				x := s.Randn([]int64{4, int64(tasks), 8, 8}, dev, false)
				fusedBefore := cells.NodeFusedCalls()
				y, _, err := m.Forward(&cells.Ctx{S: s, Train: true, Tasks: int64(tasks)}, x, Arch{Norm: cells.Softmax, Temp: 1})
				if err != nil {
					t.Fatal(err)
				}
				// The fused node sums run in batched networks with the switches on, in
				// either precision.
				wantFused := tasks > 1 && cells.NodeFused() && cells.NodeBatchNorm(dev) && torch.NodeNormSumOn(dev)
				if fused := cells.NodeFusedCalls() > fusedBefore; fused != wantFused {
					t.Fatalf("%s: fused node sums %v, want %v", p, fused, wantFused)
				}
				if info, err := y.Info(); err != nil || info.DType != torch.Float32 {
					t.Fatalf("%s: logits %v (%v), want float32", p, info.DType, err)
				}
				r := s.Randn(y.MustShape(), dev, false)
				if err := s.Sum(s.Mul(y, r)).Backward(); err != nil {
					t.Fatal(err)
				}
				logits[i] = hostFlat(t, []*torch.Tensor{y})
				for k, ps := range [][]*torch.Tensor{m.Weights(), m.Alphas()} {
					gs := make([]*torch.Tensor, len(ps))
					for j, q := range ps {
						if gs[j] = s.Grad(q); gs[j] == nil {
							gs[j] = s.MulScalar(s.Detach(q), 0)
						}
					}
					grads[i][k] = hostFlat(t, gs)
				}
			}
			var top, worst float64
			for k, a := range logits[0] {
				top = max(top, math.Abs(float64(a)))
				worst = max(worst, math.Abs(float64(logits[1][k]-a)))
			}
			t.Logf("logits: largest %.3g, largest difference %.3g", top, worst)
			if worst == 0 || worst > 0.03*top {
				t.Errorf("bf16 logits differ from float32's by up to %.3g (largest logit %.3g): want 0 < difference <= 3 %%", worst, top)
			}
			for k, name := range []string{"weights", "alphas"} {
				c := cosine(grads[0][k], grads[1][k])
				t.Logf("%s' gradients: cosine similarity %.5f", name, c)
				if c < 0.99 {
					t.Errorf("%s' gradients: cosine similarity %.4f between bf16 and float32, want >= 0.99", name, c)
				}
			}
		})
	}
}

// hostFlat copies ts to the host, one after the other.
func hostFlat(t *testing.T, ts []*torch.Tensor) []float32 {
	t.Helper()
	var out []float32
	for _, v := range host(t, ts) {
		out = append(out, v...)
	}
	return out
}

func cosine(a, b []float32) float64 {
	var ab, aa, bb float64
	for i := range a {
		ab += float64(a[i]) * float64(b[i])
		aa += float64(a[i]) * float64(a[i])
		bb += float64(b[i]) * float64(b[i])
	}
	return ab / math.Sqrt(aa*bb)
}
