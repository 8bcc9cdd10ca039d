package train

import (
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/metanas-go/metanas/torch"
)

// TestCUDAMatchesCPU runs the same small MetaNAS run on the CPU and on CUDA (one worker on
// the default stream, and three workers each on its own stream): the meta-epoch losses and
// the final meta-test accuracy must agree. Between the two CUDA runs only the scheduling
// differs, so they agree closely; CUDA and CPU differ by TF32 convolutions and reduction
// order, so they agree within a few percent.
func TestCUDAMatchesCPU(t *testing.T) {
	if !torch.CUDAAvailable() {
		t.Skip("no CUDA device (or LibTorch built without CUDA)")
	}
	dir := t.TempDir()
	run := func(name string, sets ...string) ([]map[string]any, *TestResult) {
		cfg := synthConfig(t, filepath.Join(dir, name), sets...)
		res := runTo(t, cfg, Options{})
		return readMetrics(t, filepath.Join(dir, name, "metrics.jsonl")), res
	}
	cpu, cpuRes := run("cpu", "run.workers=1")
	one, oneRes := run("cuda1", "run.device=cuda", "run.workers=1")
	streams, streamsRes := run("cuda3", "run.device=cuda", "run.workers=3", "run.streams=true")
	losses := func(ms []map[string]any) []float64 {
		var out []float64
		for _, m := range ms {
			if l, ok := m["loss"].(float64); ok {
				out = append(out, l)
			}
		}
		return out
	}
	cmp := func(what string, a, b []float64, rel float64) {
		t.Helper()
		if len(a) != len(b) || len(a) == 0 {
			t.Fatalf("%s: %d and %d meta-epoch losses", what, len(a), len(b))
		}
		for i := range a {
			if math.Abs(a[i]-b[i]) > rel*math.Max(math.Abs(a[i]), 1e-3) {
				t.Errorf("%s: meta-epoch %d loss %g vs %g", what, i+1, a[i], b[i])
			}
		}
	}
	cmp("cuda, 1 worker vs 3 workers on streams", losses(one), losses(streams), 1e-3)
	cmp("cpu vs cuda", losses(cpu), losses(one), 5e-2)
	if oneRes == nil || streamsRes == nil || cpuRes == nil {
		t.Fatal("a run reported no final result")
	}
	if d := math.Abs(oneRes.Accuracy - streamsRes.Accuracy); d > 0.06 {
		t.Errorf("final accuracy: 1 worker %g, 3 workers on streams %g", oneRes.Accuracy, streamsRes.Accuracy)
	}
	t.Log(fmt.Sprintf("final accuracy: cpu %.4f, cuda %.4f, cuda streams %.4f", cpuRes.Accuracy, oneRes.Accuracy, streamsRes.Accuracy))
}
