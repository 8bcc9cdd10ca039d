package train

import (
	"errors"
	"fmt"
	"math"

	"github.com/metanas-go/metanas/cells"
	"github.com/metanas-go/metanas/cells/genotype"
	"github.com/metanas-go/metanas/metanas/config"
	"github.com/metanas-go/metanas/torch"
)

// InferConfig reads the architecture of a meta-model off the names and shapes of its
// state_dict (a reference checkpoint's meta_model, which stores no configuration) and
// returns base with the model fields, data.ways and the input channels replaced. The other
// settings (data, schedules, learning rates, thresholds) are base's.
//
// The one-shot search network (keys as the reference's SearchCNNController) is read as:
//
//   - model.nodes: the number of alpha_normal.{i} keys (each [i+2, ops]; alpha_reduce.{i}
//     must have the same shape);
//   - model.primitives: the columns of the alpha rows, 7 for few_shot and 8 for darts;
//   - model.use_pairwise: whether alpha_pw_normal.0 is present;
//   - in_channels and the stem: net.stem.0.weight [stem_multiplier*C, in_channels, 3, 3];
//   - model.layers: the number of cells net.cells.{c};
//   - model.reductions: the cells whose edges from the cell inputs have stride 2, seen as
//     skip_connect (op column 2 in both primitive sets) being a FactorizedReduce, with keys
//     net.cells.{c}.dag.0.0._ops.2.0.conv1.weight (at stride 1 it is the identity, without
//     keys); it is cross-checked against the next cell's preproc0, a FactorizedReduce
//     (preproc0.conv1.weight) exactly after a reduction cell;
//   - channels: cell c works on net.cells.{c}.preproc1.net.1.weight [C_c, C_prev, 1, 1]
//     channels; model.channels is C_c of the first cell (divided by the scale rate when that
//     cell reduces), model.feature_scale_rate is C_r / C_{r-1} at the reduction cells (the
//     same at all of them; base's when only cell 0 reduces), model.stem_multiplier the stem's
//     outputs over model.channels;
//   - data.ways: net.linear.weight [ways, C_last * nodes].
//
// The REPTILE baseline (conv{b}.0.weight, logits.weight; the reference model's four dummy
// [1, 5] alphas are ignored) gives model.kind cnn, model.cnn_blocks (the number of conv
// blocks), model.cnn_channels and in_channels (conv1.0.weight [channels, in, 3, 3]) and
// data.ways (logits.weight [ways, channels*s*s], s checked against the input size).
//
// A discrete (genotype) network's genotype cannot be read off its shapes: that is an error
// asking for --config, as is anything else not recognised.
//
// The input channels are the data set's: with data.dataset synthetic,
// data.synthetic.channels is set; for omniglot (1 channel) and miniimagenet (3) a different
// count is an error naming the key.
func InferConfig(state []torch.Named, base config.Config) (config.Config, error) {
	sh := map[string][]int64{}
	for _, e := range state {
		s, err := e.Tensor.Shape()
		if err != nil {
			return base, fmt.Errorf("key %q: %w", e.Name, err)
		}
		sh[e.Name] = s
	}
	switch {
	case sh["conv1.0.weight"] != nil && sh["logits.weight"] != nil:
		return inferCNN(sh, base)
	case sh["net.stem.0.weight"] != nil || sh["alpha_normal.0"] != nil:
		return inferSearch(sh, base)
	case sh["stem.0.weight"] != nil && sh["cells.0.preproc1.net.1.weight"] != nil:
		return base, errors.New("a discrete (genotype) network: its genotype cannot be read off the tensor shapes; give its settings with --config (model.kind discrete, model.genotype, ...)")
	}
	return base, errors.New("not a known MetaNAS network: none of the keys net.stem.0.weight (search network), conv1.0.weight (REPTILE CNN) or stem.0.weight (discrete network); give its settings with --config")
}

// inferError names the key a rule read.
func inferError(key string, shape []int64, format string, a ...any) error {
	if shape == nil {
		return fmt.Errorf("key %q: %s", key, fmt.Sprintf(format, a...))
	}
	return fmt.Errorf("key %q %s: %s", key, cells.ShapeString(shape), fmt.Sprintf(format, a...))
}

// need returns the shape of key with the given rank, or an error naming it.
func need(sh map[string][]int64, key string, rank int) ([]int64, error) {
	s, ok := sh[key]
	if !ok {
		return nil, fmt.Errorf("missing key %q", key)
	}
	if len(s) != rank {
		return nil, inferError(key, s, "expected %d dimensions", rank)
	}
	return s, nil
}

func inferSearch(sh map[string][]int64, base config.Config) (config.Config, error) {
	cfg := base
	m := &cfg.Model
	// nodes and primitives from the op alphas
	nodes := 0
	for sh[fmt.Sprintf("alpha_normal.%d", nodes)] != nil {
		nodes++
	}
	if nodes == 0 {
		return base, errors.New(`missing key "alpha_normal.0" (a search network's op alphas)`)
	}
	a0, err := need(sh, "alpha_normal.0", 2)
	if err != nil {
		return base, err
	}
	nops := a0[1]
	var prims config.PrimitiveSet
	switch int(nops) {
	case len(genotype.FewShot):
		prims = config.PrimitivesFewShot
	case len(genotype.DARTS):
		prims = config.PrimitivesDARTS
	default:
		return base, inferError("alpha_normal.0", a0, "rows of %d ops; known primitive sets have %d (few_shot) or %d (darts)", nops, len(genotype.FewShot), len(genotype.DARTS))
	}
	pairwise := sh["alpha_pw_normal.0"] != nil
	for i := 0; i < nodes; i++ {
		for _, k := range []string{"alpha_normal", "alpha_reduce"} {
			key := fmt.Sprintf("%s.%d", k, i)
			s, err := need(sh, key, 2)
			if err != nil {
				return base, err
			}
			if s[0] != int64(i+2) || s[1] != nops {
				return base, inferError(key, s, "node %d of a cell with %d ops needs [%d, %d]", i, nops, i+2, nops)
			}
		}
		if pairwise {
			for _, k := range []string{"alpha_pw_normal", "alpha_pw_reduce"} {
				key := fmt.Sprintf("%s.%d", k, i)
				s, err := need(sh, key, 1)
				if err != nil {
					return base, err
				}
				if np := int64(genotype.NumPairs(i + 2)); s[0] != np {
					return base, inferError(key, s, "node %d has %d input pairs", i, np)
				}
			}
		}
	}
	if sh[fmt.Sprintf("alpha_reduce.%d", nodes)] != nil {
		return base, inferError(fmt.Sprintf("alpha_reduce.%d", nodes), sh[fmt.Sprintf("alpha_reduce.%d", nodes)], "more reduction-cell alphas than the %d normal-cell nodes", nodes)
	}
	// stem
	stem, err := need(sh, "net.stem.0.weight", 4)
	if err != nil {
		return base, err
	}
	cstem, inCh := stem[0], stem[1]
	// cells: channels and reductions
	layers := 0
	for sh[fmt.Sprintf("net.cells.%d.preproc1.net.1.weight", layers)] != nil {
		layers++
	}
	if layers == 0 {
		return base, errors.New(`missing key "net.cells.0.preproc1.net.1.weight" (the first cell)`)
	}
	skip := -1
	prl, _ := genotype.Primitives(string(prims))
	for k, p := range prl {
		if p == "skip_connect" {
			skip = k
		}
	}
	chans := make([]int64, layers)
	reductions := []int{}
	red := make([]bool, layers)
	for c := 0; c < layers; c++ {
		key := fmt.Sprintf("net.cells.%d.preproc1.net.1.weight", c)
		s, err := need(sh, key, 4)
		if err != nil {
			return base, err
		}
		chans[c] = s[0]
		fr := fmt.Sprintf("net.cells.%d.dag.0.0._ops.%d.0.conv1.weight", c, skip)
		red[c] = sh[fr] != nil
		if red[c] {
			reductions = append(reductions, c)
		}
	}
	for c := 1; c < layers; c++ {
		key := fmt.Sprintf("net.cells.%d.preproc0.conv1.weight", c)
		if fr := sh[key] != nil; fr != red[c-1] {
			preproc, edges := "is not", "has"
			if fr {
				preproc, edges = "is", "lacks"
			}
			return base, fmt.Errorf("cell %d's preproc0 %s a FactorizedReduce (key %q), but cell %d %s stride-2 edges (key %q): not a network this port builds",
				c, preproc, key, c-1, edges, fmt.Sprintf("net.cells.%d.dag.0.0._ops.%d.0.conv1.weight", c-1, skip))
		}
	}
	rate := base.Model.FeatureScaleRate
	rateFrom := ""
	for c := 1; c < layers; c++ {
		key := fmt.Sprintf("net.cells.%d.preproc1.net.1.weight", c)
		if !red[c] {
			if chans[c] != chans[c-1] {
				return base, inferError(key, sh[key], "a normal cell changes the channels from %d to %d", chans[c-1], chans[c])
			}
			continue
		}
		if chans[c]%chans[c-1] != 0 {
			return base, inferError(key, sh[key], "reduction cell %d has %d channels, not a multiple of the %d before it", c, chans[c], chans[c-1])
		}
		r := int(chans[c] / chans[c-1])
		if rateFrom != "" && r != rate {
			return base, inferError(key, sh[key], "channel scale rate %d at cell %d, but %d at %s", r, c, rate, rateFrom)
		}
		rate, rateFrom = r, fmt.Sprintf("cell %d", c)
	}
	channels := chans[0]
	if red[0] {
		if rate < 1 || channels%int64(rate) != 0 {
			return base, inferError("net.cells.0.preproc1.net.1.weight", sh["net.cells.0.preproc1.net.1.weight"], "cell 0 reduces with %d channels, not a multiple of model.feature_scale_rate %d", channels, rate)
		}
		channels /= int64(rate)
	}
	if cstem%channels != 0 {
		return base, inferError("net.stem.0.weight", stem, "%d stem outputs are not a multiple of the %d cell channels", cstem, channels)
	}
	lin, err := need(sh, "net.linear.weight", 2)
	if err != nil {
		return base, err
	}
	if want := chans[layers-1] * int64(nodes); lin[1] != want {
		return base, inferError("net.linear.weight", lin, "the last cell outputs %d channels (%d nodes x %d)", want, nodes, chans[layers-1])
	}
	m.Kind = config.ModelSearch
	m.Primitives = prims
	m.Nodes = nodes
	m.UsePairwise = pairwise
	m.Layers = layers
	m.Reductions = reductions
	m.FeatureScaleRate = rate
	m.Channels = int(channels)
	m.StemMultiplier = int(cstem / channels)
	m.Affine = false
	cfg.Data.Ways = int(lin[0])
	if err := setInChannels(&cfg, int(inCh), "net.stem.0.weight", stem); err != nil {
		return base, err
	}
	return cfg, nil
}

func inferCNN(sh map[string][]int64, base config.Config) (config.Config, error) {
	cfg := base
	c1, err := need(sh, "conv1.0.weight", 4)
	if err != nil {
		return base, err
	}
	blocks := 0
	for sh[fmt.Sprintf("conv%d.0.weight", blocks+1)] != nil {
		blocks++
	}
	ch, inCh := c1[0], c1[1]
	lin, err := need(sh, "logits.weight", 2)
	if err != nil {
		return base, err
	}
	if err := setInChannels(&cfg, int(inCh), "conv1.0.weight", c1); err != nil {
		return base, err
	}
	_, size := cfg.Data.InputShape()
	fs := cells.CNNConfig{Size: size, Blocks: blocks}.FinalSize()
	if lin[1] != ch*int64(fs*fs) {
		side := math.Sqrt(float64(lin[1]) / float64(ch))
		return base, inferError("logits.weight", lin, "fits a %gx%g feature map after %d blocks of %d channels, but %dx%d inputs give %dx%d; set data.image_size (or data.dataset)", side, side, blocks, ch, size, size, fs, fs)
	}
	cfg.Model.Kind = config.ModelCNN
	cfg.Model.CNNBlocks = blocks
	cfg.Model.CNNChannels = int(ch)
	cfg.Data.Ways = int(lin[0])
	return cfg, nil
}

// setInChannels makes the data's input channels n: data.synthetic.channels for synthetic
// data, else an error when the data set has another count.
func setInChannels(cfg *config.Config, n int, key string, shape []int64) error {
	if cfg.Data.Dataset == config.Synthetic {
		cfg.Data.Synthetic.Channels = n
		return nil
	}
	if have, _ := cfg.Data.InputShape(); have != n {
		return inferError(key, shape, "the network takes %d input channels, but data.dataset %s has %d; set data.dataset (omniglot 1, miniimagenet 3, or synthetic)", n, cfg.Data.Dataset, have)
	}
	return nil
}

// ConfigSource tells where CheckpointConfig found a configuration.
type ConfigSource string

// Configuration sources.
const (
	// SourceFile is the YAML file given with --config.
	SourceFile ConfigSource = "config file"
	// SourceCheckpoint is the configuration stored in one of our checkpoints.
	SourceCheckpoint ConfigSource = "checkpoint"
	// SourceInferred is the architecture inferred from a reference checkpoint's shapes.
	SourceInferred ConfigSource = "inferred"
)

// CheckpointConfig resolves the configuration for running the checkpoint at path under
// the command-line flags f:
//
//   - with --config, that file with the flags laid over it; the checkpoint must then fit
//     it (LoadCheckpoint names the first key that does not);
//   - else the configuration stored in the checkpoint (ours), with the flags laid over it;
//   - else (a reference checkpoint, which stores none) the defaults with the flags laid
//     over them, the architecture inferred from the meta_model shapes (InferConfig), and
//     the flags once more, so a setting given on the command line wins over an inferred one
//     (a conflicting one then fails to load, naming the key).
//
// The result is validated. Errors name the file; they are usage errors (exit status 2).
func CheckpointConfig(path string, f *config.Flags) (config.Config, ConfigSource, error) {
	if f.Config != "" {
		cfg, err := f.Resolve()
		return cfg, SourceFile, err
	}
	s := torch.NewScope()
	defer s.Close()
	ck, err := readCheckpoint(s, path)
	if err != nil {
		return config.Config{}, "", usage("%v", err)
	}
	var cfg config.Config
	src := SourceCheckpoint
	if ck.hasConfig {
		if cfg, err = config.Parse(path+"#config", []byte(ck.config)); err != nil {
			return config.Config{}, "", err
		}
	} else {
		src = SourceInferred
		base := config.Default()
		if err := f.Apply(&base); err != nil {
			return config.Config{}, "", err
		}
		if cfg, err = InferConfig(ck.state, base); err != nil {
			return config.Config{}, "", usage("%s holds no configuration, and its architecture could not be inferred from meta_model: %v", path, err)
		}
	}
	if err := f.Apply(&cfg); err != nil {
		return config.Config{}, "", err
	}
	if err := cfg.Validate(); err != nil {
		return config.Config{}, "", err
	}
	return cfg, src, nil
}
