// Package torch is metanas-go's tensor layer: LibTorch through gotorch's cgotorch and our own
// C++ shim (torch/shim), with Go-style errors and deterministic memory management.
//
// Every tensor belongs to a Scope. Operations are methods of the scope that receives their
// results; closing a scope frees every tensor it still owns, at once, without the Go garbage
// collector. Tensors that must outlive a scope are moved out with Keep or MoveTo. Errors are
// sticky: the first failing operation records its error (LibTorch's message with the input
// shapes) in the scope, later operations of that scope return invalid tensors without calling
// LibTorch, and Err reports the first error.
//
// Build the native libraries with `make native` before `go build`/`go test`.
package torch

// #cgo CFLAGS: -I${SRCDIR}/shim -I${SRCDIR}/../build/include
// #cgo LDFLAGS: -L${SRCDIR}/../build/lib -Wl,-rpath,${SRCDIR}/../build/lib -lmetanas_shim -lcgotorch -ltorch -ltorch_cpu -lc10
// #include <stdlib.h>
// #include "shim.h"
import "C"

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"unsafe"

	"github.com/wangkuiyi/gotorch"

	// Before gotorch's init: see the package's doc.
	_ "github.com/metanas-go/metanas/internal/earlyinit"
	"github.com/metanas-go/metanas/internal/envswitch"
)

func init() {
	// gotorch's init limits LibTorch to half the cores; MetaNAS wants them all unless the
	// user said otherwise.
	if os.Getenv("OMP_NUM_THREADS") == "" && os.Getenv("MKL_NUM_THREADS") == "" {
		SetNumThreads(runtime.NumCPU())
	}
}

// cerr turns a shim error string into a Go error and frees it.
func cerr(p *C.char) error {
	if p == nil {
		return nil
	}
	msg := C.GoString(p)
	C.mt_free_str(p)
	return errors.New(msg)
}

// DType is a tensor element type.
type DType int

// Element types, numbered as in the shim.
const (
	Float32 DType = iota
	Float64
	Int64
	Uint8
	Bool
	Float16
	BFloat16
)

var dtypeNames = []string{"float32", "float64", "int64", "uint8", "bool", "float16", "bfloat16"}

// String returns the dtype's name.
func (d DType) String() string {
	if d >= 0 && int(d) < len(dtypeNames) {
		return dtypeNames[d]
	}
	return fmt.Sprintf("dtype(%d)", int(d))
}

// Size returns the size of one element in bytes.
func (d DType) Size() int {
	switch d {
	case Float32:
		return 4
	case Float64, Int64:
		return 8
	case Float16, BFloat16:
		return 2
	default:
		return 1
	}
}

// Device names where tensors live: the CPU or a CUDA device.
type Device struct {
	CUDA  bool
	Index int
}

// CPU is the host device.
var CPU = Device{}

// ParseDevice reads "cpu", "cuda" or "cuda:N".
func ParseDevice(s string) (Device, error) {
	switch {
	case s == "cpu" || s == "":
		return CPU, nil
	case s == "cuda":
		return Device{CUDA: true}, nil
	case strings.HasPrefix(s, "cuda:"):
		n, err := strconv.Atoi(strings.TrimPrefix(s, "cuda:"))
		if err != nil || n < 0 {
			return CPU, fmt.Errorf("device %q: the index after cuda: must be a number >= 0", s)
		}
		return Device{CUDA: true, Index: n}, nil
	}
	return CPU, fmt.Errorf("device %q: use cpu, cuda or cuda:N", s)
}

// String returns "cpu" or "cuda:N".
func (d Device) String() string {
	if d.CUDA {
		return fmt.Sprintf("cuda:%d", d.Index)
	}
	return "cpu"
}

// Check returns an error when the device is CUDA and no such GPU is present.
func (d Device) Check() error {
	if !d.CUDA {
		return nil
	}
	if !CUDAAvailable() {
		return fmt.Errorf("device %s: CUDA is not available (no GPU, or LibTorch built without CUDA; rebuild with `make native` against a CUDA PyTorch)", d)
	}
	if n := CUDADeviceCount(); d.Index >= n {
		return fmt.Errorf("device %s: only %d CUDA device(s) present", d, n)
	}
	return nil
}

func (d Device) c() (C.int, C.int) {
	if d.CUDA {
		return 1, C.int(d.Index)
	}
	return 0, 0
}

// CUDAAvailable reports whether LibTorch sees a CUDA GPU.
func CUDAAvailable() bool { return bool(C.mt_cuda_available()) }

// CUDADeviceCount returns the number of CUDA devices.
func CUDADeviceCount() int { return int(C.mt_cuda_device_count()) }

// ManualSeed seeds LibTorch's CPU generator and, when present, every CUDA generator.
func ManualSeed(seed uint64) {
	C.mt_manual_seed(C.uint64_t(seed))
	if CUDAAvailable() {
		_ = cerr(C.mt_cuda_manual_seed_all(C.uint64_t(seed)))
	}
}

// SetNumThreads sets LibTorch's intra-op thread count.
func SetNumThreads(n int) {
	if n < 1 {
		n = 1
	}
	C.mt_set_num_threads(C.int(n))
}

// NumThreads returns LibTorch's intra-op thread count.
func NumThreads() int { return int(C.mt_get_num_threads()) }

// SetCuDNNBenchmark turns cuDNN's autotuner on or off.
func SetCuDNNBenchmark(on bool) { C.mt_set_cudnn_benchmark(C.bool(on)) }

// EmptyCache returns the CUDA memory that LibTorch's caching allocator holds unused (the
// pools of freed CUDA graphs included) to the device, waiting for the device first; a
// no-op without CUDA.
func EmptyCache() error { return cerr(C.mt_cuda_empty_cache()) }

// CUDAMemory is LibTorch's CUDA allocator on a device, in bytes: memory allocated to
// tensors and memory reserved from the device (allocated plus cached, CUDA graphs' pools
// included), now and at their peaks since the last reset.
type CUDAMemory struct {
	Allocated, AllocatedPeak, Reserved, ReservedPeak int64
}

// CUDAMemoryStats reads dev's allocator statistics and, with reset, starts new peaks from
// the current values. An error without CUDA.
func CUDAMemoryStats(dev Device, reset bool) (CUDAMemory, error) {
	var out [4]C.int64_t
	if err := cerr(C.mt_cuda_memory(C.int(dev.Index), C.bool(reset), &out[0])); err != nil {
		return CUDAMemory{}, err
	}
	return CUDAMemory{int64(out[0]), int64(out[1]), int64(out[2]), int64(out[3])}, nil
}

// Synchronize waits for all work queued on a CUDA device (a no-op on CPU).
func Synchronize(d Device) error { return cerr(C.mt_synchronize(C.int(d.Index))) }

// CountOps starts counting ATen operator calls in the whole process (nested ones and those
// of backward passes included, as PyTorch's profiler lists "aten::" events). Counting slows
// every op down: use it for diagnostics, not timings. It cannot be stopped.
func CountOps() { C.mt_count_ops() }

// OpCount is the number of ATen operator calls since CountOps (0 before).
func OpCount() int64 { return int64(C.mt_op_count()) }

// OpStat is the self time of one operator (an ATen op or an autograd node) under ProfileOps.
type OpStat struct {
	Name   string  // e.g. "aten::mul" or "ConvolutionBackward0"
	Calls  int64   // calls since ProfileOps (or the last reset)
	SelfUS float64 // total microseconds inside the operator, nested operators excluded
}

// ProfileOps starts timing every operator call in the process by self time. Like CountOps
// it slows every op down and cannot be stopped: for diagnostics.
func ProfileOps() { C.mt_profile_ops() }

// CallsOf returns the calls of the operator named name in stats (0 when absent).
func CallsOf(stats []OpStat, name string) int64 {
	var n int64
	for _, st := range stats {
		if st.Name == name {
			n += st.Calls
		}
	}
	return n
}

// OpProfile returns the operator times since ProfileOps (or the last reset), largest self
// time first, and starts a new table when reset is true.
func OpProfile(reset bool) ([]OpStat, error) {
	var out []OpStat
	err := profileRows(C.mt_op_profile(C.bool(reset)), "op profile", func(name string, calls int64, value string) error {
		us, err := strconv.ParseFloat(value, 64)
		out = append(out, OpStat{Name: name, Calls: calls, SelfUS: us})
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// profileRows frees p, a shim profile table of "name\tcalls\tvalue" lines, after passing
// each line to row; what names the table in errors.
func profileRows(p *C.char, what string, row func(name string, calls int64, value string) error) error {
	text := C.GoString(p)
	C.free(unsafe.Pointer(p))
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		if line == "" {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 3 {
			return fmt.Errorf("%s: malformed line %q", what, line)
		}
		calls, err := strconv.ParseInt(f[1], 10, 64)
		if err == nil {
			err = row(f[0], calls, f[2])
		}
		if err != nil {
			return fmt.Errorf("%s: malformed line %q", what, line)
		}
	}
	return nil
}

// OpBytes is the memory traffic of one ATen operator under ProfileBytes.
type OpBytes struct {
	Name  string // e.g. "aten::cat"
	Calls int64  // calls made outside another ATen operator since ProfileBytes (or the last reset)
	Bytes int64  // bytes of the tensors those calls read and wrote
}

// ProfileBytes starts counting, for every ATen operator that our code or an autograd node
// calls (not the operators those call in turn), the bytes of the tensors it reads and
// writes: a tensor's elements, at most its storage (an expanded tensor is read from cache);
// none for a view; a copy, fill or zeroing writes its destination without reading it. The
// sum is a floor of the memory traffic that the calls' kernels need, as kernels that pass
// over their data twice (a batch norm) or stage it (convolutions) move more. Like
// ProfileOps it slows every op down (each call's arguments are kept for the count) and
// cannot be stopped: for diagnostics.
func ProfileBytes() { C.mt_profile_bytes() }

// BytesProfile returns the operators' traffic since ProfileBytes (or the last reset), most
// bytes first, and starts a new table when reset is true.
func BytesProfile(reset bool) ([]OpBytes, error) {
	var out []OpBytes
	err := profileRows(C.mt_bytes_profile(C.bool(reset)), "bytes profile", func(name string, calls int64, value string) error {
		bytes, err := strconv.ParseInt(value, 10, 64)
		out = append(out, OpBytes{Name: name, Calls: calls, Bytes: bytes})
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// HostHeap reports the C heap (glibc malloc, all arenas) that LibTorch's CPU tensors and our
// handles live in: bytes in use and bytes free but still held by malloc. Resident memory
// that grows while inUse stays flat is fragmentation, which TrimHostHeap can give back.
func HostHeap() (inUse, freeKept int64) {
	var u, f C.int64_t
	C.mt_host_heap(&u, &f)
	return int64(u), int64(f)
}

// TrimHostHeap empties the CPU tensor pool (TrimCPUPool) and gives the C heap's free memory
// back to the operating system (malloc_trim).
func TrimHostHeap() {
	C.mt_cpu_pool_trim()
	C.mt_trim_host_heap()
}

// CPUPoolStats describes the CPU tensor pool: a caching allocator in the shim that serves
// LibTorch's CPU tensor data. Freed blocks are kept in size classes (at most 1/8 larger than
// asked) and handed out again, per thread (behind an uncontended lock) where they are
// small, instead of going back to malloc; that takes about a tenth off small CPU ops. It is on unless the
// environment has METANAS_CPU_POOL=0; METANAS_CPU_POOL_MAX_MB caps the free memory it keeps
// (default 2048).
type CPUPoolStats struct {
	Enabled     bool  // the pool serves new CPU tensors
	CachedBytes int64 // free blocks the pool keeps
	InUseBytes  int64 // blocks handed out and not yet freed
	Hits        int64 // allocations that reused a kept block
	Misses      int64 // allocations that took a new block from malloc
}

// CPUPool reports the CPU tensor pool's counters (over all threads).
func CPUPool() CPUPoolStats {
	var c, u, h, m C.int64_t
	C.mt_cpu_pool_stats(&c, &u, &h, &m)
	return CPUPoolStats{Enabled: bool(C.mt_cpu_pool_enabled()), CachedBytes: int64(c), InUseBytes: int64(u), Hits: int64(h), Misses: int64(m)}
}

// CPUPoolPeak returns the most bytes of tensors the CPU pool had handed out at once since
// the last reset (or the start): the CPU's counterpart of CUDA's allocated peak, without
// the pool's cached blocks or the C heap's. With reset, the next period starts at the bytes
// handed out now.
func CPUPoolPeak(reset bool) int64 { return int64(C.mt_cpu_pool_peak(C.bool(reset))) }

// SetCPUPool makes the pool (on) or LibTorch's own allocator (off) serve new CPU tensors;
// tensors allocated before keep their allocator. Meant for start-up and for measuring.
func SetCPUPool(on bool) { C.mt_cpu_pool_enable(C.bool(on)) }

// TrimCPUPool frees the blocks the pool keeps, every thread's cache included, and returns
// their bytes.
func TrimCPUPool() int64 { return int64(C.mt_cpu_pool_trim()) }

// cpuPoolSelfTest runs the shim's checks of the pool's size classes and blocks (for tests).
func cpuPoolSelfTest() error { return cerr(C.mt_cpu_pool_selftest()) }

// UsePoolStream makes a stream from LibTorch's pool the current stream of the calling OS
// thread on CUDA device d, so that work issued from several threads can run concurrently.
// The caller must have locked its goroutine to the OS thread (runtime.LockOSThread) and
// synchronise (SyncStream) before other threads use what it wrote. A no-op on CPU.
func UsePoolStream(d Device) error {
	if !d.CUDA {
		return nil
	}
	return cerr(C.mt_use_stream(C.int(d.Index), true))
}

// UseDefaultStream makes the device's default stream current again on the calling OS
// thread (a no-op on CPU).
func UseDefaultStream(d Device) error {
	if !d.CUDA {
		return nil
	}
	return cerr(C.mt_use_stream(C.int(d.Index), false))
}

// SyncStream waits for the work queued on the calling OS thread's current stream of CUDA
// device d (a no-op on CPU; counted by HostSyncs).
func SyncStream(d Device) error {
	if !d.CUDA {
		return nil
	}
	return cerr(C.mt_sync_stream(C.int(d.Index)))
}

// HostSyncs counts operations so far that made the host wait for tensor data (copies to Go
// memory, scalar reads, explicit synchronisation). Tests use it to prove that a hot path
// never synchronises.
func HostSyncs() int64 { return int64(C.mt_sync_count()) }

// LiveTensors returns the number of tensor handles currently allocated by the shim, not
// counting the handles given to gotorch by Gotorch (gotorch frees them without the shim's
// count).
func LiveTensors() int64 { return int64(C.mt_live_tensors()) - gotorchHandles.Load() }

// gotorchHandles counts the shim handles handed over to gotorch.
var gotorchHandles atomic.Int64

// NoGrad runs f with gradient recording off on the calling goroutine's OS thread (LibTorch's
// grad mode is thread-local, so the goroutine is locked to its thread while f runs).
// Goroutines that f starts are not covered.
func NoGrad(f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	prev := bool(C.mt_is_grad_enabled())
	C.mt_set_grad_enabled(false)
	defer C.mt_set_grad_enabled(C.bool(prev))
	return f()
}

// Gotorch returns a gotorch tensor sharing t's data (a second handle, freed by gotorch's
// finalizer), for code that uses gotorch's API directly.
func (t *Tensor) Gotorch() (gotorch.Tensor, error) {
	if err := t.valid("gotorch"); err != nil {
		return gotorch.Tensor{}, err
	}
	var h C.mt_tensor
	if err := cerr(C.mt_alias(t.h, &h)); err != nil {
		return gotorch.Tensor{}, err
	}
	gotorchHandles.Add(1)
	p := unsafe.Pointer(h)
	gotorch.SetTensorFinalizer(&p)
	return gotorch.Tensor{T: &p}, nil
}

// FromGotorch adopts a second handle to a gotorch tensor into the scope.
func (s *Scope) FromGotorch(g gotorch.Tensor) *Tensor {
	if g.T == nil || *g.T == nil {
		return s.fail(errors.New("from_gotorch: nil gotorch tensor"))
	}
	var h C.mt_tensor
	return s.result(h, cerr(C.mt_alias(C.mt_tensor(*g.T), &h)), &h)
}

// PointwiseMatmul reports whether Conv2d computes bias-free 1x1 convolutions at stride 1
// without padding (grouped ones too) on dev as batched matrix products instead of
// convolutions: by default on CUDA only (faster there, slower than the CPU kernels on the
// CPU); METANAS_POINTWISE=matmul or =conv, read once per process, sets it for both.
func PointwiseMatmul(dev Device) bool { return bool(C.mt_pointwise_matmul(C.bool(dev.CUDA))) }

// SetDepthwiseWeightGrad turns on or off, for the process, the shim's own weight gradient
// of depthwise convolutions on CUDA (one block per channel, instead of cuDNN's; initially
// METANAS_DW_WGRAD=1, off by default) and returns the previous setting.
func SetDepthwiseWeightGrad(on bool) (was bool) {
	v := 0
	if on {
		v = 1
	}
	return C.mt_set_dw_wgrad(C.int(v)) != 0
}

// FactorizedReducePatch reports whether networks on dev compute a FactorizedReduce of an
// input of even height and width as one convolution (Scope.FactorizedReduce) instead of two
// convolutions of the input and its shifted slice, a copy of the slice for cuDNN, two zero
// fills and copies in the backward pass and an addition of the two input gradients: by
// default on CUDA only (on the CPU the shim's strided 1x1 kernel runs the halves);
// METANAS_FACTORIZED_REDUCE=patch or =split, read once per process, sets it for both.
func FactorizedReducePatch(dev Device) bool {
	return bool(C.mt_factorized_reduce_patch(C.bool(dev.CUDA)))
}

// SetAllowTF32 lets CUDA convolutions (cuDNN) and matrix products (cuBLAS) compute in TF32,
// with a 10-bit mantissa. LibTorch's default allows it for convolutions, not for matrix
// products. It has no effect on the CPU.
func SetAllowTF32(conv, matmul bool) { C.mt_set_allow_tf32(C.bool(conv), C.bool(matmul)) }

// tf32Matmul reads METANAS_TF32_MATMUL.
var tf32Matmul = envswitch.New("METANAS_TF32_MATMUL", "0", "1", false, "matrix products stay float32")

// TF32Matmul reports METANAS_TF32_MATMUL=1, an experiment for CUDA (off by default): the
// trainer then lets cuBLAS's matrix products compute in TF32 as cuDNN's convolutions do by
// default. On CUDA a batched network's 1x1 convolutions are such products (PointwiseMatmul),
// which the reference runs as cuDNN convolutions, in TF32; the node sums and the
// classifier become TF32 products too (inputs rounded to a 10-bit mantissa, float32 sums).
func TF32Matmul() bool { return tf32Matmul() }
