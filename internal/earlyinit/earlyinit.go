// Package earlyinit runs before gotorch's package initialisation and keeps it from
// aborting the process on a machine (or CPU set) with a single CPU: gotorch's init sets
// LibTorch's thread count to half the CPUs unless OMP_NUM_THREADS or MKL_NUM_THREADS is
// set, and LibTorch rejects zero threads with an uncaught C++ exception. Go initialises
// packages that do not depend on each other in import-path order, and this path sorts
// before gotorch's, so the torch package imports it for its side effect: with one CPU and
// neither variable set, it sets OMP_NUM_THREADS=1 (what LibTorch would use there anyway).
package earlyinit

import (
	"os"
	"runtime"
)

func init() {
	if runtime.NumCPU() < 2 && os.Getenv("OMP_NUM_THREADS") == "" && os.Getenv("MKL_NUM_THREADS") == "" {
		os.Setenv("OMP_NUM_THREADS", "1")
	}
}
