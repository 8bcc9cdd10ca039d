package cells

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/metanas-go/metanas/internal/envswitch"
	"github.com/metanas-go/metanas/torch"
)

// onOffSetting returns the reader of the environment switch name (envswitch.Tri): 1 for
// "1", 0 for "0", envswitch.Unset otherwise (another value is reported, naming CUDA's
// default on).
func onOffSetting(name string) func() int {
	return envswitch.Tri(name, "0", "1", "using the default (on for CUDA)")
}

// onForCUDA reports a switch of onOffSetting for dev: as set, else on for CUDA only.
func onForCUDA(setting func() int, dev torch.Device) bool {
	if v := setting(); v != envswitch.Unset {
		return v == 1
	}
	return dev.CUDA
}

// nodeBatchNormSetting is METANAS_NODE_BATCH_NORM (onOffSetting).
var nodeBatchNormSetting = onOffSetting("METANAS_NODE_BATCH_NORM")

// NodeBatchNorm reports whether batched search networks (SearchConfig.Tasks > 1) on dev
// normalise the ops of a node that end in a batch norm with one batch norm over all of them
// (og_metanas has 228 such batch norms per forward pass, 12 grouped, so far fewer and wider
// kernels): by default on CUDA only (on the CPU it is a few percent slower);
// METANAS_NODE_BATCH_NORM=1 or =0 sets it for both.
func NodeBatchNorm(dev torch.Device) bool { return onForCUDA(nodeBatchNormSetting, dev) }

// nodeRecompute reads METANAS_NODE_RECOMPUTE.
var nodeRecompute = envswitch.New("METANAS_NODE_RECOMPUTE", "0", "1", false, "off")

// NodeRecompute reports METANAS_NODE_RECOMPUTE=1 (off by default): in training, a node
// batch norm's members are normalised inside the node sum, whose backward pass keeps them
// as they were before the norm, with the norm's statistics, and normalises them again
// where the node's weights need gradients, instead of keeping a normalised copy from the
// forward pass to the backward (about a fifth of a batched search step's activations,
// for one more kernel per node in the backward pass and a few small ones in the forward).
func NodeRecompute() bool { return nodeRecompute() }

// nodeFused reads METANAS_NODE_FUSED.
var nodeFused = envswitch.New("METANAS_NODE_FUSED", "0", "1", false, "off")

// NodeFused reports METANAS_NODE_FUSED=1 (off by default until measured on a GPU): in
// training, a node batch norm's members (float32, or bfloat16 and float16 under autocast,
// summed in float32) are normalised and summed by one fused call (torch.NodeNormSum) that
// passes over the members themselves instead of a stacked and a normalised copy of them,
// forward and backward: about 7 fewer passes over the members' bytes per node and step,
// and the backward pass keeps only the members. It supersedes METANAS_NODE_RECOMPUTE.
// With it, the tensors that several ops of a cell read (states, their pools, and with state
// fusion a node's repeated ReLUs, written straight from the states) reach their readers
// through fans (torch.Scope.RepeatStatesFan) whose backward passes sum the readers'
// gradients in one pass of the same kernels, and the node sums write the gradients of a
// group's pieces straight into the group's gradient (torch's split pieces). Where the shim
// has no kernels for the device (CUDA without nvcc at build time), the node takes the
// unfused calls.
func NodeFused() bool { return nodeFused() }

// NodeFusedCalls returns how many node sums took the fused call (NodeFused) in this
// process: a diagnostic for tests and benchmarks.
func NodeFusedCalls() int64 { return nodeFusedCalls.Load() }

// fusedOn caches torch.NodeNormSumOn for the CPU (0) and CUDA (1).
var fusedOn = [2]func() bool{
	sync.OnceValue(func() bool { return torch.NodeNormSumOn(torch.CPU) }),
	sync.OnceValue(func() bool { return torch.NodeNormSumOn(torch.Device{CUDA: true}) }),
}

// kernelsOn reports whether the shim has its fused kernels for dev (fusedOn).
func kernelsOn(dev torch.Device) bool {
	if dev.CUDA {
		return fusedOn[1]()
	}
	return fusedOn[0]()
}

// tailNorm is implemented by ops whose last layer is a batch norm without affine tensors:
// forwardPreNorm applies the op up to that batch norm, from its input x or, for ops that
// begin with a ReLU (reluInput), from rx, the ReLU of x.
type tailNorm interface {
	tailBN() *BatchNorm
	forwardPreNorm(c *Ctx, x, rx *torch.Tensor) *torch.Tensor
}

func (p *poolBN) tailBN() *BatchNorm { return p.bn }
func (p *poolBN) forwardPreNorm(c *Ctx, x, _ *torch.Tensor) *torch.Tensor {
	if p.max {
		return c.S.MaxPool2d(x, 3, p.stride, 1)
	}
	return c.S.AvgPool2d(x, 3, p.stride, 1, false)
}

func (d *dilConv) tailBN() *BatchNorm { return d.bn }
func (d *dilConv) forwardPreNorm(c *Ctx, _, rx *torch.Tensor) *torch.Tensor {
	y := c.conv(rx, d.dw, torch.Conv{Stride: [2]int64{d.stride, d.stride}, Padding: [2]int64{d.pad, d.pad},
		Dilation: [2]int64{d.dilate, d.dilate}, Groups: d.cin})
	return c.conv(y, d.pw, torch.Conv{})
}

func (p *sepConv) tailBN() *BatchNorm { return p.b.bn }
func (p *sepConv) forwardPreNorm(c *Ctx, _, rx *torch.Tensor) *torch.Tensor {
	return p.b.forwardPreNorm(c, nil, p.midReLU(c, rx))
}

func (f *facConv) tailBN() *BatchNorm { return f.bn }
func (f *facConv) forwardPreNorm(c *Ctx, _, rx *torch.Tensor) *torch.Tensor {
	y := c.conv(rx, f.w1, torch.Conv{Stride: [2]int64{f.stride, f.stride}, Padding: [2]int64{0, 2}})
	return c.conv(y, f.w2, torch.Conv{Padding: [2]int64{2, 0}})
}

func (f *FactorizedReduce) tailBN() *BatchNorm { return f.bn }

// nodeNorm is the one batch norm of a batched search node's tail-norm ops (its members):
// their running statistics live side by side in the blocks mean and vars, [tasks, members,
// C], and each member's BatchNorm holds views of its slice, so that the registry, the
// meta-learners and checkpoints see the same values as without grouping.
type nodeNorm struct {
	members  []*BatchNorm
	member   []int // member index of op column j*K+k, -1 for ops outside the group
	mean     *torch.Tensor
	vars     *torch.Tensor
	momentum float64
	eps      float64
}

// groupNodeNorms gives every node of the cells of a batched network (tasks > 1) a nodeNorm
// over its ops that end in a batch norm without affine tensors, moving their running
// statistics into the node's blocks (the registry's entries become the views).
func groupNodeNorms(r *Registry, cells []*SearchCell, tasks int64) error {
	s, dev := r.s, r.dev
	for ci, cell := range cells {
		cell.norms = make([]*nodeNorm, len(cell.nodes))
		for i, row := range cell.nodes {
			K := len(row[0].ops)
			g := &nodeNorm{member: make([]int, len(row)*K)}
			for j := range row {
				for k, op := range row[j].ops {
					g.member[j*K+k] = -1
					t, ok := op.(tailNorm)
					if !ok || t.tailBN().Weight != nil {
						continue
					}
					bn := t.tailBN()
					if len(g.members) > 0 && (bn.Momentum != g.momentum || bn.Eps != g.eps) {
						return fmt.Errorf("cell %d node %d: batch norms of different momentum or eps", ci, i)
					}
					g.momentum, g.eps = bn.Momentum, bn.Eps
					g.member[j*K+k] = len(g.members)
					g.members = append(g.members, bn)
				}
			}
			if len(g.members) == 0 {
				continue
			}
			m := int64(len(g.members))
			c := cell.out
			g.mean = s.Zeros([]int64{tasks, m, c}, dev)
			g.vars = s.Ones([]int64{tasks, m, c}, dev)
			for k, bn := range g.members {
				mean := s.View(s.Narrow(g.mean, 1, int64(k), 1), tasks, c)
				vars := s.View(s.Narrow(g.vars, 1, int64(k), 1), tasks, c)
				if err := s.Err(); err != nil {
					return fmt.Errorf("cell %d node %d: %w", ci, i, err)
				}
				if !r.replace(bn.RunMean, mean) || !r.replace(bn.RunVar, vars) {
					return fmt.Errorf("cell %d node %d: a member's running statistics are not registered", ci, i)
				}
				bn.RunMean, bn.RunVar = mean, vars
			}
			cell.norms[i] = g
		}
	}
	return s.Err()
}

// nodeNormCalls counts normalize's and normSum's calls over every member (0) and over a
// subset (1); nodeFusedCalls normSum's.
var (
	nodeNormCalls  [2]atomic.Int64
	nodeFusedCalls atomic.Int64
)

// count counts a call over the members sel (rising): the members' batch counts in
// training, and nodeNormCalls; it returns sel, or nil where sel is every member in order
// (the calls then take the blocks themselves).
func (g *nodeNorm) count(c *Ctx, sel []int64) []int64 {
	if c.Train {
		for _, k := range sel {
			g.members[k].count++
		}
	}
	if len(sel) == len(g.members) {
		nodeNormCalls[0].Add(1)
		return nil
	}
	nodeNormCalls[1].Add(1)
	return sel
}

// normalize applies the node's batch norm to normed, the pre-norm outputs of the members
// sel (rising), and returns them stacked for MixedTasksCoefs, with nil statistics; with
// NodeRecompute in training, it returns them stacked before the norm, and the norm's
// statistics.
func (g *nodeNorm) normalize(c *Ctx, normed []*torch.Tensor, sel []int64) (stacked, stats *torch.Tensor) {
	sel = g.count(c, sel)
	if NodeRecompute() {
		return c.S.NodeBatchNormStats(normed, g.mean, g.vars, sel, c.tasks(), c.Train, g.momentum, g.eps)
	}
	return c.S.NodeBatchNorm(normed, g.mean, g.vars, sel, c.tasks(), c.Train, g.momentum, g.eps), nil
}

// fuses reports whether the node's members normed take the fused call (NodeFused; the
// shim sums members of mixed types in float32).
func (g *nodeNorm) fuses(c *Ctx, normed []*torch.Tensor) bool {
	return len(normed) > 0 && fusedFor(c, normed[0])
}

// fusedFor reports whether the shim's fused kernels run for x in this pass: in training
// where NodeFused is on, x float32, bfloat16 or float16 on a device the shim has the
// kernels for.
func fusedFor(c *Ctx, x *torch.Tensor) bool {
	if !c.Train || !NodeFused() {
		return false
	}
	info, err := x.Info()
	if err != nil || (info.DType != torch.Float32 && info.DType != torch.BFloat16 && info.DType != torch.Float16) {
		return false
	}
	return kernelsOn(info.Device)
}

// normSum is normalize followed by MixedTasksCoefs, fused (torch.NodeNormSum): the node of
// the members normed (sel as normalize's) and the other outputs outs, weighed by coefs
// with drop-path flags drop (the members' first).
func (g *nodeNorm) normSum(c *Ctx, normed []*torch.Tensor, sel []int64, outs []*torch.Tensor, coefs *torch.Tensor,
	drop []bool) *torch.Tensor {
	sel = g.count(c, sel)
	nodeFusedCalls.Add(1)
	return c.S.NodeNormSum(normed, g.mean, g.vars, sel, g.momentum, g.eps, outs, coefs, drop, c.dropProb(), c.Gen, c.tasks())
}
