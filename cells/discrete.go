package cells

import (
	"fmt"
	"slices"

	"github.com/metanas-go/metanas/cells/genotype"
	"github.com/metanas-go/metanas/torch"
)

// DiscreteConfig describes the network of a fixed genotype (the reference's AugmentCNN
// layout): a conv stem, Layers cells built from Genotype.Normal or Genotype.Reduce, global
// average pooling and a linear classifier.
type DiscreteConfig struct {
	InChannels       int               // 1 for Omniglot, 3 for MiniImagenet
	Classes          int               // N ways
	Channels         int               // C
	Layers           int               // number of cells
	Reductions       []int             // indices of reduction cells
	StemMultiplier   int               // stem outputs StemMultiplier*C channels (3)
	FeatureScaleRate int               // channel multiplier at each reduction (1 keeps C)
	Genotype         genotype.Genotype // cell architecture; any node and edge counts
	// Affine gives the batch norms inside cells (ops and preprocessing) a learnable scale
	// and shift. The reference's discrete network has it; search cells do not. The stem's
	// batch norm is always affine.
	Affine bool
}

// DefaultDiscreteConfig is the reference's discrete network of g on Omniglot (1 input
// channel) for the given ways: C=28, 4 cells, reductions at 1 and 3, affine batch norms.
func DefaultDiscreteConfig(classes int, g genotype.Genotype) DiscreteConfig {
	return DiscreteConfig{InChannels: 1, Classes: classes, Channels: 28, Layers: 4, Reductions: []int{1, 3},
		StemMultiplier: 3, FeatureScaleRate: 1, Genotype: g, Affine: true}
}

// Validate reports the first invalid field by name; genotype errors name the cell, node,
// edge and offending op or index (they wrap the genotype package's sentinel errors).
func (c DiscreteConfig) Validate() error {
	if err := validateNet(c.InChannels, c.Classes, c.Channels, c.Layers, c.StemMultiplier, c.FeatureScaleRate, c.Reductions); err != nil {
		return err
	}
	if len(c.Reductions) > 0 && c.Channels%2 != 0 {
		return fmt.Errorf("channels must be even when there are reduction cells (factorized reduce halves them), got %d", c.Channels)
	}
	return c.Genotype.Validate(nil)
}

func (c DiscreteConfig) isReduction(i int) bool { return slices.Contains(c.Reductions, i) }

// discreteEdge is one genotype edge: an op applied to state input.
type discreteEdge struct {
	op    Op
	input int
}

// DiscreteCell is a cell of a discrete network: every node sums its genotype edges, and
// the output concatenates the states listed in the genotype's concat.
type DiscreteCell struct {
	Reduction bool
	cellPreproc
	nodes  [][]discreteEdge
	concat []int
}

func newDiscreteCell(r *Registry, gene [][]genotype.Edge, concat []int, cpp, cp, c int64, reductionPrev, reduction, affine bool) (*DiscreteCell, error) {
	pre, err := newCellPreproc(r, cpp, cp, c, reductionPrev, affine)
	if err != nil {
		return nil, err
	}
	cell := &DiscreteCell{Reduction: reduction, cellPreproc: pre, concat: append([]int(nil), concat...)}
	dag := r.Sub("dag")
	for i, node := range gene {
		ni := dag.Sub(fmt.Sprint(i))
		var row []discreteEdge
		for e, ed := range node {
			stride := int64(1)
			if reduction && ed.Input < 2 {
				stride = 2
			}
			op, err := NewOp(ni.Sub(fmt.Sprint(e)).Sub("0"), ed.Op, c, stride, affine)
			if err != nil {
				return nil, fmt.Errorf("node %d edge %d: %w", i, e, err)
			}
			row = append(row, discreteEdge{op: op, input: ed.Input})
		}
		cell.nodes = append(cell.nodes, row)
	}
	return cell, nil
}

func (cell *DiscreteCell) forward(c *Ctx, s0, s1 *torch.Tensor) *torch.Tensor {
	s := c.S
	states := cell.preprocess(c, s0, s1)
	for _, row := range cell.nodes {
		var node *torch.Tensor
		for _, e := range row {
			y := e.op.Forward(c, states[e.input])
			if !e.op.Identity() {
				y = DropPath(c, y)
			}
			if node == nil {
				node = y
			} else {
				node = s.Add(node, y)
			}
		}
		states = append(states, node)
	}
	out := make([]*torch.Tensor, len(cell.concat))
	for k, i := range cell.concat {
		out[k] = states[i]
	}
	return s.Cat(out, 1)
}

// DiscreteNet is the network of a fixed genotype. Its state_dict keys are those of
// tools/pyref's discrete network (the reference's AugmentCNN without its dummy alphas):
// stem.*, cells.{c}.preproc0/1.*, cells.{c}.dag.{node}.{edge}.0.<op keys>, linear.*.
type DiscreteNet struct {
	Cfg   DiscreteConfig
	Reg   *Registry
	stemW *torch.Tensor
	stemB *BatchNorm
	cells []*DiscreteCell
	linW  *torch.Tensor
	linB  *torch.Tensor
}

// NewDiscreteNet builds the discrete network of cfg.Genotype in scope s on dev, with
// PyTorch's default initialisation drawn from LibTorch's generator. Channels follow the
// search network: the stem outputs StemMultiplier*C, each reduction cell multiplies the
// running C by FeatureScaleRate, and a cell outputs C * len(concat) channels.
func NewDiscreteNet(s *torch.Scope, dev torch.Device, cfg DiscreteConfig) (*DiscreteNet, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("discrete network: %w", err)
	}
	r := NewRegistry(s, dev)
	n := &DiscreteNet{Cfg: cfg, Reg: r}
	c := int64(cfg.Channels)
	cstem := int64(cfg.StemMultiplier) * c
	n.stemW, n.stemB = newStem(r.Sub("stem"), int64(cfg.InChannels), cstem)
	cpp, cp, cur := cstem, cstem, c
	redPrev := false
	cellsR := r.Sub("cells")
	for i := 0; i < cfg.Layers; i++ {
		red := cfg.isReduction(i)
		gene, concat := cfg.Genotype.Normal, cfg.Genotype.NormalConcat
		if red {
			cur *= int64(cfg.FeatureScaleRate)
			gene, concat = cfg.Genotype.Reduce, cfg.Genotype.ReduceConcat
		}
		cell, err := newDiscreteCell(cellsR.Sub(fmt.Sprint(i)), gene, concat, cpp, cp, cur, redPrev, red, cfg.Affine)
		if err != nil {
			return nil, fmt.Errorf("discrete network: cell %d: %w", i, err)
		}
		n.cells = append(n.cells, cell)
		redPrev = red
		cpp, cp = cp, cur*int64(len(concat))
	}
	n.linW, n.linB = r.LinearWeights("linear", int64(cfg.Classes), cp)
	if err := r.Err(); err != nil {
		return nil, fmt.Errorf("discrete network: %w", err)
	}
	return n, nil
}

// Forward computes logits for x. In training mode (c.Train) with c.DropPath > 0 every
// non-identity edge op is followed by drop-path.
func (n *DiscreteNet) Forward(c *Ctx, x *torch.Tensor) *torch.Tensor {
	s := c.S
	h := stemForward(c, x, n.stemW, n.stemB)
	s0, s1 := h, h
	for _, cell := range n.cells {
		s0, s1 = s1, cell.forward(c, s0, s1)
	}
	y := s.AdaptiveAvgPool2d(s1, 1, 1)
	y = s.Flatten(y, 1, -1)
	return s.Linear(y, n.linW, n.linB)
}

// Weights returns the network weights, in state_dict order.
func (n *DiscreteNet) Weights() []*torch.Tensor { return n.Reg.Select(Weight) }

// Buffers returns the batch-norm buffers, in state_dict order.
func (n *DiscreteNet) Buffers() []*torch.Tensor { return n.Reg.Select(Buffer) }
