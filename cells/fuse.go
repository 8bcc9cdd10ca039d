package cells

import (
	"fmt"
	"reflect"
	"sync/atomic"

	"github.com/metanas-go/metanas/torch"
)

// stateFusionSetting is METANAS_STATE_FUSION (onOffSetting).
var stateFusionSetting = onOffSetting("METANAS_STATE_FUSION")

// StateFusion reports whether search networks on dev run each convolutional op type of a
// cell once for all the edges of the states a node reads first (see stateGroup): by default
// on CUDA only, where a replayed step's time follows its kernel count (on the CPU the shim's
// ungrouped 1x5 and 5x1 kernels would give way to LibTorch's grouped convolution);
// METANAS_STATE_FUSION=1 or =0 sets it for both.
func StateFusion(dev torch.Device) bool { return onForCUDA(stateFusionSetting, dev) }

// stateGroup is op k of the R edges that read the states that node i reads first (node i
// reads state j when j < i+2: the first node both of the cell's inputs, which feed every
// node, and node i > 0 the output of node i-1, which feeds the nodes from i on), run as one
// op of R times the tasks when node i's turn comes. The edges' weights are concatenated
// along their first dimension edge by edge (each edge's weight stacks its tasks' copies the
// same way), so the concatenation is the weight of a network of R*tasks tasks in
// edge-major order, and the states' ReLUs, each repeated once per reader along the
// channels, that network's input: one chain of kernels per op type for all the edges of
// the states node i reads first instead of one per edge, and one reduction of each
// repeated ReLU's gradient instead of an addition per reader. Each edge's output is a view
// of the group's. The gradients of the concatenated weights come back as contiguous slices
// that become the edges' gradients as they are. sep_conv's middle batch norm runs once over
// all the edges' channels, and so do the ops' last batch norms where no node batch norm
// applies them (groupNorm).
type stateGroup struct {
	ops []Op // op k of each edge of groupEdges, in its order
	// mid is the batch norm over every edge's channels of sep_conv's middle one, tail that of
	// the ops' last ones where no node batch norm applies them (nil: none).
	mid, tail *groupNorm
}

// groupNorm is one batch norm without affine tensors over the channels of a group's edges:
// the running statistics of the edges' own batch norms (members) live side by side in the
// blocks mean and vars, [R*tasks*C], and each member holds views of its slice (as the
// registry does).
type groupNorm struct {
	members     []*BatchNorm
	mean, vars  *torch.Tensor
	eps, moment float64
}

// blockNorms moves the running statistics of the batch norms that get picks from ops into
// one groupNorm's blocks (the registry's entries become the views).
func blockNorms(r *Registry, ops []Op, get func(Op) *BatchNorm) (*groupNorm, error) {
	s := r.s
	g := &groupNorm{}
	var means, vars []*torch.Tensor
	for _, op := range ops {
		bn := get(op)
		if bn.Weight != nil {
			return nil, fmt.Errorf("an affine batch norm")
		}
		if len(g.members) > 0 && (bn.Eps != g.eps || bn.Momentum != g.moment) {
			return nil, fmt.Errorf("batch norms of different momentum or eps")
		}
		g.members = append(g.members, bn)
		g.eps, g.moment = bn.Eps, bn.Momentum
		means, vars = append(means, bn.RunMean), append(vars, bn.RunVar)
	}
	g.mean, g.vars = s.Detach(s.Cat(means, 0)), s.Detach(s.Cat(vars, 0))
	var off int64
	for _, bn := range g.members {
		n := bn.RunMean.Numel()
		mean, vars := s.Narrow(g.mean, 0, off, n), s.Narrow(g.vars, 0, off, n)
		off += n
		if err := s.Err(); err != nil {
			return nil, err
		}
		if !r.replace(bn.RunMean, mean) || !r.replace(bn.RunVar, vars) {
			return nil, fmt.Errorf("running statistics not registered")
		}
		bn.RunMean, bn.RunVar = mean, vars
	}
	return g, s.Err()
}

// forward applies the group's batch norm to x, [N, R*tasks*C, H, W], counting a batch for
// every member in training.
func (g *groupNorm) forward(c *Ctx, x *torch.Tensor) *torch.Tensor {
	if c.Train {
		for _, bn := range g.members {
			bn.count++
		}
	}
	return c.S.BatchNorm(x, nil, nil, g.mean, g.vars, c.Train, g.moment, g.eps)
}

// norm returns a BatchNorm that applies g (for an op's batch norm field).
func (g *groupNorm) norm() *BatchNorm {
	return &BatchNorm{RunMean: g.mean, RunVar: g.vars, Eps: g.eps, Momentum: g.moment}
}

// stateGroupRuns counts the groups run (for tests: a switch that silently did nothing
// would otherwise pass every comparison).
var stateGroupRuns atomic.Int64

// firstReader returns the first node that reads state j.
func firstReader(j int) int { return max(0, j-1) }

// groupStates returns the states that node i (of a cell of nodes nodes) reads first.
func firstStates(i int) []int {
	if i == 0 {
		return []int{0, 1}
	}
	return []int{i + 1}
}

// groupEdges returns the edges (node, state) of the states node i reads first, state by
// state, and each state's readers from node i on: the order of a group's edges.
func groupEdges(i, nodes int) [][2]int {
	var out [][2]int
	for _, j := range firstStates(i) {
		for r := i; r < nodes; r++ {
			out = append(out, [2]int{r, j})
		}
	}
	return out
}

// edgeIndex returns the index of edge (node, state j) in its group's edges.
func edgeIndex(node, j, nodes int) int {
	i := firstReader(j)
	return (j-firstStates(i)[0])*(nodes-i) + node - i
}

// fusable reports whether ops (op k of a group's edges) can run as a group: one
// convolutional op type (sep_conv, dil_conv or conv_3x3, conv_1x5_5x1, or skip_connect's
// FactorizedReduce at stride 2), without affine batch norms (search cells have none).
func fusable(ops []Op) bool {
	for _, op := range ops {
		var affine bool
		switch o := op.(type) {
		case *sepConv:
			affine = o.a.bn.Weight != nil || o.b.bn.Weight != nil
		case *dilConv:
			affine = o.bn.Weight != nil
		case *facConv:
			affine = o.bn.Weight != nil
		case *FactorizedReduce:
			affine = o.bn.Weight != nil
		default:
			return false
		}
		if affine || reflect.TypeOf(op) != reflect.TypeOf(ops[0]) {
			return false
		}
	}
	return true
}

// buildGroups gives every cell its state groups: for each node whose first-read states
// have edges (one edge's group runs only where the cell fans its states out: runGroups),
// and each op column that fusable accepts. The weights of a
// group's edges move to one storage per weight slot, and the running statistics of
// sep_conv's middle batch norms (and of the ops' last ones where no node batch norm applies
// them) into the group's blocks (the registry's entries become the new tensors).
func buildGroups(r *Registry, cells []*SearchCell) error {
	s := r.s
	for ci, cell := range cells {
		nodes := len(cell.nodes)
		K := len(cell.nodes[0][0].ops)
		cell.groups = make([][]*stateGroup, nodes)
		for i := range cell.groups {
			edges := groupEdges(i, nodes)
			if len(edges) == 0 {
				continue
			}
			cell.groups[i] = make([]*stateGroup, K)
			for k := 0; k < K; k++ {
				var ops []Op
				for _, e := range edges {
					ops = append(ops, cell.nodes[e[0]][e[1]].ops[k])
				}
				if !fusable(ops) {
					continue
				}
				g := &stateGroup{ops: ops}
				// Each weight slot's tensors move to one storage, edge after edge, where the
				// group reads them as one tensor without a copy (Scope.AdjacentCat).
				for _, slot := range weightSlots(ops[0]) {
					old := make([]*torch.Tensor, len(ops))
					for e, op := range ops {
						old[e] = *slot(op)
					}
					leaves := s.Adjacent(old)
					if err := s.Err(); err != nil {
						return fmt.Errorf("cell %d node %d's group: %w", ci, i, err)
					}
					for e, op := range ops {
						if !r.replace(old[e], leaves[e]) {
							return fmt.Errorf("cell %d node %d's group: a weight is not registered", ci, i)
						}
						*slot(op) = leaves[e]
					}
				}
				if _, ok := ops[0].(*sepConv); ok {
					var err error
					g.mid, err = blockNorms(r, ops, func(o Op) *BatchNorm { return o.(*sepConv).a.bn })
					if err != nil {
						return fmt.Errorf("cell %d node %d's group: middle batch norms: %w", ci, i, err)
					}
				}
				if cell.norms == nil {
					// No node batch norm takes the outputs: the group applies the edges'
					// own batch norms, at once.
					var err error
					g.tail, err = blockNorms(r, ops, func(o Op) *BatchNorm { return o.(tailNorm).tailBN() })
					if err != nil {
						return fmt.Errorf("cell %d node %d's group: batch norms: %w", ci, i, err)
					}
				}
				cell.groups[i][k] = g
			}
		}
	}
	return s.Err()
}

// weightSlots returns accessors of the weights of an op of op's type (a fusable one).
func weightSlots(op Op) []func(Op) **torch.Tensor {
	switch op.(type) {
	case *sepConv:
		return []func(Op) **torch.Tensor{
			func(o Op) **torch.Tensor { return &o.(*sepConv).a.dw },
			func(o Op) **torch.Tensor { return &o.(*sepConv).a.pw },
			func(o Op) **torch.Tensor { return &o.(*sepConv).b.dw },
			func(o Op) **torch.Tensor { return &o.(*sepConv).b.pw },
		}
	case *dilConv:
		return []func(Op) **torch.Tensor{
			func(o Op) **torch.Tensor { return &o.(*dilConv).dw },
			func(o Op) **torch.Tensor { return &o.(*dilConv).pw },
		}
	case *facConv:
		return []func(Op) **torch.Tensor{
			func(o Op) **torch.Tensor { return &o.(*facConv).w1 },
			func(o Op) **torch.Tensor { return &o.(*facConv).w2 },
		}
	case *FactorizedReduce:
		return []func(Op) **torch.Tensor{
			func(o Op) **torch.Tensor { return &o.(*FactorizedReduce).w1 },
			func(o Op) **torch.Tensor { return &o.(*FactorizedReduce).w2 },
		}
	}
	return nil
}

// catWeights concatenates the weights that get picks from each of ops along their first
// dimension: without a copy while they keep the storage buildGroups gave them.
func catWeights(c *Ctx, ops []Op, get func(Op) *torch.Tensor) *torch.Tensor {
	ws := make([]*torch.Tensor, len(ops))
	for e, op := range ops {
		ws[e] = get(op)
	}
	return c.S.AdjacentCat(ws)
}

// fusedDil is the dilConv of the group's ops (picked from each by get) with their weights
// concatenated and bn as its batch norm.
func fusedDil(c *Ctx, ops []Op, get func(Op) *dilConv, bn *BatchNorm) *dilConv {
	d := *get(ops[0])
	d.dw = catWeights(c, ops, func(op Op) *torch.Tensor { return get(op).dw })
	d.pw = catWeights(c, ops, func(op Op) *torch.Tensor { return get(op).pw })
	d.bn = bn
	return &d
}

// run applies the group's ops (up to their last batch norms where a node batch norm applies
// those) to rep, the states' ReLUs each repeated once per reader along the channels, and
// returns each edge's output as [N, tasks, C, H, W] (views made by one split, whose
// backward pass concatenates the edges' gradients in one copy; a node batch norm takes them
// so, and their gradients, slices of its stacked one, strided along the tasks, reach that
// concatenation without a copy each).
func (g *stateGroup) run(c *Ctx, rep *torch.Tensor) []*torch.Tensor {
	s := c.S
	R := int64(len(g.ops))
	fc := *c
	fc.Tasks = R * c.tasks()
	var y *torch.Tensor
	switch op := g.ops[0].(type) {
	case *sepConv:
		f := &sepConv{
			a: fusedDil(&fc, g.ops, func(o Op) *dilConv { return o.(*sepConv).a }, g.mid.norm()),
			b: fusedDil(&fc, g.ops, func(o Op) *dilConv { return o.(*sepConv).b }, nil),
		}
		y = f.forwardPreNorm(&fc, nil, rep)
		if c.Train {
			for _, bn := range g.mid.members {
				bn.count++
			}
		}
	case *dilConv:
		y = fusedDil(&fc, g.ops, func(o Op) *dilConv { return o.(*dilConv) }, nil).forwardPreNorm(&fc, nil, rep)
	case *facConv:
		f := *op
		f.w1 = catWeights(&fc, g.ops, func(o Op) *torch.Tensor { return o.(*facConv).w1 })
		f.w2 = catWeights(&fc, g.ops, func(o Op) *torch.Tensor { return o.(*facConv).w2 })
		y = f.forwardPreNorm(&fc, nil, rep)
	case *FactorizedReduce:
		// skip_connect at stride 2: each task's two halves stay together, edge by edge.
		f := *op
		f.w1 = catWeights(&fc, g.ops, func(o Op) *torch.Tensor { return o.(*FactorizedReduce).w1 })
		f.w2 = catWeights(&fc, g.ops, func(o Op) *torch.Tensor { return o.(*FactorizedReduce).w2 })
		y = f.forwardPreNorm(&fc, nil, rep)
	}
	if g.tail != nil && s.Err() == nil {
		normed := g.tail.forward(c, y)
		y.Free() // the batch norm's backward pass reads its input through autograd
		y = normed
	}
	stateGroupRuns.Add(1)
	if s.Err() != nil {
		return make([]*torch.Tensor, R)
	}
	outs := s.SplitChannels(y, R, c.tasks())
	y.Free() // the views hold its memory
	return outs
}

// fusedOutputs holds a cell's groups' outputs until their edges' nodes take them:
// out[i][k][e] is edge e's output of op k in node i's group (nil where it did not run),
// whole (after the op's last batch norm) where whole[i][k].
type fusedOutputs struct {
	nodes int
	out   [][][]*torch.Tensor
	whole [][]bool
}

// ran reports whether a group ran node i's op k on state j (and holds its output).
func (f *fusedOutputs) ran(i, j, k int) bool {
	if f == nil {
		return false
	}
	g := firstReader(j)
	return f.out[g] != nil && f.out[g][k] != nil && f.out[g][k][edgeIndex(i, j, f.nodes)] != nil
}

// take returns node i's output of op k on state j, or nil where no group ran it, and
// whether it is the op's whole output (else it stops before the op's last batch norm).
func (f *fusedOutputs) take(i, j, k int) (*torch.Tensor, bool) {
	if f == nil {
		return nil, false
	}
	g := firstReader(j)
	if f.out[g] == nil || f.out[g][k] == nil {
		return nil, false
	}
	e := edgeIndex(i, j, f.nodes)
	y := f.out[g][k][e]
	f.out[g][k][e] = nil
	return y, f.whole[g][k]
}

// runGroups runs node i's groups whose ops every edge keeps (keep(node, state, k)), from
// the shared ReLUs of the states node i reads first, repeated once per reader. Where the
// cell fans its states out (stateCache.fans: fansOut), each group reads its own tensor of
// one repetition of the states' ReLUs (torch.Scope.RepeatStatesFan, which writes the
// ReLUs straight into the copies), so that the backward pass sums all the groups'
// gradients of it, through the ReLUs, in one pass instead of adding them group by group.
func (cell *SearchCell) runGroups(c *Ctx, f *fusedOutputs, shared *stateCache, i int, keep func(i, j, k int) bool) {
	edges := groupEdges(i, len(cell.nodes))
	if cell.groups[i] == nil || (len(edges) < 2 && !shared.fans) {
		// A group of one edge gains only its ReLU's fan: without one, its ops run as
		// they are.
		return
	}
	var ks []int
	for k, g := range cell.groups[i] {
		if g == nil {
			continue
		}
		all := true
		for _, e := range edges {
			all = all && keep(e[0], e[1], k)
		}
		if all {
			ks = append(ks, k)
		}
	}
	if len(ks) == 0 {
		return
	}
	r := int64(len(cell.nodes) - i)
	reps := make([]*torch.Tensor, len(ks))
	if shared.fans {
		var states []*torch.Tensor
		for _, j := range firstStates(i) {
			states = append(states, shared.state(j))
		}
		reps = c.S.RepeatStatesFan(states, r, int64(len(ks)), true)
		stateFans.Add(1)
	} else {
		var relus []*torch.Tensor
		for _, j := range firstStates(i) {
			if shared.relu[j] == nil {
				shared.relu[j] = c.S.Relu(shared.state(j))
			}
			relus = append(relus, shared.relu[j])
		}
		rep := c.S.RepeatStates(relus, r)
		for n := range reps {
			reps[n] = rep
		}
	}
	if f.out[i] == nil {
		f.out[i] = make([][]*torch.Tensor, len(cell.groups[i]))
		f.whole[i] = make([]bool, len(cell.groups[i]))
	}
	for n, k := range ks {
		g := cell.groups[i][k]
		f.out[i][k], f.whole[i][k] = g.run(c, reps[n]), g.tail != nil
	}
	for n, rep := range reps {
		if n == 0 || rep != reps[0] {
			rep.Free() // autograd keeps what the groups' backward passes read
		}
	}
}

// stateFans counts the tensors fanned out by RepeatStatesFan (fansOut; for tests), and
// reluFans the ReLU fans of the stem's and cells' outputs (newReLUFan).
var stateFans, reluFans atomic.Int64

// fansOut reports whether tensors like x with several readers (a cell's states, their
// pools, a node's repeated states, the cells' inputs) go to them through RepeatStatesFan:
// where the fused node sum runs (fusedFor; the fan's backward pass is one of the same
// kernels), without branch streams (whose readers would share a fan across streams).
func fansOut(c *Ctx, x *torch.Tensor) bool { return fusedFor(c, x) && torch.BranchStreams() < 2 }
