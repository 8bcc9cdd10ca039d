package torch

// #include "shim.h"
import "C"

import "sync"

// branchStreams caches METANAS_BRANCH_STREAMS as the shim read it.
var branchStreams = sync.OnceValue(func() int { return int(C.mt_branch_streams()) })

// BranchStreams reports the number of branch streams the process started with
// (METANAS_BRANCH_STREAMS=N, an experiment for CUDA; 0 when unset, below 2 or not a number):
// ForkBranches then lets the independent ops of a search node run on N streams at once.
func BranchStreams() int { return branchStreams() }

// ForkBranches opens a fork of branch streams on CUDA device d for the calling OS thread
// (its goroutine locked to it): the branches start after what the thread's current stream,
// the trunk, has queued. It returns the number of branches, 0 (and opens nothing) with
// branch streams off, on the CPU, or when the scope holds an error. Between ForkBranches
// and JoinBranches, UseBranch picks the stream that ops go to; LibTorch's autograd runs
// each op's backward on the stream of its forward and orders the streams where gradients
// cross.
func (s *Scope) ForkBranches(d Device) int {
	if !d.CUDA || BranchStreams() < 2 || s.err != nil {
		return 0
	}
	var n C.int64_t
	if err := cerr(C.mt_branch_fork(C.int(d.Index), &n)); err != nil {
		s.setErr(err)
		return 0
	}
	return int(n)
}

// UseBranch makes branch i (modulo their number) the current stream of an open fork; -1
// makes the trunk current.
func (s *Scope) UseBranch(i int) {
	if s.err != nil {
		return
	}
	if err := cerr(C.mt_branch_use(C.int64_t(i))); err != nil {
		s.setErr(err)
	}
}

// JoinBranches closes the fork that ForkBranches opened: the trunk becomes current again
// and waits for every branch, and the memory of outs (tensors made on branches that the
// trunk goes on to read) is kept from reuse until the trunk's reads are done. It runs even
// when the scope holds an error, so that the thread gets its trunk back.
func (s *Scope) JoinBranches(outs []*Tensor) {
	hs := handles(outs)
	var p *C.mt_tensor
	if len(hs) > 0 {
		p = &hs[0]
	}
	if err := cerr(C.mt_branch_join(p, C.int64_t(len(hs)))); err != nil {
		s.setErr(err)
	}
}

// BranchInput returns x for an op queued on the current branch of an open fork. On CUDA x
// is marked as used by the branch (its memory, made on the trunk, is not reused before the
// branch's reads, forward or backward), and for a tensor that needs a gradient the result
// is an alias whose gradient (made on the branch in the backward pass, read on the trunk)
// keeps its memory until the trunk's reads; otherwise x itself as a new handle. The values
// are x's.
func (s *Scope) BranchInput(x *Tensor) *Tensor {
	return s.unary("branch_input", x, func(a C.mt_tensor, o *C.mt_tensor) *C.char { return C.mt_branch_input(a, o) })
}
