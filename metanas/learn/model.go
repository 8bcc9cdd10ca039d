// Package learn holds MetaNAS's learners: the task learner (k steps of first-order DARTS
// on a task's support set, weights and alphas updated from one forward/backward pass) and
// the meta learners (REPTILE and first-order MAML) behind one interface.
package learn

import (
	"fmt"

	"github.com/metanas-go/metanas/cells"
	"github.com/metanas-go/metanas/cells/genotype"
	"github.com/metanas-go/metanas/metanas/config"
	"github.com/metanas-go/metanas/torch"
)

// Model is a network the learners train: the one-shot search network (with alphas), a
// discrete network of a genotype, or the 4-block CNN baseline.
type Model struct {
	Kind   config.ModelKind
	Reg    *cells.Registry
	Search *cells.SearchNet // nil unless Kind is search
	// Autocast is the 16-bit type forward passes autocast to (run.precision bf16), or
	// Float32 for none.
	Autocast torch.DType
	fwd      func(c *cells.Ctx, x *torch.Tensor) *torch.Tensor
}

// NewModel builds the network cfg describes in scope s on dev.
func NewModel(s *torch.Scope, dev torch.Device, cfg config.Config) (*Model, error) {
	return newModel(s, dev, cfg, 1)
}

// newModel builds the network cfg describes for tasks batched tasks (a search network only
// when tasks > 1).
func newModel(s *torch.Scope, dev torch.Device, cfg config.Config, tasks int) (*Model, error) {
	m, err := buildModel(s, dev, cfg, tasks)
	if err != nil {
		return nil, err
	}
	switch cfg.Run.Precision {
	case config.PrecisionBF16:
		m.Autocast = torch.BFloat16
	case config.PrecisionFloat32, "":
	default:
		return nil, fmt.Errorf("run.precision %q: use float32 or bf16", cfg.Run.Precision)
	}
	return m, nil
}

// buildModel builds the network of newModel.
func buildModel(s *torch.Scope, dev torch.Device, cfg config.Config, tasks int) (*Model, error) {
	in, size := cfg.Data.InputShape()
	m := cfg.Model
	switch m.Kind {
	case config.ModelSearch:
		prims, err := genotype.Primitives(string(m.Primitives))
		if err != nil {
			return nil, fmt.Errorf("model.primitives: %w", err)
		}
		sc := cells.SearchConfig{InChannels: in, Classes: cfg.Data.Ways, Channels: m.Channels, Layers: m.Layers,
			Nodes: m.Nodes, Reductions: m.Reductions, StemMultiplier: m.StemMultiplier, FeatureScaleRate: m.FeatureScaleRate,
			Primitives: prims, Pairwise: m.UsePairwise, AlphaInitStd: cfg.Arch.AlphaInitStd, Tasks: tasks}
		n, err := cells.NewSearchNet(s, dev, sc)
		if err != nil {
			return nil, err
		}
		return &Model{Kind: m.Kind, Reg: n.Reg, Search: n}, nil
	}
	if tasks > 1 {
		return nil, fmt.Errorf("model.kind %q: batched tasks need the search network (model.kind search)", m.Kind)
	}
	switch m.Kind {
	case config.ModelDiscrete:
		g, err := genotype.Lookup(m.Genotype)
		if err != nil {
			return nil, fmt.Errorf("model.genotype: %w", err)
		}
		dc := cells.DiscreteConfig{InChannels: in, Classes: cfg.Data.Ways, Channels: m.Channels, Layers: m.Layers,
			Reductions: m.Reductions, StemMultiplier: m.StemMultiplier, FeatureScaleRate: m.FeatureScaleRate,
			Genotype: g, Affine: m.Affine}
		n, err := cells.NewDiscreteNet(s, dev, dc)
		if err != nil {
			return nil, err
		}
		return &Model{Kind: m.Kind, Reg: n.Reg, fwd: n.Forward}, nil
	case config.ModelCNN:
		blocks := m.CNNBlocks
		if blocks == 0 {
			blocks = 4
		}
		n, err := cells.NewCNN(s, dev, cells.CNNConfig{InChannels: in, Size: size, Classes: cfg.Data.Ways, Channels: m.CNNChannels, Blocks: blocks})
		if err != nil {
			return nil, err
		}
		return &Model{Kind: m.Kind, Reg: n.Reg, fwd: n.Forward}, nil
	}
	return nil, fmt.Errorf("model.kind %q: use search, discrete or cnn", m.Kind)
}

// Weights returns the trainable network weights.
func (m *Model) Weights() []*torch.Tensor { return m.Reg.Select(cells.Weight) }

// Alphas returns the architecture parameters (none for fixed networks).
func (m *Model) Alphas() []*torch.Tensor { return m.Reg.Select(cells.Alpha) }

// Buffers returns the batch-norm buffers.
func (m *Model) Buffers() []*torch.Tensor { return m.Reg.Select(cells.Buffer) }

// HasAlphas reports whether the model searches an architecture.
func (m *Model) HasAlphas() bool { return m.Search != nil }

// Arch is how a forward pass normalises and prunes the alphas.
type Arch struct {
	Norm      cells.NormKind
	Temp      float64
	Threshold float64
}

// Forward computes logits (float32); for the search network it also returns the normalised
// weights used (with their host copy). Precomputed weights w (from an earlier call, while the
// alphas and the temperature have not changed) skip the normalisation and its host copy.
// With Autocast set the network's forward pass (not the normalisation) autocasts to it.
func (m *Model) Forward(c *cells.Ctx, x *torch.Tensor, a Arch, w ...*cells.ArchWeights) (*torch.Tensor, *cells.ArchWeights, error) {
	var aw *cells.ArchWeights
	if m.Search != nil {
		if len(w) > 0 && w[0] != nil {
			aw = w[0]
		} else {
			var err error
			if aw, err = m.Search.Normalize(c.S, a.Norm, a.Temp, c.Gen); err != nil {
				return nil, nil, err
			}
		}
	}
	y, err := m.network(c, x, aw, a.Threshold)
	return y, aw, err
}

// network is the forward pass of Forward after the normalisation.
func (m *Model) network(c *cells.Ctx, x *torch.Tensor, aw *cells.ArchWeights, threshold float64) (*torch.Tensor, error) {
	run := func() *torch.Tensor {
		if m.Search == nil {
			return m.fwd(c, x)
		}
		return m.Search.Forward(c, x, aw, threshold)
	}
	if m.Autocast == torch.Float32 {
		y := run()
		return y, c.S.Err()
	}
	info, err := x.Info()
	if err != nil {
		return nil, err
	}
	y, err := autocast(info.Device, m.Autocast, run)
	if err != nil {
		return nil, err
	}
	// The logits of a linear layer come in the autocast type; the loss and the
	// accuracy read float32.
	y = c.S.To(y, torch.Float32, info.Device)
	return y, c.S.Err()
}

// autocast returns run() computed under torch.Autocast(dev, dt), restored however run ends.
func autocast(dev torch.Device, dt torch.DType, run func() *torch.Tensor) (*torch.Tensor, error) {
	restore, err := torch.Autocast(dev, dt)
	if err != nil {
		return nil, err
	}
	defer restore()
	return run(), nil
}
