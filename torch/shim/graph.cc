// CUDA graphs: the kernels that a stretch of host code queues, captured once and replayed
// with one launch. A CPU-only build reports every call as unsupported.
#include "common.h"

#ifdef WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/version.h>
#endif

namespace {

#ifdef WITH_CUDA
// Private generators take part in a graph only where CUDAGraph can register them.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define MT_GRAPH_GENERATORS 1
#endif

struct Graph {
  at::cuda::CUDAGraph g;
  c10::DeviceIndex dev = 0;
  c10::optional<c10::cuda::CUDAStream> prev;  // the thread's stream before the capture
  bool captured = false;
};

Graph &G(mt_graph g) { return *static_cast<Graph *>(g); }
#endif

[[noreturn]] void no_cuda() { throw std::runtime_error("CUDA graphs need a LibTorch with CUDA"); }

}  // namespace

extern "C" {

char *mt_graph_new(int device_index, mt_graph *out) {
  MT_TRY
  *out = nullptr;
#ifdef WITH_CUDA
  if (!torch::cuda::is_available()) throw std::runtime_error("CUDA graphs need a CUDA device");
  auto g = new Graph();
  g->dev = static_cast<c10::DeviceIndex>(device_index);
  *out = g;
#else
  (void)device_index;
  no_cuda();
#endif
  MT_CATCH("graph")
}

char *mt_graph_capture_begin(mt_graph h, mt_generator *gens, int64_t ngens, mt_graph share) {
  MT_TRY
#ifdef WITH_CUDA
  auto &x = G(h);
  if (x.captured || x.prev) throw std::logic_error("graph: already captured");
  decltype(x.g.pool()) pool{0, 0};  // {0, 0}: a private pool of its own
  if (share != nullptr) {
    if (!G(share).captured) throw std::logic_error("graph: sharing the pool of a graph not captured");
    pool = G(share).g.pool();
  }
  for (int64_t i = 0; i < ngens; i++) {
    if (gens[i] == nullptr) continue;
#ifdef MT_GRAPH_GENERATORS
    x.g.register_generator_state(*static_cast<at::Generator *>(gens[i]));
#else
    throw std::runtime_error("graph: private generators need PyTorch >= 2.4");
#endif
  }
  // Capture runs on a side stream (CUDA refuses the default stream) that starts after
  // what the thread's stream has queued; replays go to whatever stream is current then.
  mt::host_syncs.fetch_add(1);
  torch::cuda::synchronize(x.dev);
  // Cached blocks of eager steps go back to the device, for the graph's pool to use.
  c10::cuda::CUDACachingAllocator::emptyCache();
  auto cur = c10::cuda::getCurrentCUDAStream(x.dev);
  auto side = c10::cuda::getStreamFromPool(false, x.dev);
  c10::cuda::setCurrentCUDAStream(side);
  x.prev = cur;
  try {
    x.g.capture_begin(pool);
  } catch (...) {
    c10::cuda::setCurrentCUDAStream(cur);
    x.prev.reset();
    throw;
  }
#else
  (void)h;
  (void)gens;
  (void)ngens;
  (void)share;
  no_cuda();
#endif
  MT_CATCH("graph capture")
}

char *mt_graph_capture_end(mt_graph h) {
  MT_TRY
#ifdef WITH_CUDA
  auto &x = G(h);
  if (!x.prev) throw std::logic_error("graph: capture_end without capture_begin");
  auto prev = *x.prev;
  x.prev.reset();
  try {
    x.g.capture_end();
  } catch (...) {
    c10::cuda::setCurrentCUDAStream(prev);
    throw;
  }
  c10::cuda::setCurrentCUDAStream(prev);
  x.captured = true;
#else
  (void)h;
  no_cuda();
#endif
  MT_CATCH("graph capture")
}

char *mt_graph_replay(mt_graph h) {
  MT_TRY
#ifdef WITH_CUDA
  auto &x = G(h);
  if (!x.captured) throw std::logic_error("graph: replay before a successful capture");
  x.g.replay();
#else
  (void)h;
  no_cuda();
#endif
  MT_CATCH("graph replay")
}

char *mt_cuda_memory(int device_index, bool reset, int64_t *out) {
  MT_TRY
#ifdef WITH_CUDA
  if (!torch::cuda::is_available()) throw std::runtime_error("no CUDA device");
  const auto dev = static_cast<c10::DeviceIndex>(device_index);
  const auto st = c10::cuda::CUDACachingAllocator::getDeviceStats(dev);
  // Index 0 of each statistic is the aggregate of the allocator's pools.
  out[0] = st.allocated_bytes[0].current;
  out[1] = st.allocated_bytes[0].peak;
  out[2] = st.reserved_bytes[0].current;
  out[3] = st.reserved_bytes[0].peak;
  if (reset) c10::cuda::CUDACachingAllocator::resetPeakStats(dev);
#else
  (void)device_index;
  (void)reset;
  (void)out;
  no_cuda();
#endif
  MT_CATCH("cuda memory")
}

char *mt_cuda_empty_cache(void) {
  MT_TRY
#ifdef WITH_CUDA
  if (torch::cuda::is_available()) {
    mt::host_syncs.fetch_add(1);
    c10::cuda::CUDACachingAllocator::emptyCache();
  }
#endif
  MT_CATCH("cuda empty cache")
}

void mt_graph_free(mt_graph h) {
#ifdef WITH_CUDA
  delete static_cast<Graph *>(h);
#else
  (void)h;
#endif
}

}  // extern "C"
