// Kernel traces: PyTorch's own profiler (Kineto) records what the device ran, kernel by
// kernel, between mt_trace_start and mt_trace_stop, and writes it as a Chrome trace (the
// file torch.profiler's export_chrome_trace writes). Diagnostics only: it slows every launch.
#include "common.h"

#include <torch/csrc/autograd/profiler_kineto.h>

namespace {
namespace prof = torch::profiler::impl;
namespace kin = torch::autograd::profiler;
}  // namespace

char *mt_trace_start(bool cuda, bool host_ops) {
  MT_TRY
  prof::ProfilerConfig cfg(prof::ProfilerState::KINETO);
  std::set<prof::ActivityType> acts{cuda ? prof::ActivityType::CUDA : prof::ActivityType::CPU};
  if (host_ops) acts.insert(prof::ActivityType::CPU);
  kin::prepareProfiler(cfg, acts);
  kin::enableProfiler(cfg, acts);
  MT_CATCH("trace start")
}

char *mt_trace_stop(const char *path) {
  MT_TRY
  auto r = kin::disableProfiler();
  if (!r) throw std::runtime_error("the profiler returned no result (was a trace started?)");
  r->save(path);
  MT_CATCH("trace stop")
}
