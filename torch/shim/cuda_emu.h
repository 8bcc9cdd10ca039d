// A host emulation of the CUDA that nodesum.cu's kernels use, so that the CPU tests run the
// kernels' own code (launch shells, index arithmetic, grid-stride loops, warp and block
// reductions) where no GPU is: native.mk compiles nodesum.cu a second time as C++ with
// MT_CUDA_EMU, and mt_set_kernel_emulation routes CPU tensors through that build.
//
// A launch runs its blocks one after another, each block's threads as fibers (ucontext) on
// the calling thread: a thread runs until it returns, meets __syncthreads or a warp
// shuffle, and the barrier opens when every thread that has not returned reached it. A
// shuffle with lanes that returned or wait elsewhere, or a __syncthreads that some threads
// skip while others wait at a shuffle, is a divergence that CUDA leaves undefined: the
// launch fails (cudaGetLastError, cudaGetErrorString says where). Launches are serialised,
// so __shared__ (function statics) serve the one block that runs. Only what nodesum.cu uses
// is here: 1-D blocks of whole warps, __shfl_down_sync over full warps, __syncthreads.
#pragma once

#include <ucontext.h>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

using __nv_bfloat16 = c10::BFloat16;
using __half = c10::Half;

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

using cudaStream_t = void *;
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchFailure = 719
};

// The running thread's coordinates, set before each fiber resumes.
// (The header serves one translation unit: nothing of it has external linkage.)
static dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace {
namespace mt_emu {

enum class At { running, warp, block, done };

struct Fiber {
  ucontext_t ctx;
  At at = At::running;
  unsigned char xfer[8];  // a shuffled value
};

// State of the launch that runs (launches hold mu()).
struct Run {
  ucontext_t sched;
  std::vector<Fiber> fibers;
  std::unique_ptr<char[]> stacks;
  size_t stack_size = size_t{64} << 10;
  unsigned cur = 0;
  std::function<void()> body;
  std::string error;
};

inline std::mutex &mu() {
  static std::mutex m;
  return m;
}
inline Run &run() {
  static Run r;
  return r;
}
// The calling thread's last launch error and its message, as CUDA's per-thread error.
inline int &last_error() {
  thread_local int e = 0;
  return e;
}
inline std::string &last_message() {
  thread_local std::string s;
  return s;
}

// launches counts the launches run (for tests: that the emulation ran).
inline std::atomic<int64_t> &launches() {
  static std::atomic<int64_t> n{0};
  return n;
}

// wait suspends the running thread at a barrier of kind a.
inline void wait(At a) {
  Run &r = run();
  Fiber &f = r.fibers[r.cur];
  f.at = a;
  swapcontext(&f.ctx, &r.sched);
}

inline void entry() {
  Run &r = run();
  r.body();
  r.fibers[r.cur].at = At::done;  // returns to sched through uc_link
}

// run_block runs one block's threads to their ends; false (r.error set) on a divergence.
inline bool run_block(Run &r) {
  const unsigned n = blockDim.x;
  for (unsigned i = 0; i < n; i++) {
    Fiber &f = r.fibers[i];
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = r.stacks.get() + i * r.stack_size;
    f.ctx.uc_stack.ss_size = r.stack_size;
    f.ctx.uc_link = &r.sched;
    makecontext(&f.ctx, entry, 0);
    f.at = At::running;
  }
  for (;;) {
    for (unsigned i = 0; i < n; i++) {
      if (r.fibers[i].at != At::running) continue;
      r.cur = i;
      threadIdx = dim3(i, 0, 0);
      swapcontext(&r.sched, &r.fibers[i].ctx);
    }
    // Every thread has returned or waits at a barrier: open the ones that are complete.
    bool open = false, any = false, at_block = false, at_warp = false;
    for (unsigned w = 0; w < n; w += 32) {
      int warp = 0, done = 0;
      for (unsigned i = w; i < w + 32; i++) {
        warp += r.fibers[i].at == At::warp;
        done += r.fibers[i].at == At::done;
        at_block = at_block || r.fibers[i].at == At::block;
      }
      any = any || done < 32;
      if (warp == 0) continue;
      at_warp = true;
      if (warp != 32) {
        r.error = "block (" + std::to_string(blockIdx.x) + ", " + std::to_string(blockIdx.y) + ") warp " +
                  std::to_string(w / 32) + ": a shuffle over a full warp reached by " + std::to_string(warp) +
                  " lanes (" + std::to_string(done) + " returned)";
        return false;
      }
      for (unsigned i = w; i < w + 32; i++) r.fibers[i].at = At::running;
      open = true;
    }
    if (!any) return true;
    if (open) continue;
    if (at_block && !at_warp) {
      for (auto &f : r.fibers)
        if (f.at == At::block) f.at = At::running;
      continue;
    }
    r.error = "block (" + std::to_string(blockIdx.x) + ", " + std::to_string(blockIdx.y) +
              "): __syncthreads while other threads wait at a shuffle";
    return false;
  }
}

// Launch runs kernel f on a grid of blocks of threads when called with its arguments.
template <class... P>
struct Launch {
  dim3 grid, block;
  void (*f)(P...);
  template <class... A>
  void operator()(A &&...args) const {
    std::lock_guard<std::mutex> lock(mu());
    launches()++;
    if (block.x == 0 || block.x % 32 != 0 || block.x > 1024 || block.y != 1 || block.z != 1 || grid.x == 0 ||
        grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535) {
      last_error() = cudaErrorInvalidConfiguration;
      return;
    }
    Run &r = run();
    if (r.fibers.size() < block.x) {
      r.fibers.resize(block.x);
      r.stacks.reset(new char[block.x * r.stack_size]);
    }
    // Each thread gets the arguments by value, as a kernel's parameters.
    std::tuple<std::decay_t<P>...> params(static_cast<P>(args)...);
    r.body = [this, &params] { std::apply(f, params); };
    gridDim = grid;
    blockDim = block;
    for (unsigned z = 0; z < grid.z; z++)
      for (unsigned y = 0; y < grid.y; y++)
        for (unsigned x = 0; x < grid.x; x++) {
          blockIdx = dim3(x, y, z);
          if (!run_block(r)) {
            last_error() = cudaErrorLaunchFailure;
            last_message() = "emulated kernel launch failed: " + r.error;
            r.body = nullptr;
            return;
          }
        }
    r.body = nullptr;
  }
};

template <class... P>
Launch<P...> launch(dim3 grid, dim3 block, void (*f)(P...)) {
  return Launch<P...>{grid, block, f};
}

}  // namespace mt_emu
}  // namespace

// __syncthreads waits until every thread of the block that has not returned reaches it.
static inline void __syncthreads() { mt_emu::wait(mt_emu::At::block); }

// __shfl_down_sync returns v of the lane delta above (its own past the warp's end); every
// lane of the warp must call it (nodesum.cu's mask is the full warp).
template <class T>
static T __shfl_down_sync(unsigned mask, T v, unsigned delta) {
  static_assert(sizeof(T) <= 8, "shuffled values are at most 8 bytes");
  (void)mask;
  mt_emu::Run &r = mt_emu::run();
  const unsigned me = threadIdx.x, lane = me % 32;
  std::memcpy(r.fibers[me].xfer, &v, sizeof(T));
  mt_emu::wait(mt_emu::At::warp);  // every lane has published its value
  T out = v;
  if (lane + delta < 32) std::memcpy(&out, r.fibers[me - lane + lane + delta].xfer, sizeof(T));
  mt_emu::wait(mt_emu::At::warp);  // every lane has read before any publishes again
  return out;
}

static inline cudaError_t cudaGetLastError() {
  const int e = mt_emu::last_error();
  mt_emu::last_error() = 0;
  return static_cast<cudaError_t>(e);
}

static inline const char *cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorLaunchFailure:
      return mt_emu::last_message().c_str();
  }
  return "unknown error";
}

// The launch of nodesum.cu's kernels: kernel<<<grid, block, 0, stream>>>(args) on a GPU;
// here at once, whatever the stream.
#define MT_LAUNCH(kernel, grid, block, stream) ((void)(stream), ::mt_emu::launch(dim3(grid), dim3(block), kernel))
