// Package train runs MetaNAS meta-training and meta-testing: task sampling, the task and
// meta learners, periodic meta-tests with meta-model alpha pruning, atomic checkpoints and
// resume, metrics and progress.
package train

import (
	"fmt"
	"strings"

	"github.com/metanas-go/metanas/metanas/config"
	"github.com/metanas-go/metanas/metanas/learn"
	"github.com/metanas-go/metanas/torch"
)

// FormatVersion is the version of our checkpoint layout.
const FormatVersion = 1

// Checkpoint is what a checkpoint file holds besides the meta-model's tensors.
type Checkpoint struct {
	Config    config.Config
	MetaEpoch int // last completed meta-epoch
	Format    int
	Reference bool // written by the reference implementation
}

// SaveCheckpoint writes meta's state_dict under "meta_model" (the reference's key names),
// the task optimizers' state under "w_task_optim"/"a_task_optim" when kept across tasks,
// and our entries (config YAML, meta-epoch, format version), atomically.
func SaveCheckpoint(path string, cfg config.Config, epoch int, meta *learn.Model, w *learn.Worker, keepOpt bool) error {
	sd, err := meta.Reg.StateDict()
	if err != nil {
		return err
	}
	y, err := cfg.Marshal()
	if err != nil {
		return err
	}
	vals := make([]torch.Value, 0, len(sd)+16)
	for _, e := range sd {
		vals = append(vals, torch.T("meta_model/"+e.Name, e.Tensor))
	}
	vals = append(vals,
		torch.Str("config", string(y)),
		torch.Int("meta_epoch", int64(epoch)),
		torch.Int("format_version", FormatVersion),
		torch.Str("format", "metanas-go"),
		torch.Float("w_meta_optim/lr", cfg.Meta.WLR),
		torch.Float("a_meta_optim/lr", cfg.Meta.ALR),
	)
	s := torch.NewScope()
	defer s.Close()
	if keepOpt && w != nil {
		for _, o := range []struct {
			name string
			opt  *torch.Optimizer
		}{{"w_task_optim", w.WOpt}, {"a_task_optim", w.AOpt}} {
			if o.opt == nil {
				continue
			}
			for i := range o.opt.Params() {
				for _, st := range []string{"step", "exp_avg", "exp_avg_sq"} {
					t, err := o.opt.State(s, i, st)
					if err != nil {
						return err
					}
					if t != nil {
						vals = append(vals, torch.T(fmt.Sprintf("%s/state/%d/%s", o.name, i, st), t))
					}
				}
			}
		}
	}
	return torch.SaveTree(path, vals)
}

// LoadCheckpoint reads a checkpoint written by SaveCheckpoint (or a reference meta_state
// file when cfg is given for it) into meta and, when present and w is not nil, the task
// optimizers' state. It returns the stored configuration and meta-epoch.
func LoadCheckpoint(path string, meta *learn.Model, w *learn.Worker, fallback *config.Config) (Checkpoint, error) {
	s := torch.NewScope()
	defer s.Close()
	vals, err := torch.LoadTree(s, path)
	if err != nil {
		return Checkpoint{}, err
	}
	ck := Checkpoint{}
	var state []torch.Named
	optState := map[string]*torch.Tensor{}
	for _, v := range vals {
		switch {
		case strings.HasPrefix(v.Key, "meta_model/") && v.Kind == torch.TensorValue:
			state = append(state, torch.Named{Name: strings.TrimPrefix(v.Key, "meta_model/"), Tensor: v.Tensor})
		case v.Key == "meta_epoch":
			ck.MetaEpoch = int(v.Int)
		case v.Key == "format_version":
			ck.Format = int(v.Int)
		case strings.HasPrefix(v.Key, "w_task_optim/state/") || strings.HasPrefix(v.Key, "a_task_optim/state/"):
			if v.Kind == torch.TensorValue {
				optState[v.Key] = v.Tensor
			}
		}
	}
	if len(state) == 0 {
		return ck, fmt.Errorf("%s: no meta_model entries (not a MetaNAS checkpoint)", path)
	}
	ck.Reference = ck.Format == 0
	if meta != nil {
		if err := meta.Reg.LoadStateDict(state); err != nil {
			return ck, fmt.Errorf("%s: meta_model: %w", path, err)
		}
	}
	if w != nil && len(optState) > 0 {
		for _, o := range []struct {
			name string
			opt  *torch.Optimizer
		}{{"w_task_optim", w.WOpt}, {"a_task_optim", w.AOpt}} {
			if o.opt == nil {
				continue
			}
			for i := range o.opt.Params() {
				for _, st := range []string{"step", "exp_avg", "exp_avg_sq"} {
					if t, ok := optState[fmt.Sprintf("%s/state/%d/%s", o.name, i, st)]; ok {
						if err := o.opt.SetState(i, st, t); err != nil {
							return ck, fmt.Errorf("%s: %s/state/%d/%s: %w", path, o.name, i, st, err)
						}
					}
				}
			}
		}
	}
	return ck, nil
}

// ReadCheckpointConfig returns the configuration stored in one of our checkpoints.
func ReadCheckpointConfig(path string) (config.Config, bool, error) {
	s := torch.NewScope()
	defer s.Close()
	vals, err := torch.LoadTree(s, path)
	if err != nil {
		return config.Config{}, false, err
	}
	for _, v := range vals {
		if v.Key == "config" && v.Kind == torch.StringValue {
			c, err := config.Parse(path+"#config", []byte(v.Str))
			return c, true, err
		}
	}
	return config.Config{}, false, nil
}
