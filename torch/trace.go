package torch

// #include <stdlib.h>
// #include "shim.h"
import "C"

import "unsafe"

// StartTrace starts recording, with PyTorch's own profiler (Kineto), every kernel and copy
// that CUDA devices run (cuda true) or every operator call on the host (cuda false), until
// StopTrace. Diagnostics only: recording slows every launch. Only one trace runs at a time.
func StartTrace(cuda bool) error { return cerr(C.mt_trace_start(C.bool(cuda))) }

// StopTrace ends the trace started by StartTrace and writes it to path as a Chrome trace
// (JSON, as torch.profiler's export_chrome_trace writes it; chrome://tracing and Perfetto
// open it).
func StopTrace(path string) error {
	p := C.CString(path)
	defer C.free(unsafe.Pointer(p))
	return cerr(C.mt_trace_stop(p))
}
