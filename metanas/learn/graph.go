package learn

import (
	"fmt"

	"github.com/metanas-go/metanas/cells"
	"github.com/metanas-go/metanas/torch"
)

// graphMode says how a BatchWorker runs the steps of tasks whose alphas stay fixed.
type graphMode int

const (
	graphsOff    graphMode = iota
	graphsCUDA             // static buffers, a captured CUDA graph replayed after captureAfter steps
	graphsStatic           // the same static buffers, every step run eagerly (CPU tests; after a failed capture)
)

// captureAfter is the number of eager steps on the static buffers before a capture: the
// first steps allocate the optimizer state and let cuDNN choose its algorithms, which a
// capture must not do.
const captureAfter = 2

// stepGraph is what a captured fixed-architecture step reads and writes; all of it lives
// across replays.
type stepGraph struct {
	s             *torch.Scope
	g             *torch.Graph // nil until captured
	key           string       // what the capture depends on (see graphFor)
	x, y          *torch.Tensor
	classes       *torch.Tensor
	loss, correct *torch.Tensor // per-task sums over the task's steps
	pre           *cells.ArchWeights
	eager         int // steps run eagerly on these buffers
}

// UseGraphs turns CUDA graphs on or off for the steps of tasks whose alphas stay fixed
// (the warm-up meta-epochs): after two eager steps, one step of the batched network is
// captured and replayed for every later minibatch and task while the architecture keeps
// the same active ops, the same minibatch shape and the same settings. The device must be
// CUDA. If a capture fails, the worker goes on eagerly and GraphErr says why.
func (b *BatchWorker) UseGraphs(on bool) error {
	if on && !b.Dev.CUDA {
		return fmt.Errorf("CUDA graphs need a CUDA device, the batched network is on %s", b.Dev)
	}
	b.dropGraph()
	b.graphs, b.GraphErr = graphsOff, nil
	if on {
		b.graphs = graphsCUDA
	}
	return nil
}

// Graphed reports whether the last adaptation replayed a captured graph.
func (b *BatchWorker) Graphed() bool { return b.sg != nil && b.sg.g != nil }

// dropGraph frees the captured graph and its static buffers.
func (b *BatchWorker) dropGraph() {
	if b.sg == nil {
		return
	}
	if b.sg.g != nil {
		b.sg.g.Close()
	}
	b.sg.s.Close()
	b.sg = nil
}

// graphFor returns the static buffers (and graph) for steps with the fixed weights w on
// minibatches of shape x, rebuilding them when anything a capture depends on changed: the
// active ops and pairs, the shapes, drop-path, clipping or the learning rate. It zeroes
// the loss and hit accumulators.
func (b *BatchWorker) graphFor(w *cells.ArchWeights, ts TaskSettings, x []int64) (*stepGraph, error) {
	key, err := b.Model.Search.ActiveKey(w, ts.Threshold)
	if err != nil {
		return nil, err
	}
	key += fmt.Sprintf("|x %v|drop %g|clip %g|lr %g", x, ts.DropPath, ts.GradClip, b.WOpt.LR())
	sg := b.sg
	if sg != nil && sg.key == key {
		if err := cells.CopyArch(sg.pre, w); err != nil {
			return nil, err
		}
	} else {
		b.dropGraph()
		s := torch.NewScope()
		T := int64(b.Tasks)
		K := int64(b.Model.Search.Cfg.Classes)
		sg = &stepGraph{s: s, key: key,
			x:       s.Zeros(x, b.Dev),
			y:       s.FullOf([]int64{T * x[0], 1}, 0, torch.Int64, b.Dev, false),
			classes: s.Reshape(s.Arange(K, b.Dev), 1, K),
			loss:    s.Zeros([]int64{T}, b.Dev), correct: s.Zeros([]int64{T}, b.Dev)}
		if sg.pre, err = cells.CloneArch(s, w); err != nil {
			s.Close()
			return nil, err
		}
		b.sg = sg
	}
	if err := sg.loss.Fill_(0); err != nil {
		return nil, err
	}
	if err := sg.correct.Fill_(0); err != nil {
		return nil, err
	}
	return sg, nil
}

// graphStep copies the minibatch x, y into the static buffers and runs one step on them:
// a replay once captured, else eagerly, capturing first when enough eager steps ran.
func (b *BatchWorker) graphStep(sg *stepGraph, x, y *torch.Tensor, ctx *cells.Ctx, a Arch, clip float64) error {
	if err := sg.x.Copy_(x); err != nil {
		return err
	}
	if err := sg.y.Copy_(y); err != nil {
		return err
	}
	if sg.g != nil {
		b.GraphReplays++
		return sg.g.Replay()
	}
	step := func() error {
		return b.trainStep(ctx, sg.x, sg.y, sg.classes, a, sg.pre, false, clip, sg.loss, sg.correct)
	}
	if b.graphs == graphsCUDA && sg.eager >= captureAfter {
		g, err := torch.NewGraph(b.Dev)
		if err == nil {
			b.step.Reset()
			err = g.Capture([]*torch.Generator{b.gen}, step)
			b.step.Reset()
			if err == nil {
				sg.g = g
				b.GraphReplays++
				return g.Replay()
			}
			g.Close()
		}
		// Go on without graphs: this step runs eagerly below.
		b.GraphErr = fmt.Errorf("CUDA graph capture failed, batched steps run eagerly: %w", err)
		b.graphs = graphsStatic
	}
	sg.eager++
	return step()
}
