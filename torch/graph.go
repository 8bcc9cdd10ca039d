package torch

// #include "shim.h"
import "C"

import (
	"errors"
	"runtime"
)

// ErrGraphClosed reports a Graph used after Close.
var ErrGraphClosed = errors.New("graph used after Close")

// Graph is a CUDA graph: the kernels that a function queues on the device, captured once
// and then replayed with one launch, without the host cost of issuing them op by op.
//
// A replay repeats exactly the captured kernels on exactly the captured memory: the
// function must read its inputs from tensors that live across replays (copy new data into
// them before Replay), write its results in place or into tensors created during the
// capture and kept, and make no host decision that could change between replays. Random
// numbers drawn from a Generator passed to Capture are fresh at every replay. Capture and
// Replay must run on one locked OS thread (runtime.LockOSThread): LibTorch's current CUDA
// stream belongs to the thread. Graphs need a CUDA build; elsewhere NewGraph fails.
type Graph struct {
	h        C.mt_graph
	captured bool
}

// NewGraph returns an empty graph on the CUDA device d.
func NewGraph(d Device) (*Graph, error) {
	if !d.CUDA {
		return nil, errors.New("graph: CUDA graphs need a CUDA device, got " + d.String())
	}
	var h C.mt_graph
	if err := cerr(C.mt_graph_new(C.int(d.Index), &h)); err != nil {
		return nil, err
	}
	g := &Graph{h: h}
	runtime.SetFinalizer(g, (*Graph).Close)
	return g, nil
}

// Capture records what f queues on the device, without running it; gens are the private
// generators that f draws from. With share, a captured graph, the two take their memory
// from one pool: safe when they never run at once and no replay needs what the other's last
// replay left in its intermediates (their inputs and results outside the pool). The
// capture ends whatever f returns. On an error (f's, or CUDA's refusal of an operation f
// issued, such as a copy to the host) the graph cannot be replayed; close it.
func (g *Graph) Capture(gens []*Generator, share *Graph, f func() error) error {
	if g.h == nil {
		return ErrGraphClosed
	}
	var sh C.mt_graph
	if share != nil {
		if !share.Captured() {
			return errors.New("graph: can share only the pool of a captured graph")
		}
		sh = share.h
	}
	hs := make([]C.mt_generator, 0, len(gens))
	for _, gen := range gens {
		if gen != nil && gen.h != nil {
			hs = append(hs, gen.h)
		}
	}
	var p *C.mt_generator
	if len(hs) > 0 {
		p = &hs[0]
	}
	if err := cerr(C.mt_graph_capture_begin(g.h, p, C.int64_t(len(hs)), sh)); err != nil {
		return err
	}
	ferr := f()
	eerr := cerr(C.mt_graph_capture_end(g.h))
	runtime.KeepAlive(gens)
	runtime.KeepAlive(share)
	if ferr != nil {
		return ferr
	}
	if eerr != nil {
		return eerr
	}
	g.captured = true
	return nil
}

// Captured reports whether a capture succeeded.
func (g *Graph) Captured() bool { return g.h != nil && g.captured }

// Replay runs the captured kernels on the calling thread's current stream.
func (g *Graph) Replay() error {
	if g.h == nil {
		return ErrGraphClosed
	}
	return cerr(C.mt_graph_replay(g.h))
}

// Close frees the graph and the device memory it holds.
func (g *Graph) Close() {
	if g != nil && g.h != nil {
		C.mt_graph_free(g.h)
		g.h = nil
		runtime.SetFinalizer(g, nil)
	}
}
