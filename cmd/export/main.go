// Command export writes a MetaNAS network as a TorchScript module that Python loads with
// torch.jit.load and Go with torch.LoadModule:
//
//	go run ./cmd/export --checkpoint FILE [--config FILE] --what meta|pruned|genotype --out model.pt [--task N] [--data DIR] [--set key=value ...]
//
// What --what selects:
//
//   - meta: the meta-model of the checkpoint. For a search model, its forward normalises
//     the alphas at the temperature attribute (default arch.t_max, the temperature a task
//     starts from) and skips ops and input pairs at or below the prune_threshold attribute
//     (default model.prune_threshold); Python may change both. A discrete model is
//     exported as it is.
//   - pruned: the meta-model adapted to meta-test task N exactly as cmd/evaluate adapts
//     its N-th task, hard-pruned at meta.test_prune_threshold at the temperature the
//     adaptation ended with: only the surviving ops are exported, weighted as in the
//     scoring pass, so the module reproduces the task's meta-test logits. The command
//     checks that on the task's query set and reports both accuracies.
//   - genotype: the discrete network of the adapted network's derived genotype, weights
//     copied, edges summed with weight 1 (the discretised architecture, not the scored one).
//
// Batch norm uses meta.eval_bn (train: the batch's statistics, as MetaNAS scores) unless
// --bn says otherwise. The module carries the genotype and configuration as attributes and
// extra files (genotype.txt, config.yaml, state_dict_names.json, metanas.json). The
// configuration is --config when given, else the checkpoint's own, else inferred from a
// reference checkpoint's shapes. An existing --out is never replaced without --force. Bad
// input exits with status 2.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/spf13/pflag"

	"github.com/metanas-go/metanas/cells"
	"github.com/metanas-go/metanas/cells/genotype"
	"github.com/metanas-go/metanas/internal/cli"
	"github.com/metanas-go/metanas/metanas/config"
	"github.com/metanas-go/metanas/metanas/data"
	"github.com/metanas-go/metanas/metanas/learn"
	"github.com/metanas-go/metanas/metanas/train"
	"github.com/metanas-go/metanas/torch"
)

func main() { os.Exit(run(os.Args[1:])) }

// summary is what the command prints (JSON) after writing the module.
type summary struct {
	Out         string  `json:"out"`
	What        string  `json:"what"`
	Kind        string  `json:"kind"`
	BN          string  `json:"bn"`
	Genotype    string  `json:"genotype,omitempty"`
	Tensors     int     `json:"tensors"`
	Task        *int    `json:"task,omitempty"`
	Temperature float64 `json:"temperature,omitempty"`
	Threshold   float64 `json:"prune_threshold,omitempty"`
	// Check compares the module with the adapted network on the task's query set.
	Check *checkResult `json:"check,omitempty"`
}

// checkResult is the query-set comparison of an adapted export.
type checkResult struct {
	Queries      int     `json:"queries"`
	Accuracy     float64 `json:"accuracy"`        // the adapted network, as the meta-test scores it
	ModuleAcc    float64 `json:"module_accuracy"` // the exported module
	MaxLogitDiff float64 `json:"max_abs_logit_diff"`
}

type usageError struct{ error }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

func run(args []string) int {
	const prog = "export"
	fs := pflag.NewFlagSet(prog, pflag.ContinueOnError)
	var flags config.Flags
	fs.StringVarP(&flags.Config, "config", "c", "", "YAML configuration (default: the checkpoint's own, else inferred from a reference checkpoint)")
	fs.StringVar(&flags.Data, "data", "", "data set directory (overrides data.dir; --what pruned|genotype)")
	fs.StringArrayVar(&flags.Sets, "set", nil, "override one setting as section.key=value; repeatable")
	ckpt := fs.String("checkpoint", "", "checkpoint to export (ours or a reference meta_state file)")
	what := fs.String("what", "", "meta (the meta-model), pruned (adapted to --task and hard-pruned) or genotype (the adapted network's derived genotype as a discrete network)")
	out := fs.String("out", "", "TorchScript file to write")
	force := fs.Bool("force", false, "replace an existing --out")
	task := fs.Int("task", 0, "meta-test task index (--what pruned|genotype), as numbered by cmd/evaluate")
	bn := fs.String("bn", "", "batch norm of the module: eval (running statistics) or train (the batch's statistics; default: meta.eval_bn)")
	temp := fs.Float64("temperature", 0, "--what meta: softmax temperature attribute (default arch.t_max)")
	thr := fs.Float64("threshold", -1, "--what meta: prune_threshold attribute (default model.prune_threshold)")
	if code, done := cli.Parse(fs, prog, args); done {
		return code
	}
	sum, err := export(&flags, *ckpt, *what, *out, *force, *task, *bn, *temp, *thr, fs.Changed("task"))
	if err != nil {
		var u usageError
		if errors.As(err, &u) || train.IsUsage(err) {
			return cli.Errorf(prog, cli.Usage, err)
		}
		return cli.Errorf(prog, cli.Fail, err)
	}
	b, _ := json.MarshalIndent(sum, "", "  ")
	fmt.Println(string(b))
	return cli.OK
}

func export(flags *config.Flags, ckpt, what, out string, force bool, taskIdx int, bn string, temp, thr float64, taskGiven bool) (*summary, error) {
	switch {
	case ckpt == "":
		return nil, usagef("--checkpoint FILE is required")
	case out == "":
		return nil, usagef("--out FILE is required")
	case what != "meta" && what != "pruned" && what != "genotype":
		return nil, usagef("--what must be meta, pruned or genotype, got %q", what)
	case bn != "" && bn != "eval" && bn != "train":
		return nil, usagef("--bn must be eval or train, got %q", bn)
	case what == "meta" && taskGiven:
		return nil, usagef("--task applies to --what pruned|genotype, not meta")
	case what != "meta" && (temp != 0 || thr != -1):
		return nil, usagef("--temperature and --threshold apply to --what meta; --what %s uses the adaptation's temperature and meta.test_prune_threshold", what)
	case temp < 0 || math.IsNaN(temp):
		return nil, usagef("--temperature must be > 0, got %g", temp)
	}
	if _, err := os.Stat(ckpt); err != nil {
		return nil, usagef("--checkpoint: %v", err)
	}
	if _, err := os.Stat(out); err == nil && !force {
		return nil, usagef("--out %s exists: pass --force to replace it (nothing was written)", out)
	}
	if st, err := os.Stat(filepath.Dir(out)); err != nil || !st.IsDir() {
		return nil, usagef("--out %s: directory %s does not exist", out, filepath.Dir(out))
	}
	cfg, _, err := train.CheckpointConfig(ckpt, flags)
	if err != nil {
		return nil, usagef("--checkpoint: %v", err)
	}
	if cfg.Run.Precision != config.PrecisionFloat32 {
		// The module computes in float32; so do the adaptation behind --what pruned and
		// the check that compares the two.
		fmt.Fprintf(os.Stderr, "export: run.precision is %s; the module, the task adaptation and the check compute in float32\n", cfg.Run.Precision)
		cfg.Run.Precision = config.PrecisionFloat32
	}
	yaml, err := cfg.Marshal()
	if err != nil {
		return nil, err
	}
	opts := cells.ExportOptions{Config: string(yaml), BNTrain: cfg.Meta.EvalBN != config.BNEval}
	if bn != "" {
		opts.BNTrain = bn == "train"
	}
	sum := &summary{Out: out, What: what, BN: "eval"}
	if opts.BNTrain {
		sum.BN = "train"
	}
	var mod *torch.Module
	if what == "meta" {
		mod, err = exportMeta(cfg, ckpt, opts, temp, thr, sum)
	} else {
		mod, err = exportAdapted(cfg, ckpt, what, taskIdx, opts, sum)
	}
	if err != nil {
		return nil, err
	}
	defer mod.Close()
	if err := cells.SaveExport(mod, out); err != nil {
		return nil, err
	}
	if sum.Genotype, err = mod.AttrString("genotype"); err != nil {
		return nil, err
	}
	if sum.Kind, err = mod.AttrString("kind"); err != nil {
		return nil, err
	}
	names, err := mod.AttrString("state_dict_names")
	if err != nil {
		return nil, err
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(names), &m); err != nil {
		return nil, err
	}
	sum.Tensors = len(m)
	return sum, nil
}

// normalizer maps the configured normalizer to one an export supports: Gumbel noise is
// random at every pass, so its noise-free form (softmax) is exported.
func normalizer(cfg config.Config) cells.NormKind {
	if n := cells.NormKind(cfg.Arch.Normalizer); n != cells.GumbelSoftmax {
		return n
	}
	fmt.Fprintln(os.Stderr, "export: arch.normalizer is gumbel_softmax; the module uses softmax (no noise)")
	return cells.Softmax
}

func exportMeta(cfg config.Config, ckpt string, opts cells.ExportOptions, temp, thr float64, sum *summary) (*torch.Module, error) {
	s := torch.NewScope()
	defer s.Close()
	switch cfg.Model.Kind {
	case config.ModelSearch:
		meta, err := learn.NewModel(s, torch.CPU, cfg)
		if err != nil {
			return nil, usagef("model: %v", err)
		}
		if _, err := train.LoadCheckpoint(ckpt, meta, nil, nil); err != nil {
			return nil, usagef("%v", err)
		}
		if temp == 0 {
			temp = cfg.Arch.TMax
		}
		if thr < 0 {
			thr = cfg.Model.PruneThreshold
		}
		sum.Temperature, sum.Threshold = temp, thr
		opts.Normalizer = normalizer(cfg)
		return cells.ExportSearch(meta.Search, temp, thr, opts)
	case config.ModelDiscrete:
		d, err := discreteNet(s, cfg)
		if err != nil {
			return nil, err
		}
		if _, err := train.LoadCheckpoint(ckpt, &learn.Model{Kind: cfg.Model.Kind, Reg: d.Reg}, nil, nil); err != nil {
			return nil, usagef("%v", err)
		}
		return cells.ExportDiscrete(d, opts)
	}
	return nil, usagef("model.kind %s: export handles search and discrete networks", cfg.Model.Kind)
}

// discreteNet builds the discrete network of a discrete-model configuration, as
// learn.NewModel does.
func discreteNet(s *torch.Scope, cfg config.Config) (*cells.DiscreteNet, error) {
	m := cfg.Model
	g, err := genotype.Lookup(m.Genotype)
	if err != nil {
		return nil, usagef("model.genotype: %v", err)
	}
	in, _ := cfg.Data.InputShape()
	d, err := cells.NewDiscreteNet(s, torch.CPU, cells.DiscreteConfig{InChannels: in, Classes: cfg.Data.Ways, Channels: m.Channels,
		Layers: m.Layers, Reductions: m.Reductions, StemMultiplier: m.StemMultiplier, FeatureScaleRate: m.FeatureScaleRate,
		Genotype: g, Affine: m.Affine})
	if err != nil {
		return nil, usagef("model: %v", err)
	}
	return d, nil
}

func exportAdapted(cfg config.Config, ckpt, what string, taskIdx int, opts cells.ExportOptions, sum *summary) (*torch.Module, error) {
	if cfg.Model.Kind != config.ModelSearch {
		return nil, usagef("--what %s needs a search model (model.kind is %s); use --what meta", what, cfg.Model.Kind)
	}
	if taskIdx < 0 {
		return nil, usagef("--task must be >= 0, got %d", taskIdx)
	}
	t, err := train.New(cfg, train.Options{})
	if err != nil {
		return nil, err
	}
	defer t.Close()
	ck, err := train.LoadCheckpoint(ckpt, t.Meta, nil, nil)
	if err != nil {
		return nil, usagef("%v", err)
	}
	w, task, err := t.AdaptTask(ck.MetaEpoch, taskIdx)
	if err != nil {
		return nil, err
	}
	norm := normalizer(cfg)
	thr := cfg.Meta.TestPruneThreshold
	sum.Task, sum.Temperature, sum.Threshold = &taskIdx, w.Temp, thr
	opts.Normalizer = norm
	net := w.Model.Search
	var mod *torch.Module
	if what == "pruned" {
		mod, err = cells.ExportPruned(net, w.Temp, thr, opts)
	} else {
		err = torch.NoGrad(func() error {
			return torch.With(nil, func(s *torch.Scope) error {
				aw, err := net.Normalize(s, norm, w.Temp)
				if err != nil {
					return err
				}
				g, err := net.Genotype(aw)
				if err != nil {
					return err
				}
				mod, err = cells.ExportGenotype(net, g, opts)
				return err
			})
		})
	}
	if err != nil {
		return nil, err
	}
	if err := check(mod, w, &task, norm, thr, opts.BNTrain, what == "pruned", sum); err != nil {
		mod.Close()
		return nil, err
	}
	return mod, nil
}

// check runs the module and the adapted network (as the meta-test scores it) on the task's
// query set and records both accuracies and, for the pruned export, the largest logit
// difference, which must stay within 1e-4.
func check(mod *torch.Module, w *learn.Worker, task *data.Task, norm cells.NormKind, thr float64, bnTrain, exact bool, sum *summary) error {
	return torch.NoGrad(func() error {
		return torch.With(nil, func(s *torch.Scope) error {
			nq := int64(len(task.QueryY))
			if nq == 0 {
				return nil
			}
			x := s.FromFloat32(task.QueryX, []int64{nq, int64(task.C), int64(task.H), int64(task.W)}, w.Dev)
			mod.SetOptimize(false)
			got := mod.Forward(s, s.To(x, torch.Float32, torch.CPU))
			want, _, err := w.Model.Forward(&cells.Ctx{S: s, Train: bnTrain}, x, learn.Arch{Norm: norm, Temp: w.Temp, Threshold: thr})
			if err != nil {
				return err
			}
			g, err := got.Float32s()
			if err != nil {
				return err
			}
			wv, err := want.Float32s()
			if err != nil {
				return err
			}
			if len(g) != len(wv) {
				return fmt.Errorf("the exported module gives %d logits for the query set, the adapted network %d", len(g), len(wv))
			}
			classes := len(g) / int(nq)
			c := &checkResult{Queries: int(nq), ModuleAcc: accuracy(g, task.QueryY, classes), Accuracy: accuracy(wv, task.QueryY, classes)}
			for i := range g {
				c.MaxLogitDiff = math.Max(c.MaxLogitDiff, math.Abs(float64(g[i]-wv[i])))
			}
			sum.Check = c
			if exact && !(c.MaxLogitDiff <= 1e-4) {
				return fmt.Errorf("the exported module's logits differ from the adapted network's by %g on the query set", c.MaxLogitDiff)
			}
			return s.Err()
		})
	})
}

func accuracy(logits []float32, labels []int64, classes int) float64 {
	hit := 0
	for i, y := range labels {
		row := logits[i*classes : (i+1)*classes]
		best := 0
		for k := range row {
			if row[k] > row[best] {
				best = k
			}
		}
		if int64(best) == y {
			hit++
		}
	}
	return float64(hit) / float64(len(labels))
}
