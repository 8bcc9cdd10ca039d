package cells

import (
	"errors"
	"fmt"
	"slices"

	"github.com/metanas-go/metanas/cells/genotype"
	"github.com/metanas-go/metanas/torch"
)

// SearchConfig describes a one-shot network.
type SearchConfig struct {
	InChannels       int      // 1 for Omniglot, 3 for MiniImagenet
	Classes          int      // N ways
	Channels         int      // C
	Layers           int      // number of cells
	Nodes            int      // intermediate nodes per cell
	Reductions       []int    // indices of reduction cells
	StemMultiplier   int      // stem outputs StemMultiplier*C channels (3)
	FeatureScaleRate int      // channel multiplier at each reduction (1 keeps C)
	Primitives       []string // candidate ops, in alpha column order
	Pairwise         bool     // pairwise input weights (MetaNAS) or the plain DARTS sum
	AlphaInitStd     float64  // alphas start as AlphaInitStd * N(0,1) (1e-3)
	// Tasks > 1 builds a batched network that trains that many tasks at once: every
	// weight, alpha and running statistic holds the tasks' copies stacked along its first
	// dimension, inputs are [N, Tasks*InChannels, H, W] and logits [Tasks, N, Classes].
	// Forward passes need a Ctx with the same Tasks.
	Tasks int
}

// DefaultSearchConfig is the reference's og_metanas network for the given ways.
func DefaultSearchConfig(classes int) SearchConfig {
	return SearchConfig{InChannels: 1, Classes: classes, Channels: 28, Layers: 4, Nodes: 3, Reductions: []int{1, 3},
		StemMultiplier: 3, FeatureScaleRate: 1, Primitives: genotype.FewShot, Pairwise: true, AlphaInitStd: 1e-3}
}

// Validate reports the first invalid field by name.
func (c SearchConfig) Validate() error {
	if err := validateNet(c.InChannels, c.Classes, c.Channels, c.Layers, c.StemMultiplier, c.FeatureScaleRate, c.Reductions); err != nil {
		return err
	}
	switch {
	case c.Channels%2 != 0:
		return fmt.Errorf("channels must be even (factorized reduce halves them), got %d", c.Channels)
	case c.Nodes <= 0:
		return fmt.Errorf("nodes must be > 0, got %d", c.Nodes)
	case len(c.Primitives) == 0:
		return errors.New("primitives: empty set")
	case c.Tasks < 0:
		return fmt.Errorf("tasks must be >= 0, got %d", c.Tasks)
	}
	for _, p := range c.Primitives {
		if err := genotype.ValidateOp(p, genotype.KnownOps()); err != nil {
			return fmt.Errorf("primitives: %w", err)
		}
	}
	return nil
}

// validateNet checks the fields that search and discrete networks share, naming the first
// invalid one.
func validateNet(in, classes, channels, layers, stem, scale int, reductions []int) error {
	switch {
	case in <= 0:
		return fmt.Errorf("in_channels must be > 0, got %d", in)
	case classes < 1:
		return fmt.Errorf("classes must be >= 1, got %d", classes)
	case channels <= 0:
		return fmt.Errorf("channels must be > 0, got %d", channels)
	case layers <= 0:
		return fmt.Errorf("layers must be > 0, got %d", layers)
	case stem <= 0:
		return fmt.Errorf("stem_multiplier must be > 0, got %d", stem)
	case scale <= 0:
		return fmt.Errorf("feature_scale_rate must be > 0, got %d", scale)
	}
	for _, r := range reductions {
		if r < 0 || r >= layers {
			return fmt.Errorf("reductions: cell index %d outside [0, %d)", r, layers)
		}
	}
	return nil
}

func (c SearchConfig) isReduction(i int) bool { return slices.Contains(c.Reductions, i) }

// edge is the MixedOp of one cell input of one node: one op per primitive.
type edge struct {
	ops []Op
}

// SearchCell is a cell of the one-shot network.
type SearchCell struct {
	Reduction bool
	cellPreproc
	nodes [][]edge    // nodes[i][j]: edge from input j into node i
	norms []*nodeNorm // node i's grouped batch norm (NodeBatchNorm), nil per node or for all
	// groups[i][k] runs op k of the edges of the states node i reads first at once
	// (StateFusion); nil per node, per op or for all.
	groups [][]*stateGroup
	stride func(j int) int64
	out    int64 // output channels of one node
}

func newSearchCell(r *Registry, cfg SearchConfig, cpp, cp, c int64, reductionPrev, reduction bool) (*SearchCell, error) {
	pre, err := newCellPreproc(r, cpp, cp, c, reductionPrev, false)
	if err != nil {
		return nil, err
	}
	cell := &SearchCell{Reduction: reduction, cellPreproc: pre, out: c}
	dag := r.Sub("dag")
	for i := 0; i < cfg.Nodes; i++ {
		ni := dag.Sub(fmt.Sprint(i))
		var row []edge
		for j := 0; j < i+2; j++ {
			stride := int64(1)
			if reduction && j < 2 {
				stride = 2
			}
			ej := ni.Sub(fmt.Sprint(j)).Sub("_ops")
			var e edge
			for k, name := range cfg.Primitives {
				op, err := NewOp(ej.Sub(fmt.Sprint(k)).Sub("0"), name, c, stride, false)
				if err != nil {
					return nil, fmt.Errorf("cell node %d input %d: %w", i, j, err)
				}
				e.ops = append(e.ops, op)
			}
			row = append(row, e)
		}
		cell.nodes = append(cell.nodes, row)
	}
	return cell, nil
}

// SearchNet is the one-shot network with its architecture parameters.
type SearchNet struct {
	Cfg   SearchConfig
	Reg   *Registry
	stemW *torch.Tensor
	stemB *BatchNorm
	cells []*SearchCell
	linW  *torch.Tensor
	linB  *torch.Tensor

	// AlphaNormal[i] is node i's [(i+2) x ops] op alphas of normal cells; AlphaReduce the
	// same for reduction cells; AlphaPwNormal/AlphaPwReduce the pairwise alphas
	// [binom(i+2,2)] (nil without pairwise weights).
	AlphaNormal, AlphaReduce     []*torch.Tensor
	AlphaPwNormal, AlphaPwReduce []*torch.Tensor
}

// NewSearchNet builds the one-shot network in scope s on dev, with PyTorch's default
// initialisation drawn from LibTorch's generator (seed it with torch.ManualSeed).
func NewSearchNet(s *torch.Scope, dev torch.Device, cfg SearchConfig) (*SearchNet, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("search network: %w", err)
	}
	if cfg.AlphaInitStd == 0 {
		cfg.AlphaInitStd = 1e-3
	}
	r := NewTaskRegistry(s, dev, int64(cfg.Tasks))
	n := &SearchNet{Cfg: cfg, Reg: r}
	nops := int64(len(cfg.Primitives))
	for i := 0; i < cfg.Nodes; i++ {
		n.AlphaNormal = append(n.AlphaNormal, r.Alpha(fmt.Sprintf("alpha_normal.%d", i), []int64{int64(i + 2), nops}, cfg.AlphaInitStd))
	}
	for i := 0; i < cfg.Nodes; i++ {
		n.AlphaReduce = append(n.AlphaReduce, r.Alpha(fmt.Sprintf("alpha_reduce.%d", i), []int64{int64(i + 2), nops}, cfg.AlphaInitStd))
	}
	if cfg.Pairwise {
		for i := 0; i < cfg.Nodes; i++ {
			np := int64(genotype.NumPairs(i + 2))
			n.AlphaPwNormal = append(n.AlphaPwNormal, r.Alpha(fmt.Sprintf("alpha_pw_normal.%d", i), []int64{np}, cfg.AlphaInitStd))
		}
		for i := 0; i < cfg.Nodes; i++ {
			np := int64(genotype.NumPairs(i + 2))
			n.AlphaPwReduce = append(n.AlphaPwReduce, r.Alpha(fmt.Sprintf("alpha_pw_reduce.%d", i), []int64{np}, cfg.AlphaInitStd))
		}
	}
	net := r.Sub("net")
	c := int64(cfg.Channels)
	cstem := int64(cfg.StemMultiplier) * c
	n.stemW, n.stemB = newStem(net.Sub("stem"), int64(cfg.InChannels), cstem)
	cpp, cp, cur := cstem, cstem, c
	redPrev := false
	cellsR := net.Sub("cells")
	for i := 0; i < cfg.Layers; i++ {
		red := cfg.isReduction(i)
		if red {
			cur *= int64(cfg.FeatureScaleRate)
		}
		cell, err := newSearchCell(cellsR.Sub(fmt.Sprint(i)), cfg, cpp, cp, cur, redPrev, red)
		if err != nil {
			return nil, fmt.Errorf("search network: cell %d: %w", i, err)
		}
		n.cells = append(n.cells, cell)
		redPrev = red
		cpp, cp = cp, cur*int64(cfg.Nodes)
	}
	n.linW, n.linB = net.LinearWeights("linear", int64(cfg.Classes), cp)
	if err := r.Err(); err != nil {
		return nil, fmt.Errorf("search network: %w", err)
	}
	if cfg.Tasks > 1 && NodeBatchNorm(dev) {
		if err := groupNodeNorms(r, n.cells, int64(cfg.Tasks)); err != nil {
			return nil, fmt.Errorf("search network: %w", err)
		}
	}
	if StateFusion(dev) {
		if err := buildGroups(r, n.cells); err != nil {
			return nil, fmt.Errorf("search network: %w", err)
		}
	}
	return n, nil
}

// Weights returns the network weights (no alphas), in state_dict order.
func (n *SearchNet) Weights() []*torch.Tensor { return n.Reg.Select(Weight) }

// Alphas returns all architecture parameters, in state_dict order.
func (n *SearchNet) Alphas() []*torch.Tensor { return n.Reg.Select(Alpha) }

// Buffers returns the batch-norm buffers, in state_dict order.
func (n *SearchNet) Buffers() []*torch.Tensor { return n.Reg.Select(Buffer) }

// cellAlphas returns the op and pair alphas of a cell type.
func (n *SearchNet) cellAlphas(reduce bool) (ops, pairs []*torch.Tensor) {
	if reduce {
		return n.AlphaReduce, n.AlphaPwReduce
	}
	return n.AlphaNormal, n.AlphaPwNormal
}

// Forward computes logits for x with the architecture weights w (see Normalize), skipping
// ops and input pairs whose weight is at or below threshold.
func (n *SearchNet) Forward(c *Ctx, x *torch.Tensor, w *ArchWeights, threshold float64) *torch.Tensor {
	return n.forward(c, x, w, threshold, nil)
}

// ForwardCells is Forward that also returns every cell's output (for parity checks).
func (n *SearchNet) ForwardCells(c *Ctx, x *torch.Tensor, w *ArchWeights, threshold float64) (*torch.Tensor, []*torch.Tensor) {
	var outs []*torch.Tensor
	y := n.forward(c, x, w, threshold, func(t *torch.Tensor) { outs = append(outs, t) })
	return y, outs
}

func (n *SearchNet) forward(c *Ctx, x *torch.Tensor, w *ArchWeights, threshold float64, cellOut func(*torch.Tensor)) *torch.Tensor {
	s := c.S
	shared := *c
	shared.coefs = make(map[coefKey]*torch.Tensor)
	c = &shared
	h := stemForward(c, x, n.stemW, n.stemB)
	s0, s1 := h, h
	// Where the cells fan their states out, the stem's and cells' outputs go to the later
	// cells' preprocessing (which begins with a ReLU) through ReLU fans: r0 and r1 (nil:
	// the preprocessing applies its own ReLUs).
	fans := fansOut(c, h)
	var r0, r1 *fan
	if fans {
		r0 = newReLUFan(c, h, min(3, len(n.cells)+1)) // cell 0 reads it twice, cell 1 once
		r1 = r0
	}
	for i, cell := range n.cells {
		cw := &w.Normal
		if cell.Reduction {
			cw = &w.Reduce
		}
		var next *torch.Tensor
		if r0 != nil {
			next = cell.run(c, cell.preprocessReLU(c, r0.take(), r1.take()), cw, float32(threshold))
		} else {
			next = cell.forward(c, s0, s1, cw, float32(threshold))
		}
		if cellOut != nil {
			cellOut(next)
		} else if s0 != s1 {
			// No later cell reads the output two cells back, and autograd does not keep it
			// (the cells' preprocessing begins with a ReLU, which keeps its own output, as
			// does a ReLU fan).
			s0.Free()
		}
		var rnext *fan
		if fans {
			if r0 != r1 {
				r0.free() // its last reader was this cell
			}
			// Read by the next two cells, where they exist.
			if readers := min(2, len(n.cells)-1-i); readers > 0 {
				rnext = newReLUFan(c, next, readers)
			}
		}
		s0, s1 = s1, next
		r0, r1 = r1, rnext
	}
	if r0 != nil {
		r0.free() // the last cell read it
	}
	if s.Err() != nil {
		return s1 // failed (the scope holds the error): there is no shape to read below
	}
	y := s.AdaptiveAvgPool2d(s1, 1, 1)
	if t := c.tasks(); t > 1 {
		// Per task: [T, N, F] x [T, F, classes] + [T, 1, classes].
		k := int64(n.Cfg.Classes)
		y = s.Permute(s.Reshape(y, -1, t, s1.MustShape()[1]/t), 1, 0, 2)
		wt := s.Permute(s.Reshape(n.linW, t, k, -1), 0, 2, 1)
		return s.Add(s.Matmul(y, wt), s.Reshape(n.linB, t, 1, k))
	}
	y = s.Flatten(y, 1, -1)
	return s.Linear(y, n.linW, n.linB)
}

func (cell *SearchCell) forward(c *Ctx, s0, s1 *torch.Tensor, w *CellWeights, thr float32) *torch.Tensor {
	return cell.run(c, cell.preprocess(c, s0, s1), w, thr)
}

// run is the cell from its preprocessed inputs states.
func (cell *SearchCell) run(c *Ctx, states []*torch.Tensor, w *CellWeights, thr float32) *torch.Tensor {
	s := c.S
	T := c.tasks()
	shared := newStateCache(len(cell.nodes), fansOut(c, states[0]))
	shared.setState(c, 0, states[0])
	shared.setState(c, 1, states[1])
	onDevice := w.HostOps == nil // NormalizeOnDevice: every op runs, the device prunes
	K := len(cell.nodes[0][0].ops)
	// hostPairs returns node i's host copy of its pair weights (nil: none).
	hostPairs := func(i int) []float32 {
		if w.Pairs == nil || w.HostPairs == nil {
			return nil
		}
		return w.HostPairs[i]
	}
	// active[i][j*K+k]: some task needs op k on input j of node i: above thr, on an input
	// of a pair above thr (nil: every op runs).
	active := make([][]bool, len(cell.nodes))
	for i := range cell.nodes {
		if !onDevice {
			active[i] = activeTasks(w.HostOps[i], hostPairs(i), int(T), i+2, K, thr)
		}
	}
	keep := func(i, j, k int) bool { return active[i] == nil || active[i][j*K+k] }
	var fused *fusedOutputs
	if cell.groups != nil && torch.BranchStreams() < 2 {
		fused = &fusedOutputs{nodes: len(cell.nodes), out: make([][][]*torch.Tensor, len(cell.groups)),
			whole: make([][]bool, len(cell.groups))}
	}
	for i, row := range cell.nodes {
		nIn := i + 2
		var wp *torch.Tensor
		if w.Pairs != nil {
			wp = w.Pairs[i]
		}
		var norm *nodeNorm
		if cell.norms != nil && T > 1 {
			norm = cell.norms[i]
		}
		if fused != nil {
			cell.runGroups(c, fused, shared, i, keep)
		}
		o := nodeOps(c, row, states, shared, norm, fused, i, func(j, k int) bool { return keep(i, j, k) })
		var node *torch.Tensor
		switch {
		case len(o.outs)+len(o.normed) == 0:
			node = cell.zeros(c, states[0], states[1])
		case T > 1 || onDevice:
			// Each task zeroes what it prunes itself, so every pair takes part.
			var inc []float32
			if wp != nil {
				inc = incidence(nIn, func(int) bool { return true })
			}
			drop := make([]bool, len(o.normed), len(o.normed)+len(o.drop)) // every member has drop-path
			for k := range drop {
				drop[k] = true
			}
			drop = append(drop, o.drop...)
			coefs := c.nodeCoefs(wp, w.Ops[i], inc, nIn, slices.Concat(o.normIdx, o.idx), thr, T)
			if norm != nil && norm.fuses(c, o.normed) {
				node = norm.normSum(c, o.normed, o.sel, o.outs, coefs, drop)
				break
			}
			var stacked, stats *torch.Tensor
			if len(o.normed) > 0 {
				stacked, stats = norm.normalize(c, o.normed, o.sel)
			}
			node = s.MixedTasksCoefs(stacked, stats, o.outs, coefs, drop, c.dropProb(), c.Gen, T)
			if stacked != nil {
				// Autograd keeps what the backward passes read: the normalised members only
				// where the node's weights need gradients (not in warm-up).
				stacked.Free()
			}
		default:
			var inc []float32
			if wp != nil {
				hp := hostPairs(i)
				inc = incidence(nIn, func(p int) bool { return hp[p] > thr })
			}
			node = s.MixedNode(o.outs, wp, w.Ops[i], inc, nIn, o.idx, o.drop, c.dropProb(), c.Gen)
		}
		o.free()
		states = append(states, node)
		shared.setState(c, len(states)-1, node)
	}
	shared.freePools()
	nodes := make([]*torch.Tensor, len(cell.nodes))
	for i := range nodes {
		nodes[i] = shared.state(i + 2)
	}
	out := c.catChannels(nodes)
	shared.freeFans()
	// The preprocessed inputs and the nodes: later cells read only out, and what this
	// cell's backward pass reads autograd keeps.
	for _, st := range states {
		st.Free()
	}
	return out
}

// nodeOutputs are the outputs of a node's ops: outs as the node sums them, with their op
// columns j*K+k and drop-path flags; normed the pre-norm outputs of the node's nodeNorm
// members that ran (sel: their member indices, rising), with their columns (none is an
// identity: all have drop-path).
type nodeOutputs struct {
	outs, normed      []*torch.Tensor
	idx, normIdx, sel []int64
	drop              []bool
	// own are the tensors made for this node alone (op outputs, their inputs' aliases on
	// branch streams; not the states, the shared ReLUs and pools, or an identity's output):
	// free once the node is summed.
	own []*torch.Tensor
}

// free releases the node's own tensors: the node sum and batch norm copy their inputs, and
// autograd keeps what their backward passes read, so nothing reads the handles again, and
// their memory (an activation per op) goes back before the next node instead of at the
// end of the step.
func (o *nodeOutputs) free() {
	for _, t := range o.own {
		t.Free()
	}
	o.own = nil
}

// stateCache holds what the ops of a cell compute from its states alone, once per state:
// the ReLU (for the ops that begin with one) and the 3x3 max and average pools (every node
// that reads a state pools it alike: the same stride, no weights). Computed once, their
// gradients add up before one backward pass. Where the cell fans its states out (fansOut),
// each reader of a state or a pool (the ReLU, the pools, each node, the cell's output) reads
// its own tensor of one fan (fan), whose backward pass sums their gradients at once.
type stateCache struct {
	nodes  int
	fans   bool
	states []*fan
	relu   []*torch.Tensor
	pools  [][2]*fan // [max, average]
}

// fan hands a tensor's readers their own tensors of one RepeatStatesFan, in turn; past the
// last, or without a fan, the tensor itself (autograd then adds that reader's gradient).
type fan struct {
	x    *torch.Tensor
	ts   []*torch.Tensor
	next int
}

// newFan returns x's fan for readers readers (none where on is false or readers < 2).
func newFan(c *Ctx, x *torch.Tensor, readers int, on bool) *fan {
	f := &fan{x: x}
	if on && readers > 1 {
		f.ts = c.S.RepeatStatesFan([]*torch.Tensor{x}, 1, int64(readers), false)
		stateFans.Add(1)
	}
	return f
}

// newReLUFan returns the fan of x's ReLU for readers readers (RepeatStatesFan with relu):
// each takes its own tensor of one ReLU, whose backward pass sums their gradients through
// the ReLU at once and reads the ReLU for its mask, not x. Every reader must take one.
func newReLUFan(c *Ctx, x *torch.Tensor, readers int) *fan {
	reluFans.Add(1)
	return &fan{ts: c.S.RepeatStatesFan([]*torch.Tensor{x}, 1, int64(readers), true)}
}

// take returns the next reader's tensor.
func (f *fan) take() *torch.Tensor {
	if f.next < len(f.ts) {
		f.next++
		return f.ts[f.next-1]
	}
	return f.x
}

// free releases the readers' tensors (not x).
func (f *fan) free() {
	for _, t := range f.ts {
		t.Free()
	}
	f.ts = nil
}

func newStateCache(nodes int, fans bool) *stateCache {
	return &stateCache{nodes: nodes, fans: fans, states: make([]*fan, nodes+2), relu: make([]*torch.Tensor, nodes+2),
		pools: make([][2]*fan, nodes+2)}
}

// nodeReaders returns how many nodes read state j: every node reads the cell's inputs
// (0 and 1), and node i's output (state i+2) the nodes after it.
func (sc *stateCache) nodeReaders(j int) int {
	if j > sc.nodes {
		return 0
	}
	return sc.nodes - firstReader(j)
}

// setState makes x state j, fanned out to its readers: the ReLU, the two pools and each
// node that reads it, the cell's output for a node's, and one more for a ReLU of its own
// beside a group's (runGroups), where some edge's op does not run in the group.
func (sc *stateCache) setState(c *Ctx, j int, x *torch.Tensor) {
	readers := 0
	if r := sc.nodeReaders(j); r > 0 {
		readers = 4 + r
	}
	if j >= 2 {
		readers++
	}
	sc.states[j] = newFan(c, x, readers, sc.fans)
}

// state returns state j for one more reader.
func (sc *stateCache) state(j int) *torch.Tensor { return sc.states[j].take() }

// pool returns state j's pool of kind k (0 max, 1 average) for one more reader, or nil
// where none was computed.
func (sc *stateCache) pool(j, k int) *torch.Tensor {
	if sc.pools[j][k] == nil {
		return nil
	}
	return sc.pools[j][k].take()
}

// freePools releases the cell's handles of the pools once its nodes have read them: a
// node's batch norm or sum copies them, and the pools' own backward passes read their
// inputs (and indices), not their outputs, so with the node batch norm nothing else holds
// them (without it, each op's batch norm keeps its pool as input). The ReLUs stay cached
// for the cell's nodes; autograd keeps them anyway.
func (sc *stateCache) freePools() {
	for j := range sc.pools {
		for k, f := range sc.pools[j] {
			if f != nil {
				f.free()
				f.x.Free()
			}
			sc.pools[j][k] = nil
		}
	}
}

// freeFans releases the states' readers' tensors (not the states).
func (sc *stateCache) freeFans() {
	for _, f := range sc.states {
		if f != nil {
			f.free()
		}
	}
}

// prepare computes what op, kept on input state j, reads from the cache.
func (sc *stateCache) prepare(c *Ctx, op Op, j int) {
	if _, ok := op.(reluInput); ok && sc.relu[j] == nil {
		sc.relu[j] = c.S.Relu(sc.state(j))
	}
	if p, ok := op.(*poolBN); ok {
		if k := p.kind(); sc.pools[j][k] == nil {
			sc.pools[j][k] = newFan(c, p.forwardPreNorm(c, sc.state(j), nil), sc.nodeReaders(j), sc.fans)
		}
	}
}

// nodeOps runs the ops of a node's edges whose column (input j, op k) keep selects, with the
// ReLUs and pools of the states shared through the cell's cache, which it fills first. The
// members of norm (nil: none) stop before their batch norm, which the node applies to them
// all at once. Ops that ran in their state's group (fused, for node `node`; nil: none) take
// their output from there, up to their batch norm. With branch streams on (CUDA,
// METANAS_BRANCH_STREAMS) the ops are dealt out to the branches in turn after what they
// read from the cache is queued on the trunk, and the trunk waits for them all before the
// node sum.
func nodeOps(c *Ctx, row []edge, states []*torch.Tensor, shared *stateCache, norm *nodeNorm, fused *fusedOutputs, node int, keep func(j, k int) bool) nodeOutputs {
	K := len(row[0].ops)
	for j := range row {
		for k, op := range row[j].ops {
			if keep(j, k) && !fused.ran(node, j, k) {
				shared.prepare(c, op, j)
			}
		}
	}
	var o nodeOutputs
	ins := make([]*torch.Tensor, len(row)) // the node's states, taken once each
	branches := c.forkBranches(states[0])
	n := 0
	for j := range row {
		for k, op := range row[j].ops {
			if !keep(j, k) {
				continue
			}
			col := int64(j*K + k)
			var pre *torch.Tensor // the op's output before its batch norm, for the pools
			if p, ok := op.(*poolBN); ok {
				pre = shared.pool(j, p.kind())
			}
			normed := norm != nil && norm.member[col] >= 0
			if y, whole := fused.take(node, j, k); y != nil {
				// The op ran in its state's group (fused holds nothing with branch streams):
				// whole, or up to its last batch norm where the cell has node batch norms,
				// whose members all grouped ops are (buildGroups).
				if !whole {
					o.normed = append(o.normed, y)
					o.normIdx = append(o.normIdx, col)
					o.sel = append(o.sel, int64(norm.member[col]))
					o.own = append(o.own, y)
					continue
				}
				flat := c.S.Flatten(y, 1, 2) // [N, tasks*C, H, W]
				o.outs = append(o.outs, flat)
				o.own = append(o.own, y, flat)
				o.idx = append(o.idx, col)
				o.drop = append(o.drop, true)
				continue
			}
			if normed && pre != nil {
				// A pool's output joins the node's batch norm as it is: no op to run.
				o.normed = append(o.normed, pre)
				o.normIdx = append(o.normIdx, col)
				o.sel = append(o.sel, int64(norm.member[col]))
				continue
			}
			// What the op reads, as inputs of the branch it runs on.
			if ins[j] == nil {
				ins[j] = shared.state(j)
			}
			in, relu := ins[j], shared.relu[j]
			if branches > 0 {
				c.S.UseBranch(n)
				in, relu, pre = o.branchInput(c, in), o.branchInput(c, relu), o.branchInput(c, pre)
			}
			n++
			if normed {
				y := op.(tailNorm).forwardPreNorm(c, in, relu)
				o.normed = append(o.normed, y)
				o.normIdx = append(o.normIdx, col)
				o.sel = append(o.sel, int64(norm.member[col]))
				o.own = append(o.own, y)
				continue
			}
			var y *torch.Tensor
			switch r, ok := op.(reluInput); {
			case pre != nil:
				y = op.(tailNorm).tailBN().Forward(c, pre)
			case ok:
				y = r.ForwardReLU(c, relu)
			default:
				y = op.Forward(c, in)
			}
			o.outs = append(o.outs, y)
			if !op.Identity() {
				o.own = append(o.own, y)
			}
			o.idx = append(o.idx, col)
			o.drop = append(o.drop, !op.Identity())
		}
	}
	if branches > 0 {
		c.joinBranches(slices.Concat(o.outs, o.normed))
	}
	return o
}

// branchInput is x (nil stays nil) as read on the current branch stream
// (Scope.BranchInput), a handle of the node's own.
func (o *nodeOutputs) branchInput(c *Ctx, x *torch.Tensor) *torch.Tensor {
	if x == nil {
		return nil
	}
	a := c.S.BranchInput(x)
	o.own = append(o.own, a)
	return a
}

// zeros returns a zero node (every op and pair pruned) of the cell's output geometry.
func (cell *SearchCell) zeros(c *Ctx, p0, p1 *torch.Tensor) *torch.Tensor {
	sh := p1.MustShape()
	if len(sh) != 4 {
		return c.S.MulScalar(p1, 0)
	}
	if cell.Reduction {
		sh[2], sh[3] = (sh[2]+1)/2, (sh[3]+1)/2
	}
	return c.S.Zeros([]int64{sh[0], cell.out * c.tasks(), sh[2], sh[3]}, deviceOf(p1))
}
