// Command inspect prints the parameter counts and state_dict layout of a network as one
// JSON line, in the format of tools/pyref's keys command:
//
//	{"kind": "search", "weights": 462272, "alphas": 146, "buffers": 15673, "state_dict": [[key, shape], ...]}
//
// The network is the model a configuration describes (search, discrete or cnn):
//
//	go run ./cmd/inspect --config configs/og_metanas.yaml [--set model.channels=16 ...]
//
// or the discrete network of a genotype (a builtin name or a string in the reference's
// Genotype(...) format):
//
//	go run ./cmd/inspect --genotype metanas_og_v2 [--channels 28] [--layers 4] [--reductions 1,3] [--ways 20] [--dataset omniglot|miniimagenet]
//
// weights counts the network's trainable elements without alphas, alphas the architecture
// parameters, buffers the batch-norm buffer elements (running statistics and the
// one-element batch counters). Bad input exits with status 2 and a message naming the
// offending flag, field or token.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/metanas-go/metanas/cells"
	"github.com/metanas-go/metanas/cells/genotype"
	"github.com/metanas-go/metanas/internal/cli"
	"github.com/metanas-go/metanas/metanas/config"
	"github.com/metanas-go/metanas/torch"
)

const prog = "inspect"

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// usageError is bad input: exit status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// Report is what inspect prints.
type Report struct {
	Kind      string  `json:"kind"`
	Weights   int64   `json:"weights"`
	Alphas    int64   `json:"alphas"`
	Buffers   int64   `json:"buffers"`
	StateDict [][]any `json:"state_dict"`
}

// discreteFlags are the flags that describe a discrete network without a config file.
var discreteFlags = []string{"channels", "layers", "reductions", "ways", "dataset", "affine", "stem-multiplier", "feature-scale-rate"}

func run(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet(prog, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.StringP("config", "c", "", "YAML configuration file: inspect the model it describes (model.kind search, discrete or cnn)")
	sets := fs.StringArray("set", nil, "with --config: override one setting as section.key=value, for example model.channels=16; repeatable")
	geno := fs.String("genotype", "", "inspect the discrete network of this genotype: a builtin name (metanas_og_v2, metanas_in_v2, auto_meta) or a Genotype(...) string")
	channels := fs.Int("channels", 28, "with --genotype: cell channels C")
	layers := fs.Int("layers", 4, "with --genotype: number of cells")
	reductions := fs.String("reductions", "1,3", "with --genotype: comma-separated indices of the reduction cells (empty for none)")
	ways := fs.Int("ways", 20, "with --genotype: classes (N ways)")
	dataset := fs.String("dataset", "omniglot", "with --genotype: omniglot (1x28x28) or miniimagenet (3x84x84)")
	affine := fs.Bool("affine", true, "with --genotype: affine batch norms inside cells (as the reference's discrete network)")
	stemMul := fs.Int("stem-multiplier", 3, "with --genotype: the stem outputs this many times C channels")
	fsr := fs.Int("feature-scale-rate", 1, "with --genotype: channel multiplier at each reduction cell")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return cli.OK
		}
		return fail(stderr, cli.Usage, err)
	}
	if fs.NArg() > 0 {
		return fail(stderr, cli.Usage, fmt.Errorf("unexpected argument %q (use --config FILE or --genotype NAME)", fs.Arg(0)))
	}
	s := torch.NewScope()
	defer s.Close()
	var rep *Report
	var err error
	switch {
	case *cfgPath != "" && *geno != "":
		err = usagef("give either --config or --genotype, not both")
	case *geno != "":
		if len(*sets) > 0 {
			err = usagef("--set needs --config; describe the discrete network with --channels, --layers, --reductions, --ways and --dataset")
			break
		}
		var red []int
		if red, err = parseReductions(*reductions); err != nil {
			break
		}
		rep, err = inspectGenotype(s, *geno, genotypeOptions{channels: *channels, layers: *layers, reductions: red,
			ways: *ways, dataset: *dataset, affine: *affine, stemMultiplier: *stemMul, featureScaleRate: *fsr})
	default:
		for _, f := range discreteFlags {
			if fs.Changed(f) {
				err = usagef("--%s needs --genotype; with a config file use --set model.<field>=value", f)
				break
			}
		}
		if err == nil {
			rep, err = inspectConfig(s, *cfgPath, *sets)
		}
	}
	if err != nil {
		code := cli.Fail
		var ue usageError
		var ce *config.Error
		var ces config.Errors
		if errors.As(err, &ue) || errors.As(err, &ce) || errors.As(err, &ces) {
			code = cli.Usage
		}
		return fail(stderr, code, err)
	}
	b, err := json.Marshal(rep)
	if err != nil {
		return fail(stderr, cli.Fail, err)
	}
	fmt.Fprintln(stdout, string(b))
	return cli.OK
}

func fail(w io.Writer, code int, err error) int {
	fmt.Fprintf(w, "%s: %v\n", prog, err)
	return code
}

// parseReductions reads "1,3" (empty or "none": no reductions).
func parseReductions(text string) ([]int, error) {
	text = strings.TrimSpace(text)
	if text == "" || text == "none" {
		return nil, nil
	}
	text = strings.TrimSuffix(strings.TrimPrefix(text, "["), "]")
	var out []int
	for _, tok := range strings.Split(text, ",") {
		tok = strings.TrimSpace(tok)
		v, err := strconv.Atoi(tok)
		if err != nil {
			return nil, usagef("--reductions: %q is not a cell index (want comma-separated integers such as 1,3)", tok)
		}
		out = append(out, v)
	}
	return out, nil
}

type genotypeOptions struct {
	channels, layers, ways, stemMultiplier, featureScaleRate int
	reductions                                               []int
	dataset                                                  string
	affine                                                   bool
}

// inspectGenotype builds the discrete network of a genotype given on the command line.
func inspectGenotype(s *torch.Scope, text string, o genotypeOptions) (*Report, error) {
	var in int
	switch strings.ToLower(strings.TrimSpace(o.dataset)) {
	case string(config.Omniglot):
		in = 1
	case string(config.MiniImagenet):
		in = 3
	default:
		return nil, usagef("--dataset: unknown data set %q (use omniglot or miniimagenet)", o.dataset)
	}
	switch {
	case o.channels <= 0:
		return nil, usagef("--channels: must be > 0, got %d", o.channels)
	case o.layers <= 0:
		return nil, usagef("--layers: must be > 0, got %d", o.layers)
	case o.ways < 1:
		return nil, usagef("--ways: must be >= 1, got %d", o.ways)
	case o.stemMultiplier <= 0:
		return nil, usagef("--stem-multiplier: must be > 0, got %d", o.stemMultiplier)
	case o.featureScaleRate <= 0:
		return nil, usagef("--feature-scale-rate: must be > 0, got %d", o.featureScaleRate)
	}
	for _, r := range o.reductions {
		if r < 0 || r >= o.layers {
			return nil, usagef("--reductions: cell index %d outside [0, %d) for --layers %d", r, o.layers, o.layers)
		}
	}
	if len(o.reductions) > 0 && o.channels%2 != 0 {
		return nil, usagef("--channels: must be even when there are reduction cells (factorized reduce halves them), got %d", o.channels)
	}
	g, err := genotype.Lookup(text)
	if err != nil {
		return nil, usagef("--genotype: %w", err)
	}
	cfg := cells.DiscreteConfig{InChannels: in, Classes: o.ways, Channels: o.channels, Layers: o.layers, Reductions: o.reductions,
		StemMultiplier: o.stemMultiplier, FeatureScaleRate: o.featureScaleRate, Genotype: g, Affine: o.affine}
	if err := cfg.Validate(); err != nil {
		return nil, usagef("--genotype: %w", err)
	}
	n, err := cells.NewDiscreteNet(s, torch.CPU, cfg)
	if err != nil {
		return nil, err
	}
	return report("discrete", n.Reg), nil
}

// inspectConfig builds the model a configuration file (or the defaults) describes.
func inspectConfig(s *torch.Scope, path string, sets []string) (*Report, error) {
	cfg := config.Default()
	if path != "" {
		var err error
		if cfg, err = config.Load(path); err != nil {
			return nil, err
		}
	}
	for _, kv := range sets {
		if err := cfg.Set(kv); err != nil {
			return nil, err
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	in, size := cfg.Data.InputShape()
	m := cfg.Model
	switch m.Kind {
	case config.ModelSearch:
		prims, err := genotype.Primitives(string(m.Primitives))
		if err != nil {
			return nil, usagef("model.primitives: %w", err)
		}
		sc := cells.SearchConfig{InChannels: in, Classes: cfg.Data.Ways, Channels: m.Channels, Layers: m.Layers,
			Nodes: m.Nodes, Reductions: m.Reductions, StemMultiplier: m.StemMultiplier, FeatureScaleRate: m.FeatureScaleRate,
			Primitives: prims, Pairwise: m.UsePairwise, AlphaInitStd: cfg.Arch.AlphaInitStd}
		if err := sc.Validate(); err != nil {
			return nil, usagef("model: %w", err)
		}
		n, err := cells.NewSearchNet(s, torch.CPU, sc)
		if err != nil {
			return nil, err
		}
		return report(string(m.Kind), n.Reg), nil
	case config.ModelDiscrete:
		g, err := genotype.Lookup(m.Genotype)
		if err != nil {
			return nil, usagef("model.genotype: %w", err)
		}
		dc := cells.DiscreteConfig{InChannels: in, Classes: cfg.Data.Ways, Channels: m.Channels, Layers: m.Layers,
			Reductions: m.Reductions, StemMultiplier: m.StemMultiplier, FeatureScaleRate: m.FeatureScaleRate, Genotype: g, Affine: m.Affine}
		if err := dc.Validate(); err != nil {
			return nil, usagef("model: %w", err)
		}
		n, err := cells.NewDiscreteNet(s, torch.CPU, dc)
		if err != nil {
			return nil, err
		}
		return report(string(m.Kind), n.Reg), nil
	case config.ModelCNN:
		cc := cells.CNNConfig{InChannels: in, Size: size, Classes: cfg.Data.Ways, Channels: m.CNNChannels, Blocks: m.CNNBlocks}
		if err := cc.Validate(); err != nil {
			return nil, usagef("model: %w", err)
		}
		n, err := cells.NewCNN(s, torch.CPU, cc)
		if err != nil {
			return nil, err
		}
		return report(string(m.Kind), n.Reg), nil
	}
	return nil, usagef("model.kind: %q: use search, discrete or cnn", m.Kind)
}

// report lists a registry's counts and entries.
func report(kind string, r *cells.Registry) *Report {
	rep := &Report{Kind: kind, Weights: r.Count(cells.Weight), Alphas: r.Count(cells.Alpha), Buffers: r.Count(cells.Buffer),
		StateDict: [][]any{}}
	for _, e := range r.Entries() {
		shape := e.Tensor.MustShape()
		if shape == nil {
			shape = []int64{}
		}
		rep.StateDict = append(rep.StateDict, []any{e.Name, shape})
	}
	return rep
}
