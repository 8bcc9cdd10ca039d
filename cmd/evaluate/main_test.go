package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/metanas-go/metanas/internal/testutil"
)

// runPy runs Python with args and returns its standard output.
func runPy(t *testing.T, args ...string) []byte {
	t.Helper()
	py := testutil.PythonTorch(t, "no Python with torch (install python3-torch): skipping the reference-checkpoint check")
	return testutil.PythonOutput(t, py, []string{"OMP_NUM_THREADS=1"}, args...)
}

// refCheckpoint writes a reference-style checkpoint (Python torch.save of meta_model and
// four optimizer state_dicts, no configuration) of a small search network: 4 channels,
// 2 cells (cell 1 reduces), 2 nodes, 3 classes.
func refCheckpoint(t *testing.T, dir string) string {
	t.Helper()
	spec := filepath.Join(dir, "spec.json")
	if err := os.WriteFile(spec, []byte(`{"channels": 4, "layers": 2, "nodes": 2, "classes": 3, "reductions": [1]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	ckpt := filepath.Join(dir, "e100_meta_state")
	runPy(t, "../../metanas/train/testdata/reference_checkpoint.py", "--spec", spec, "--seed", "4", "--out", ckpt)
	return ckpt
}

// runEvaluate runs the command in-process and returns its exit code, stdout and stderr.
func runEvaluate(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return testutil.Capture(t, func() int { return run(args) })
}

// synthetic is the small synthetic data the tests evaluate on (3 ways, inferred from the
// checkpoint's classifier).
var synthetic = []string{"--set", "data.dataset=synthetic", "--set", "data.synthetic.size=8", "--set", "data.synthetic.classes=6",
	"--set", "data.synthetic.per_class=4", "--set", "data.train_shots=2", "--set", "data.queries=1", "--set", "task.test_steps=2",
	"--set", "task.test_arch_steps=1", "--set", "task.test_batch_size=3", "--set", "run.workers=1", "--tasks", "2"}

// TestEvaluateReferenceCheckpoint: evaluate runs on a reference checkpoint without
// --config, its architecture inferred from the shapes.
func TestEvaluateReferenceCheckpoint(t *testing.T) {
	ckpt := refCheckpoint(t, t.TempDir())
	code, out, errs := runEvaluate(t, append([]string{"--checkpoint", ckpt}, synthetic...)...)
	if code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s", code, errs)
	}
	var res struct {
		Tasks    int     `json:"tasks"`
		Accuracy float64 `json:"accuracy"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("output: %v\n%s", err, out)
	}
	if res.Tasks != 2 || res.Accuracy < 0 || res.Accuracy > 1 {
		t.Errorf("result %+v", res)
	}
	if !strings.Contains(errs, "source=inferred") {
		t.Errorf("the log does not say the configuration was inferred:\n%s", errs)
	}
}

// TestEvaluateBadInput: unreadable or foreign files, a checkpoint for another
// configuration and a missing key exit with status 2 and a message naming the file and
// the key; the checkpoint is left as it was.
func TestEvaluateBadInput(t *testing.T) {
	dir := t.TempDir()
	ckpt := refCheckpoint(t, dir)
	good, _ := os.ReadFile(ckpt)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	truncated := write("truncated.pt", good[:len(good)*2/3])
	text := write("notes.txt", []byte("hello\n"))
	missing := filepath.Join(dir, "missing_key.pt")
	runPy(t, "-c", `import sys, torch
d = torch.load(sys.argv[1]); del d["meta_model"]["net.cells.1.dag.0.0._ops.2.0.conv2.weight"]; torch.save(d, sys.argv[2])`, ckpt, missing)
	other := write("other.yaml", []byte("data:\n  dataset: synthetic\n  ways: 3\n  synthetic: {size: 8, classes: 6, per_class: 4}\n  train_shots: 2\nmodel:\n  channels: 8\n  layers: 2\n  nodes: 2\n  reductions: [1]\n"))
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"truncated", []string{"--checkpoint", truncated}, []string{truncated}},
		{"not a PyTorch file", []string{"--checkpoint", text}, []string{text, "not a PyTorch file"}},
		{"missing file", []string{"--checkpoint", filepath.Join(dir, "nope.pt")}, []string{"nope.pt"}},
		{"other channels (--set)", []string{"--checkpoint", ckpt, "--set", "model.channels=6"}, []string{ckpt, `"net.stem.0.weight"`, "[12 1 3 3]"}},
		{"other config (--config)", []string{"--checkpoint", ckpt, "--config", other}, []string{ckpt, `"net.stem.0.weight"`}},
		{"other ways", []string{"--checkpoint", ckpt, "--set", "data.ways=5"}, []string{ckpt, `"net.linear.weight"`}},
		{"missing key", []string{"--checkpoint", missing}, []string{missing, `missing key "net.cells.1.dag.0.0._ops.2.0.conv2.weight"`}},
		{"no checkpoint", nil, []string{"--checkpoint"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append(append([]string{}, c.args...), synthetic...)
			if strings.HasPrefix(c.name, "other config") {
				args = append([]string{}, c.args...)
			}
			code, _, errs := runEvaluate(t, args...)
			if code != 2 {
				t.Fatalf("exit code %d, want 2; stderr:\n%s", code, errs)
			}
			for _, w := range c.want {
				if !strings.Contains(errs, w) {
					t.Errorf("message does not name %s:\n%s", w, errs)
				}
			}
		})
	}
	if b, _ := os.ReadFile(ckpt); !bytes.Equal(b, good) {
		t.Error("the checkpoint was modified")
	}
}
