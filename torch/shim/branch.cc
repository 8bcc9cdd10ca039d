// Branch streams: the independent ops of a search node queued on several CUDA streams at
// once, so that the GPU runs their small kernels side by side (an experiment, off unless
// METANAS_BRANCH_STREAMS=N with N >= 2). Forward ops run on the branch that was current
// when they were queued; LibTorch's autograd runs each one's backward on the same stream and
// synchronises streams where gradients cross. A CPU-only build never forks.
#include "common.h"

#ifdef WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace {

// branch_count is METANAS_BRANCH_STREAMS (at most 16), or 0 when unset, not a number or
// below 2.
int branch_count() {
  static const int n = [] {
    const char *e = std::getenv("METANAS_BRANCH_STREAMS");
    if (e == nullptr || *e == '\0') return 0;
    char *end = nullptr;
    long v = std::strtol(e, &end, 10);
    if (*end != '\0' || v < 0) {
      std::fprintf(stderr, "metanas: METANAS_BRANCH_STREAMS=%s is not a count of streams; branch streams stay off\n", e);
      return 0;
    }
    return v < 2 ? 0 : static_cast<int>(std::min<long>(v, 16));
  }();
  return n;
}

#ifdef WITH_CUDA
// A thread's branching state: its branch streams (taken once per device from LibTorch's
// high-priority pool, apart from the low-priority streams that captures and workers use),
// the trunk stream while a fork is open, and the events that order the two.
struct Branching {
  c10::DeviceIndex dev = -1;
  std::vector<c10::cuda::CUDAStream> streams;
  std::vector<at::cuda::CUDAEvent> done;
  at::cuda::CUDAEvent start;
  c10::optional<c10::cuda::CUDAStream> trunk;
};
thread_local Branching br;

// keep_grad_for marks the gradient that reaches t in the backward pass as used by streams,
// so that the caching allocator keeps its memory until their work queued so far is done
// (during a capture: until the capture ends).
void keep_grad_for(const at::Tensor &t, std::vector<c10::cuda::CUDAStream> streams) {
  t.register_hook([streams](const at::TensorBase &g) {
    if (!g.defined() || !g.is_cuda()) return;
    at::Tensor gt(g);
    for (const auto &s : streams) gt.record_stream(s);
  });
}
#endif

}  // namespace

extern "C" {

int mt_branch_streams(void) { return branch_count(); }

char *mt_branch_fork(int device_index, int64_t *n) {
  MT_TRY
  *n = 0;
#ifdef WITH_CUDA
  const int want = branch_count();
  if (want < 2) return nullptr;
  if (br.trunk) throw std::logic_error("branch streams: fork while a fork is open");
  auto dev = static_cast<c10::DeviceIndex>(device_index);
  if (br.dev != dev) {
    br.streams.clear();
    br.done.clear();
    br.dev = dev;
  }
  while (static_cast<int>(br.streams.size()) < want) {
    br.streams.push_back(c10::cuda::getStreamFromPool(true, dev));
    br.done.emplace_back();
  }
  auto trunk = c10::cuda::getCurrentCUDAStream(dev);
  br.start.record(trunk);
  for (auto &s : br.streams) br.start.block(s);
  br.trunk = trunk;
  *n = want;
#else
  (void)device_index;
#endif
  MT_CATCH("branch fork")
}

char *mt_branch_use(int64_t i) {
  MT_TRY
#ifdef WITH_CUDA
  if (!br.trunk) throw std::logic_error("branch streams: use without a fork");
  c10::cuda::setCurrentCUDAStream(i < 0 ? *br.trunk : br.streams[static_cast<size_t>(i) % br.streams.size()]);
#else
  (void)i;
  throw std::logic_error("branch streams: use without a fork");
#endif
  MT_CATCH("branch use")
}

char *mt_branch_join(mt_tensor *outs, int64_t n) {
  MT_TRY
#ifdef WITH_CUDA
  if (!br.trunk) throw std::logic_error("branch streams: join without a fork");
  auto trunk = *br.trunk;
  br.trunk.reset();
  c10::cuda::setCurrentCUDAStream(trunk);
  for (size_t i = 0; i < br.streams.size(); i++) {
    br.done[i].record(br.streams[i]);
    br.done[i].block(trunk);
  }
  // The outputs were allocated on branch streams and are read on the trunk: their memory
  // must not go back to a branch's pool before the trunk's reads. Their gradients come the
  // other way in the backward pass (made on the trunk, read on the branches), which autograd
  // orders by events but whose memory the trunk could reuse before a branch has read it: as
  // in a replayed CUDA graph, where only the captured dependencies order the streams.
  for (int64_t i = 0; i < n; i++) {
    if (outs[i] == nullptr) continue;
    auto &t = mt::T(outs[i]);
    if (!t.defined() || !t.is_cuda()) continue;
    t.record_stream(trunk);
    if (t.requires_grad()) keep_grad_for(t, br.streams);
  }
#else
  (void)outs;
  (void)n;
  throw std::logic_error("branch streams: join without a fork");
#endif
  MT_CATCH("branch join")
}

char *mt_branch_input(mt_tensor x, mt_tensor *out) {
  MT_TRY
  const auto &t = mt::T(x);
#ifdef WITH_CUDA
  if (br.trunk && t.defined() && t.is_cuda()) {
    // t was made on the trunk and is read on this branch, in the forward pass and, where an
    // op saves it, in the backward pass: its memory must not go back to the trunk's pool
    // before the branch's reads.
    t.record_stream(c10::cuda::getCurrentCUDAStream(t.device().index()));
    if (t.requires_grad()) {
      // The alias is made on the branch, so autograd runs its backward there: the gradient
      // it passes on to t (made on the branch) is what the trunk then reads.
      auto a = t.view_as(t);
      keep_grad_for(a, {*br.trunk});
      *out = mt::wrap(a);
      return nullptr;
    }
  }
#endif
  *out = mt::wrap(t);
  MT_CATCH("branch input", x)
}

}  // extern "C"
