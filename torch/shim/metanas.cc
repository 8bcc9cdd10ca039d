// Fused MetaNAS hot paths.
#include "common.h"

#include <map>
#include <string>

using mt::T;
using mt::wrap;

namespace {

// device_copy returns the host array data, of the given shape, as a tensor of type st on dev. On CUDA it keeps,
// per OS thread, the device copies of the small index and incidence arrays that a
// forward pass passes for every node (they change only when pruning changes): a copy
// from host memory on every call would wait for the GPU each time. The cache never
// evicts (an evicted tensor could still be read by queued kernels); past its bound it
// stops caching and copies without waiting instead.
template <class E>
at::Tensor device_copy(const E *data, std::vector<int64_t> shape, at::ScalarType st,
                       const c10::Device &dev) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  auto host = torch::from_blob(const_cast<E *>(data), shape, torch::TensorOptions().dtype(c10::CppTypeToScalarType<E>::value));
  if (dev.is_cpu()) return host.to(st, /*non_blocking=*/false, /*copy=*/true);
  thread_local std::map<std::string, at::Tensor> cache;
  std::string key(reinterpret_cast<const char *>(data), n * sizeof(E));
  key += '|' + dev.str() + '|' + std::to_string(static_cast<int>(st));
  for (auto d : shape) key += ',' + std::to_string(d);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  // The pinned staging copy lets the transfer run asynchronously without a host wait.
  auto t = host.to(st).pin_memory().to(dev, st, /*non_blocking=*/true);
  if (cache.size() < 4096) cache.emplace(std::move(key), t);
  return t;
}

// node_sum_loop: METANAS_NODE_SUM=loop makes mt_mixed_tasks's non-CPU path sum the op
// outputs term by term instead of through a stacked copy (an experiment: GPU memory).
bool node_sum_loop() {
  static const bool on = mt::env_is("METANAS_NODE_SUM", "loop");
  return on;
}

}  // namespace

extern "C" {

char *mt_mixed_node(mt_tensor *outs, int64_t m, mt_tensor wpair, mt_tensor wops,
                    const float *inc, int64_t p, int64_t n_in, const int64_t *idx,
                    const uint8_t *droppable, double drop_prob, mt_generator gen,
                    mt_tensor *out) {
  MT_TRY
  if (m <= 0) throw std::invalid_argument("no active ops");
  const auto &w = T(wops);
  const auto dev = w.device();
  at::Tensor coef;  // [n_in, K] combined weights
  if (wpair != nullptr) {
    auto incT = device_copy(inc, {p, n_in}, w.scalar_type(), dev);
    auto c = at::matmul(T(wpair).unsqueeze(0), incT).squeeze(0);  // [n_in]
    coef = w * c.unsqueeze(1);
  } else {
    coef = w;
  }
  auto idxT = device_copy(idx, {m}, torch::kLong, dev);
  auto cm = coef.flatten().index_select(0, idxT);  // [m]
  std::vector<at::Tensor> ts = mt::tensors(outs, m);
  if (m == 1 && drop_prob <= 0) {
    *out = wrap(ts[0] * cm);
    return nullptr;
  }
  const int64_t rank = ts[0].dim() + 1;  // of the stacked [m, N, C, H, W]
  std::vector<int64_t> shape(rank, 1);
  shape[0] = m;
  at::Tensor factor = cm.view(shape);
  if (drop_prob > 0) {
    const double keep = 1.0 - drop_prob;
    std::vector<int64_t> ms(rank, 1);
    ms[0] = m;
    ms[1] = ts[0].size(0);
    c10::optional<at::Generator> g;
    if (gen != nullptr) g = *static_cast<at::Generator *>(gen);
    auto mask = at::empty(ms, w.options().requires_grad(false)).bernoulli_(keep, g).div_(keep);
    bool all = true;
    for (int64_t i = 0; i < m; i++) all = all && droppable[i];
    if (!all) {
      // Ops without drop-path (identities) keep a mask of one: one where() on a cached
      // flag vector instead of a fill per op.
      std::vector<int64_t> fs(rank, 1);
      fs[0] = m;
      auto flags = device_copy(droppable, {m}, torch::kBool, dev).view(fs);
      mask = at::where(flags, mask, 1.0);
    }
    factor = factor * mask;
  }
  // On the CPU one pass over the op outputs (no [m, N, C, H, W] buffer); elsewhere three
  // kernels.
  auto fused = mt::mixed_sum_cpu(drop_prob > 0 ? factor.reshape({m, ts[0].size(0)}) : cm, ts);
  if (fused.defined()) {
    *out = wrap(fused);
    return nullptr;
  }
  *out = wrap((at::stack(ts, 0) * factor).sum(0));
  MT_CATCH("mixed_node", wops, wpair, m > 0 ? outs[0] : nullptr)
}

char *mt_mixed_tasks(mt_tensor *outs, int64_t m, mt_tensor wpair, mt_tensor wops, const float *inc,
                     int64_t p, int64_t n_in, const int64_t *idx, const uint8_t *droppable,
                     double drop_prob, mt_generator gen, double threshold, int64_t tasks,
                     mt_tensor *out) {
  MT_TRY
  if (m <= 0) throw std::invalid_argument("no active ops");
  if (tasks < 1) throw std::invalid_argument("tasks must be >= 1");
  const auto &w0 = T(wops);
  const auto dev = w0.device();
  // Per task: weights at or below the threshold count as zero (the op or pair is pruned
  // for that task; another task may still need its output).
  auto w = w0.reshape({tasks, n_in, -1});
  w = w * w.gt(threshold);
  at::Tensor coef = w;  // [tasks, n_in, K]
  if (wpair != nullptr) {
    auto wp = T(wpair).reshape({tasks, p});
    wp = wp * wp.gt(threshold);
    auto incT = device_copy(inc, {p, n_in}, w.scalar_type(), dev);
    coef = w * at::matmul(wp, incT).unsqueeze(2);
  }
  auto idxT = device_copy(idx, {m}, torch::kLong, dev);
  auto cm = coef.reshape({tasks, -1}).index_select(1, idxT);  // [tasks, m]
  std::vector<at::Tensor> ts = mt::tensors(outs, m);
  const auto sizes = ts[0].sizes();
  std::vector<at::Tensor> v;
  v.reserve(m);
  for (int64_t i = 0; i < m; i++) {
    if (!ts[i].sizes().equals(sizes))
      throw std::invalid_argument("op output " + std::to_string(i) + " has shape " + std::string(c10::str(ts[i].sizes())) +
                                  ", output 0 " + std::string(c10::str(sizes)));
    if (ts[i].dim() < 2 || ts[i].size(1) % tasks != 0)
      throw std::invalid_argument("op output channels do not hold " + std::to_string(tasks) + " tasks");
    v.push_back(ts[i].reshape({ts[i].size(0), tasks, -1}));
  }
  const int64_t N = ts[0].size(0);
  at::Tensor mask;  // [N, tasks, m]: one drop-path draw per sample, task and op
  if (drop_prob > 0) {
    const double keep = 1.0 - drop_prob;
    c10::optional<at::Generator> g;
    if (gen != nullptr) g = *static_cast<at::Generator *>(gen);
    mask = at::empty({N, tasks, m}, w0.options().requires_grad(false)).bernoulli_(keep, g).div_(keep);
    bool all = true;
    for (int64_t i = 0; i < m; i++) all = all && droppable[i];
    if (!all) mask = at::where(device_copy(droppable, {m}, torch::kBool, dev), mask, 1.0);
  }
  if (dev.is_cpu()) {
    // The CPU's one-pass sum over op outputs, with each (sample, task) as a sample of its
    // own: [N, tasks*C, ...] is [N*tasks, C, ...] in memory.
    at::Tensor f = cm.t().unsqueeze(1).expand({m, N, tasks});  // [m, N, tasks]
    if (mask.defined()) f = f * mask.permute({2, 0, 1});
    std::vector<at::Tensor> flat;
    flat.reserve(m);
    for (const auto &t : ts) flat.push_back(t.reshape({N * tasks, -1}));
    auto fused = mt::mixed_sum_cpu(f.reshape({m, N * tasks}), flat);
    if (fused.defined()) {
      *out = wrap(fused.view(sizes));
      return nullptr;
    }
  }
  if (node_sum_loop()) {
    // Term by term (addcmul): autograd keeps the op outputs it already holds instead of a
    // stacked copy of them, for more and smaller kernels.
    at::Tensor f = mask.defined() ? cm.unsqueeze(0) * mask : cm.unsqueeze(0);  // [1|N, tasks, m]
    at::Tensor acc;
    for (int64_t i = 0; i < m; i++) {
      auto fi = f.select(2, i).unsqueeze(-1);  // [1|N, tasks, 1]
      acc = i == 0 ? v[i] * fi : at::addcmul(acc, v[i], fi);
    }
    *out = wrap(acc.view(sizes));
    return nullptr;
  }
  at::Tensor factor = cm.unsqueeze(1);  // [tasks, 1, m]
  if (mask.defined()) factor = (cm.unsqueeze(0) * mask).unsqueeze(2);  // [N, tasks, 1, m]
  // factor x [N, tasks, m, F]: one batched product weighs and sums every op output. The
  // outputs are stacked along dim 2, so each is copied in whole blocks of F values: a
  // stack along the last dim ([N, tasks, F, m]) interleaves them element by element, and
  // on an H200 took 1.9 ms per 28x28 node of the og_metanas batch of 10 (a fifth of a step).
  auto node = at::matmul(factor, at::stack(v, 2));
  *out = wrap(node.view(sizes));
  MT_CATCH("mixed_tasks", wops, wpair, m > 0 ? outs[0] : nullptr)
}

}  // extern "C"
