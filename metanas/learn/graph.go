package learn

import (
	"fmt"

	"github.com/metanas-go/metanas/cells"
	"github.com/metanas-go/metanas/internal/envswitch"
	"github.com/metanas-go/metanas/torch"
)

// graphMode says how a BatchWorker runs its steps.
type graphMode int

const (
	graphsOff    graphMode = iota
	graphsCUDA             // static buffers, a captured CUDA graph replayed after captureAfter steps
	graphsStatic           // the same static buffers, every step run eagerly (CPU tests; after a failed capture)
)

// captureAfter is the number of eager steps on a graph's static buffers before its
// capture: the first steps allocate the optimizer state, let cuDNN choose its algorithms
// and copy the forward pass's index arrays to the device, none of which a capture may do.
const captureAfter = 2

// ownGraphPools reports METANAS_GRAPH_POOLS=own: each captured graph keeps a memory pool
// of its own instead of sharing one with the worker's other graphs (more GPU memory; a
// diagnostic for branch streams, whose graph tests failed on an H200 only where two
// minibatch shapes shared a pool).
var ownGraphPools = envswitch.New("METANAS_GRAPH_POOLS", "shared", "own", false, "the graphs share a pool")

// graphWait reports METANAS_GRAPH_WAIT: unless it is 0, a graph of one minibatch shape
// waits for the other shape's eager steps before its capture (captureReady); with 0 each
// shape is captured after its own, as before (an A/B of GPU memory).
var graphWait = envswitch.New("METANAS_GRAPH_WAIT", "0", "1", true, "graphs wait for both minibatch shapes")

// stepGraph is what a captured step reads and writes besides the network, its optimizer
// state and the worker's accumulators; all of it lives across replays.
type stepGraph struct {
	s     *torch.Scope
	g     *torch.Graph  // nil until captured
	key   string        // what the capture depends on
	x, y  *torch.Tensor // the minibatch [n, T*C, H, W] and its labels [T*n, 1]
	pre   *cells.ArchWeights
	temp  *torch.Tensor // the temperature of steps that adapt the alphas
	eager int           // steps run eagerly on these buffers
}

func (g *stepGraph) close() {
	if g.g != nil {
		g.g.Close()
	}
	g.s.Close()
}

// UseGraphs turns CUDA graphs on or off. With them, each step runs on static buffers and,
// after two eager steps, from one captured step replayed for every later minibatch and
// task: one graph for steps whose alphas stay fixed (warm-up meta-epochs, the weight-only
// steps of a meta-test), kept while the active ops stay, and one for steps that adapt
// the alphas, whose weights it normalises on the device (cells.NormalizeOnDevice:
// every op runs and the device prunes, so an op pruned in every task gets zero gradients
// instead of none and its batch norm statistics move). Both optimizers count their steps
// on the device. Where the batch size does not divide the support set, the last, smaller
// minibatch of each step has graphs of its own, captured once both shapes ran their eager
// steps (captureReady: one GPU memory pool at a time). A graph is captured again when the
// minibatch shape, drop-path, clipping, a learning rate or the prune threshold change. The
// device must be CUDA. If a capture fails, the worker goes on eagerly and GraphErr says
// why. Gumbel-softmax normalisation runs without graphs (GraphSkip says so).
func (b *BatchWorker) UseGraphs(on bool) error {
	if on && !b.Dev.CUDA {
		return fmt.Errorf("CUDA graphs need a CUDA device, the batched network is on %s", b.Dev)
	}
	b.dropGraphs()
	b.graphs, b.GraphErr = graphsOff, nil
	if on {
		b.graphs = graphsCUDA
	}
	return nil
}

// Graphed reports whether a captured graph is ready for the next steps.
func (b *BatchWorker) Graphed() bool {
	for _, g := range []*stepGraph{b.fixedG, b.archG, b.fixedR, b.archR} {
		if g != nil && g.g != nil {
			return true
		}
	}
	return false
}

// dropGraphs frees the captured graphs and their static buffers.
func (b *BatchWorker) dropGraphs() {
	for _, g := range []**stepGraph{&b.fixedG, &b.archG, &b.fixedR, &b.archR} {
		if *g != nil {
			(*g).close()
			*g = nil
		}
	}
}

// idleSlots returns the slots of the graphs an adaptation will not use: those of
// fixed-alpha steps unless fixed is set, those of alpha steps unless arch is set.
func (b *BatchWorker) idleSlots(fixed, arch bool) []**stepGraph {
	var slots []**stepGraph
	if !fixed {
		slots = append(slots, &b.fixedG, &b.fixedR)
	}
	if !arch {
		slots = append(slots, &b.archG, &b.archR)
	}
	return slots
}

// capturedIdle reports whether dropIdleGraphs(fixed, arch) would free a captured graph.
func (b *BatchWorker) capturedIdle(fixed, arch bool) bool {
	for _, g := range b.idleSlots(fixed, arch) {
		if *g != nil && (*g).g != nil {
			return true
		}
	}
	return false
}

// dropIdleGraphs frees the graphs (and buffers) in idleSlots(fixed, arch). A graph's memory
// pool stays reserved while the graph lives, and the eager steps before the next capture
// would allocate beside it: meta-training runs warm-up adaptations (fixed alphas only) and
// then search adaptations (alpha steps only), and a meta-test needs both. On CUDA the freed
// pools go back to the device, with the gate held exclusively (the caller holds it shared).
func (b *BatchWorker) dropIdleGraphs(fixed, arch bool) error {
	captured := b.capturedIdle(fixed, arch)
	drop := func() error {
		for _, g := range b.idleSlots(fixed, arch) {
			if *g != nil {
				(*g).close()
				*g = nil
			}
		}
		if captured && b.Dev.CUDA {
			return torch.EmptyCache()
		}
		return nil
	}
	if captured {
		return b.Gate.exclusive(drop)
	}
	return drop()
}

// graphKey is what every capture depends on besides the network: the minibatch shape and
// the settings baked into the captured kernels.
func (b *BatchWorker) graphKey(ts TaskSettings, x []int64) string {
	return fmt.Sprintf("|x %v|drop %g|clip %g|thr %g|wlr %g|alr %g|norm %s", x, ts.DropPath, ts.GradClip, ts.Threshold, b.WOpt.LR(), b.AOpt.LR(), ts.Norm)
}

// newStepGraph returns static buffers for minibatches of shape x.
func (b *BatchWorker) newStepGraph(key string, x []int64) *stepGraph {
	s := torch.NewScope()
	return &stepGraph{s: s, key: key, x: s.Zeros(x, b.Dev),
		y: s.FullOf([]int64{int64(b.Tasks) * x[0], 1}, 0, torch.Int64, b.Dev, false)}
}

// fixedGraph returns the buffers (and graph) in slot of steps with the fixed weights w on
// minibatches of shape x, rebuilt when the active ops and pairs or the key change, with
// w's values copied in.
func (b *BatchWorker) fixedGraph(slot **stepGraph, w *cells.ArchWeights, ts TaskSettings, x []int64) (*stepGraph, error) {
	active, err := b.Model.Search.ActiveKey(w, ts.Threshold)
	if err != nil {
		return nil, err
	}
	key := "fixed " + active + b.graphKey(ts, x)
	if g := *slot; g != nil && g.key == key {
		return g, cells.CopyArch(g.pre, w)
	}
	if *slot != nil {
		(*slot).close()
		*slot = nil
	}
	g := b.newStepGraph(key, x)
	if g.pre, err = cells.CloneArch(g.s, w); err != nil {
		g.close()
		return nil, err
	}
	*slot = g
	return g, nil
}

// archGraph returns the buffers (and graph) in slot of steps that adapt the alphas on
// minibatches of shape x, at temperature temp.
func (b *BatchWorker) archGraph(slot **stepGraph, ts TaskSettings, x []int64, temp float64) (*stepGraph, error) {
	key := "arch" + b.graphKey(ts, x)
	g := *slot
	if g == nil || g.key != key {
		if g != nil {
			g.close()
		}
		g = b.newStepGraph(key, x)
		g.temp = g.s.Full(nil, temp, b.Dev)
		if err := g.s.Err(); err != nil {
			g.close()
			*slot = nil
			return nil, err
		}
		*slot = g
	}
	return g, g.temp.Fill_(temp)
}

// captureReady reports whether g may be captured: it ran captureAfter eager steps, and so
// did other, the buffers of the adaptation's other minibatch shape of the same kind (nil
// when there is none), unless other is captured already. The eager steps of a shape run in
// LibTorch's general memory pool, a captured graph's intermediates in a pool of its own
// that stays reserved (the shapes' graphs share one): capturing one shape before the
// other's eager steps ran would hold both at once, about twice a step's memory (in_metanas
// in batches of 5 reserved 83-86 GiB on an H200). Waiting costs a few more eager steps in
// an adaptation's first task steps; the capture empties the general pool's cache first.
func captureReady(g, other *stepGraph) bool {
	if g.eager < captureAfter {
		return false
	}
	return other == nil || other.g != nil || other.eager >= captureAfter
}

// graphStep copies the minibatch x, y into g's static buffers and runs step on them: a
// replay once captured, else eagerly, capturing first when g and other (the buffers of
// the adaptation's other minibatch shape, or nil) are ready (captureReady).
func (b *BatchWorker) graphStep(g, other *stepGraph, x, y *torch.Tensor, step func() error) error {
	if err := g.x.Copy_(x); err != nil {
		return err
	}
	if err := g.y.Copy_(y); err != nil {
		return err
	}
	if g.g != nil {
		b.GraphReplays++
		return g.g.Replay()
	}
	if !graphWait() {
		other = nil
	}
	if b.graphs == graphsCUDA && captureReady(g, other) {
		// Nothing else may reach the device while a capture runs (DeviceGate).
		var captured bool
		if err := b.Gate.exclusive(func() error {
			var err error
			captured, err = b.capture(g, step)
			return err
		}); captured || err != nil {
			return err
		}
	}
	g.eager++
	return step()
}

// capture captures step on g's buffers and replays it once (this step's update), sharing
// the memory pool of the worker's other graphs. If the capture fails, graphs go off
// (GraphErr says why) and it reports false, for the step to run eagerly.
func (b *BatchWorker) capture(g *stepGraph, step func() error) (bool, error) {
	cg, err := torch.NewGraph(b.Dev)
	if err == nil {
		b.step.Reset()
		// The graphs never run at once and keep nothing in their pools from one replay
		// to the next: one pool serves them all.
		var share *torch.Graph
		for _, o := range []*stepGraph{b.fixedG, b.archG, b.fixedR, b.archR} {
			if o != nil && o != g && o.g != nil && !ownGraphPools() {
				share = o.g
			}
		}
		err = cg.Capture([]*torch.Generator{b.gen}, share, step)
		b.step.Reset()
		if err == nil {
			g.g = cg
			b.GraphReplays++
			return true, cg.Replay()
		}
		cg.Close()
	}
	// Go on without graphs: this step runs eagerly.
	b.GraphErr = fmt.Errorf("CUDA graph capture failed, batched steps run eagerly: %w", err)
	b.graphs = graphsStatic
	return false, nil
}
