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
  // Device steps (Adam): one step count for the optimizer, kept in a device tensor, so
  // that a step issues no host arithmetic that a captured CUDA graph would freeze.
  bool dev_steps = false;
  at::Tensor dstep;
};

// ensure_moments allocates parameter i's Adam moments at its first step.
void ensure_moments(Optim &o, size_t i) {
  if (!o.m1[i].defined()) {
    o.m1[i] = at::zeros_like(o.params[i], at::MemoryFormat::Preserve);
    o.m2[i] = at::zeros_like(o.params[i], at::MemoryFormat::Preserve);
  }
}

// Group is the parameters, gradients and moments of some parameters, for the multi-tensor
// kernels.
struct Group {
  std::vector<at::Tensor> p, g, m, v;
};

Group group_of(const Optim &o, const std::vector<size_t> &idx) {
  Group G;
  for (auto i : idx) {
    G.p.push_back(o.params[i]);
    G.g.push_back(o.params[i].grad());
    G.m.push_back(o.m1[i]);
    G.v.push_back(o.m2[i]);
  }
  return G;
}

// adam_moments adds weight decay to the group's gradients, updates its moments and returns
// sqrt(exp_avg_sq), the denominator before bias correction and eps.
std::vector<at::Tensor> adam_moments(const Optim &o, Group &G) {
  const double b1 = o.a, b2 = o.b;
  if (o.wd != 0) G.g = at::_foreach_add(G.g, G.p, o.wd);
  at::_foreach_mul_(G.m, b1);
  at::_foreach_add_(G.m, G.g, 1 - b1);
  at::_foreach_mul_(G.v, b2);
  at::_foreach_addcmul_(G.v, G.g, G.g, 1 - b2);
  return at::_foreach_sqrt(G.v);
}

// adam_step_device is adam_step with the bias corrections computed on the device from the
// optimizer's step count (every parameter with a gradient advances the same count).
void adam_step_device(Optim &o) {
  std::vector<size_t> idx;
  for (size_t i = 0; i < o.params.size(); i++) {
    if (!o.params[i].grad().defined()) continue;
    ensure_moments(o, i);
    idx.push_back(i);
  }
  if (idx.empty()) return;
  auto G = group_of(o, idx);
  // The count and the bias corrections in double precision: 1 - 0.999^t in float would
  // be off by about 1e-4 relative in the first steps.
  if (!o.dstep.defined()) o.dstep = at::zeros({}, G.p[0].options().dtype(at::kDouble));
  o.dstep.add_(1);
  const auto st = G.p[0].scalar_type();
  auto neg_step = at::reciprocal(1 - at::pow(o.a, o.dstep)).mul_(-o.lr).to(st);  // -lr / bc1
  auto inv_bc2 = at::rsqrt(1 - at::pow(o.b, o.dstep)).to(st);                     // 1 / sqrt(bc2)
  auto denom = adam_moments(o, G);
  mt::mul_by(denom, inv_bc2);
  at::_foreach_add_(denom, o.c);
  auto upd = at::_foreach_div(G.m, denom);
  mt::mul_by(upd, neg_step);
  at::_foreach_add_(G.p, upd);
}

void adam_step(Optim &o) {
  // Group parameters with a gradient by their step count (normally one group), then use the
  // fused multi-tensor kernels.
  std::map<int64_t, std::vector<size_t>> groups;
  for (size_t i = 0; i < o.params.size(); i++) {
    if (!o.params[i].grad().defined()) continue;
    ensure_moments(o, i);
    o.steps[i]++;
    groups[o.steps[i]].push_back(i);
  }
  for (auto &kv : groups) {
    auto G = group_of(o, kv.second);
    const double step = static_cast<double>(kv.first);
    const double bc1 = 1 - std::pow(o.a, step);
    const double bc2 = 1 - std::pow(o.b, step);
    auto denom = adam_moments(o, G);
    at::_foreach_div_(denom, std::sqrt(bc2));
    at::_foreach_add_(denom, o.c);
    at::_foreach_addcdiv_(G.p, G.m, denom, -o.lr / bc1);
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
    // Zero in place (a captured graph keeps reading and writing these tensors), by one
    // multi-tensor call rather than a kernel per tensor.
    at::NoGradGuard guard;
    std::vector<at::Tensor> all;
    for (const auto *ms : {&x.m1, &x.m2})
      for (const auto &t : *ms)
        if (t.defined()) all.push_back(t);
    if (!all.empty()) at::_foreach_zero_(all);
    if (x.dstep.defined()) x.dstep.zero_();  // double: apart, so the moments share a kernel
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
