// Ops for a batch of tasks trained as one network: every parameter holds the tasks' copies
// stacked along its first dimension ([tasks * d0, ...]), and every activation the tasks'
// channels side by side ([N, tasks * C, H, W]).
#include "common.h"

#include <torch/version.h>

using mt::T;
using mt::wrap;

namespace {
// rows views t as [tasks, -1] after checking that its first dimension holds the tasks.
at::Tensor rows(const at::Tensor &t, int64_t tasks) {
  if (t.dim() == 0 || t.size(0) % tasks != 0)
    throw std::invalid_argument("shape " + std::string(c10::str(t.sizes())) + " does not stack " +
                                std::to_string(tasks) + " tasks along its first dimension");
  return t.view({tasks, -1});
}

// not_copies is the error for tensor i: many does not hold tasks copies of one.
std::invalid_argument not_copies(int64_t i, const at::Tensor &many, int64_t tasks, const at::Tensor &one) {
  return std::invalid_argument("tensor " + std::to_string(i) + ": " + std::string(c10::str(many.sizes())) +
                               " does not hold " + std::to_string(tasks) + " copies of " +
                               std::string(c10::str(one.sizes())));
}
}  // namespace

extern "C" {

char *mt_matmul(mt_tensor a, mt_tensor b, mt_tensor *out) {
  MT_TRY
  *out = wrap(at::matmul(T(a), T(b)));
  MT_CATCH("matmul", a, b)
}

char *mt_clip_grad_norm_tasks(mt_tensor *ts, int64_t n, int64_t tasks, double max_norm, mt_tensor *norms) {
  MT_TRY
  at::NoGradGuard guard;
  std::vector<at::Tensor> grads;  // [tasks, -1] views of the gradients
  for (int64_t i = 0; i < n; i++) {
    const auto &g = T(ts[i]).grad();
    if (g.defined()) grads.push_back(rows(g, tasks));
  }
  if (grads.empty()) {
    *norms = wrap(torch::zeros({tasks}));
    return nullptr;
  }
  // One concatenation and one norm for all gradients (a norm per gradient would be a
  // kernel each on a GPU); the scaling stays in place.
  auto total = at::linalg_vector_norm(at::cat(grads, 1), 2, {1});  // [tasks]
  auto coef = at::clamp_max(max_norm / (total + 1e-6), 1.0);        // [tasks]
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
  if (!grads[0].is_cpu()) {
    // Per task one multi-tensor multiply of its rows of every gradient by its coefficient
    // (a 0-dim view, read on the device): a few kernels per task instead of one per
    // gradient (og_metanas: about 380 per step).
    std::vector<at::Tensor> rows_t(grads.size());
    for (int64_t t = 0; t < tasks; t++) {
      for (size_t i = 0; i < grads.size(); i++) rows_t[i] = grads[i].select(0, t);
      at::_foreach_mul_(rows_t, coef.select(0, t));
    }
    *norms = wrap(total);
    return nullptr;
  }
#endif
  coef = coef.unsqueeze(1);
  for (auto &g : grads) g.mul_(coef);  // one multiply per gradient
  *norms = wrap(total);
  MT_CATCH("clip_grad_norm_tasks")
}

char *mt_foreach_copy_tasks_(mt_tensor *dst, mt_tensor *src, int64_t n, int64_t tasks) {
  MT_TRY
  at::NoGradGuard guard;
  // Pairs of one shape (each task's slice of a stacked tensor is one), copied together.
  std::vector<at::Tensor> ds, ss;
  for (int64_t i = 0; i < n; i++) {
    auto &d = T(dst[i]);
    const auto &s = T(src[i]);
    if (d.numel() == s.numel()) {
      ds.push_back(d);
      ss.push_back(s.view_as(d));
      continue;
    }
    if (d.numel() != s.numel() * tasks) throw not_copies(i, d, tasks, s);
    auto r = rows(d, tasks), flat = s.reshape({-1});
    for (int64_t t = 0; t < tasks; t++) {
      ds.push_back(r.select(0, t));
      ss.push_back(flat);
    }
  }
  mt::copy_all(ds, ss);
  MT_CATCH("foreach_copy_tasks_")
}

char *mt_foreach_add_task_sum_(mt_tensor *dst, mt_tensor *src, int64_t n, int64_t tasks) {
  MT_TRY
  at::NoGradGuard guard;
  for (int64_t i = 0; i < n; i++) {
    auto &d = T(dst[i]);
    const auto &s = T(src[i]);
    if (s.numel() != d.numel() * tasks) throw not_copies(i, s, tasks, d);
    d.add_(rows(s, tasks).sum(0).view_as(d));
  }
  MT_CATCH("foreach_add_task_sum_")
}

}  // extern "C"
