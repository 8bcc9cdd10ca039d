package main

import (
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/metanas-go/metanas/internal/testutil"
	"github.com/metanas-go/metanas/internal/testutil/torchtest"
	"github.com/metanas-go/metanas/metanas/config"
	"github.com/metanas-go/metanas/metanas/learn"
	"github.com/metanas-go/metanas/metanas/train"
	"github.com/metanas-go/metanas/torch"
)

// readLogits returns the tensor named logits saved at path.
func readLogits(t *testing.T, path string) []float32 {
	t.Helper()
	v, ok := torchtest.LoadFloat32s(t, path, "logits")
	if !ok {
		t.Fatalf("%s has no logits", path)
	}
	return v
}

// TestCompareMatchesPyTorch: compare's logits for a Go checkpoint equal those of the
// project's PyTorch network (tools/pyref) on the same state and input, with pruning.
func TestCompareMatchesPyTorch(t *testing.T) {
	py := testutil.PythonTorch(t, "no Python with torch (python3-torch) for the parity check")
	dir := t.TempDir()
	cfg := config.Default()
	for _, kv := range []string{"data.ways=5", "model.channels=6", "model.layers=3", "model.nodes=3", "model.reductions=[1]", "arch.alpha_init_std=1.5"} {
		if err := cfg.Set(kv); err != nil {
			t.Fatal(err)
		}
	}
	s := torch.NewScope()
	defer s.Close()
	torch.ManualSeed(11)
	m, err := learn.NewModel(s, torch.CPU, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ckpt := filepath.Join(dir, "ckpt.pt")
	if err := train.SaveCheckpoint(ckpt, cfg, 1, m, nil, false); err != nil {
		t.Fatal(err)
	}
	state, err := m.Reg.StateDict()
	if err != nil {
		t.Fatal(err)
	}
	if err := torch.Save(filepath.Join(dir, "state.pt"), state); err != nil {
		t.Fatal(err)
	}
	x := s.Rand([]int64{3, 1, 28, 28}, torch.CPU)
	if err := torch.Save(filepath.Join(dir, "x.pt"), []torch.Named{{Name: "x", Tensor: x}}); err != nil {
		t.Fatal(err)
	}
	goOut := filepath.Join(dir, "go.pt")
	if code := run([]string{"--checkpoint", ckpt, "--input", filepath.Join(dir, "x.pt"), "--output", goOut,
		"--temperature", "0.5", "--prune-threshold", "0.05", "--per-cell"}); code != 0 {
		t.Fatalf("compare exited %d", code)
	}
	spec, _ := json.Marshal(map[string]any{"kind": "search", "classes": 5, "channels": 6, "layers": 3, "nodes": 3,
		"reductions": []int{1}, "temperature": 0.5, "prune_threshold": 0.05, "bn": "eval"})
	specPath := filepath.Join(dir, "spec.json")
	os.WriteFile(specPath, spec, 0o644)
	pyOut := filepath.Join(dir, "py.pt")
	cmd := exec.Command(py, "../../tools/pyref/metanas_ref.py", "forward", "--spec", specPath, "--state", filepath.Join(dir, "state.pt"),
		"--input", filepath.Join(dir, "x.pt"), "--out", pyOut)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pyref: %v\n%s", err, out)
	}
	a, b := readLogits(t, goOut), readLogits(t, pyOut)
	if len(a) != 15 || len(a) != len(b) {
		t.Fatalf("logits sizes %d and %d", len(a), len(b))
	}
	for i := range a {
		if math.Abs(float64(a[i]-b[i])) > 1e-4 {
			t.Fatalf("logit %d: Go %g, PyTorch %g", i, a[i], b[i])
		}
	}
	// Refuses to overwrite without --force; bad input exits 2.
	if code := run([]string{"--checkpoint", ckpt, "--input", filepath.Join(dir, "x.pt"), "--output", goOut}); code != 2 {
		t.Errorf("overwrite without --force: exit %d, want 2", code)
	}
	os.WriteFile(filepath.Join(dir, "junk.pt"), []byte("not a checkpoint"), 0o644)
	if code := run([]string{"--checkpoint", filepath.Join(dir, "junk.pt"), "--input", filepath.Join(dir, "x.pt"), "--output", filepath.Join(dir, "o.pt")}); code != 2 {
		t.Errorf("junk checkpoint: exit %d, want 2", code)
	}
}
