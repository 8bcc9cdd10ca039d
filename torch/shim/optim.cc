// Optimizers (Adam and SGD, PyTorch's update rules) with per-parameter state that can be
// reset between tasks or kept, and a learning rate that can change at every step.
#include "common.h"

using mt::T;
using mt::wrap;

namespace {

struct Optim {
  int kind;  // 0 Adam, 1 SGD
  std::vector<at::Tensor> params;
  double lr, a, b, c, wd;  // Adam: beta1, beta2, eps; SGD: momentum, dampening, nesterov
  std::vector<int64_t> steps;
  std::vector<at::Tensor> m1, m2;  // Adam exp_avg/exp_avg_sq; SGD momentum buffer in m1
};

void adam_step(Optim &o) {
  // Group parameters with a gradient by their step count (normally one group), then use the
  // fused multi-tensor kernels.
  std::map<int64_t, std::vector<size_t>> groups;
  for (size_t i = 0; i < o.params.size(); i++) {
    if (!o.params[i].grad().defined()) continue;
    if (!o.m1[i].defined()) {
      o.m1[i] = at::zeros_like(o.params[i], at::MemoryFormat::Preserve);
      o.m2[i] = at::zeros_like(o.params[i], at::MemoryFormat::Preserve);
    }
    o.steps[i]++;
    groups[o.steps[i]].push_back(i);
  }
  const double b1 = o.a, b2 = o.b, eps = o.c;
  for (auto &kv : groups) {
    std::vector<at::Tensor> p, g, m, v;
    for (auto i : kv.second) {
      p.push_back(o.params[i]);
      g.push_back(o.params[i].grad());
      m.push_back(o.m1[i]);
      v.push_back(o.m2[i]);
    }
    if (o.wd != 0) g = at::_foreach_add(g, p, o.wd);
    const double step = static_cast<double>(kv.first);
    const double bc1 = 1 - std::pow(b1, step);
    const double bc2 = 1 - std::pow(b2, step);
    at::_foreach_mul_(m, b1);
    at::_foreach_add_(m, g, 1 - b1);
    at::_foreach_mul_(v, b2);
    at::_foreach_addcmul_(v, g, g, 1 - b2);
    auto denom = at::_foreach_sqrt(v);
    at::_foreach_div_(denom, std::sqrt(bc2));
    at::_foreach_add_(denom, eps);
    at::_foreach_addcdiv_(p, m, denom, -o.lr / bc1);
  }
}

void sgd_step(Optim &o) {
  const double momentum = o.a, dampening = o.b;
  const bool nesterov = o.c != 0;
  for (size_t i = 0; i < o.params.size(); i++) {
    auto &p = o.params[i];
    if (!p.grad().defined()) continue;
    auto d = p.grad();
    if (o.wd != 0) d = d.add(p, o.wd);
    if (momentum != 0) {
      auto &buf = o.m1[i];
      if (!buf.defined()) {
        buf = d.clone().detach();
      } else {
        buf.mul_(momentum).add_(d, 1 - dampening);
      }
      d = nesterov ? d.add(buf, momentum) : buf;
    }
    o.steps[i]++;
    p.add_(d, -o.lr);
  }
}

Optim &O(mt_optim o) { return *static_cast<Optim *>(o); }

}  // namespace

extern "C" {

char *mt_optim_new(int kind, mt_tensor *params, int64_t n, double lr, double a, double b,
                   double c, double wd, mt_optim *out) {
  MT_TRY
  if (kind != 0 && kind != 1) throw std::invalid_argument("unknown optimizer kind");
  auto o = new Optim{kind, mt::tensors(params, n), lr, a, b, c, wd, {}, {}, {}};
  o->steps.assign(n, 0);
  o->m1.resize(n);
  o->m2.resize(n);
  *out = o;
  MT_CATCH("optimizer")
}

char *mt_optim_step(mt_optim o) {
  MT_TRY
  at::NoGradGuard guard;
  if (O(o).kind == 0) {
    adam_step(O(o));
  } else {
    sgd_step(O(o));
  }
  MT_CATCH("optimizer step")
}

char *mt_optim_zero_grad(mt_optim o, bool set_to_none) {
  std::vector<mt_tensor> hs;
  for (auto &p : O(o).params) hs.push_back(&p);
  return mt_foreach_zero_grad(hs.data(), static_cast<int64_t>(hs.size()), set_to_none);
}

void mt_optim_set_lr(mt_optim o, double lr) { O(o).lr = lr; }

void mt_optim_reset(mt_optim o) {
  auto &x = O(o);
  std::fill(x.steps.begin(), x.steps.end(), 0);
  for (auto &t : x.m1) t = at::Tensor();
  for (auto &t : x.m2) t = at::Tensor();
}

void mt_optim_free(mt_optim o) { delete static_cast<Optim *>(o); }

char *mt_optim_state_get(mt_optim o, int64_t i, const char *name, mt_tensor *out) {
  MT_TRY
  auto &x = O(o);
  if (i < 0 || i >= static_cast<int64_t>(x.params.size()))
    throw std::out_of_range("parameter index " + std::to_string(i));
  std::string n(name);
  *out = nullptr;
  if (n == "step") {
    if (x.steps[i] > 0) *out = wrap(torch::tensor(static_cast<float>(x.steps[i])));
  } else if (n == "exp_avg" || n == "momentum_buffer") {
    if (x.m1[i].defined()) *out = wrap(x.m1[i]);
  } else if (n == "exp_avg_sq") {
    if (x.m2[i].defined()) *out = wrap(x.m2[i]);
  } else {
    throw std::invalid_argument("unknown optimizer state '" + n + "'");
  }
  MT_CATCH("optimizer state")
}

char *mt_optim_state_set(mt_optim o, int64_t i, const char *name, mt_tensor v) {
  MT_TRY
  at::NoGradGuard guard;
  auto &x = O(o);
  if (i < 0 || i >= static_cast<int64_t>(x.params.size()))
    throw std::out_of_range("parameter index " + std::to_string(i));
  std::string n(name);
  auto &p = x.params[i];
  if (n == "step") {
    x.steps[i] = static_cast<int64_t>(T(v).item<double>());
    return nullptr;
  }
  if (!T(v).sizes().equals(p.sizes()))
    throw std::invalid_argument("state '" + n + "' of parameter " + std::to_string(i) +
                                " has shape " + mt::shape_str(v) + ", parameter " +
                                mt::shape_str(&p));
  auto val = T(v).detach().to(p.device(), p.scalar_type()).clone();
  if (n == "exp_avg" || n == "momentum_buffer") {
    x.m1[i] = val;
  } else if (n == "exp_avg_sq") {
    x.m2[i] = val;
  } else {
    throw std::invalid_argument("unknown optimizer state '" + n + "'");
  }
  MT_CATCH("optimizer state")
}

}  // extern "C"
