package train

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/metanas-go/metanas/torch"
	"time"
)

// TestPrecisionBF16 meta-trains a tiny run in float32 and with run.precision bf16, task by
// task, in batches of 2 and in two batches of 2 side by side, from one seed. The bfloat16 runs must differ from float32 (the
// forward passes did autocast) and stay near it: the meta-model within 10 % (relative norm
// of the difference; Adam's steps are about the learning rate whatever the gradient's size,
// so the small gradients that bfloat16 rounds differently move as far as the others: 2.6 %
// here after four meta-epochs), the metrics finite. TestForwardBF16 (learn) compares one
// pass closely.
func TestPrecisionBF16(t *testing.T) {
	for _, sets := range [][]string{
		{"run.batch_tasks=0"},
		{"run.batch_tasks=2"},
		// Two batch workers side by side, each forward pass autocasting on its own thread.
		{"run.batch_tasks=2", "run.batch_workers=2", "meta.meta_batch=4"},
		// The CNN baseline (REPTILE's): no alphas, the same autocast.
		{"model.kind=cnn", "model.cnn_channels=8", "model.cnn_blocks=2"},
	} {
		t.Run(strings.Join(sets, ","), func(t *testing.T) { precisionRun(t, "cpu", sets...) })
	}
}

// TestCUDAPrecisionBF16Graphs is TestPrecisionBF16 on CUDA in batches of 2 replayed from
// CUDA graphs, one batch worker and two side by side: the graphs captured with autocast
// replay (casts included) in every batch worker of the bfloat16 runs.
func TestCUDAPrecisionBF16Graphs(t *testing.T) {
	if !torch.CUDAAvailable() {
		t.Skip("no CUDA device (or LibTorch built without CUDA)")
	}
	for _, sets := range [][]string{
		{"run.batch_tasks=2", "run.cuda_graphs=true"},
		{"run.batch_tasks=2", "run.cuda_graphs=true", "run.batch_workers=2", "meta.meta_batch=4"},
	} {
		t.Run(strings.Join(sets, ","), func(t *testing.T) { precisionRun(t, "cuda", sets...) })
	}
}

// precisionRun runs TestPrecisionBF16's comparison on device with the settings extra.
func precisionRun(t *testing.T, device string, extra ...string) {
	dir := t.TempDir()
	var metas [2][]float32
	for i, p := range []string{"float32", "bf16"} {
		out := filepath.Join(dir, p)
		cfg := synthConfig(t, out, append([]string{"run.device=" + device, "run.precision=" + p, "meta.final_test_tasks=2"}, extra...)...)
		tr, err := New(cfg, Options{})
		if err != nil {
			t.Fatal(err)
		}
		res, err := runWatched(t, tr, 2*time.Minute)
		if err != nil {
			tr.Close()
			t.Fatal(err)
		}
		if res == nil || res.Tasks != 2 || math.IsNaN(res.Accuracy) {
			t.Errorf("%s: final meta-test %+v", p, res)
		}
		if device == "cuda" {
			checkReplays(t, tr, p)
		}
		for _, v := range metaHost(t, tr) {
			metas[i] = append(metas[i], v...)
		}
		tr.Close()
		for _, m := range readMetrics(t, filepath.Join(out, "metrics.jsonl")) {
			for k, v := range m {
				if f, ok := v.(float64); ok && (math.IsNaN(f) || math.IsInf(f, 0)) {
					t.Errorf("%s: metric %s = %v", p, k, f)
				}
			}
		}
	}
	if len(metas[0]) != len(metas[1]) {
		t.Fatalf("meta-models of %d and %d values", len(metas[0]), len(metas[1]))
	}
	var diff, norm, maxd float64
	for k, a := range metas[0] {
		d := float64(metas[1][k] - a)
		diff += d * d
		norm += float64(a) * float64(a)
		maxd = max(maxd, math.Abs(d))
	}
	rel := math.Sqrt(diff / norm)
	t.Logf("bf16 against float32: relative difference %.3g, largest %.3g", rel, maxd)
	if maxd == 0 {
		t.Error("bf16 meta-model equals float32's: the forward passes did not autocast")
	}
	if !(rel <= 0.1) { // NaN fails too
		t.Errorf("bf16 meta-model differs from float32's by %.3g (relative), want <= 0.1", rel)
	}
}
