// Autograd and in-place updates, single tensors and fused over lists.
#include "common.h"

#include <torch/version.h>

using mt::T;
using mt::wrap;

namespace mt {
void copy_all(std::vector<at::Tensor> &d, const std::vector<at::Tensor> &s) {
  if (d.empty()) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
  at::_foreach_copy_(d, s);
#else
  for (size_t i = 0; i < d.size(); i++) d[i].copy_(s[i]);
#endif
}
}  // namespace mt

extern "C" {

char *mt_set_requires_grad(mt_tensor t, bool on) {
  MT_TRY
  T(t).set_requires_grad(on);
  MT_CATCH("set_requires_grad", t)
}

char *mt_backward(mt_tensor t) {
  MT_TRY
  T(t).backward();
  MT_CATCH("backward", t)
}

char *mt_grad(mt_tensor t, mt_tensor *out) {
  MT_TRY
  const auto &g = T(t).grad();
  *out = g.defined() ? wrap(g) : nullptr;
  MT_CATCH("grad", t)
}

char *mt_set_grad(mt_tensor t, mt_tensor g) {
  MT_TRY
  if (g == nullptr) {
    T(t).mutable_grad() = at::Tensor();
  } else {
    T(t).mutable_grad() = T(g).detach().clone();
  }
  MT_CATCH("set_grad", t, g)
}

char *mt_detach(mt_tensor t, mt_tensor *out) {
  MT_TRY
  *out = wrap(T(t).detach());
  MT_CATCH("detach", t)
}

char *mt_clone(mt_tensor t, mt_tensor *out) {
  MT_TRY
  *out = wrap(T(t).clone());
  MT_CATCH("clone", t)
}

char *mt_alias(mt_tensor t, mt_tensor *out) {
  MT_TRY
  *out = wrap(T(t));
  MT_CATCH("alias", t)
}

char *mt_clip_grad_norm(mt_tensor *ts, int64_t n, double max_norm, mt_tensor *total_norm) {
  MT_TRY
  at::NoGradGuard guard;
  std::vector<at::Tensor> grads;
  for (int64_t i = 0; i < n; i++) {
    const auto &g = T(ts[i]).grad();
    if (g.defined()) grads.push_back(g);
  }
  if (grads.empty()) {
    *total_norm = wrap(torch::zeros({}));
    return nullptr;
  }
  // Multi-tensor kernels: a few launches for all gradients instead of two per gradient.
  auto norms = at::_foreach_norm(grads, 2);
  auto total = at::linalg_vector_norm(at::stack(norms), 2);
  auto coef = at::clamp_max(max_norm / (total + 1e-6), 1.0);
  mt::mul_by(grads, coef);
  *total_norm = wrap(total);
  MT_CATCH("clip_grad_norm")
}

char *mt_copy_(mt_tensor dst, mt_tensor src) {
  MT_TRY
  at::NoGradGuard guard;
  T(dst).copy_(T(src));
  MT_CATCH("copy_", dst, src)
}

char *mt_add_(mt_tensor dst, mt_tensor src, double alpha) {
  MT_TRY
  at::NoGradGuard guard;
  T(dst).add_(T(src), alpha);
  MT_CATCH("add_", dst, src)
}

char *mt_mul_scalar_(mt_tensor dst, double s) {
  MT_TRY
  at::NoGradGuard guard;
  T(dst).mul_(s);
  MT_CATCH("mul_", dst)
}

char *mt_lerp_(mt_tensor dst, mt_tensor end, double w) {
  MT_TRY
  at::NoGradGuard guard;
  T(dst).lerp_(T(end), w);
  MT_CATCH("lerp_", dst, end)
}

char *mt_fill_(mt_tensor dst, double v) {
  MT_TRY
  at::NoGradGuard guard;
  T(dst).fill_(v);
  MT_CATCH("fill_", dst)
}

char *mt_foreach_zero_grad(mt_tensor *ts, int64_t n, bool set_to_none) {
  MT_TRY
  std::vector<at::Tensor> grads;
  for (int64_t i = 0; i < n; i++) {
    auto &g = T(ts[i]).mutable_grad();
    if (!g.defined()) continue;
    if (set_to_none) {
      g = at::Tensor();
    } else {
      if (g.grad_fn()) {
        g = g.detach();
      } else {
        g.requires_grad_(false);
      }
      grads.push_back(g);
    }
  }
  if (!grads.empty()) at::_foreach_zero_(grads);
  MT_CATCH("zero_grad")
}


// lerp_all moves every d[i] towards e[i] by w (lerp_): one multi-tensor call where LibTorch
// has it (2.1 on), else a call per tensor.
static void lerp_all(std::vector<at::Tensor> &d, const std::vector<at::Tensor> &e, double w) {
  if (d.empty()) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
  at::_foreach_lerp_(d, e, w);
#else
  for (size_t i = 0; i < d.size(); i++) d[i].lerp_(e[i], w);
#endif
}

static void check_same(int64_t n, const std::vector<at::Tensor> &a,
                       const std::vector<at::Tensor> &b) {
  for (int64_t i = 0; i < n; i++) {
    if (!a[i].sizes().equals(b[i].sizes()))
      throw std::invalid_argument("tensor " + std::to_string(i) + " shapes differ");
  }
}

char *mt_foreach_copy_(mt_tensor *dst, mt_tensor *src, int64_t n) {
  MT_TRY
  at::NoGradGuard guard;
  auto d = mt::tensors(dst, n), s = mt::tensors(src, n);
  check_same(n, d, s);
  mt::copy_all(d, s);
  MT_CATCH("foreach_copy_")
}

char *mt_foreach_add_(mt_tensor *dst, mt_tensor *src, int64_t n, double alpha) {
  MT_TRY
  at::NoGradGuard guard;
  auto d = mt::tensors(dst, n), s = mt::tensors(src, n);
  check_same(n, d, s);
  at::_foreach_add_(d, s, alpha);
  MT_CATCH("foreach_add_")
}

char *mt_foreach_mul_scalar_(mt_tensor *dst, int64_t n, double s) {
  MT_TRY
  at::NoGradGuard guard;
  auto d = mt::tensors(dst, n);
  at::_foreach_mul_(d, s);
  MT_CATCH("foreach_mul_")
}

char *mt_foreach_lerp_(mt_tensor *dst, mt_tensor *end, int64_t n, double w) {
  MT_TRY
  at::NoGradGuard guard;
  auto d = mt::tensors(dst, n), e = mt::tensors(end, n);
  check_same(n, d, e);
  lerp_all(d, e, w);
  MT_CATCH("foreach_lerp_")
}

char *mt_foreach_lerp_mean_(mt_tensor *dst, mt_tensor *srcs, int64_t n, int64_t m, double w) {
  MT_TRY
  at::NoGradGuard guard;
  if (m <= 0) throw std::invalid_argument("no source lists");
  auto d = mt::tensors(dst, n);
  // mean over sources (the first list itself for one; a sum of the first two allocated by
  // one multi-tensor call, not a copy per tensor), then dst += w * (mean - dst).
  auto acc = mt::tensors(srcs, n);
  check_same(n, d, acc);
  for (int64_t k = 1; k < m; k++) {
    auto s = mt::tensors(srcs + k * n, n);
    check_same(n, d, s);
    if (k == 1) {
      acc = at::_foreach_add(acc, s);
    } else {
      at::_foreach_add_(acc, s);
    }
  }
  if (m > 1) at::_foreach_div_(acc, static_cast<double>(m));
  lerp_all(d, acc, w);
  MT_CATCH("foreach_lerp_mean_")
}

}  // extern "C"
