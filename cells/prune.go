package cells

import (
	"fmt"
	"slices"

	"github.com/metanas-go/metanas/cells/genotype"
	"github.com/metanas-go/metanas/torch"
)

// PrunedAlpha is the logit PruneAlphas writes into pruned alpha entries. It lies far below
// any live logit, so softmax(alpha / T) gives a pruned entry at most exp(-1e4 / T) relative
// to the row's largest entry: exactly 0 in float32 for T up to about 95, and far below any
// prune threshold for any realistic T (Gumbel noise, at most about 46, cannot lift it). Yet
// it is finite: softmax stays finite even if every entry of a row were pruned, and Adam
// moments and weight decay on it stay far from overflow. (-inf would make an all-pruned row
// NaN and its gradients NaN; relu_softmax maps every negative logit to 0 and so ignores it.)
const PrunedAlpha = -1e4

// rowsOf splits a node's row-major host op weights ((i+2) x K) into rows.
func rowsOf(host []float32, nIn, k int) [][]float32 {
	rows := make([][]float32, nIn)
	for j := range rows {
		if (j+1)*k <= len(host) {
			rows[j] = host[j*k : (j+1)*k]
		}
	}
	return rows
}

// checkWeights reports whether w has the shapes of tasks tasks' weights as n.Normalize
// produces them (tasks 1: one network's, as Genotype and Masks read them).
func (n *SearchNet) checkWeights(w *ArchWeights, tasks int) error {
	if w == nil {
		return fmt.Errorf("architecture weights: nil")
	}
	K := len(n.Cfg.Primitives)
	for _, c := range []struct {
		name string
		cw   *CellWeights
	}{{"normal", &w.Normal}, {"reduce", &w.Reduce}} {
		if len(c.cw.HostOps) != n.Cfg.Nodes {
			return fmt.Errorf("architecture weights: %s cell has %d nodes of op weights, the network %d", c.name, len(c.cw.HostOps), n.Cfg.Nodes)
		}
		for i, h := range c.cw.HostOps {
			if len(h) != tasks*(i+2)*K {
				return fmt.Errorf("architecture weights: %s cell node %d has %d op weights, want %d x %d x %d", c.name, i, len(h), tasks, i+2, K)
			}
		}
		if !n.Cfg.Pairwise {
			continue
		}
		if len(c.cw.HostPairs) != n.Cfg.Nodes {
			return fmt.Errorf("architecture weights: %s cell has %d nodes of pair weights, the network %d", c.name, len(c.cw.HostPairs), n.Cfg.Nodes)
		}
		for i, h := range c.cw.HostPairs {
			if want := tasks * genotype.NumPairs(i+2); len(h) != want {
				return fmt.Errorf("architecture weights: %s cell node %d has %d pair weights, want %d", c.name, i, len(h), want)
			}
		}
	}
	return nil
}

// Genotype derives the discrete architecture from the host copy of the normalised weights
// w (see Normalize): with pairwise weights genotype.DerivePairwise (per node the strongest
// input pair, and for each of its two inputs the strongest op), otherwise
// genotype.DeriveDARTS (the two inputs whose best op is strongest). Both cells concatenate
// all nodes: range(2, 2+Nodes).
func (n *SearchNet) Genotype(w *ArchWeights) (genotype.Genotype, error) {
	if err := n.checkWeights(w, 1); err != nil {
		return genotype.Genotype{}, err
	}
	K := len(n.Cfg.Primitives)
	ops := func(cw *CellWeights) [][][]float32 {
		out := make([][][]float32, len(cw.HostOps))
		for i, h := range cw.HostOps {
			out[i] = rowsOf(h, i+2, K)
		}
		return out
	}
	if n.Cfg.Pairwise {
		return genotype.DerivePairwise(
			genotype.CellWeights{Ops: ops(&w.Normal), Pairs: w.Normal.HostPairs},
			genotype.CellWeights{Ops: ops(&w.Reduce), Pairs: w.Reduce.HostPairs},
			n.Cfg.Primitives)
	}
	return genotype.DeriveDARTS(ops(&w.Normal), ops(&w.Reduce), n.Cfg.Primitives)
}

// CellMask tells which parts of one cell type survive hard pruning.
type CellMask struct {
	// Ops[i][j][k] is true when op k on the edge from input j into node i has a weight
	// above the threshold.
	Ops [][][]bool
	// Pairs[i][p] is true when input pair p of node i (genotype.Pairs order) has a weight
	// above the threshold; nil without pairwise weights.
	Pairs [][]bool
	// Inputs[i][j] is true when input j of node i belongs to an active pair, so that its
	// edge is evaluated at all (always true without pairwise weights).
	Inputs [][]bool
}

// Active reports whether the forward pass evaluates op k of the edge from input j into
// node i: the input is in an active pair and the op's own weight is above the threshold.
func (m CellMask) Active(i, j, k int) bool {
	return m.Inputs[i][j] && m.Ops[i][j][k]
}

// PruneMasks are the masks of both cell types.
type PruneMasks struct {
	Normal, Reduce CellMask
}

// cellMask computes a cell's masks; entries missing from malformed weights count as pruned.
func (n *SearchNet) cellMask(cw *CellWeights, thr float32) CellMask {
	K := len(n.Cfg.Primitives)
	var m CellMask
	for i := 0; i < n.Cfg.Nodes; i++ {
		nIn := i + 2
		var host []float32
		if i < len(cw.HostOps) {
			host = cw.HostOps[i]
		}
		ops := make([][]bool, nIn)
		for j := range ops {
			ops[j] = make([]bool, K)
			for k := range ops[j] {
				if idx := j*K + k; idx < len(host) {
					ops[j][k] = host[idx] > thr
				}
			}
		}
		in := make([]bool, nIn)
		if n.Cfg.Pairwise {
			var hp []float32
			if i < len(cw.HostPairs) {
				hp = cw.HostPairs[i]
			}
			pm := make([]bool, genotype.NumPairs(nIn))
			for p, pr := range genotype.Pairs(nIn) {
				if p < len(hp) && hp[p] > thr {
					pm[p] = true
					in[pr[0]], in[pr[1]] = true, true
				}
			}
			m.Pairs = append(m.Pairs, pm)
		} else {
			for j := range in {
				in[j] = true
			}
		}
		m.Ops = append(m.Ops, ops)
		m.Inputs = append(m.Inputs, in)
	}
	return m
}

// Masks returns the binary op and input-pair masks of hard pruning at threshold: an entry
// survives when its normalised weight in w is above float32(threshold), the rule Forward
// applies. It fails when w does not have the shapes n.Normalize gives.
func (n *SearchNet) Masks(w *ArchWeights, threshold float64) (*PruneMasks, error) {
	if err := n.checkWeights(w, 1); err != nil {
		return nil, err
	}
	thr := float32(threshold)
	return &PruneMasks{Normal: n.cellMask(&w.Normal, thr), Reduce: n.cellMask(&w.Reduce, thr)}, nil
}

// ActiveParams returns the number of weights still in use in the one-shot network pruned
// at threshold: the stem, the cell preprocessing and the classifier always, and each op's
// Params() when Forward evaluates the op (its input is in an active pair and its own
// weight is above float32(threshold); see CellMask.Active). Alphas and batch-norm buffers
// are not counted. Entries missing from malformed weights (not made by n.Normalize) count
// as pruned; Masks reports such weights as an error. For a batched network it counts one
// task's network, with w from ArchWeights.TaskHost.
func (n *SearchNet) ActiveParams(w *ArchWeights, threshold float64) int64 {
	thr := float32(threshold)
	var normal, reduce CellMask
	if w != nil {
		normal, reduce = n.cellMask(&w.Normal, thr), n.cellMask(&w.Reduce, thr)
	} else {
		normal, reduce = n.cellMask(&CellWeights{}, thr), n.cellMask(&CellWeights{}, thr)
	}
	total := numelOf(n.stemW) + numelOf(n.stemB.Params()...) + numelOf(n.linW, n.linB)
	for _, cell := range n.cells {
		total += numelOf(cell.pre0.Params()...) + numelOf(cell.pre1.Params()...)
		m := normal
		if cell.Reduction {
			m = reduce
		}
		for i, row := range cell.nodes {
			for j, e := range row {
				for k, op := range e.ops {
					if m.Active(i, j, k) {
						total += numelOf(op.Params()...)
					}
				}
			}
		}
	}
	return total / n.Reg.Tasks() // every weight holds each task's copy
}

func numelOf(ts ...*torch.Tensor) int64 {
	var n int64
	for _, t := range ts {
		n += t.Numel()
	}
	return n
}

// PruneAlphas prunes the meta-model in place: every op alpha and pair alpha whose weight
// softmax(alpha / temp) (row by row) is at or below float32(threshold) is set to
// PrunedAlpha, so later softmaxes give it weight 0 and Forward skips it. The largest entry
// of each row is always kept, so that a node keeps at least one op per input and one pair
// even when threshold >= 1/len(row). Pruning is idempotent. It is meant for the softmax
// and Gumbel-softmax normalisers; relu_softmax treats every negative logit as 0.
func (n *SearchNet) PruneAlphas(threshold float64, temp float64) error {
	if temp <= 0 {
		return fmt.Errorf("prune alphas: temperature must be > 0, got %g", temp)
	}
	s := torch.NewScope()
	defer s.Close()
	thr := float32(threshold)
	return torch.NoGrad(func() error {
		w, err := n.Normalize(s, Softmax, temp)
		if err != nil {
			return fmt.Errorf("prune alphas: %w", err)
		}
		K := len(n.Cfg.Primitives)
		prune := func(a *torch.Tensor, weights []float32, rowLen int) error {
			vals, err := a.Float32s()
			if err != nil {
				return err
			}
			if len(vals) != len(weights) {
				return fmt.Errorf("prune alphas: %d alphas, %d weights", len(vals), len(weights))
			}
			changed := false
			for r := 0; r+rowLen <= len(vals); r += rowLen {
				best := r
				for q := r; q < r+rowLen; q++ {
					if weights[q] > weights[best] {
						best = q
					}
				}
				for q := r; q < r+rowLen; q++ {
					if q != best && weights[q] <= thr && vals[q] != PrunedAlpha {
						vals[q] = PrunedAlpha
						changed = true
					}
				}
			}
			if !changed {
				return nil
			}
			return a.Copy_(s.FromFloat32(vals, a.MustShape(), torch.CPU))
		}
		for _, c := range []struct {
			ops, pairs []*torch.Tensor
			cw         *CellWeights
		}{{n.AlphaNormal, n.AlphaPwNormal, &w.Normal}, {n.AlphaReduce, n.AlphaPwReduce, &w.Reduce}} {
			for i, a := range c.ops {
				if err := prune(a, c.cw.HostOps[i], K); err != nil {
					return err
				}
			}
			for i, a := range c.pairs {
				if err := prune(a, c.cw.HostPairs[i], len(c.cw.HostPairs[i])); err != nil {
					return err
				}
			}
		}
		return s.Err()
	})
}

// Discrete builds the discrete network of g with the search network's geometry (input
// channels, classes, channels, layers, reductions, stem multiplier, feature scale rate)
// and non-affine cell batch norms like the search cells, in scope s on the search
// network's device, and copies into it the search network's weights and batch-norm
// buffers: the stem, preprocessing and classifier as they are, and for edge e of node i,
// (op, input j), the weights of primitive op on the search network's edge from input j
// into node i. Evaluated with the alphas that keep exactly g's ops and pairs at weight 1
// (all others pruned), the one-shot network then computes the same logits as the result.
//
// Every op of g must be one of the search network's primitives, g may have at most as
// many nodes as the search cells, and the cell outputs must have the same width (concat
// lengths equal to the search network's node count); errors name the offending op, node
// or key.
func (n *SearchNet) Discrete(s *torch.Scope, g genotype.Genotype) (*DiscreteNet, error) {
	if err := g.Validate(n.Cfg.Primitives); err != nil {
		return nil, fmt.Errorf("discrete from search network: %w", err)
	}
	if nn, nr := g.Nodes(); nn > n.Cfg.Nodes || nr > n.Cfg.Nodes {
		return nil, fmt.Errorf("discrete from search network: genotype has %d normal and %d reduce nodes, the search cells %d", nn, nr, n.Cfg.Nodes)
	}
	cfg := DiscreteConfig{InChannels: n.Cfg.InChannels, Classes: n.Cfg.Classes, Channels: n.Cfg.Channels, Layers: n.Cfg.Layers,
		Reductions: append([]int(nil), n.Cfg.Reductions...), StemMultiplier: n.Cfg.StemMultiplier,
		FeatureScaleRate: n.Cfg.FeatureScaleRate, Genotype: g.Clone(), Affine: false}
	d, err := NewDiscreteNet(s, n.Reg.Device(), cfg)
	if err != nil {
		return nil, fmt.Errorf("discrete from search network: %w", err)
	}
	for _, e := range d.Reg.Entries() {
		src, err := n.searchKeyOf(e.Name, d)
		if err != nil {
			return nil, fmt.Errorf("discrete from search network: %w", err)
		}
		se, ok := n.Reg.Lookup(src)
		if !ok {
			return nil, fmt.Errorf("discrete from search network: key %q has no source %q in the search network", e.Name, src)
		}
		if !slices.Equal(e.Tensor.MustShape(), se.Tensor.MustShape()) {
			return nil, fmt.Errorf("discrete from search network: key %q has shape %v, its source %q %v (do the concat lengths match the search network's %d nodes?)",
				e.Name, e.Tensor.MustShape(), src, se.Tensor.MustShape(), n.Cfg.Nodes)
		}
		if err := e.Tensor.Copy_(se.Tensor); err != nil {
			return nil, fmt.Errorf("discrete from search network: key %q: %w", e.Name, err)
		}
		if e.bn != nil && se.bn != nil {
			e.bn.count = se.bn.count
		}
	}
	return d, nil
}

// searchKeyOf maps a key of d (the discrete network of a genotype over n's primitives) to
// the search network's key holding the same tensor.
func (n *SearchNet) searchKeyOf(name string, d *DiscreteNet) (string, error) {
	var c, i, e int
	var rest string
	// cells.{c}.dag.{i}.{e}.0.<op keys>
	if k, _ := fmt.Sscanf(name, "cells.%d.dag.%d.%d.%s", &c, &i, &e, &rest); k == 4 {
		if c >= len(d.cells) {
			return "", fmt.Errorf("key %q: no cell %d", name, c)
		}
		gene := d.Cfg.Genotype.Normal
		if d.cells[c].Reduction {
			gene = d.Cfg.Genotype.Reduce
		}
		if i >= len(gene) || e >= len(gene[i]) {
			return "", fmt.Errorf("key %q: no such genotype edge", name)
		}
		ed := gene[i][e]
		k, err := genotype.OpIndex(ed.Op, n.Cfg.Primitives)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("net.cells.%d.dag.%d.%d._ops.%d.%s", c, i, ed.Input, k, rest), nil
	}
	return "net." + name, nil
}
