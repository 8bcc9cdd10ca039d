package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/metanas-go/metanas/internal/testutil"
	"github.com/metanas-go/metanas/metanas/config"
	"github.com/metanas-go/metanas/metanas/train"
	"github.com/metanas-go/metanas/torch"
)

// runExport runs the command in-process and returns its exit code, stdout and stderr.
func runExport(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return testutil.Capture(t, func() int { return run(args) })
}

// checkpoint writes a checkpoint of a freshly initialised tiny search network on synthetic
// data (3 ways, 4 channels, 2 cells, 2 nodes) and returns it with the per-task results of
// a 2-task meta-test at its epoch.
func checkpoint(t *testing.T, dir string) (string, []train.TaskResult) {
	t.Helper()
	cfg := config.Default()
	for _, kv := range []string{
		"data.dataset=synthetic", "data.ways=3", "data.shots=1", "data.train_shots=2", "data.queries=2",
		"data.synthetic.channels=1", "data.synthetic.size=8", "data.synthetic.classes=9", "data.synthetic.per_class=6",
		"model.channels=4", "model.layers=2", "model.nodes=2", "model.reductions=[1]", "arch.alpha_init_std=1",
		"task.test_steps=2", "task.test_arch_steps=1", "task.test_batch_size=3", "run.workers=1", "run.threads=1", "run.out=" + dir,
	} {
		if err := cfg.Set(kv); err != nil {
			t.Fatal(err)
		}
	}
	tr, err := train.New(cfg, train.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	path := filepath.Join(dir, "checkpoint.pt")
	if err := train.SaveCheckpoint(path, cfg, 7, tr.Meta, tr.Worker, false); err != nil {
		t.Fatal(err)
	}
	res, err := tr.MetaTest(7, 2, true)
	if err != nil {
		t.Fatal(err)
	}
	return path, res.PerTask
}

func TestExportCommand(t *testing.T) {
	dir := t.TempDir()
	ckpt, perTask := checkpoint(t, dir)
	out := func(name string) string { return filepath.Join(dir, name) }

	code, stdout, stderr := runExport(t, "--checkpoint", ckpt, "--what", "pruned", "--task", "1", "--out", out("pruned.pt"))
	if code != 0 {
		t.Fatalf("pruned: exit %d\n%s", code, stderr)
	}
	var sum summary
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
		t.Fatalf("pruned output: %v\n%s", err, stdout)
	}
	want := perTask[1]
	if sum.Kind != "pruned" || sum.Task == nil || *sum.Task != 1 || sum.Genotype != want.Genotype {
		t.Errorf("pruned summary %+v, meta-test task 1 %+v", sum, want)
	}
	if c := sum.Check; c == nil || c.Queries != 6 || math.Abs(c.Accuracy-want.Accuracy) > 1e-9 || c.ModuleAcc != c.Accuracy || c.MaxLogitDiff > 1e-5 {
		t.Errorf("pruned: check %+v; meta-test accuracy %g", sum.Check, want.Accuracy)
	}
	m, err := torch.LoadModule(out("pruned.pt"), torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	if g, err := m.AttrString("genotype"); err != nil || g != want.Genotype {
		t.Errorf("module genotype %q (%v), want %q", g, err, want.Genotype)
	}
	m.Close()
	files, err := torch.ExtraFiles(out("pruned.pt"))
	if err != nil || !strings.Contains(files["config.yaml"], "synthetic") {
		t.Errorf("config.yaml of the module: %q (%v)", files["config.yaml"], err)
	}

	// A bfloat16 run's checkpoint: adapted, exported and checked in float32, as above.
	code, stdout, stderr = runExport(t, "--checkpoint", ckpt, "--what", "pruned", "--task", "1", "--set", "run.precision=bf16", "--out", out("pruned16.pt"))
	var sum16 summary
	if code != 0 || json.Unmarshal([]byte(stdout), &sum16) != nil || !strings.Contains(stderr, "run.precision is bf16") {
		t.Fatalf("pruned with run.precision=bf16: exit %d\n%s%s", code, stdout, stderr)
	}
	if c := sum16.Check; c == nil || sum16.Genotype != want.Genotype || math.Abs(c.Accuracy-want.Accuracy) > 1e-9 || c.MaxLogitDiff > 1e-5 {
		t.Errorf("pruned with run.precision=bf16: %+v, check %+v; float32 %+v", sum16, sum16.Check, want)
	}

	code, stdout, stderr = runExport(t, "--checkpoint", ckpt, "--what", "meta", "--out", out("meta.pt"), "--threshold", "0.2")
	if code != 0 || !strings.Contains(stdout, `"kind": "search"`) || !strings.Contains(stdout, `"prune_threshold": 0.2`) {
		t.Errorf("meta: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = runExport(t, "--checkpoint", ckpt, "--what", "genotype", "--task", "0", "--out", out("genotype.pt"), "--bn", "eval")
	if code != 0 || !strings.Contains(stdout, `"kind": "discrete"`) || !strings.Contains(stdout, perTask[0].Genotype) {
		t.Errorf("genotype: exit %d\n%s%s", code, stdout, stderr)
	}

	// Bad input: status 2, nothing replaced.
	before, _ := os.Stat(out("meta.pt"))
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--checkpoint", ckpt, "--what", "meta", "--out", out("meta.pt")}, "--force"},
		{[]string{"--checkpoint", ckpt, "--what", "all", "--out", out("x.pt")}, "--what"},
		{[]string{"--checkpoint", out("missing.pt"), "--what", "meta", "--out", out("x.pt")}, "missing.pt"},
		{[]string{"--what", "meta", "--out", out("x.pt")}, "--checkpoint"},
		{[]string{"--checkpoint", ckpt, "--what", "meta"}, "--out"},
		{[]string{"--checkpoint", ckpt, "--what", "meta", "--task", "1", "--out", out("x.pt")}, "--task"},
		{[]string{"--checkpoint", ckpt, "--what", "pruned", "--task", "-1", "--out", out("x.pt")}, "--task"},
		{[]string{"--checkpoint", ckpt, "--what", "meta", "--bn", "batch", "--out", out("x.pt")}, "--bn"},
		{[]string{"--checkpoint", ckpt, "--what", "meta", "--out", out("nodir/x.pt")}, "does not exist"},
		{[]string{"--checkpoint", ckpt, "--what", "meta", "--set", "model.channels=6", "--out", out("x.pt")}, "does not fit"},
	} {
		code, _, stderr := runExport(t, c.args...)
		if code != 2 || !strings.Contains(stderr, c.msg) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and a message naming %s", c.args, code, stderr, c.msg)
		}
	}
	if after, _ := os.Stat(out("meta.pt")); !after.ModTime().Equal(before.ModTime()) {
		t.Error("an existing --out was replaced without --force")
	}
	if _, err := os.Stat(out("x.pt")); err == nil {
		t.Error("a failed export wrote its --out")
	}
	if code, _, stderr := runExport(t, "--checkpoint", ckpt, "--what", "meta", "--out", out("meta.pt"), "--force"); code != 0 {
		t.Errorf("--force: exit %d\n%s", code, stderr)
	}
}
