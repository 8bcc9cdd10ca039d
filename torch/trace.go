package torch

// #include <stdlib.h>
// #include "shim.h"
import "C"

import "unsafe"

// StartTrace starts recording, with PyTorch's own profiler (Kineto), every kernel and copy
// that CUDA devices run (cuda true) or every operator call on the host (cuda false), until
// StopTrace; hostOps records the host's operator calls along with the kernels, so that
// each eagerly launched kernel can be traced to the operators around its launch.
// Diagnostics only: recording slows every launch. Only one trace runs at a time.
func StartTrace(cuda, hostOps bool) error {
	return cerr(C.mt_trace_start(C.bool(cuda), C.bool(hostOps)))
}

// StopTrace ends the trace started by StartTrace and writes it to path as a Chrome trace
// (JSON, as torch.profiler's export_chrome_trace writes it; chrome://tracing and Perfetto
// open it).
func StopTrace(path string) error {
	p := C.CString(path)
	defer C.free(unsafe.Pointer(p))
	return cerr(C.mt_trace_stop(p))
}
