package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/metanas-go/metanas/internal/testutil"
	"github.com/metanas-go/metanas/metanas/train"
)

// refCheckpoint writes a reference-style checkpoint (Python torch.save of meta_model and
// four optimizer state_dicts, no configuration) of a small search network with
// metanas/train/testdata/reference_checkpoint.py, or skips without a Python with torch.
func refCheckpoint(t *testing.T, dir string) string {
	t.Helper()
	py := testutil.PythonTorch(t, "no Python with torch (install python3-torch): skipping the reference-checkpoint check")
	spec := filepath.Join(dir, "spec.json")
	if err := os.WriteFile(spec, []byte(`{"channels": 4, "layers": 2, "nodes": 2, "classes": 3, "reductions": [1]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	ckpt := filepath.Join(dir, "e100_meta_state")
	cmd := exec.Command(py, "../../metanas/train/testdata/reference_checkpoint.py", "--spec", spec, "--seed", "6", "--out", ckpt)
	cmd.Env = append(os.Environ(), "OMP_NUM_THREADS=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("reference_checkpoint.py: %v\n%s", err, out)
	}
	return ckpt
}

var tiny = []string{"--set", "data.dataset=synthetic", "--set", "data.synthetic.size=8", "--set", "data.synthetic.classes=6",
	"--set", "data.synthetic.per_class=4", "--set", "data.train_shots=2", "--set", "data.queries=1",
	"--set", "task.steps=1", "--set", "task.batch_size=6", "--set", "task.test_steps=1", "--set", "task.test_arch_steps=1",
	"--set", "task.test_batch_size=3", "--set", "meta.meta_batch=1", "--set", "meta.epochs=1", "--set", "meta.warm_up_epochs=0",
	"--set", "meta.test_every=0", "--set", "meta.test_tasks=1", "--set", "meta.final_test_tasks=1", "--set", "run.workers=1"}

// TestResumeReferenceCheckpoint: train --resume accepts a reference checkpoint without
// --config (architecture inferred, task optimizer state kept) and writes a checkpoint of
// ours for the same network.
func TestResumeReferenceCheckpoint(t *testing.T) {
	dir := t.TempDir()
	ref := refCheckpoint(t, dir)
	out := filepath.Join(dir, "run")
	args := append([]string{"--resume", ref, "--out", out, "--set", "task.optim_state=keep"}, tiny...)
	if code, msg := runCaptured(t, args...); code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s", code, msg)
	}
	cfg, ok, err := train.ReadCheckpointConfig(filepath.Join(out, "checkpoint.pt"))
	if err != nil || !ok {
		t.Fatalf("checkpoint written by the resumed run: %v %v", ok, err)
	}
	if m := cfg.Model; m.Channels != 4 || m.Layers != 2 || m.Nodes != 2 || len(m.Reductions) != 1 || cfg.Data.Ways != 3 {
		t.Errorf("the resumed run's configuration is not the inferred one: %+v ways %d", m, cfg.Data.Ways)
	}
}

// TestResumeBadInput: a truncated checkpoint, a foreign file and a checkpoint for another
// configuration exit with status 2, naming the file and the key, and nothing in the run
// directory is overwritten.
func TestResumeBadInput(t *testing.T) {
	dir := t.TempDir()
	ref := refCheckpoint(t, dir)
	good, _ := os.ReadFile(ref)
	truncated := filepath.Join(dir, "truncated.pt")
	os.WriteFile(truncated, good[:len(good)/3], 0o644)
	text := filepath.Join(dir, "notes.txt")
	os.WriteFile(text, []byte("not a checkpoint"), 0o644)
	out := filepath.Join(dir, "existing")
	os.MkdirAll(out, 0o755)
	precious := map[string]string{"checkpoint.pt": "precious checkpoint", "config.yaml": "precious: yes\n", "metrics.jsonl": "{}\n"}
	for f, c := range precious {
		os.WriteFile(filepath.Join(out, f), []byte(c), 0o644)
	}
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"truncated", []string{"--resume", truncated}, []string{truncated, "--resume"}},
		{"not a PyTorch file", []string{"--resume", text}, []string{text}},
		{"other config", []string{"--resume", ref, "--set", "model.channels=6"}, []string{ref, `"net.stem.0.weight"`}},
		{"other nodes", []string{"--resume", ref, "--set", "model.nodes=3"}, []string{ref, `"alpha_normal.2"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append(append(append([]string{}, c.args...), "--out", out), tiny...)
			code, msg := runCaptured(t, args...)
			if code != 2 {
				t.Fatalf("exit code %d, want 2; stderr:\n%s", code, msg)
			}
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message does not name %s:\n%s", w, msg)
				}
			}
		})
	}
	files, _ := os.ReadDir(out)
	if len(files) != len(precious) {
		t.Errorf("the run directory now holds %d files, want %d", len(files), len(precious))
	}
	for f, c := range precious {
		if b, _ := os.ReadFile(filepath.Join(out, f)); string(b) != c {
			t.Errorf("%s was overwritten", f)
		}
	}
	if b, _ := os.ReadFile(ref); !bytes.Equal(b, good) {
		t.Error("the resumed checkpoint was modified")
	}
}
