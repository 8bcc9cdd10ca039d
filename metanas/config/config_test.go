package config

import (
	"bytes"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// presetDir is the repository's configs/ directory.
const presetDir = "../../configs"

// bare returns c without its bookkeeping, for comparing values only.
func bare(c Config) Config {
	c.file = ""
	c.origins = nil
	return c
}

func TestDefaultMatchesReference(t *testing.T) {
	c := Default()
	tests := []struct {
		name      string
		got, want any
	}{
		{"task.steps", c.Task.Steps, 5},
		{"data.train_shots", c.Data.TrainShots, 15},
		{"task.batch_size", c.Task.BatchSize, 20},
		{"meta.meta_batch", c.Meta.MetaBatch, 10},
		{"task.w_lr", c.Task.WLR, 0.005},
		{"task.a_lr", c.Task.ALR, 0.005},
		{"meta.w_lr", c.Meta.WLR, 1.0},
		{"meta.a_lr", c.Meta.ALR, 0.6},
		{"task.w_betas", c.Task.WBetas, [2]float64{0, 0.999}},
		{"task.a_betas", c.Task.ABetas, [2]float64{0, 0.999}},
		{"task.w_weight_decay", c.Task.WWeightDecay, 0.0},
		{"task.a_weight_decay", c.Task.AWeightDecay, 0.001},
		{"meta.epochs", c.Meta.Epochs, 30000},
		{"meta.warm_up_epochs", c.Meta.WarmUpEpochs, 15000},
		{"meta.test_every", c.Meta.TestEvery, 2500},
		{"arch.t_max", c.Arch.TMax, 1.0},
		{"arch.t_min", c.Arch.TMin, 0.05},
		{"arch.normalizer", c.Arch.Normalizer, NormSoftmax},
		{"arch.alpha_init_std", c.Arch.AlphaInitStd, 1e-3},
		{"model.drop_path", c.Model.DropPath, 0.2},
		{"meta.prune_threshold", c.Meta.PruneThreshold, 0.01},
		{"model.prune_threshold", c.Model.PruneThreshold, 0.01},
		{"task.test_steps", c.Task.TestSteps, 100},
		{"task.test_arch_steps", c.Task.TestArchSteps, 50},
		{"meta.test_prune_threshold", c.Meta.TestPruneThreshold, 0.05},
		{"data.dataset", c.Data.Dataset, Omniglot},
		{"data.ways", c.Data.Ways, 20},
		{"data.queries", c.Data.Queries, 1},
		{"model.primitives", c.Model.Primitives, PrimitivesFewShot},
		{"model.channels", c.Model.Channels, 28},
		{"model.layers", c.Model.Layers, 4},
		{"model.nodes", c.Model.Nodes, 3},
		{"model.reductions", c.Model.Reductions, []int{1, 3}},
		{"model.feature_scale_rate", c.Model.FeatureScaleRate, 1},
		{"model.stem_multiplier", c.Model.StemMultiplier, 3},
		{"model.use_pairwise", c.Model.UsePairwise, true},
		{"model.affine", c.Model.Affine, false},
		{"model.cnn_channels", c.Model.CNNChannels, 64},
		{"meta.eval_bn", c.Meta.EvalBN, BNTrain},
		{"meta.learner", c.Meta.Learner, LearnerReptile},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("Default %s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Default does not validate:\n%v", err)
	}
}

func TestPresetsLoadAndValidate(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(presetDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 5 {
		t.Fatalf("found %d presets in %s, want at least 5", len(files), presetDir)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			c, err := Load(f)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if err := c.Validate(); err != nil {
				t.Fatalf("Validate:\n%v", err)
			}
			if c.File() != f {
				t.Errorf("File() = %q, want %q", c.File(), f)
			}
		})
	}
}

func TestPresetValues(t *testing.T) {
	type want struct {
		dataset                   Dataset
		kind                      ModelKind
		ways, shots, trainShots   int
		steps, batch, metaBatch   int
		wLR, aLR, metaWLR, metaAL float64
		tMin                      float64
		anneal                    Anneal
	}
	tests := []struct {
		file string
		want want
	}{
		{"og_metanas.yaml", want{Omniglot, ModelSearch, 20, 1, 15, 5, 20, 10, 0.005, 0.005, 1.0, 0.6, 0.05, AnnealNone}},
		{"og_metanas_5shot.yaml", want{Omniglot, ModelSearch, 20, 5, 15, 5, 20, 10, 0.005, 0.005, 1.0, 0.6, 0.05, AnnealNone}},
		{"in_metanas.yaml", want{MiniImagenet, ModelSearch, 5, 1, 15, 5, 20, 10, 0.001, 0.001, 1.0, 0.6, 0.1, AnnealNone}},
		{"in_metanas_5shot.yaml", want{MiniImagenet, ModelSearch, 5, 5, 15, 5, 20, 10, 0.001, 0.001, 1.0, 0.6, 0.1, AnnealNone}},
		{"og_reptile.yaml", want{Omniglot, ModelCNN, 20, 1, 10, 10, 20, 5, 0.0005, 0, 1.0, 0, 0.05, AnnealCosine}},
		{"in_reptile.yaml", want{MiniImagenet, ModelCNN, 5, 1, 15, 8, 10, 5, 0.001, 0, 1.0, 0, 0.05, AnnealCosine}},
		{"smoke.yaml", want{Omniglot, ModelSearch, 5, 1, 5, 5, 25, 4, 0.01, 0.005, 1.0, 0.6, 0.05, AnnealNone}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			c, err := Load(filepath.Join(presetDir, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got := want{c.Data.Dataset, c.Model.Kind, c.Data.Ways, c.Data.Shots, c.Data.TrainShots,
				c.Task.Steps, c.Task.BatchSize, c.Meta.MetaBatch, c.Task.WLR, c.Task.ALR,
				c.Meta.WLR, c.Meta.ALR, c.Arch.TMin, c.Meta.Anneal}
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// TestWalkAgreesWithStrictDecoder checks that Parse's own walk and yaml.v3's
// KnownFields decoder give the same configuration.
func TestWalkAgreesWithStrictDecoder(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(presetDir, "*.yaml"))
	files = append(files, "testdata/anchors.yaml")
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		c, err := Parse(f, data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		strict := Default()
		if err := strictDecode(data, &strict); err != nil {
			t.Fatalf("%s: strict decode: %v", f, err)
		}
		if !reflect.DeepEqual(bare(c), strict) {
			t.Errorf("%s: walk and strict decoder differ:\nwalk   %+v\nstrict %+v", f, bare(c), strict)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name  string
		yaml  string
		field string
		line  int
		msg   []string // substrings of the message
	}{
		{"unknown key", "data:\n  ways: 5\n  wayz: 5\n", "data.wayz", 3,
			[]string{`unknown key "wayz"`, `did you mean "ways"`, "valid keys: dataset, dir, ways"}},
		{"unknown section", "datum:\n  ways: 5\n", "datum", 1,
			[]string{`unknown section "datum"`, `did you mean "data"`, "valid sections: data, model, arch, task, meta, run"}},
		{"unknown nested key", "data:\n  synthetic:\n    side: 3\n", "data.synthetic.side", 3,
			[]string{`unknown key "side" in section "data.synthetic"`, "valid keys: channels, size, classes, per_class"}},
		{"wrong type int", "data:\n  ways: five\n", "data.ways", 2, []string{`cannot use "five"`, "want an integer"}},
		{"float for int", "model:\n  layers: 2.5\n", "model.layers", 2, []string{"want an integer"}},
		{"float in int list", "model:\n  reductions: [1, 2.0]\n", "model.reductions", 2, []string{"list of integers"}},
		{"wrong type list", "model:\n  reductions: 1\n", "model.reductions", 2, []string{"want a list of integers"}},
		{"wrong array length", "task:\n  w_betas: [0.9]\n", "task.w_betas", 2, []string{"exactly 2 numbers"}},
		{"section not mapping", "task: 5\n", "task", 1, []string{"is a section"}},
		{"mapping for value", "task:\n  steps: {a: 1}\n", "task.steps", 2, []string{"cannot use a mapping"}},
		{"duplicate key", "task:\n  steps: 5\n  steps: 6\n", "task.steps", 3, []string{"duplicate key", "line 2"}},
		{"syntax", "task:\n  steps: [1,\n", "", 0, []string{"invalid YAML"}},
		{"top level list", "- a\n- b\n", "", 1, []string{"must be a mapping"}},
		{"two documents", "task:\n  steps: 5\n---\ntask:\n  steps: 6\n", "", 0, []string{"more than one YAML document"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bad.yaml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			es := AsErrors(err)
			if len(es) == 0 {
				t.Fatalf("error %T %q holds no *Error", err, err)
			}
			e := es[0]
			if e.File != path {
				t.Errorf("File = %q, want %q", e.File, path)
			}
			if e.Field != tt.field {
				t.Errorf("Field = %q, want %q", e.Field, tt.field)
			}
			if tt.line > 0 && e.Line != tt.line {
				t.Errorf("Line = %d, want %d", e.Line, tt.line)
			}
			text := err.Error()
			if !strings.Contains(text, path) {
				t.Errorf("message %q does not name the file", text)
			}
			for _, m := range tt.msg {
				if !strings.Contains(text, m) {
					t.Errorf("message %q lacks %q", text, m)
				}
			}
		})
	}
}

func TestLoadCollectsAllUnknownKeys(t *testing.T) {
	_, err := Parse("x.yaml", []byte("data:\n  foo: 1\nmodel:\n  bar: 2\n"))
	got := AsErrors(err).Fields()
	want := []string{"data.foo", "model.bar"}
	if !slices.Equal(got, want) {
		t.Errorf("fields = %v, want %v", got, want)
	}
	if !strings.Contains(err.Error(), "x.yaml:2: data.foo: unknown key") {
		t.Errorf("message %q lacks file:line: field", err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load("does/not/exist.yaml")
	var e *Error
	if !errors.As(err, &e) || e.File != "does/not/exist.yaml" || !strings.Contains(e.Msg, "cannot read") {
		t.Fatalf("got %v", err)
	}
}

func TestLoadKeepsDefaultsAndNulls(t *testing.T) {
	c, err := Parse("p.yaml", []byte("data:\n  ways:\n  shots: 5\nmodel:\nrun: {seed: 7}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Data.Ways != 20 || c.Data.Shots != 5 || c.Run.Seed != 7 || c.Model.Channels != 28 {
		t.Errorf("got ways=%d shots=%d seed=%d channels=%d", c.Data.Ways, c.Data.Shots, c.Run.Seed, c.Model.Channels)
	}
	empty, err := Parse("empty.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(bare(empty), Default()) {
		t.Error("an empty file does not give Default")
	}
}

func TestSet(t *testing.T) {
	tests := []struct {
		kv    string
		check func(c Config) bool
	}{
		{"task.w_lr=0.01", func(c Config) bool { return c.Task.WLR == 0.01 }},
		{" task.steps = 7 ", func(c Config) bool { return c.Task.Steps == 7 }},
		{"data.dataset=miniimagenet", func(c Config) bool { return c.Data.Dataset == MiniImagenet }},
		{"data.vinyals=true", func(c Config) bool { return c.Data.Vinyals }},
		{"model.reductions=[1,3]", func(c Config) bool { return slices.Equal(c.Model.Reductions, []int{1, 3}) }},
		{"model.reductions=[2]", func(c Config) bool { return slices.Equal(c.Model.Reductions, []int{2}) }},
		{"model.reductions=[]", func(c Config) bool { return len(c.Model.Reductions) == 0 }},
		{"task.a_betas=[0.5, 0.9]", func(c Config) bool { return c.Task.ABetas == [2]float64{0.5, 0.9} }},
		{"data.synthetic.size=32", func(c Config) bool { return c.Data.Synthetic.Size == 32 }},
		{"data={ways: 5, shots: 5}", func(c Config) bool { return c.Data.Ways == 5 && c.Data.Shots == 5 && c.Data.TrainShots == 15 }},
		{"run.device=cuda:1", func(c Config) bool { return c.Run.Device == "cuda:1" }},
		{"run.resume=", func(c Config) bool { return c.Run.Resume == "" }},
		{"run.out=runs/a b", func(c Config) bool { return c.Run.Out == "runs/a b" }},
		{"run.name='123'", func(c Config) bool { return c.Run.Name == "123" }},
		{"run.name=123", func(c Config) bool { return c.Run.Name == "123" }},
		{"run.seed=-3", func(c Config) bool { return c.Run.Seed == -3 }},
		{"run.precision=bf16", func(c Config) bool { return c.Run.Precision == PrecisionBF16 }},
		{"model.genotype=Genotype(normal=[[('conv_3x3', 0), ('skip_connect', 1)]], normal_concat=range(2, 3))",
			func(c Config) bool {
				return c.Model.Genotype == "Genotype(normal=[[('conv_3x3', 0), ('skip_connect', 1)]], normal_concat=range(2, 3))"
			}},
	}
	for _, tt := range tests {
		t.Run(tt.kv, func(t *testing.T) {
			c := Default()
			if err := c.Set(tt.kv); err != nil {
				t.Fatalf("Set: %v", err)
			}
			if !tt.check(c) {
				t.Errorf("Set(%q) did not take effect: %+v", tt.kv, c)
			}
		})
	}
}

func TestSetErrors(t *testing.T) {
	tests := []struct {
		kv    string
		field string
		msg   []string
	}{
		{"task.wlr=0.1", "task.wlr", []string{`unknown key "wlr" in section "task"`, `did you mean "w_lr"`, "valid keys: steps, test_steps"}},
		{"tsak.w_lr=0.1", "tsak", []string{`unknown section "tsak"`, `did you mean "task"`}},
		{"data.synthetic.side=3", "data.synthetic.side", []string{"valid keys: channels, size, classes, per_class"}},
		{"task.steps=many", "task.steps", []string{`cannot use "many"`, "want an integer"}},
		{"task.steps=", "task.steps", []string{"want an integer"}},
		{"task.w_lr=fast", "task.w_lr", []string{"want a number"}},
		{"data.vinyals=maybe", "data.vinyals", []string{"want true or false"}},
		{"model.reductions=[1,", "model.reductions", []string{"cannot parse", "list of integers"}},
		{"model.reductions=[a]", "model.reductions", []string{"list of integers"}},
		{"task.w_betas=[0.1,0.2,0.3]", "task.w_betas", []string{"exactly 2 numbers"}},
		{"task.steps.x=1", "task.steps.x", []string{"task.steps is a value, not a section"}},
		{"data={wayz: 5}", "data.wayz", []string{`unknown key "wayz"`}},
		{"task.w_lr", "", []string{"want section.key=value"}},
		{"=3", "", []string{"missing key"}},
	}
	for _, tt := range tests {
		t.Run(tt.kv, func(t *testing.T) {
			c := Default()
			err := c.Set(tt.kv)
			if err == nil {
				t.Fatalf("Set(%q) succeeded, want an error", tt.kv)
			}
			es := AsErrors(err)
			if len(es) == 0 {
				t.Fatalf("error %q holds no *Error", err)
			}
			if es[0].Field != tt.field {
				t.Errorf("Field = %q, want %q", es[0].Field, tt.field)
			}
			if !strings.HasPrefix(es[0].File, "--set ") {
				t.Errorf("File = %q, want the --set flag", es[0].File)
			}
			for _, m := range tt.msg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("message %q lacks %q", err, m)
				}
			}
			if !reflect.DeepEqual(bare(c), Default()) {
				t.Error("a failed Set changed the configuration")
			}
		})
	}
}

func TestSetDoesNotLeakIntoCopies(t *testing.T) {
	a := Default()
	if err := a.Set("task.steps=7"); err != nil {
		t.Fatal(err)
	}
	b := a
	if err := b.Set("task.steps=0"); err != nil {
		t.Fatal(err)
	}
	// a's origin for task.steps must still be its own --set.
	err := b.Validate()
	if err == nil || !strings.Contains(err.Error(), "--set task.steps=0: task.steps:") {
		t.Fatalf("b: %v", err)
	}
	if err := a.Validate(); err != nil {
		t.Fatalf("a: %v", err)
	}
	if o := a.originOf("task.steps"); o.file != "--set task.steps=7" {
		t.Errorf("a's origin = %+v", o)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(c *Config)
		field string
		msg   string
	}{
		{"negative task w_lr", func(c *Config) { c.Task.WLR = -0.1 }, "task.w_lr", "greater than 0"},
		{"zero task w_lr", func(c *Config) { c.Task.WLR = 0 }, "task.w_lr", "greater than 0"},
		{"negative task a_lr", func(c *Config) { c.Task.ALR = -1 }, "task.a_lr", "must not be negative"},
		{"NaN w_lr", func(c *Config) { c.Task.WLR = math.NaN() }, "task.w_lr", "finite"},
		{"negative meta w_lr", func(c *Config) { c.Meta.WLR = -1 }, "meta.w_lr", "greater than 0"},
		{"negative meta a_lr", func(c *Config) { c.Meta.ALR = -0.6 }, "meta.a_lr", "must not be negative"},
		{"zero channels", func(c *Config) { c.Model.Channels = 0 }, "model.channels", "at least 1"},
		{"odd channels", func(c *Config) { c.Model.Channels = 27 }, "model.channels", "even"},
		{"zero layers", func(c *Config) { c.Model.Layers = 0 }, "model.layers", "at least 1"},
		{"zero nodes", func(c *Config) { c.Model.Nodes = 0 }, "model.nodes", "at least 1"},
		{"zero cnn channels", func(c *Config) { c.Model.Kind = ModelCNN; c.Model.CNNChannels = 0 }, "model.cnn_channels", "at least 1"},
		{"ways 1", func(c *Config) { c.Data.Ways = 1 }, "data.ways", "at least 2"},
		{"shots 0", func(c *Config) { c.Data.Shots = 0 }, "data.shots", "at least 1"},
		{"train shots 0", func(c *Config) { c.Data.TrainShots = 0 }, "data.train_shots", "at least 1"},
		{"queries 0", func(c *Config) { c.Data.Queries = 0 }, "data.queries", "at least 1"},
		{"omniglot too many shots", func(c *Config) { c.Data.TrainShots = 20 }, "data.train_shots", "only 20 examples"},
		{"miniimagenet too many ways", func(c *Config) {
			c.Data.Dataset = MiniImagenet
			c.Data.Rotations = false
			c.Data.Ways = 30
		}, "data.ways", "at most 20"},
		{"vinyals on miniimagenet", func(c *Config) {
			c.Data.Dataset = MiniImagenet
			c.Data.Rotations = false
			c.Data.Ways = 5
			c.Data.Vinyals = true
		}, "data.vinyals", "only for Omniglot"},
		{"synthetic too few classes", func(c *Config) {
			c.Data.Dataset = Synthetic
			c.Data.Rotations = false
			c.Data.Synthetic.Classes = 10
		}, "data.synthetic.classes", "at least data.ways"},
		{"synthetic too few per class", func(c *Config) {
			c.Data.Dataset = Synthetic
			c.Data.Rotations = false
			c.Data.Synthetic.PerClass = 10
		}, "data.synthetic.per_class", "need 16"},
		{"unknown dataset", func(c *Config) { c.Data.Dataset = "cifar" }, "data.dataset", "omniglot, miniimagenet, synthetic"},
		{"unknown resize", func(c *Config) { c.Data.Resize = "nearest" }, "data.resize", "bilinear, area"},
		{"unknown kind", func(c *Config) { c.Model.Kind = "rnn" }, "model.kind", "search, discrete, cnn"},
		{"unknown primitives", func(c *Config) { c.Model.Primitives = "all" }, "model.primitives", "few_shot, darts"},
		{"unknown normalizer", func(c *Config) { c.Arch.Normalizer = "sparsemax" }, "arch.normalizer", "softmax, relu_softmax, gumbel_softmax"},
		{"unknown t_anneal", func(c *Config) { c.Arch.TAnneal = AnnealCosine }, "arch.t_anneal", "linear, none"},
		{"unknown learner", func(c *Config) { c.Meta.Learner = "maml" }, "meta.learner", "reptile, fomaml"},
		{"unknown anneal", func(c *Config) { c.Meta.Anneal = "step" }, "meta.anneal", "none, linear, cosine"},
		{"unknown optim state", func(c *Config) { c.Task.OptimState = "clear" }, "task.optim_state", "reset, keep"},
		{"unknown eval bn", func(c *Config) { c.Meta.EvalBN = "frozen" }, "meta.eval_bn", "train, eval"},
		{"t_min above t_max", func(c *Config) { c.Arch.TMin = 2 }, "arch.t_min", "must not exceed arch.t_max"},
		{"zero t_min", func(c *Config) { c.Arch.TMin = 0 }, "arch.t_min", "greater than 0"},
		{"negative alpha init", func(c *Config) { c.Arch.AlphaInitStd = -1 }, "arch.alpha_init_std", "must not be negative"},
		{"warm-up beyond epochs", func(c *Config) { c.Meta.WarmUpEpochs = 40000 }, "meta.warm_up_epochs", "must not exceed meta.epochs"},
		{"negative warm-up", func(c *Config) { c.Meta.WarmUpEpochs = -1 }, "meta.warm_up_epochs", "at least 0"},
		{"zero epochs", func(c *Config) { c.Meta.Epochs = 0 }, "meta.epochs", "at least 1"},
		{"zero meta batch", func(c *Config) { c.Meta.MetaBatch = 0 }, "meta.meta_batch", "at least 1"},
		{"zero test tasks", func(c *Config) { c.Meta.TestTasks = 0 }, "meta.test_tasks", "at least 1"},
		{"reduction out of range", func(c *Config) { c.Model.Reductions = []int{1, 4} }, "model.reductions", "out of range"},
		{"negative reduction", func(c *Config) { c.Model.Reductions = []int{-1} }, "model.reductions", "out of range"},
		{"reductions unordered", func(c *Config) { c.Model.Reductions = []int{3, 1} }, "model.reductions", "strictly increasing"},
		{"reductions repeated", func(c *Config) { c.Model.Reductions = []int{1, 1} }, "model.reductions", "strictly increasing"},
		{"discrete without genotype", func(c *Config) { c.Model.Kind = ModelDiscrete }, "model.genotype", "needs a genotype"},
		{"drop path 1", func(c *Config) { c.Model.DropPath = 1 }, "model.drop_path", "[0, 1)"},
		{"prune threshold negative", func(c *Config) { c.Model.PruneThreshold = -0.1 }, "model.prune_threshold", "[0, 1)"},
		{"meta prune threshold", func(c *Config) { c.Meta.PruneThreshold = 1.5 }, "meta.prune_threshold", "[0, 1)"},
		{"test prune threshold", func(c *Config) { c.Meta.TestPruneThreshold = -1 }, "meta.test_prune_threshold", "[0, 1)"},
		{"zero steps", func(c *Config) { c.Task.Steps = 0 }, "task.steps", "at least 1"},
		{"arch steps above steps", func(c *Config) { c.Task.ArchSteps = 6 }, "task.arch_steps", "between 0 and task.steps (5)"},
		{"arch steps below -1", func(c *Config) { c.Task.ArchSteps = -2 }, "task.arch_steps", "-1 (all steps)"},
		{"test arch steps above test steps", func(c *Config) { c.Task.TestArchSteps = 101 }, "task.test_arch_steps", "task.test_steps (100)"},
		{"zero batch", func(c *Config) { c.Task.BatchSize = 0 }, "task.batch_size", "at least 1"},
		{"zero test batch", func(c *Config) { c.Task.TestBatchSize = 0 }, "task.test_batch_size", "at least 1"},
		{"beta 1", func(c *Config) { c.Task.WBetas[1] = 1 }, "task.w_betas", "Adam beta 2"},
		{"negative beta", func(c *Config) { c.Task.ABetas[0] = -0.1 }, "task.a_betas", "Adam beta 1"},
		{"negative weight decay", func(c *Config) { c.Task.AWeightDecay = -1 }, "task.a_weight_decay", "must not be negative"},
		{"negative grad clip", func(c *Config) { c.Task.GradClip = -5 }, "task.grad_clip", "must not be negative"},
		{"bad device", func(c *Config) { c.Run.Device = "gpu" }, "run.device", "cpu, cuda or cuda:N"},
		{"bad device index", func(c *Config) { c.Run.Device = "cuda:x" }, "run.device", "cpu, cuda or cuda:N"},
		{"empty out", func(c *Config) { c.Run.Out = "" }, "run.out", "run directory"},
		{"negative threads", func(c *Config) { c.Run.Threads = -1 }, "run.threads", "at least 0"},
		{"unknown precision", func(c *Config) { c.Run.Precision = "fp16" }, "run.precision", "float32, bf16"},
		{"zero log every", func(c *Config) { c.Run.LogEvery = 0 }, "run.log_every", "at least 1"},
		{"negative image size", func(c *Config) { c.Data.ImageSize = -1 }, "data.image_size", "at least 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.edit(&c)
			err := c.Validate()
			if err == nil {
				t.Fatal("Validate accepted the configuration")
			}
			es := AsErrors(err)
			i := slices.IndexFunc(es, func(e *Error) bool { return e.Field == tt.field })
			if i < 0 {
				t.Fatalf("no error for %s; got:\n%v", tt.field, err)
			}
			if !strings.Contains(es[i].Msg, tt.msg) {
				t.Errorf("message %q lacks %q", es[i].Msg, tt.msg)
			}
			if len(es) != 1 {
				t.Errorf("want exactly one error, got:\n%v", err)
			}
		})
	}
}

func TestValidateNamesFileAndLine(t *testing.T) {
	c, err := Parse("cfg.yaml", []byte("task:\n  steps: 5\n  w_lr: -1\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("no *Error in %v", err)
	}
	if e.File != "cfg.yaml" || e.Line != 3 || e.Field != "task.w_lr" {
		t.Errorf("got %+v", e)
	}
	if want := "cfg.yaml:3: task.w_lr: must be greater than 0, got -1"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("message %q does not start with %q", err, want)
	}

	if err := c.Set("task.w_lr=-2"); err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	if want := "--set task.w_lr=-2: task.w_lr: must be greater than 0"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("after --set: %v, want prefix %q", err, want)
	}

	// A field the file does not mention reports the file without a line.
	if err := c.Set("task.w_lr=0.1"); err != nil {
		t.Fatal(err)
	}
	c.Data.Ways = 1
	es := AsErrors(c.Validate())
	if len(es) != 1 || es[0].File != "cfg.yaml" || es[0].Line != 0 || es[0].Field != "data.ways" {
		t.Errorf("got %v", es)
	}
}

func TestValidateCollectsAll(t *testing.T) {
	c := Default()
	c.Task.WLR = -1
	c.Model.Channels = 0
	c.Data.Ways = 1
	got := AsErrors(c.Validate()).Fields()
	want := []string{"data.ways", "model.channels", "task.w_lr"}
	if !slices.Equal(got, want) {
		t.Errorf("fields = %v, want %v", got, want)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(presetDir, "*.yaml"))
	configs := map[string]Config{"default": Default()}
	for _, f := range files {
		c, err := Load(f)
		if err != nil {
			t.Fatal(err)
		}
		configs[filepath.Base(f)] = c
	}
	odd := Default()
	for _, kv := range []string{
		"model.reductions=[]", "task.a_betas=[0.5, 0.9]", "arch.alpha_init_std=1e-7",
		"run.out=runs/with: colon", "model.genotype=Genotype(normal=[[('conv_3x3', 0)]])",
		"run.seed=-12345678901", "data.dir=~/data", "meta.a_lr=0.1",
	} {
		if err := odd.Set(kv); err != nil {
			t.Fatal(err)
		}
	}
	configs["odd"] = odd
	for name, c := range configs {
		t.Run(name, func(t *testing.T) {
			data, err := c.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "resolved.yaml")
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			back, err := Load(path)
			if err != nil {
				t.Fatalf("Load of marshalled config: %v\n%s", err, data)
			}
			if !reflect.DeepEqual(bare(back), bare(c)) {
				t.Errorf("round trip differs:\n got %+v\nwant %+v\n%s", bare(back), bare(c), data)
			}
		})
	}
}

func TestMarshalListsEveryKey(t *testing.T) {
	c := Default()
	data, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for _, k := range Keys() {
		parts := strings.Split(k, ".")
		if !strings.Contains(text, parts[len(parts)-1]+":") {
			t.Errorf("marshalled config lacks %s", k)
		}
	}
	if !strings.Contains(text, "reductions: [1, 3]") {
		t.Errorf("reductions not in flow style:\n%s", text)
	}
}

func TestKeys(t *testing.T) {
	keys := Keys()
	for _, k := range []string{"data.ways", "data.synthetic.per_class", "task.w_lr", "meta.w_lr", "run.seed"} {
		if !slices.Contains(keys, k) {
			t.Errorf("Keys() lacks %s", k)
		}
	}
	// Every key can be set to its marshalled default.
	c := Default()
	for _, k := range keys {
		if err := c.Set(k + "=" + defaultText(t, k)); err != nil {
			t.Errorf("Set(%s): %v", k, err)
		}
	}
	if !reflect.DeepEqual(bare(c), Default()) {
		t.Error("setting every key to its default changed the configuration")
	}
}

// defaultText returns the YAML text of key's default value.
func defaultText(t *testing.T, key string) string {
	t.Helper()
	v := reflect.ValueOf(Default())
	for _, part := range strings.Split(key, ".") {
		v = v.Field(fieldIndex(v.Type(), part))
	}
	data, err := yaml.Marshal(v.Interface())
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

// strictDecode decodes data over c with yaml.v3's KnownFields decoder only.
func strictDecode(data []byte, c *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && err != io.EOF {
		return err
	}
	return nil
}

func TestParseDevice(t *testing.T) {
	tests := []struct {
		in    string
		kind  string
		index int
		ok    bool
	}{
		{"cpu", "cpu", 0, true},
		{"cuda", "cuda", 0, true},
		{"cuda:3", "cuda", 3, true},
		{"cuda:", "", 0, false},
		{"gpu", "", 0, false},
		{"CPU", "", 0, false},
	}
	for _, tt := range tests {
		kind, idx, err := ParseDevice(tt.in)
		if (err == nil) != tt.ok || kind != tt.kind || idx != tt.index {
			t.Errorf("ParseDevice(%q) = %q, %d, %v", tt.in, kind, idx, err)
		}
	}
}

func TestHelpers(t *testing.T) {
	c := Default()
	if ch, sz := c.Data.InputShape(); ch != 1 || sz != 28 {
		t.Errorf("omniglot InputShape = %d, %d", ch, sz)
	}
	c.Data.Dataset = MiniImagenet
	if ch, sz := c.Data.InputShape(); ch != 3 || sz != 84 {
		t.Errorf("miniimagenet InputShape = %d, %d", ch, sz)
	}
	c.Data.ImageSize = 32
	if ch, sz := c.Data.InputShape(); ch != 3 || sz != 32 {
		t.Errorf("resized InputShape = %d, %d", ch, sz)
	}
	c.Data.Dataset = Synthetic
	c.Data.Synthetic.Channels, c.Data.Synthetic.Size = 2, 12
	if ch, sz := c.Data.InputShape(); ch != 2 || sz != 12 {
		t.Errorf("synthetic InputShape = %d, %d", ch, sz)
	}

	if got := c.Task.MetaTrainArchSteps(); got != 5 {
		t.Errorf("MetaTrainArchSteps = %d, want 5 (all)", got)
	}
	c.Task.ArchSteps = 2
	if got := c.Task.MetaTrainArchSteps(); got != 2 {
		t.Errorf("MetaTrainArchSteps = %d, want 2", got)
	}
	if got := c.Task.MetaTestArchSteps(); got != 50 {
		t.Errorf("MetaTestArchSteps = %d, want 50", got)
	}
	c.Task.TestArchSteps = AllSteps
	if got := c.Task.MetaTestArchSteps(); got != 100 {
		t.Errorf("MetaTestArchSteps = %d, want 100", got)
	}

	m := c.Meta
	for _, tt := range []struct {
		epoch int
		want  bool
	}{{1, true}, {14999, true}, {15000, false}, {30000, false}} {
		if got := m.InWarmUp(tt.epoch); got != tt.want {
			t.Errorf("InWarmUp(%d) = %v, want %v", tt.epoch, got, tt.want)
		}
	}
}

func TestErrorFormat(t *testing.T) {
	tests := []struct {
		e    Error
		want string
	}{
		{Error{File: "a.yaml", Line: 3, Field: "task.w_lr", Msg: "bad"}, "a.yaml:3: task.w_lr: bad"},
		{Error{File: "a.yaml", Field: "task.w_lr", Msg: "bad"}, "a.yaml: task.w_lr: bad"},
		{Error{Field: "task.w_lr", Msg: "bad"}, "task.w_lr: bad"},
		{Error{File: "a.yaml", Msg: "bad"}, "a.yaml: bad"},
	}
	for _, tt := range tests {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
	es := Errors{&tests[0].e, &tests[1].e}
	if got := es.Error(); got != tests[0].want+"\n"+tests[1].want {
		t.Errorf("Errors.Error() = %q", got)
	}
	if AsErrors(errors.New("plain")) != nil {
		t.Error("AsErrors of a plain error is not nil")
	}
}
