package train

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/metanas-go/metanas/metanas/config"
)

// synthConfig is a tiny MetaNAS run on synthetic 1x8x8 data.
func synthConfig(t *testing.T, out string, sets ...string) config.Config {
	t.Helper()
	cfg := config.Default()
	base := []string{
		"data.dataset=synthetic", "data.ways=3", "data.shots=1", "data.train_shots=2", "data.queries=2",
		"data.synthetic.channels=1", "data.synthetic.size=8", "data.synthetic.classes=9", "data.synthetic.per_class=6",
		"model.channels=4", "model.layers=2", "model.nodes=2", "model.reductions=[1]", "model.drop_path=0.2",
		"task.steps=2", "task.batch_size=6", "task.test_steps=2", "task.test_arch_steps=1", "task.test_batch_size=3",
		"meta.meta_batch=2", "meta.epochs=4", "meta.warm_up_epochs=2", "meta.test_every=2", "meta.test_tasks=2",
		"meta.final_test_tasks=3", "run.workers=2", "run.out=" + out,
	}
	for _, kv := range append(base, sets...) {
		if err := cfg.Set(kv); err != nil {
			t.Fatal(err)
		}
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func readMetrics(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		// Drop wall-clock fields: they differ between runs.
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		delete(m, "seconds")
		if mt, ok := m["meta_test"].(map[string]any); ok {
			delete(mt, "seconds")
			delete(mt, "seconds_per_task")
		}
		lines = append(lines, m)
	}
	return lines
}

// sameMetrics compares metric lines: equal keys, strings and booleans, numbers within tol
// relative (0: bit for bit, which the same run settings give: each worker issues a task's
// passes from one OS thread, torch.PinThread).
func sameMetrics(a, b any, tol float64) bool {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			if !sameMetrics(v, y[k], tol) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !sameMetrics(x[i], y[i], tol) {
				return false
			}
		}
		return true
	case float64:
		y, ok := b.(float64)
		return ok && math.Abs(x-y) <= tol*(1+math.Abs(y))
	default:
		return a == b
	}
}

func dump(ms []map[string]any) string {
	var lines []string
	for _, m := range ms {
		b, _ := json.Marshal(m)
		lines = append(lines, string(b))
	}
	return strings.Join(lines, "\n     ")
}

func toAny(ms []map[string]any) []any {
	out := make([]any, len(ms))
	for i, m := range ms {
		out[i] = m
	}
	return out
}

func runTo(t *testing.T, cfg config.Config, opts Options) *TestResult {
	t.Helper()
	tr, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	res, err := tr.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestResumeMatchesUninterruptedRun: stopping after meta-epoch 2 (a checkpoint) and
// resuming gives the same metrics, bit for bit, as running through; and one worker gives
// the same as two.
func TestResumeMatchesUninterruptedRun(t *testing.T) {
	dir := t.TempDir()
	full := synthConfig(t, filepath.Join(dir, "full"))
	resFull := runTo(t, full, Options{})
	if resFull == nil || resFull.Tasks != 3 {
		t.Fatalf("final result %+v", resFull)
	}
	want := readMetrics(t, filepath.Join(dir, "full", "metrics.jsonl"))

	part := synthConfig(t, filepath.Join(dir, "part"))
	if res := runTo(t, part, Options{MaxEpochs: 2}); res != nil {
		t.Fatal("a partial run reported a final result")
	}
	ckpt := filepath.Join(dir, "part", "checkpoint.pt")
	resPart := runTo(t, part, Options{Resume: ckpt})
	got := readMetrics(t, filepath.Join(dir, "part", "metrics.jsonl"))
	if len(got) != len(want) || !sameMetrics(toAny(got), toAny(want), 0) {
		t.Errorf("resumed metrics differ:\n got %s\nwant %s", dump(got), dump(want))
	}
	if resPart.Accuracy != resFull.Accuracy {
		t.Errorf("final accuracy %g after resume, %g uninterrupted", resPart.Accuracy, resFull.Accuracy)
	}

	one := synthConfig(t, filepath.Join(dir, "one"), "run.workers=1")
	runTo(t, one, Options{})
	// One worker runs LibTorch's CPU ops on all the cores, each of two on half: a parallel
	// reduction's partial sums change with the thread count.
	if got := readMetrics(t, filepath.Join(dir, "one", "metrics.jsonl")); !sameMetrics(toAny(got), toAny(want), 1e-6) {
		t.Errorf("one worker differs from two:\n got %s\nwant %s", dump(got), dump(want))
	}
	for _, f := range []string{"config.yaml", "metrics.jsonl", "checkpoint.pt", "results.json"} {
		if _, err := os.Stat(filepath.Join(dir, "full", f)); err != nil {
			t.Errorf("run directory lacks %s", f)
		}
	}
}

// TestCheckpointRoundTrip: a checkpoint restores the meta-model and its config.
func TestCheckpointRoundTrip(t *testing.T) {
	dir := t.TempDir()
	cfg := synthConfig(t, filepath.Join(dir, "r"))
	runTo(t, cfg, Options{MaxEpochs: 2})
	ckpt := filepath.Join(dir, "r", "checkpoint.pt")
	got, ok, err := ReadCheckpointConfig(ckpt)
	if err != nil || !ok {
		t.Fatalf("config from checkpoint: %v %v", ok, err)
	}
	if got.Model.Channels != 4 || got.Data.Ways != 3 {
		t.Errorf("restored config differs: channels %d ways %d", got.Model.Channels, got.Data.Ways)
	}
	tr, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ck, err := LoadCheckpoint(ckpt, tr.Meta, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ck.MetaEpoch != 2 || ck.Format != FormatVersion {
		t.Errorf("checkpoint epoch %d format %d", ck.MetaEpoch, ck.Format)
	}
	// A checkpoint for another architecture is refused, naming a key.
	other := synthConfig(t, filepath.Join(dir, "o"), "model.channels=6")
	tr2, err := New(other, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr2.Close()
	if _, err := LoadCheckpoint(ckpt, tr2.Meta, nil, nil); err == nil || !strings.Contains(err.Error(), "shape") {
		t.Errorf("mismatched checkpoint: %v", err)
	}
}

// TestFOMAMLRun: the same trainer runs with first-order MAML as the meta-learner (MetaNAS
// is agnostic to it) and moves the meta-model.
func TestFOMAMLRun(t *testing.T) {
	dir := t.TempDir()
	cfg := synthConfig(t, filepath.Join(dir, "f"), "meta.learner=fomaml", "meta.w_lr=0.05", "meta.a_lr=0.05", "meta.epochs=3", "meta.test_every=0")
	tr, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	before, err := tr.Meta.Weights()[0].Float32s()
	if err != nil {
		t.Fatal(err)
	}
	res, err := tr.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res == nil || res.Tasks != 3 {
		t.Fatalf("final result %+v", res)
	}
	after, _ := tr.Meta.Weights()[0].Float32s()
	same := true
	for i := range before {
		if before[i] != after[i] {
			same = false
		}
	}
	if same {
		t.Error("FO-MAML left the meta-model unchanged")
	}
}
