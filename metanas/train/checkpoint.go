// Package train runs MetaNAS meta-training and meta-testing: task sampling, the task and
// meta learners, periodic meta-tests with meta-model alpha pruning, atomic checkpoints and
// resume, metrics and progress.
package train

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/metanas-go/metanas/cells"
	"github.com/metanas-go/metanas/metanas/config"
	"github.com/metanas-go/metanas/metanas/learn"
	"github.com/metanas-go/metanas/torch"
)

// FormatVersion is the version of our checkpoint layout. Version 2 writes the optimizer
// entries as PyTorch optimizer state_dicts (with param_groups); version 1 files, whose
// task-optimizer entries have only "state", still load.
const FormatVersion = 2

// Checkpoint is what a checkpoint file holds besides the meta-model's tensors.
type Checkpoint struct {
	Config    config.Config
	MetaEpoch int // last completed meta-epoch (0 for a reference checkpoint, which has none)
	Format    int
	Reference bool // written by the reference implementation (no format_version)
	// OptimState is the number of task-optimizer state tensors loaded into the worker.
	OptimState int
}

// Adam's eps, as torch.optim.Adam's default and NewAdam's.
const adamEps = 1e-8

// SaveCheckpoint writes a checkpoint atomically in PyTorch's file format: a dict that
// Python's torch.load returns, laid out as the reference's meta_state files plus our own
// entries:
//
//	meta_model      meta's state_dict (the reference's key names and order)
//	w_meta_optim    {"state": {}, "param_groups": [{"lr", "momentum", "dampening", "weight_decay", "params": [0, ..]}]}
//	a_meta_optim    the same over the alphas (the meta learning rates; REPTILE keeps no state)
//	w_task_optim    the task Adam of the weights: {"state": {i: {"step", "exp_avg", "exp_avg_sq"}},
//	                "param_groups": [{"lr", "betas", "eps", "weight_decay", "params": [0, .., n-1]}]}
//	a_task_optim    the same over the alphas
//	config          the configuration (YAML)
//	meta_epoch      the last completed meta-epoch
//	format_version  FormatVersion (and format: "metanas-go")
//
// Parameter i of the weight optimizers is the i-th weight in state_dict order, which is
// PyTorch's parameters() order of the network (net.parameters() in the reference); the
// alpha optimizers' are the alphas in state_dict order. So in Python,
// torch.optim.Adam(net.parameters(), ...).load_state_dict(ck["w_task_optim"]) restores the
// task optimizer. Its "state" holds the task optimizers' moments when keepOpt
// (optim_state keep) and is empty otherwise (the state is reset for every task then); a
// parameter without state yet has no entry, as in PyTorch. A model without alphas has
// empty alpha optimizers. The tree format has no booleans nor None: torch.optim's boolean
// and None group settings (amsgrad, maximize, foreach, capturable, differentiable, fused,
// nesterov) are left out, and torch.optim fills in their defaults on load_state_dict;
// betas is a list where PyTorch has a tuple.
func SaveCheckpoint(path string, cfg config.Config, epoch int, meta *learn.Model, w *learn.Worker, keepOpt bool) error {
	sd, err := meta.Reg.StateDict()
	if err != nil {
		return err
	}
	y, err := cfg.Marshal()
	if err != nil {
		return err
	}
	nw, na := len(meta.Weights()), len(meta.Alphas())
	vals := make([]torch.Value, 0, len(sd)+4*(nw+na)+64)
	for _, e := range sd {
		vals = append(vals, torch.T("meta_model/"+e.Name, e.Tensor))
	}
	sgd := func(lr float64) []torch.Value {
		return []torch.Value{torch.Float("lr", lr), torch.Float("momentum", 0), torch.Float("dampening", 0), torch.Float("weight_decay", 0)}
	}
	adam := func(lr float64, betas [2]float64, wd float64) []torch.Value {
		return []torch.Value{torch.Float("lr", lr), torch.List("betas"), torch.Float("betas/0", betas[0]), torch.Float("betas/1", betas[1]),
			torch.Float("eps", adamEps), torch.Float("weight_decay", wd)}
	}
	vals = append(vals, optimDict("w_meta_optim", nw, sgd(cfg.Meta.WLR), nil)...)
	vals = append(vals, optimDict("a_meta_optim", na, sgd(cfg.Meta.ALR), nil)...)
	s := torch.NewScope()
	defer s.Close()
	tc := cfg.Task
	for _, o := range []struct {
		name     string
		n        int
		settings []torch.Value
		opt      func() *torch.Optimizer
	}{
		{"w_task_optim", nw, adam(tc.WLR, tc.WBetas, tc.WWeightDecay), func() *torch.Optimizer { return w.WOpt }},
		{"a_task_optim", na, adam(tc.ALR, tc.ABetas, tc.AWeightDecay), func() *torch.Optimizer { return w.AOpt }},
	} {
		var opt *torch.Optimizer
		if w != nil {
			opt = o.opt()
		}
		if opt != nil {
			o.settings[0].Float = opt.LR() // the current rate (the configured one)
		}
		var state []torch.Value
		if keepOpt && opt != nil {
			for i := range opt.Params() {
				for _, st := range []string{"step", "exp_avg", "exp_avg_sq"} {
					v, err := opt.State(s, i, st)
					if err != nil {
						return err
					}
					if v != nil {
						state = append(state, torch.T(fmt.Sprintf("%s/state/%d/%s", o.name, i, st), v))
					}
				}
			}
		}
		vals = append(vals, optimDict(o.name, o.n, o.settings, state)...)
	}
	vals = append(vals,
		torch.Str("config", string(y)),
		torch.Int("meta_epoch", int64(epoch)),
		torch.Int("format_version", FormatVersion),
		torch.Str("format", "metanas-go"),
	)
	return torch.SaveTree(path, vals)
}

// optimDict returns the entries of an optimizer state_dict under name: "state" (the given
// entries, or an empty dict) and "param_groups", one group of n parameters with the given
// settings (keys relative to the group).
func optimDict(name string, n int, settings, state []torch.Value) []torch.Value {
	g := name + "/param_groups/0/"
	vals := append([]torch.Value{}, state...)
	if len(state) == 0 {
		vals = append(vals, torch.EmptyDict(name+"/state"))
	}
	vals = append(vals, torch.List(name+"/param_groups"))
	for _, v := range settings {
		v.Key = g + v.Key
		vals = append(vals, v)
	}
	vals = append(vals, torch.List(g+"params"))
	for i := 0; i < n; i++ {
		vals = append(vals, torch.Int(fmt.Sprintf("%sparams/%d", g, i), int64(i)))
	}
	return vals
}

// checkpointFile is what readCheckpoint finds in a checkpoint.
type checkpointFile struct {
	state     []torch.Named // meta_model, names without the prefix
	config    string
	hasConfig bool
	epoch     int
	format    int
	vals      []torch.Value // every leaf
}

// readCheckpoint reads a checkpoint file (ours or a reference meta_state) with its
// tensors in scope s.
func readCheckpoint(s *torch.Scope, path string) (*checkpointFile, error) {
	vals, err := torch.LoadTree(s, path)
	if err != nil {
		if st, serr := os.Stat(path); serr == nil && st.Mode().IsRegular() {
			return nil, fmt.Errorf("checkpoint %s is unreadable (truncated, or not a file that torch.save or our trainer wrote): %w", path, err)
		}
		return nil, err
	}
	ck := &checkpointFile{vals: vals}
	for _, v := range vals {
		switch {
		case strings.HasPrefix(v.Key, "meta_model/") && v.Kind == torch.TensorValue:
			ck.state = append(ck.state, torch.Named{Name: strings.TrimPrefix(v.Key, "meta_model/"), Tensor: v.Tensor})
		case v.Key == "meta_epoch" && v.Kind == torch.IntValue:
			ck.epoch = int(v.Int)
		case v.Key == "format_version" && v.Kind == torch.IntValue:
			ck.format = int(v.Int)
		case v.Key == "config" && v.Kind == torch.StringValue:
			ck.config, ck.hasConfig = v.Str, true
		}
	}
	if len(ck.state) == 0 {
		return nil, fmt.Errorf("%s: no meta_model entries: not a MetaNAS checkpoint (a dict with a meta_model state_dict, as our trainer and the reference write)", path)
	}
	return ck, nil
}

// LoadCheckpoint reads a checkpoint, ours or a reference meta_state file (torch.save of a
// dict with meta_model, w_meta_optim, a_meta_optim, w_task_optim, a_task_optim), into meta.
// Every key of meta must be present with its shape and no other key may be: the error
// names the file and the first key that does not fit. The four dummy [1, 5] alphas
// (alpha_normal.{0,1}, alpha_reduce.{0,1}) that the reference's CNN and discrete models
// carry are skipped when meta has no alphas.
//
// With a worker w, and cfg nil or with task.optim_state keep, it also loads the "state" of
// w_task_optim and a_task_optim into w's task optimizers (cfg, the run's configuration, is
// otherwise unused: with optim_state reset the state would be dropped at the first task).
// The saved ids are mapped through param_groups: the k-th id listed (over the groups in
// order) is the optimizer's k-th parameter; without param_groups (our format 1), id k is
// parameter k. Parameter k is the k-th weight of the network in state_dict order for
// w_task_optim, the k-th alpha (alpha_normal.*, alpha_reduce.*, alpha_pw_normal.*,
// alpha_pw_reduce.*) for a_task_optim: the reference's parameter registration order, as
// its task optimizers are built over net.parameters() and its alphas. Adam's "step" may be
// a tensor (PyTorch 1.12 and later) or a number (older); "max_exp_avg_sq" (amsgrad) is not
// used. Shapes are checked, naming the parameter. The meta optimizers' entries are not read:
// the meta-learners keep no state.
func LoadCheckpoint(path string, meta *learn.Model, w *learn.Worker, cfg *config.Config) (Checkpoint, error) {
	s := torch.NewScope()
	defer s.Close()
	f, err := readCheckpoint(s, path)
	if err != nil {
		return Checkpoint{}, err
	}
	ck := Checkpoint{MetaEpoch: f.epoch, Format: f.format, Reference: f.format == 0}
	if f.hasConfig {
		if c, err := config.Parse(path+"#config", []byte(f.config)); err == nil {
			ck.Config = c
		}
	}
	if meta != nil {
		var ignore []string
		if !meta.HasAlphas() {
			for _, e := range f.state {
				if strings.HasPrefix(e.Name, "alpha_normal.") || strings.HasPrefix(e.Name, "alpha_reduce.") {
					ignore = append(ignore, e.Name)
				}
			}
		}
		if err := meta.Reg.LoadStateDict(f.state, ignore...); err != nil {
			return ck, fmt.Errorf("%s: meta_model does not fit the configured network: %w", path, err)
		}
	}
	if w == nil || (cfg != nil && cfg.Task.OptimState != config.OptimKeep) {
		return ck, nil
	}
	for _, o := range []struct {
		name string
		opt  *torch.Optimizer
		kind cells.Kind
	}{{"w_task_optim", w.WOpt, cells.Weight}, {"a_task_optim", w.AOpt, cells.Alpha}} {
		if o.opt == nil {
			continue
		}
		var names []string
		for _, e := range w.Model.Reg.Entries() {
			if e.Kind == o.kind {
				names = append(names, e.Name)
			}
		}
		n, err := loadTaskOptim(s, path, o.name, o.opt, names, f.vals)
		if err != nil {
			return ck, err
		}
		ck.OptimState += n
	}
	return ck, nil
}

// loadTaskOptim loads the "state" entries of the optimizer state_dict under name into opt,
// whose parameters have the state_dict names names; it returns how many tensors it set.
func loadTaskOptim(s *torch.Scope, path, name string, opt *torch.Optimizer, names []string, vals []torch.Value) (int, error) {
	params := opt.Params()
	ids, err := optimIDs(name, vals)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	pos := map[int64]int{}
	if ids == nil {
		for i := range params {
			pos[int64(i)] = i
		}
	} else {
		if len(ids) != len(params) {
			return 0, fmt.Errorf("%s: %s/param_groups lists %d parameters, but this network has %d (the optimizer's parameters must be the network's, in registration order)", path, name, len(ids), len(params))
		}
		for i, id := range ids {
			pos[id] = i
		}
	}
	prefix := name + "/state/"
	n := 0
	for _, v := range vals {
		if !strings.HasPrefix(v.Key, prefix) {
			continue
		}
		parts := strings.Split(strings.TrimPrefix(v.Key, prefix), "/")
		if len(parts) != 2 {
			continue
		}
		id, err := strconv.ParseInt(parts[0], 10, 64)
		if err != nil {
			return n, fmt.Errorf("%s: %s: not a parameter id", path, v.Key)
		}
		p, ok := pos[id]
		if !ok {
			return n, fmt.Errorf("%s: %s: parameter id %d is not listed in %s/param_groups (or is beyond this network's %d parameters)", path, v.Key, id, name, len(params))
		}
		field := parts[1]
		var t *torch.Tensor
		switch field {
		case "step":
			switch v.Kind {
			case torch.TensorValue:
				t = v.Tensor
			case torch.IntValue:
				t = s.FromFloat64([]float64{float64(v.Int)}, []int64{}, torch.CPU)
			case torch.FloatValue:
				t = s.FromFloat64([]float64{v.Float}, []int64{}, torch.CPU)
			default:
				return n, fmt.Errorf("%s: %s: not a number", path, v.Key)
			}
		case "exp_avg", "exp_avg_sq":
			if v.Kind != torch.TensorValue {
				return n, fmt.Errorf("%s: %s: not a tensor", path, v.Key)
			}
			got, err := v.Tensor.Shape()
			if err != nil {
				return n, fmt.Errorf("%s: %s: %w", path, v.Key, err)
			}
			want, err := params[p].Shape()
			if err != nil {
				return n, fmt.Errorf("%s: %s: %w", path, v.Key, err)
			}
			if cells.ShapeString(got) != cells.ShapeString(want) {
				pn := ""
				if p < len(names) {
					pn = fmt.Sprintf(" (%s)", names[p])
				}
				return n, fmt.Errorf("%s: %s has shape %s, but parameter %d%s has %s", path, v.Key, cells.ShapeString(got), p, pn, cells.ShapeString(want))
			}
			t = v.Tensor
		default:
			continue // max_exp_avg_sq (amsgrad) and others: not used by this Adam
		}
		if err := s.Err(); err != nil {
			return n, fmt.Errorf("%s: %s: %w", path, v.Key, err)
		}
		if err := opt.SetState(p, field, t); err != nil {
			return n, fmt.Errorf("%s: %s: %w", path, v.Key, err)
		}
		n++
	}
	return n, nil
}

// ReadCheckpointConfig returns the configuration stored in one of our checkpoints; ok is
// false for a checkpoint without one (the reference's: see CheckpointConfig and
// InferConfig).
func ReadCheckpointConfig(path string) (config.Config, bool, error) {
	s := torch.NewScope()
	defer s.Close()
	f, err := readCheckpoint(s, path)
	if err != nil {
		return config.Config{}, false, err
	}
	if !f.hasConfig {
		return config.Config{}, false, nil
	}
	c, err := config.Parse(path+"#config", []byte(f.config))
	return c, true, err
}

// optimIDs returns the parameter ids listed in an optimizer state_dict's param_groups
// (keys prefix/param_groups/{g}/params/{k}), in group and list order; nil when none.
func optimIDs(prefix string, vals []torch.Value) ([]int64, error) {
	type ent struct{ g, k, id int64 }
	var es []ent
	pg := prefix + "/param_groups/"
	for _, v := range vals {
		if !strings.HasPrefix(v.Key, pg) {
			continue
		}
		parts := strings.Split(strings.TrimPrefix(v.Key, pg), "/")
		if len(parts) != 3 || parts[1] != "params" {
			continue
		}
		g, err1 := strconv.ParseInt(parts[0], 10, 64)
		k, err2 := strconv.ParseInt(parts[2], 10, 64)
		if err1 != nil || err2 != nil || v.Kind != torch.IntValue {
			return nil, fmt.Errorf("%s: not a parameter id", v.Key)
		}
		es = append(es, ent{g, k, v.Int})
	}
	sort.SliceStable(es, func(i, j int) bool {
		if es[i].g != es[j].g {
			return es[i].g < es[j].g
		}
		return es[i].k < es[j].k
	})
	ids := make([]int64, len(es))
	for i, e := range es {
		ids[i] = e.id
	}
	if len(ids) == 0 {
		return nil, nil
	}
	return ids, nil
}
