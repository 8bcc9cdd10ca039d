package torch

// #include "shim.h"
import "C"

import (
	"fmt"
	"unsafe"
)

// Batched tasks: a network trained for several tasks at once holds each parameter's task
// copies stacked along its first dimension ([tasks*d0, ...]) and each activation's task
// channels side by side ([N, tasks*C, H, W]). These ops work on that layout.

// Matmul is the matrix product with broadcasting of batch dimensions (torch.matmul).
func (s *Scope) Matmul(a, b *Tensor) *Tensor {
	return s.binary("matmul", a, b, func(x, y C.mt_tensor, o *C.mt_tensor) *C.char { return C.mt_matmul(x, y, o) })
}

// MixedTasks is MixedNode for a batched network of tasks tasks: op outputs
// [N, tasks*C, H, W], op weights wops [tasks*nIn, K], pair weights wpair [tasks, pairs]
// (or nil). inc must list every pair of nIn inputs and idx the op columns (j*K+k) that outs
// hold; weights at or below threshold count as zero for their task, so one call serves
// tasks whose pruning differs. Drop-path draws one mask per sample, task and droppable op.
func (s *Scope) MixedTasks(outs []*Tensor, wpair, wops *Tensor, inc []float32, nIn int, idx []int64, droppable []bool, dropProb float64, gen *Generator, threshold float64, tasks int64) *Tensor {
	return s.MixedTasksStacked(nil, outs, wpair, wops, inc, nIn, idx, droppable, dropProb, gen, threshold, tasks)
}

// MixedTasksStacked is MixedTasks where the first outputs come stacked, as NodeBatchNorm
// returns them: idx and droppable list stacked's ops first, then those of outs. stacked
// may be nil (MixedTasks) and outs empty.
func (s *Scope) MixedTasksStacked(stacked *Tensor, outs []*Tensor, wpair, wops *Tensor, inc []float32, nIn int, idx []int64, droppable []bool, dropProb float64, gen *Generator, threshold float64, tasks int64) *Tensor {
	// A failure of NodeCoefs stays the scope's error; MixedTasksCoefs then returns at once.
	return s.MixedTasksCoefs(stacked, nil, outs, s.NodeCoefs(wpair, wops, inc, nIn, idx, threshold, tasks), droppable,
		dropProb, gen, tasks)
}

// NodeCoefs returns the weights [tasks, len(idx)] with which a batched node sums its op
// columns idx (j*K+k): per task, op k's weight on input j (wops [tasks*nIn, K]) times,
// with pair weights wpair [tasks, pairs] (or nil), the summed weights of the pairs that
// hold input j (inc: every pair of nIn inputs, as for MixedTasks); weights at or below
// threshold count as zero for their task. The weights depend only on the architecture, so
// cells of one type that run the same columns can share them (MixedTasksCoefs).
func (s *Scope) NodeCoefs(wpair, wops *Tensor, inc []float32, nIn int, idx []int64, threshold float64, tasks int64) *Tensor {
	if !s.ok("node_coefs", wops) || !s.okOpt("node_coefs", wpair) {
		return &Tensor{}
	}
	if tasks < 1 || len(idx) == 0 {
		return s.fail(fmt.Errorf("node_coefs: %d tasks, %d op columns", tasks, len(idx)))
	}
	inc0, p, err := incidenceArg(wpair, inc, nIn)
	if err != nil {
		return s.fail(fmt.Errorf("node_coefs: %w", err))
	}
	out := s.out()
	e := C.mt_node_coefs(optH(wpair), wops.h, inc0, C.int64_t(p), C.int64_t(nIn), (*C.int64_t)(unsafe.Pointer(&idx[0])),
		C.int64_t(len(idx)), C.double(threshold), C.int64_t(tasks), out)
	return s.res(e, *out)
}

// MixedTasksCoefs is MixedTasksStacked with the node's weights given: coefs [tasks, m]
// (NodeCoefs) for the m columns that stacked (or nil) and then outs hold, droppable their
// drop-path flags. With stats, stacked and stats are what NodeBatchNormStats returned.
func (s *Scope) MixedTasksCoefs(stacked, stats *Tensor, outs []*Tensor, coefs *Tensor, droppable []bool, dropProb float64, gen *Generator, tasks int64) *Tensor {
	if tasks < 1 {
		return s.fail(fmt.Errorf("mixed_tasks: tasks must be >= 1, got %d", tasks))
	}
	if !s.ok("mixed_tasks", outs...) || !s.ok("mixed_tasks", coefs) || !s.okOpt("mixed_tasks", stacked, stats) {
		return &Tensor{}
	}
	m := len(droppable)
	if m == 0 || (stacked == nil && len(outs) != m) {
		return s.fail(fmt.Errorf("mixed_tasks: %d outputs, %d drop flags", len(outs), m))
	}
	drop, hs := dropFlags(droppable), outHandles(outs)
	out := s.out()
	e := C.mt_mixed_tasks(optH(stacked), optH(stats), &hs[0], C.int64_t(m), coefs.h, &drop[0], C.double(dropProb),
		gen.handle(), C.int64_t(tasks), out)
	return s.res(e, *out)
}

// NodeBatchNorm normalises the outputs outs ([N, tasks*C, H, W], or [N, tasks, C, H, W] as
// SplitChannels with tasks gives them: one geometry) of a
// batched network's node with one batch norm without affine tensors, each (task, op,
// channel) over its samples and positions as the ops' own batch norms would, and returns
// them stacked, [N, tasks, len(outs), C, H, W] (MixedTasksStacked's input). runMean and
// runVar are the running statistics of the node's members, contiguous [tasks, members, C],
// used when not training and updated when training; sel lists the member of each output
// (rising), or is nil when outs are all the members in order.
func (s *Scope) NodeBatchNorm(outs []*Tensor, runMean, runVar *Tensor, sel []int64, tasks int64, training bool, momentum, eps float64) *Tensor {
	y, _ := s.nodeBatchNorm(outs, runMean, runVar, sel, tasks, training, momentum, eps, false)
	return y
}

// NodeBatchNormStats is NodeBatchNorm in training that leaves the normalising to the node
// sum: it returns the outputs stacked as they are, [N, tasks, len(outs), C, H, W], and
// their batch mean and invstd [2, tasks*len(outs)*C] (the running statistics updated as
// NodeBatchNorm updates them), which MixedTasksCoefs takes together; the sum's backward
// pass then keeps the stack instead of a normalised copy of it. Not training, or for
// outputs other than float32, it is NodeBatchNorm, with nil statistics.
func (s *Scope) NodeBatchNormStats(outs []*Tensor, runMean, runVar *Tensor, sel []int64, tasks int64, training bool, momentum, eps float64) (stacked, stats *Tensor) {
	return s.nodeBatchNorm(outs, runMean, runVar, sel, tasks, training, momentum, eps, true)
}

func (s *Scope) nodeBatchNorm(outs []*Tensor, runMean, runVar *Tensor, sel []int64, tasks int64, training bool, momentum, eps float64, withStats bool) (*Tensor, *Tensor) {
	if !s.ok("node_batch_norm", outs...) || !s.ok("node_batch_norm", runMean, runVar) {
		return &Tensor{}, nil
	}
	if len(outs) == 0 || (sel != nil && len(sel) != len(outs)) {
		return s.fail(fmt.Errorf("node_batch_norm: %d outputs, %d members selected", len(outs), len(sel))), nil
	}
	var selP *C.int64_t
	if sel != nil {
		selP = (*C.int64_t)(unsafe.Pointer(&sel[0]))
	}
	hs := handles(outs)
	var y, st C.mt_tensor
	var stp *C.mt_tensor
	if withStats {
		stp = &st
	}
	e := C.mt_node_batch_norm(&hs[0], C.int64_t(len(hs)), runMean.h, runVar.h, selP, C.int64_t(tasks), C.bool(training),
		C.double(momentum), C.double(eps), &y, stp)
	if e != nil {
		return s.fail(cerr(e)), nil
	}
	if st == nil {
		return s.adopt(y), nil
	}
	return s.adopt(y), s.adopt(st)
}

// NodeNormSum is NodeBatchNorm in training followed by MixedTasksCoefs, fused: members
// (outputs of the node's ops that end in a batch norm, as NodeBatchNorm takes them with
// runMean, runVar and sel; float32, bfloat16 or float16, computed in float32, the node and
// their gradients of their type) are normalised and summed with the first len(members)
// columns of coefs, rest (outputs without a batch norm, of the members' shape) as they are
// with the others, in passes over the members and rest themselves; no stacked or
// normalised copy of them is made, forward or backward, and the backward pass keeps only
// the members and rest. The result, the running statistics' updates and the drop-path
// draws are those of the two calls. NodeNormSumOn tells where it has kernels.
func (s *Scope) NodeNormSum(members []*Tensor, runMean, runVar *Tensor, sel []int64, momentum, eps float64,
	rest []*Tensor, coefs *Tensor, droppable []bool, dropProb float64, gen *Generator, tasks int64) *Tensor {
	if !s.ok("node_norm_sum", members...) || !s.ok("node_norm_sum", rest...) || !s.ok("node_norm_sum", runMean, runVar, coefs) {
		return &Tensor{}
	}
	m := len(droppable)
	if len(members) == 0 || len(members)+len(rest) != m || (sel != nil && len(sel) != len(members)) {
		return s.fail(fmt.Errorf("node_norm_sum: %d members, %d other outputs, %d drop flags, %d members selected",
			len(members), len(rest), m, len(sel)))
	}
	var selP *C.int64_t
	if sel != nil {
		selP = (*C.int64_t)(unsafe.Pointer(&sel[0]))
	}
	hs, rs, drop := handles(members), outHandles(rest), dropFlags(droppable)
	out := s.out()
	e := C.mt_node_norm_sum(&hs[0], C.int64_t(len(hs)), runMean.h, runVar.h, selP, C.double(momentum), C.double(eps),
		&rs[0], C.int64_t(m), coefs.h, &drop[0], C.double(dropProb), gen.handle(), C.int64_t(tasks), out)
	return s.res(e, *out)
}

// NodeNormSumOn reports whether NodeNormSum has kernels for dev: always on the CPU; on
// CUDA where the shim was built with nvcc (its CUDA kernels).
func NodeNormSumOn(dev Device) bool {
	t := C.int(0)
	if dev.CUDA {
		t = 1
	}
	return bool(C.mt_node_norm_sum_on(t))
}

// EmulateKernels, for tests where no GPU is: while on, NodeNormSum, RepeatStatesFan,
// NormReLU and the weight gradient of depthwise Conv2d (SetDepthwiseWeightGrad's) run CPU
// tensors through the shim's CUDA kernels emulated on the host (each block's threads as
// fibers, its warp shuffles and barriers as on a GPU) instead of their CPU code, so that
// the CPU tests check the kernels' launches, indices and reductions. It returns the
// previous setting; the setting is the process's.
func EmulateKernels(on bool) (was bool) {
	return bool(C.mt_set_kernel_emulation(C.bool(on)))
}

// EmulatedLaunches counts the kernel launches that the emulation has run in this process.
func EmulatedLaunches() int64 { return int64(C.mt_ns_emu_launches()) }

// ClipGradNormTasks clips each task's slice of the gradients of params (stacked along
// their first dimension) to global L2 norm maxNorm, as ClipGradNorm does for one task, and
// returns the norms before clipping [tasks].
func (s *Scope) ClipGradNormTasks(params []*Tensor, tasks int64, maxNorm float64) *Tensor {
	if !s.ok("clip_grad_norm_tasks", params...) {
		return &Tensor{}
	}
	if tasks < 1 {
		return s.fail(fmt.Errorf("clip_grad_norm_tasks: tasks must be >= 1, got %d", tasks))
	}
	if len(params) == 0 {
		return s.Zeros([]int64{tasks}, CPU)
	}
	hs := handles(params)
	out := s.out()
	e := C.mt_clip_grad_norm_tasks(&hs[0], C.int64_t(len(hs)), C.int64_t(tasks), C.double(maxNorm), out)
	return s.res(e, *out)
}

// ForeachCopyTasks copies src[i] into each of the tasks slices of dst[i] (a plain copy where
// the sizes agree, e.g. for counters), in one call.
func ForeachCopyTasks(dst, src []*Tensor, tasks int64) error {
	d, e, err := pairs("foreach_copy_tasks_", dst, src)
	if err != nil || len(d) == 0 {
		return err
	}
	return cerr(C.mt_foreach_copy_tasks_(&d[0], &e[0], C.int64_t(len(d)), C.int64_t(tasks)))
}

// ForeachAddTaskSum adds the sum of the tasks slices of src[i] to dst[i], in one call.
func ForeachAddTaskSum(dst, src []*Tensor, tasks int64) error {
	d, e, err := pairs("foreach_add_task_sum_", dst, src)
	if err != nil || len(d) == 0 {
		return err
	}
	return cerr(C.mt_foreach_add_task_sum_(&d[0], &e[0], C.int64_t(len(d)), C.int64_t(tasks)))
}
