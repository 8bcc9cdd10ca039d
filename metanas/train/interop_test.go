package train

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/metanas-go/metanas/cells"
	"github.com/metanas-go/metanas/internal/testutil"
	"github.com/metanas-go/metanas/metanas/config"
	"github.com/metanas-go/metanas/metanas/learn"
	"github.com/metanas-go/metanas/torch"
)

// interopPython returns a Python interpreter with torch, or skips the test.
func interopPython(t *testing.T) string {
	t.Helper()
	return testutil.PythonTorch(t, "no Python with torch (install python3-torch): skipping the interoperability check")
}

// runPy runs a Python script or snippet and returns its standard output.
func runPy(t *testing.T, args ...string) []byte {
	t.Helper()
	return testutil.PythonOutput(t, interopPython(t), []string{"OMP_NUM_THREADS=1", "PYREF_THREADS=1"}, args...)
}

// refOptim describes the optimizer state reference_checkpoint.py wrote.
type refOptim struct {
	WParams int                   `json:"w_params"`
	AParams int                   `json:"a_params"`
	WState  map[string][3]float64 `json:"w_state"`
	AState  map[string][3]float64 `json:"a_state"`
}

// writeRefCheckpoint writes a reference-style checkpoint (and the plain state_dict of the
// same network) for spec with testdata/reference_checkpoint.py.
func writeRefCheckpoint(t *testing.T, dir string, spec map[string]any, seed int, extra ...string) (ckpt, state, specPath string, desc refOptim) {
	t.Helper()
	specPath = filepath.Join(dir, "spec.json")
	testutil.WriteJSON(t, specPath, spec)
	ckpt, state = filepath.Join(dir, "e10_meta_state"), filepath.Join(dir, "state.pt")
	args := append([]string{"testdata/reference_checkpoint.py", "--spec", specPath, "--seed", fmt.Sprint(seed),
		"--out", ckpt, "--state-out", state}, extra...)
	out := runPy(t, args...)
	if err := json.Unmarshal(out, &desc); err != nil {
		t.Fatalf("reference_checkpoint.py output: %v\n%s", err, out)
	}
	return ckpt, state, specPath, desc
}

// flagsOf parses command-line flags as the commands do.
func flagsOf(t *testing.T, args ...string) *config.Flags {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	f := config.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return f
}

func sets(kv ...string) []string {
	var out []string
	for _, s := range kv {
		out = append(out, "--set", s)
	}
	return out
}

// goLogits runs the meta-model in eval mode (no drop-path) with the alphas normalised at
// temperature temp and ops/pairs at or below thr skipped.
func goLogits(t *testing.T, s *torch.Scope, m *learn.Model, x *torch.Tensor, temp, thr float64) []float32 {
	t.Helper()
	var out []float32
	err := torch.NoGrad(func() error {
		y, _, err := m.Forward(&cells.Ctx{S: s}, x, learn.Arch{Norm: cells.Softmax, Temp: temp, Threshold: thr})
		if err != nil {
			return err
		}
		out, err = y.Float32s()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// loadTensor returns the tensor under key in a file Python wrote.
func loadTensor(t *testing.T, s *torch.Scope, path, key string) *torch.Tensor {
	t.Helper()
	got, err := torch.Load(s, path)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range got {
		if e.Name == key {
			return e.Tensor
		}
	}
	t.Fatalf("%s has no %s", path, key)
	return nil
}

func maxDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	d := 0.0
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}

// TestReferenceCheckpointInferred: a checkpoint written the reference's way (Python
// torch.save of meta_model + four optimizer state_dicts, no configuration) is read, its
// architecture inferred from the shapes, and the Go network built from the inferred
// configuration gives tools/pyref's logits (eval-mode BN, large alphas so ops and pairs are
// pruned).
func TestReferenceCheckpointInferred(t *testing.T) {
	interopPython(t)
	cases := []struct {
		name  string
		spec  map[string]any
		extra []string // reference_checkpoint.py flags
		size  int
		want  func(c config.Config) string // "" when the inferred config is right
	}{
		{"og_metanas-like", map[string]any{"channels": 4, "layers": 4, "nodes": 3, "classes": 5, "reductions": []int{1, 3}}, nil, 12,
			func(c config.Config) string {
				m := c.Model
				return check(m.Kind == config.ModelSearch && m.Channels == 4 && m.Layers == 4 && m.Nodes == 3 &&
					fmt.Sprint(m.Reductions) == "[1 3]" && m.Primitives == config.PrimitivesFewShot && m.UsePairwise &&
					m.FeatureScaleRate == 1 && m.StemMultiplier == 3 && c.Data.Ways == 5 && c.Data.Synthetic.Channels == 1, c)
			}},
		{"darts-rgb-scaled-legacy", map[string]any{"primitives": "darts", "use_pairwise": false, "feature_scale_rate": 2, "in_channels": 3,
			"reductions": []int{1}, "layers": 3, "nodes": 2, "stem_multiplier": 2, "classes": 4, "channels": 6},
			[]string{"--legacy", "--int-step"}, 10,
			func(c config.Config) string {
				m := c.Model
				return check(m.Channels == 6 && m.Layers == 3 && m.Nodes == 2 && fmt.Sprint(m.Reductions) == "[1]" &&
					m.Primitives == config.PrimitivesDARTS && !m.UsePairwise && m.FeatureScaleRate == 2 && m.StemMultiplier == 2 &&
					c.Data.Ways == 4 && c.Data.Synthetic.Channels == 3, c)
			}},
		{"reduction-first-no-pairs", map[string]any{"channels": 4, "layers": 3, "nodes": 1, "classes": 3, "reductions": []int{0, 2},
			"feature_scale_rate": 2, "use_pairwise": false}, nil, 8,
			func(c config.Config) string {
				m := c.Model
				// Only cell 0 and 2 reduce: the rate is read at cell 2 (8 -> 16 channels).
				return check(m.Channels == 4 && fmt.Sprint(m.Reductions) == "[0 2]" && m.FeatureScaleRate == 2 && m.Nodes == 1 && c.Data.Ways == 3, c)
			}},
		{"reptile-cnn", map[string]any{"kind": "cnn", "cnn_channels": 8, "classes": 3, "size": 16}, nil, 16,
			func(c config.Config) string {
				m := c.Model
				return check(m.Kind == config.ModelCNN && m.CNNChannels == 8 && m.CNNBlocks == 4 && c.Data.Ways == 3, c)
			}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			const temp, thr = 0.5, 0.05
			fwd := map[string]any{}
			for k, v := range tc.spec {
				fwd[k] = v
			}
			fwd["temperature"], fwd["prune_threshold"], fwd["bn"] = temp, thr, "eval"
			fwdPath := filepath.Join(dir, "forward_spec.json")
			b, _ := json.Marshal(fwd)
			if err := os.WriteFile(fwdPath, b, 0o644); err != nil {
				t.Fatal(err)
			}
			input, logits := filepath.Join(dir, "x.pt"), filepath.Join(dir, "logits.pt")
			extra := append([]string{"--forward", fwdPath, "--size", fmt.Sprint(tc.size), "--input-out", input, "--logits-out", logits}, tc.extra...)
			ckpt, _, _, _ := writeRefCheckpoint(t, dir, tc.spec, 10+i, extra...)
			f := flagsOf(t, sets("data.dataset=synthetic", fmt.Sprintf("data.synthetic.size=%d", tc.size))...)
			cfg, src, err := CheckpointConfig(ckpt, f)
			if err != nil {
				t.Fatal(err)
			}
			if src != SourceInferred {
				t.Errorf("config source %q, want inferred", src)
			}
			if msg := tc.want(cfg); msg != "" {
				t.Fatal(msg)
			}
			s := torch.NewScope()
			defer s.Close()
			m, err := learn.NewModel(s, torch.CPU, cfg)
			if err != nil {
				t.Fatal(err)
			}
			ck, err := LoadCheckpoint(ckpt, m, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !ck.Reference || ck.MetaEpoch != 0 {
				t.Errorf("checkpoint: %+v, want a reference checkpoint without meta-epoch", ck)
			}
			x := loadTensor(t, s, input, "x")
			want, err := loadTensor(t, s, logits, "logits").Float32s()
			if err != nil {
				t.Fatal(err)
			}
			got := goLogits(t, s, m, x, temp, thr)
			if d := maxDiff(got, want); d > 1e-4 {
				t.Errorf("logits differ from tools/pyref by %.3g (> 1e-4):\n go %v\npy %v", d, got, want)
			} else {
				t.Logf("%d logits, max |go - pyref| = %.2g", len(got), d)
			}
			if m.Search != nil {
				w, err := m.Search.Normalize(s, cells.Softmax, temp)
				if err != nil {
					t.Fatal(err)
				}
				pruned := 0
				for _, cw := range []cells.CellWeights{w.Normal, w.Reduce} {
					for _, h := range append(cw.HostOps, cw.HostPairs...) {
						for _, v := range h {
							if v <= float32(thr) {
								pruned++
							}
						}
					}
				}
				if pruned == 0 {
					t.Error("no op or pair was pruned: the test does not exercise pruning")
				}
			}
		})
	}
}

func check(ok bool, c config.Config) string {
	if ok {
		return ""
	}
	return fmt.Sprintf("inferred config: model %+v ways %d synthetic %+v", c.Model, c.Data.Ways, c.Data.Synthetic)
}

// TestReferenceOptimizerState: resuming from a reference checkpoint with optim_state keep
// loads its task optimizers' Adam state (parameter k = the k-th weight / alpha in
// registration order), both with PyTorch >= 1.12's tensor steps and older int steps, and
// through param_groups when the ids are not 0..n-1; with optim_state reset nothing is
// loaded.
func TestReferenceOptimizerState(t *testing.T) {
	interopPython(t)
	spec := map[string]any{"channels": 4, "layers": 2, "nodes": 2, "classes": 3, "reductions": []int{1}}
	for _, extra := range [][]string{nil, {"--int-step", "--legacy"}, {"--shift-ids", "1000"}} {
		t.Run(fmt.Sprint(extra), func(t *testing.T) {
			dir := t.TempDir()
			ckpt, _, _, desc := writeRefCheckpoint(t, dir, spec, 5, extra...)
			base := sets("data.dataset=synthetic", "data.synthetic.size=8", "data.synthetic.classes=6", "data.synthetic.per_class=4",
				"data.train_shots=2", "data.queries=1", "run.workers=1", "run.out="+filepath.Join(dir, "run"))
			cfg, _, err := CheckpointConfig(ckpt, flagsOf(t, append(base, sets("task.optim_state=keep")...)...))
			if err != nil {
				t.Fatal(err)
			}
			tr, err := New(cfg, Options{Resume: ckpt})
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			s := torch.NewScope()
			defer s.Close()
			for _, o := range []struct {
				name  string
				opt   *torch.Optimizer
				n     int
				state map[string][3]float64
			}{{"w", tr.Worker.WOpt, desc.WParams, desc.WState}, {"a", tr.Worker.AOpt, desc.AParams, desc.AState}} {
				if len(o.opt.Params()) != o.n {
					t.Fatalf("%s optimizer: %d parameters, the reference %d", o.name, len(o.opt.Params()), o.n)
				}
				for i := 0; i < o.n; i++ {
					want, has := o.state[fmt.Sprint(i)]
					step, err := o.opt.State(s, i, "step")
					if err != nil {
						t.Fatal(err)
					}
					ea, _ := o.opt.State(s, i, "exp_avg")
					eq, _ := o.opt.State(s, i, "exp_avg_sq")
					if !has {
						if step != nil || ea != nil {
							t.Errorf("%s param %d: state loaded where the reference has none", o.name, i)
						}
						continue
					}
					if step == nil || ea == nil || eq == nil {
						t.Errorf("%s param %d: state not loaded", o.name, i)
						continue
					}
					st, _ := step.Item()
					sa, _ := s.Sum(ea).Item()
					sq, _ := s.Sum(eq).Item()
					if st != want[0] || math.Abs(sa-want[1]) > 1e-4*(1+math.Abs(want[1])) || math.Abs(sq-want[2]) > 1e-4*(1+math.Abs(want[2])) {
						t.Errorf("%s param %d: step %g sums %g %g, reference %v", o.name, i, st, sa, sq, want)
					}
				}
			}
			// optim_state reset: the state would be dropped at the first task; none is loaded.
			cfg2, _, err := CheckpointConfig(ckpt, flagsOf(t, base...))
			if err != nil {
				t.Fatal(err)
			}
			tr2, err := New(cfg2, Options{Resume: ckpt})
			if err != nil {
				t.Fatal(err)
			}
			defer tr2.Close()
			if st, _ := tr2.Worker.WOpt.State(s, 0, "exp_avg"); st != nil {
				t.Error("optim_state reset: task optimizer state was loaded")
			}
		})
	}
}

// TestGoCheckpointLoadsInPython: a checkpoint written by the trainer loads with Python's
// torch.load; its meta_model loads strictly into tools/pyref's search network (same keys,
// order and shapes), and its optimizer entries load into torch.optim.Adam / SGD over that
// network's parameters and step.
func TestGoCheckpointLoadsInPython(t *testing.T) {
	interopPython(t)
	dir := t.TempDir()
	cfg := synthConfig(t, filepath.Join(dir, "r"), "task.optim_state=keep", "run.workers=1")
	runTo(t, cfg, Options{MaxEpochs: 2})
	ckpt := filepath.Join(dir, "r", "checkpoint.pt")
	spec := map[string]any{"channels": 4, "layers": 2, "nodes": 2, "reductions": []int{1}, "classes": 3, "in_channels": 1}
	b, _ := json.Marshal(spec)
	out := runPy(t, "-c", `
import json, sys, torch
sys.path.insert(0, "../../tools/pyref")
import metanas_ref
sys.path.insert(0, "../../torch/testdata"); from strict_load import strict_load
ck = strict_load(sys.argv[1])
m = metanas_ref.build(json.loads(sys.argv[2]))
ref = [(k, list(v.shape)) for k, v in m.state_dict().items()]
got = [(k, list(v.shape)) for k, v in ck["meta_model"].items()]
m.load_state_dict(ck["meta_model"], strict=True)
w = [p for _, p in m.named_weights()]
a = [p for _, p in m.named_alphas()]
wo = torch.optim.Adam(w, lr=1.0); wo.load_state_dict(ck["w_task_optim"])
ao = torch.optim.Adam(a, lr=1.0); ao.load_state_dict(ck["a_task_optim"])
wm = torch.optim.SGD(w, lr=9.0); wm.load_state_dict(ck["w_meta_optim"])
am = torch.optim.SGD(a, lr=9.0); am.load_state_dict(ck["a_meta_optim"])
m.train()
loss = m(torch.randn(2, 1, 8, 8)).sum()
loss.backward()
wo.step(); ao.step(); wm.step(); am.step()
g = wo.param_groups[0]
print(json.dumps({"keys_equal": ref == got, "n": len(got), "w_params": len(w), "a_params": len(a),
  "w_state": len(wo.state), "a_state": len(ao.state), "step0": float(wo.state[w[0]]["step"]),
  "lr": g["lr"], "betas": list(g["betas"]), "wd_a": ao.param_groups[0]["weight_decay"],
  "meta_lr": [wm.param_groups[0]["lr"], am.param_groups[0]["lr"]],
  "meta_epoch": ck["meta_epoch"], "format_version": ck["format_version"], "format": ck["format"],
  "config": "channels: 4" in ck["config"]}))
`, ckpt, string(b))
	var r struct {
		KeysEqual     bool      `json:"keys_equal"`
		N             int       `json:"n"`
		WParams       int       `json:"w_params"`
		AParams       int       `json:"a_params"`
		WState        int       `json:"w_state"`
		AState        int       `json:"a_state"`
		Step0         float64   `json:"step0"`
		LR            float64   `json:"lr"`
		Betas         []float64 `json:"betas"`
		WDA           float64   `json:"wd_a"`
		MetaLR        []float64 `json:"meta_lr"`
		MetaEpoch     int       `json:"meta_epoch"`
		FormatVersion int       `json:"format_version"`
		Format        string    `json:"format"`
		Config        bool      `json:"config"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	s := torch.NewScope()
	defer s.Close()
	m, err := learn.NewModel(s, torch.CPU, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !r.KeysEqual || r.N != len(m.Reg.Entries()) {
		t.Errorf("meta_model keys/shapes differ from tools/pyref's (equal %v, %d entries, Go network %d)", r.KeysEqual, r.N, len(m.Reg.Entries()))
	}
	if r.WParams != len(m.Weights()) || r.AParams != len(m.Alphas()) {
		t.Errorf("parameter counts: Python %d/%d, Go %d/%d", r.WParams, r.AParams, len(m.Weights()), len(m.Alphas()))
	}
	// With optim_state keep every parameter has stepped (2 meta-epochs x tasks x steps).
	if r.WState != r.WParams || r.AState != r.AParams || r.Step0 < 2 {
		t.Errorf("task optimizer state in Python: %d/%d weights, %d/%d alphas, step %g", r.WState, r.WParams, r.AState, r.AParams, r.Step0)
	}
	if r.LR != cfg.Task.WLR || fmt.Sprint(r.Betas) != fmt.Sprint(cfg.Task.WBetas[:]) || r.WDA != cfg.Task.AWeightDecay {
		t.Errorf("param_groups: lr %g betas %v alpha weight decay %g", r.LR, r.Betas, r.WDA)
	}
	if fmt.Sprint(r.MetaLR) != fmt.Sprint([]float64{cfg.Meta.WLR, cfg.Meta.ALR}) {
		t.Errorf("meta optimizer lr %v", r.MetaLR)
	}
	if r.MetaEpoch != 2 || r.FormatVersion != FormatVersion || r.Format != "metanas-go" || !r.Config {
		t.Errorf("entries: %+v", r)
	}
	// The task optimizer state also round-trips through Go.
	cfgKeep := cfg
	tr, err := New(cfgKeep, Options{Resume: ckpt})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if st, _ := tr.Worker.WOpt.State(s, 0, "step"); st == nil {
		t.Error("resume with optim_state keep: no task optimizer state")
	}
}

// TestCheckpointBadInput: unreadable files, files that are not checkpoints, checkpoints for
// another configuration, missing keys and bad optimizer state give errors naming the file
// and the key.
func TestCheckpointBadInput(t *testing.T) {
	interopPython(t)
	dir := t.TempDir()
	spec := map[string]any{"channels": 4, "layers": 2, "nodes": 2, "classes": 3, "reductions": []int{1}}
	ckpt, _, _, _ := writeRefCheckpoint(t, dir, spec, 1)
	good, err := os.ReadFile(ckpt)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	truncated := write("truncated.pt", good[:len(good)/2])
	text := write("notes.txt", []byte("not a checkpoint\n"))
	py := func(name, code string) string {
		p := filepath.Join(dir, name)
		runPy(t, "-c", "import sys, torch\nd = torch.load(sys.argv[1])\n"+code+"\ntorch.save(d, sys.argv[2])", ckpt, p)
		return p
	}
	missing := py("missing.pt", `del d["meta_model"]["net.linear.bias"]`)
	noMeta := py("nometa.pt", `d = {"x": torch.zeros(2)}`)
	unknown := py("unknown.pt", `d["meta_model"] = {"foo.weight": torch.zeros(2)}`)
	badOpt := py("badopt.pt", `d["w_task_optim"]["state"][0]["exp_avg"] = torch.zeros(3, 3)`)
	base := sets("data.dataset=synthetic", "data.synthetic.size=8", "data.synthetic.classes=6", "data.synthetic.per_class=4",
		"data.train_shots=2", "data.queries=1", "run.workers=1")

	// Config resolution (reading and inference).
	for _, c := range []struct {
		name, path string
		want       []string
	}{
		{"truncated", truncated, []string{truncated}},
		{"not PyTorch", text, []string{text, "not a PyTorch file"}},
		{"no meta_model", noMeta, []string{noMeta, "meta_model"}},
		{"unknown network", unknown, []string{unknown, "net.stem.0.weight", "--config"}},
		{"missing file", filepath.Join(dir, "nope.pt"), []string{"nope.pt"}},
	} {
		_, _, err := CheckpointConfig(c.path, flagsOf(t, base...))
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		if !IsUsage(err) {
			t.Errorf("%s: not a usage error: %v", c.name, err)
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error does not name %q: %v", c.name, w, err)
			}
		}
	}

	// Loading into a configured network.
	load := func(path string, extra ...string) error {
		cfg, _, err := CheckpointConfig(ckpt, flagsOf(t, append(append([]string{}, base...), extra...)...))
		if err != nil {
			t.Fatal(err)
		}
		s := torch.NewScope()
		defer s.Close()
		m, err := learn.NewModel(s, torch.CPU, cfg)
		if err != nil {
			t.Fatal(err)
		}
		w, err := learn.NewWorker(cfg, torch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		_, err = LoadCheckpoint(path, m, w, &cfg)
		return err
	}
	for _, c := range []struct {
		name, path string
		extra      []string
		want       []string
	}{
		{"other channels", ckpt, sets("model.channels=6"), []string{ckpt, `"net.stem.0.weight"`, "shape"}},
		{"other ways", ckpt, sets("data.ways=4"), []string{ckpt, `"net.linear.weight"`}},
		{"other nodes", ckpt, sets("model.nodes=3"), []string{ckpt, `"alpha_normal.2"`}},
		{"missing key", missing, nil, []string{missing, `missing key "net.linear.bias"`}},
		{"bad optimizer state", badOpt, sets("task.optim_state=keep"), []string{badOpt, "w_task_optim/state/0/exp_avg", "net.stem.0.weight"}},
		{"truncated", truncated, nil, []string{truncated}},
	} {
		err := load(c.path, c.extra...)
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error does not name %s: %v", c.name, w, err)
			}
		}
	}
	if b, _ := os.ReadFile(ckpt); !bytes.Equal(b, good) {
		t.Error("the checkpoint was modified")
	}
}

// TestInferConfigErrors: shapes no network of this port has are refused, naming the key.
func TestInferConfigErrors(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	z := func(shape ...int64) *torch.Tensor { return s.Zeros(shape, torch.CPU) }
	base := config.Default()
	for _, c := range []struct {
		name  string
		state []torch.Named
		want  string
	}{
		{"five ops", []torch.Named{{Name: "alpha_normal.0", Tensor: z(2, 5)}, {Name: "net.stem.0.weight", Tensor: z(12, 1, 3, 3)}}, `"alpha_normal.0" [2, 5]`},
		{"no stem", []torch.Named{{Name: "alpha_normal.0", Tensor: z(2, 7)}, {Name: "alpha_reduce.0", Tensor: z(2, 7)}}, `missing key "net.stem.0.weight"`},
		{"bad alpha row", []torch.Named{{Name: "alpha_normal.0", Tensor: z(2, 7)}, {Name: "alpha_normal.1", Tensor: z(2, 7)},
			{Name: "alpha_reduce.0", Tensor: z(2, 7)}}, `"alpha_normal.1" [2, 7]`},
		{"discrete", []torch.Named{{Name: "stem.0.weight", Tensor: z(12, 1, 3, 3)}, {Name: "cells.0.preproc1.net.1.weight", Tensor: z(4, 12, 1, 1)}}, "genotype"},
		{"rgb stem for omniglot", []torch.Named{{Name: "alpha_normal.0", Tensor: z(2, 7)}, {Name: "alpha_reduce.0", Tensor: z(2, 7)},
			{Name: "net.stem.0.weight", Tensor: z(12, 3, 3, 3)}, {Name: "net.cells.0.preproc1.net.1.weight", Tensor: z(4, 12, 1, 1)},
			{Name: "net.linear.weight", Tensor: z(5, 4)}}, "data.dataset"},
	} {
		_, err := InferConfig(c.state, base)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %s", c.name, err, c.want)
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
}
