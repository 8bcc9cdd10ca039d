// Optimizers (Adam and SGD, PyTorch's update rules) with per-parameter state that can be
// reset between tasks or kept, and a learning rate that can change at every step.
#include "common.h"

#include <torch/version.h>

using mt::T;
using mt::wrap;

namespace {

struct Optim {
  int kind;  // 0 Adam, 1 SGD
  std::vector<at::Tensor> params;
  double lr, a, b, c, wd;  // Adam: beta1, beta2, eps; SGD: momentum, dampening, nesterov
  std::vector<int64_t> steps;
  std::vector<at::Tensor> m1, m2;  // Adam exp_avg/exp_avg_sq; SGD momentum buffer in m1
  // Device steps (Adam): one step count for the optimizer, kept in a device tensor, so
  // that a step issues no host arithmetic that a captured CUDA graph would freeze.
  bool dev_steps = false;
  at::Tensor dstep;
};

// mul_by multiplies every tensor of ts by the one-element tensor s in place.
void mul_by(std::vector<at::Tensor> &ts, const at::Tensor &s) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
  at::_foreach_mul_(ts, s);
#else
  for (auto &t : ts) t.mul_(s);
#endif
}

// adam_step_device is adam_step with the bias corrections computed on the device from the
// optimizer's step count (every parameter with a gradient advances the same count).
void adam_step_device(Optim &o) {
  std::vector<at::Tensor> p, g, m, v;
  for (size_t i = 0; i < o.params.size(); i++) {
    if (!o.params[i].grad().defined()) continue;
    if (!o.m1[i].defined()) {
      o.m1[i] = at::zeros_like(o.params[i], at::MemoryFormat::Preserve);
      o.m2[i] = at::zeros_like(o.params[i], at::MemoryFormat::Preserve);
    }
    p.push_back(o.params[i]);
    g.push_back(o.params[i].grad());
    m.push_back(o.m1[i]);
    v.push_back(o.m2[i]);
  }
  if (p.empty()) return;
  // The count and the bias corrections in double precision: 1 - 0.999^t in float would
  // be off by about 1e-4 relative in the first steps.
  if (!o.dstep.defined()) o.dstep = at::zeros({}, p[0].options().dtype(at::kDouble));
  const double b1 = o.a, b2 = o.b, eps = o.c;
  o.dstep.add_(1);
  const auto st = p[0].scalar_type();
  auto neg_step = at::reciprocal(1 - at::pow(b1, o.dstep)).mul_(-o.lr).to(st);  // -lr / bc1
  auto inv_bc2 = at::rsqrt(1 - at::pow(b2, o.dstep)).to(st);                     // 1 / sqrt(bc2)
  if (o.wd != 0) g = at::_foreach_add(g, p, o.wd);
  at::_foreach_mul_(m, b1);
  at::_foreach_add_(m, g, 1 - b1);
  at::_foreach_mul_(v, b2);
  at::_foreach_addcmul_(v, g, g, 1 - b2);
  auto denom = at::_foreach_sqrt(v);
  mul_by(denom, inv_bc2);
  at::_foreach_add_(denom, eps);
  auto upd = at::_foreach_div(m, denom);
  mul_by(upd, neg_step);
  at::_foreach_add_(p, upd);
}

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
  if (O(o).kind == 0 && O(o).dev_steps) {
    adam_step_device(O(o));
  } else if (O(o).kind == 0) {
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
  if (x.dev_steps) {
    // Zero in place: a captured graph keeps reading and writing these tensors.
    at::NoGradGuard guard;
    for (auto &t : x.m1)
      if (t.defined()) t.zero_();
    for (auto &t : x.m2)
      if (t.defined()) t.zero_();
    if (x.dstep.defined()) x.dstep.zero_();
    return;
  }
  for (auto &t : x.m1) t = at::Tensor();
  for (auto &t : x.m2) t = at::Tensor();
}

char *mt_optim_set_device_steps(mt_optim o, bool on) {
  MT_TRY
  auto &x = O(o);
  if (on && x.kind != 0) throw std::invalid_argument("device steps need Adam");
  if (x.dev_steps == on) return nullptr;
  // Switching starts from a fresh state: the two modes count steps differently.
  x.dev_steps = false;
  mt_optim_reset(o);
  x.dstep = at::Tensor();
  x.dev_steps = on;
  MT_CATCH("optimizer device steps")
}

void mt_optim_free(mt_optim o) { delete static_cast<Optim *>(o); }

char *mt_optim_state_get(mt_optim o, int64_t i, const char *name, mt_tensor *out) {
  MT_TRY
  auto &x = O(o);
  if (i < 0 || i >= static_cast<int64_t>(x.params.size()))
    throw std::out_of_range("parameter index " + std::to_string(i));
  std::string n(name);
  *out = nullptr;
  if (n == "step" && x.dev_steps) {
    if (x.m1[i].defined() && x.dstep.defined()) *out = wrap(x.dstep.detach().clone());
  } else if (n == "step") {
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
    if (x.dev_steps) throw std::invalid_argument("cannot set one parameter's step with device steps on");
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
