// The fused node batch norm and sum (mt::node_norm_sum): a batched node's members (the
// outputs of its ops that end in a batch norm without affine tensors) normalised and
// summed with their weights in passes over the members themselves, forward and backward,
// never a stacked or normalised copy of them. Five primitives do the work, each a CPU loop
// and a CUDA kernel (nodesum.cu, where native.mk found nvcc): the statistics (with the
// running statistics' step) and the node forward; backward the dot products with the
// node's gradient, the per-channel numbers (finish) and the members' gradients.
//
// Per channel (task t, member i, channel c) the batch norm is y = (x - mean) * invstd over
// the N samples and HW positions, and the node is sum_i f[n, t, i] * y_i. With
// A[n, i, r] = f[n, t, i] * invstd[i, r] (r = t*C + c) it is sum_i A * x_i + bias, bias =
// -sum_i A * mean. Backward, with the node's gradient g: Gx[n, i, r] = sum_h g * x_i and
// G1[n, r] = sum_h g give H = Gx - mean * G1 = sum_h g * (x_i - mean), the weights'
// gradient sum_c invstd * H, and the batch norm's backward pass
//   dx_i = invstd * (dy - mean(dy) - y * mean(dy * y)),  dy = f * g,
// as dx_i = A * g + beta * x_i + gamma with per-channel beta and gamma from Gx and G1.
#include <ATen/Parallel.h>

#include <type_traits>

#include "common.h"
#include "nodesum_kernels.h"

#include "elem.h"
#include "nodesum_math.h"

#ifdef MT_CUDA_KERNELS
#include <ATen/cuda/CUDAContext.h>
#endif

namespace mt {
namespace {

// Members: the node's members as matrices [N, R*HW] with rows ns apart (views where the
// member allows one, else contiguous copies), and their data pointers; float32, bfloat16
// or float16, one type for all.
struct Members {
  std::vector<at::Tensor> mats;
  std::vector<const void *> p;
  std::vector<int64_t> ns;
  int64_t N = 0, R = 0, HW = 0;
  at::ScalarType st = at::kFloat;

  Members(at::TensorList xs, int64_t R_) : R(R_) {
    N = xs[0].size(0);
    st = xs[0].scalar_type();
    const int64_t per = N > 0 ? xs[0].numel() / N : 0;
    if (R <= 0 || per % R != 0) throw std::invalid_argument("members do not hold " + std::to_string(R) + " channels");
    if (st != at::kFloat && st != at::kBFloat16 && st != at::kHalf)
      throw std::invalid_argument(std::string("members must be float32, bfloat16 or float16, not ") +
                                  c10::toString(st));
    HW = per / R;
    for (const auto &x : xs) {
      if (x.numel() != xs[0].numel() || x.size(0) != N || x.device() != xs[0].device() || x.scalar_type() != st)
        throw std::invalid_argument("members of shapes " + std::string(c10::str(x.sizes())) + " and " +
                                    std::string(c10::str(xs[0].sizes())) + ", or of other types or devices");
      auto mat = x.reshape({N, per});
      if (mat.stride(1) != 1) mat = mat.contiguous();
      ns.push_back(N > 1 ? mat.stride(0) : per);
      p.push_back(mat.data_ptr());
      mats.push_back(std::move(mat));
    }
    if (cuda() && N * per >= (int64_t{1} << 30))
      throw std::invalid_argument("members of " + std::to_string(N * per) +
                                  " elements: the CUDA kernels index up to 2^30 (set METANAS_NODE_FUSED=0)");
  }
  int m() const { return static_cast<int>(p.size()); }
  bool cuda() const { return mats[0].is_cuda(); }
  int64_t bytes() const { return static_cast<int64_t>(p.size()) * N * R * HW * static_cast<int64_t>(c10::elementSize(st)); }
  // dtype is the kernels' code of the members' type.
  int dtype() const { return mt_ns_dtype(st); }
  // ptrs returns the members' data pointers as S's.
  template <class S>
  std::vector<const S *> ptrs() const {
    std::vector<const S *> out;
    for (const void *q : p) out.push_back(static_cast<const S *>(q));
    return out;
  }
};

float *fptr(const at::Tensor &t) { return t.data_ptr<float>(); }
const float *cfptr(const at::Tensor &t) { return t.data_ptr<float>(); }

// Weights: f [N, T, m'] (m' >= m members: the node's other columns may follow) as the
// kernels take it, f[(n*T + t)*fs + i], with a contiguous copy where f is not laid out so.
struct Weights {
  at::Tensor t;
  int64_t fs = 0;
  explicit Weights(const at::Tensor &f) {
    t = f.stride(2) == 1 && f.stride(0) == f.size(1) * f.stride(1) ? f : f.contiguous();
    fs = t.size(1) > 1 ? t.stride(1) : (t.size(0) > 1 ? t.stride(0) : t.size(2));
  }
  const float *p() const { return t.data_ptr<float>(); }
};

// Stats: every (member, channel)'s batch mean and invstd [m, R] for the first ms members,
// their running statistics rm and rv [T, ms, C] moved as a batch norm's; 0 and 1 for the
// others (identities, not read).
std::pair<at::Tensor, at::Tensor> stats(const Members &x, int64_t ms, int64_t T, const at::Tensor &rm,
                                        const at::Tensor &rv, double momentum, double eps) {
  const int m = x.m();
  const int64_t N = x.N, R = x.R, C = R / T, HW = x.HW;
  auto opts = x.mats[0].options().dtype(at::kFloat);
  auto mean = at::empty({m, R}, opts), invstd = at::empty({m, R}, opts);
  add_profile_bytes("metanas::node_stats", x.bytes() / m * ms + 2 * mean.nbytes() + 2 * rm.nbytes() + 2 * rv.nbytes());
  if (const auto *k = ns_kernels(x.mats[0], "node_norm_sum stats")) {
    ns_check(k,
             k->stats(x.p.data(), x.ns.data(), x.dtype(), m, static_cast<int>(ms), N, T, C, HW, momentum, eps,
                      fptr(mean), fptr(invstd), fptr(rm), fptr(rv), ns_stream(x.mats[0])),
             "node_norm_sum stats");
    return {mean, invstd};
  }
  float *pm = fptr(mean), *pi = fptr(invstd), *prm = fptr(rm), *prv = fptr(rv);
  mt_ns_by_type(x.st, [&](auto *type) {
    using S = std::remove_pointer_t<decltype(type)>;
    const auto p = x.ptrs<S>();
    at::parallel_for(0, m * R, 1, [&](int64_t b, int64_t e) {
      for (int64_t ir = b; ir < e; ir++) {
        const int64_t i = ir / R, r = ir % R;
        if (i >= ms) {
          mt_ns::stats_plain(i, r, R, pm, pi);
          continue;
        }
        double s = 0, ss = 0;
        for (int64_t n = 0; n < N; n++) {
          const S *row = mt_ns::row(p.data(), x.ns.data(), static_cast<int>(i), n, r, HW);
          for (int64_t h = 0; h < HW; h++) {
            const double v = mt_ns_ld(row + h);
            s += v;
            ss += v * v;
          }
        }
        mt_ns::stats_final(s, ss, i, r, ms, N, C, R, HW, momentum, eps, pm, pi, prm, prv);
      }
    });
  });
  return {mean, invstd};
}

// weighted_sum: [N, R*HW] = sum_i f[n, t, i] * invstd[i, r] * (x_i - mean[i, r]), of the
// members' type.
at::Tensor weighted_sum(const Members &x, int64_t T, const Weights &f, const at::Tensor &mean,
                        const at::Tensor &invstd) {
  const int m = x.m();
  const int64_t N = x.N, R = x.R, C = R / T, HW = x.HW;
  auto out = at::empty({N, R * HW}, x.mats[0].options());
  add_profile_bytes("metanas::node_sum", x.bytes() + out.nbytes());
  if (const auto *k = ns_kernels(x.mats[0], "node_norm_sum")) {
    at::Tensor acc;  // past 32 members, a float32 sum for types other than float32
    if (x.st == at::kFloat) {
      acc = out;
    } else if (m > 32) {
      acc = at::empty({N, R * HW}, mean.options());
    }
    ns_check(k,
             k->sum(x.p.data(), x.ns.data(), x.dtype(), m, N, T, C, HW, f.p(), f.fs, cfptr(mean), cfptr(invstd),
                    out.data_ptr(), acc.defined() ? fptr(acc) : nullptr, ns_stream(x.mats[0])),
             "node_norm_sum");
    return out;
  }
  const float *pf = f.p(), *pm = cfptr(mean), *pi = cfptr(invstd);
  mt_ns_by_type(x.st, [&](auto *type) {
    using S = std::remove_pointer_t<decltype(type)>;
    const auto p = x.ptrs<S>();
    S *po = static_cast<S *>(out.data_ptr());
    at::parallel_for(0, N * R, 1, [&](int64_t b, int64_t e) {
      for (int64_t nr = b; nr < e; nr++) {
        const int64_t n = nr / R, r = nr % R, t = r / C;
        for (int64_t h = 0; h < HW; h++)
          mt_ns_st(po + nr * HW + h,
                   mt_ns::node_value(0.f, n, r, t, r * HW + h, p.data(), x.ns.data(), m, 0, T, R, pf, f.fs, pm, pi));
      }
    });
  });
  return out;
}

// reduce: gx [N, m, R] (sum_h g * x_i) and g1 [N, R] (sum_h g) of the node's gradient g
// (contiguous, of the members' type).
std::pair<at::Tensor, at::Tensor> reduce(const Members &x, int64_t T, const at::Tensor &g) {
  const int m = x.m();
  const int64_t N = x.N, R = x.R, HW = x.HW;
  auto fo = g.options().dtype(at::kFloat);
  auto gx = at::empty({N, m, R}, fo), g1 = at::empty({N, R}, fo);
  add_profile_bytes("metanas::node_sum_backward_reduce", x.bytes() + g.nbytes());
  if (const auto *k = ns_kernels(x.mats[0], "node_norm_sum backward")) {
    ns_check(k,
             k->reduce(x.p.data(), x.ns.data(), x.dtype(), m, N, T, R / T, HW, g.data_ptr(), fptr(gx), fptr(g1),
                       ns_stream(x.mats[0])),
             "node_norm_sum backward (reduce)");
    return {gx, g1};
  }
  float *px = fptr(gx), *p1 = fptr(g1);
  mt_ns_by_type(x.st, [&](auto *type) {
    using S = std::remove_pointer_t<decltype(type)>;
    const S *pg = static_cast<const S *>(g.data_ptr());
    const auto p = x.ptrs<S>();
    at::parallel_for(0, N * R, 1, [&](int64_t b, int64_t e) {
      for (int64_t nr = b; nr < e; nr++) {
        const int64_t n = nr / R, r = nr % R;
        const S *gr = pg + nr * HW;
        double s = 0;
        for (int64_t h = 0; h < HW; h++) s += mt_ns_ld(gr + h);
        p1[nr] = static_cast<float>(s);
        for (int i = 0; i < m; i++) {
          const S *row = mt_ns::row(p.data(), x.ns.data(), i, n, r, HW);
          double d = 0;
          for (int64_t h = 0; h < HW; h++) d += static_cast<double>(mt_ns_ld(gr + h)) * mt_ns_ld(row + h);
          px[mt_ns::gx_index(n, i, m, R, r)] = static_cast<float>(d);
        }
      }
    });
  });
  return {gx, g1};
}

// finish: from gx and g1, beta and gamma [m, R] of the members' gradients (0 from member ms
// on) and, with weight_grad, the weights' gradient gf [N, T, m] (undefined without).
std::tuple<at::Tensor, at::Tensor, at::Tensor> finish(const Members &x, int64_t ms, int64_t T, const Weights &f,
                                                      const at::Tensor &mean, const at::Tensor &invstd,
                                                      const at::Tensor &gx, const at::Tensor &g1, bool weight_grad) {
  const int m = x.m();
  const int64_t N = x.N, R = x.R, C = R / T, HW = x.HW;
  auto beta = at::empty({m, R}, gx.options()), gamma = at::empty({m, R}, gx.options());
  at::Tensor gf = weight_grad ? at::empty({N, T, m}, gx.options()) : at::Tensor();
  if (const auto *k = ns_kernels(x.mats[0], "node_norm_sum backward")) {
    ns_check(k,
             k->finish(m, static_cast<int>(ms), N, T, C, HW, f.p(), f.fs, cfptr(mean), cfptr(invstd), cfptr(gx),
                       cfptr(g1), fptr(beta), fptr(gamma), weight_grad ? fptr(gf) : nullptr, ns_stream(x.mats[0])),
             "node_norm_sum backward (finish)");
    return {beta, gamma, gf};
  }
  const float *pf = f.p(), *pm = cfptr(mean), *pi = cfptr(invstd), *px = cfptr(gx), *p1 = cfptr(g1);
  float *pb = fptr(beta), *pc = fptr(gamma);
  for (int64_t ir = 0; ir < m * R; ir++)
    mt_ns::finish_channel(ir / R, ir % R, m, ms, N, T, C, HW, pf, f.fs, pm, pi, px, p1, pb, pc);
  if (weight_grad)
    for (int64_t j = 0; j < N * T * m; j++) mt_ns::finish_weight(j, m, T, C, pm, pi, px, p1, fptr(gf));
  return {beta, gamma, gf};
}

// member_grads: dx_i = f[n, t, i] * invstd[i, r] * g + beta[i, r] * x_i + gamma[i, r] of
// the members' type (members from ms on: no batch norm, beta 0, not read), each x_i's shape:
// written where piece_grad places a piece of a split's gradient (member xs[i] read as a
// view by x), else contiguous.
std::vector<at::Tensor> member_grads(const Members &x, at::TensorList xs, int64_t ms, int64_t T, const Weights &f,
                                     const at::Tensor &invstd, const at::Tensor &beta, const at::Tensor &gamma,
                                     const at::Tensor &g) {
  const int m = x.m();
  const int64_t N = x.N, R = x.R, C = R / T, HW = x.HW;
  std::vector<at::Tensor> dx;
  std::vector<void *> pd;
  std::vector<int64_t> ds;
  for (int i = 0; i < m; i++) {
    at::Tensor d;
    if (x.mats[i].is_alias_of(xs[i]) && x.mats[i].scalar_type() == xs[i].scalar_type()) d = piece_grad(xs[i]);
    if (d.defined()) {
      ds.push_back(x.ns[i]);  // laid out as the member
    } else {
      d = at::empty(xs[i].sizes(), g.options());
      ds.push_back(R * HW);
    }
    pd.push_back(d.data_ptr());
    dx.push_back(std::move(d));
  }
  // Reads the members with a batch norm (beta is 0 for the others) and g, writes every one.
  add_profile_bytes("metanas::node_sum_backward_dx", x.bytes() / m * (ms + m) + g.nbytes());
  if (const auto *k = ns_kernels(x.mats[0], "node_norm_sum backward")) {
    ns_check(k,
             k->dx(x.p.data(), x.ns.data(), x.dtype(), m, N, T, C, HW, f.p(), f.fs, cfptr(invstd), cfptr(beta),
                   cfptr(gamma), g.data_ptr(), pd.data(), ds.data(), ns_stream(x.mats[0])),
             "node_norm_sum backward (dx)");
    return dx;
  }
  const float *pf = f.p(), *pi = cfptr(invstd), *pb = cfptr(beta), *pc = cfptr(gamma);
  mt_ns_by_type(x.st, [&](auto *type) {
    using S = std::remove_pointer_t<decltype(type)>;
    const S *pg = static_cast<const S *>(g.data_ptr());
    const auto p = x.ptrs<S>();
    std::vector<S *> d;
    for (auto *q : pd) d.push_back(static_cast<S *>(q));
    at::parallel_for(0, N * R, 1, [&](int64_t b, int64_t e) {
      for (int64_t nr = b; nr < e; nr++) {
        const int64_t n = nr / R, r = nr % R, t = r / C;
        for (int64_t h = 0; h < HW; h++) {
          mt_ns::member_grads_at(n, r, t, r * HW + h, mt_ns_ld(pg + nr * HW + h), p.data(), x.ns.data(), m, 0, T, R,
                                 pf, f.fs, pi, pb, pc, d.data(), ds.data());
        }
      }
    });
  });
  return dx;
}

// NodeNormSum: the node [N*T, 1, C*HW] from its members xs and their weights f [N, T, m];
// the first ms members are normalised with their batch statistics (rm and rv, [T, ms, C],
// move; the backward pass is the batch norm's whole one, through the statistics too), the
// others (the node's identities) summed as they are.
struct NodeNormSum : public torch::autograd::Function<NodeNormSum> {
  static at::Tensor forward(torch::autograd::AutogradContext *ctx, at::TensorList xs, const at::Tensor &f,
                            const at::Tensor &rm, const at::Tensor &rv, int64_t ms, double momentum, double eps) {
    const int64_t m = static_cast<int64_t>(xs.size()), T = f.size(1), R = T * rm.size(2);
    Members x(xs, R);
    Weights w(f);
    // (A custom function's forward pass records nothing for autograd.)
    at::Tensor mean, invstd;
    std::tie(mean, invstd) = stats(x, ms, T, rm, rv, momentum, eps);
    auto out = weighted_sum(x, T, w, mean, invstd);
    std::vector<at::Tensor> saved(xs.begin(), xs.end());
    saved.push_back(w.t);
    saved.push_back(mean);
    saved.push_back(invstd);
    ctx->save_for_backward(saved);
    ctx->saved_data["m"] = m;
    ctx->saved_data["ms"] = ms;
    return out.view({x.N * T, 1, -1});
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext *ctx,
                                               torch::autograd::tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    const int64_t m = ctx->saved_data["m"].toInt();
    std::vector<at::Tensor> xs(saved.begin(), saved.begin() + m);
    const auto &mean = saved[m + 1], &invstd = saved[m + 2];
    Weights w(saved[m]);
    const int64_t T = w.t.size(1), R = mean.size(1);
    Members x(xs, R);
    auto g = grads[0].reshape({x.N, -1}).to(x.st).contiguous();
    auto red = reduce(x, T, g);
    auto fin = finish(x, ctx->saved_data["ms"].toInt(), T, w, mean, invstd, red.first, red.second,
                      ctx->needs_input_grad(m));
    torch::autograd::tensor_list out(m + 6);  // xs, f, rm, rv, ms, momentum, eps
    out[m] = std::get<2>(fin);
    bool any = false;
    for (int64_t i = 0; i < m; i++) any = any || ctx->needs_input_grad(i);
    if (any) {
      auto dx = member_grads(x, xs, ctx->saved_data["ms"].toInt(), T, w, invstd, std::get<0>(fin), std::get<1>(fin), g);
      for (int64_t i = 0; i < m; i++)
        if (ctx->needs_input_grad(i)) out[i] = dx[i];
    }
    return out;
  }
};

}  // namespace

namespace {
std::atomic<bool> emulate_kernels{false};
}  // namespace

const mt_ns_kernels *ns_kernels(const at::Tensor &x, const char *op) {
  if (x.is_cuda()) {
#ifdef MT_CUDA_KERNELS
    return mt_ns_cuda_kernels();
#else
    throw std::runtime_error(std::string(op) +
                             ": the shim was built without nvcc, so it has no CUDA kernels (set "
                             "METANAS_NODE_FUSED=0, or rebuild with nvcc on the PATH or NVCC=...)");
#endif
  }
  return x.is_cpu() && emulate_kernels.load() ? mt_ns_emu_kernels() : nullptr;
}

void *ns_stream(const at::Tensor &x) {
#ifdef MT_CUDA_KERNELS
  if (x.is_cuda()) return at::cuda::getCurrentCUDAStream(x.device().index()).stream();
#endif
  (void)x;
  return nullptr;
}

void ns_check(const mt_ns_kernels *k, int code, const char *op) {
  if (code != 0) throw std::runtime_error(std::string(op) + ": " + k->error(code));
}

bool node_norm_sum_on(const c10::Device &dev) {
#ifdef MT_CUDA_KERNELS
  return dev.is_cpu() || dev.is_cuda();
#else
  return dev.is_cpu();
#endif
}

at::Tensor node_norm_sum(at::TensorList members, at::TensorList rest, const at::Tensor &f, const at::Tensor &rm,
                         const at::Tensor &rv, double momentum, double eps) {
  if (members.empty()) throw std::invalid_argument("node_norm_sum: no members");
  std::vector<at::Tensor> xs(members.begin(), members.end());
  xs.insert(xs.end(), rest.begin(), rest.end());
  const int64_t N = xs[0].size(0), ms = static_cast<int64_t>(members.size()), m = static_cast<int64_t>(xs.size());
  if (f.dim() != 3 || f.size(0) != N || f.size(2) != m || f.scalar_type() != at::kFloat)
    throw std::invalid_argument("weights of shape " + std::string(c10::str(f.sizes())) + " are not float32 [" +
                                std::to_string(N) + ", tasks, " + std::to_string(m) + "]");
  const int64_t T = f.size(1);
  if (rm.dim() != 3 || rm.size(0) != T || rm.size(1) != ms || !rv.sizes().equals(rm.sizes()) || !rm.is_contiguous() ||
      !rv.is_contiguous() || rm.scalar_type() != at::kFloat || rv.scalar_type() != at::kFloat)
    throw std::invalid_argument("running statistics of shape " + std::string(c10::str(rm.sizes())) +
                                " are not contiguous float32 [" + std::to_string(T) + ", " + std::to_string(ms) +
                                ", C]");
  // Members of mixed types (autocast leaves some ops in float32) are summed in float32.
  for (const auto &x : xs)
    if (x.scalar_type() != xs[0].scalar_type()) {
      for (auto &y : xs) y = y.to(at::kFloat);
      break;
    }
  return NodeNormSum::apply(at::TensorList(xs), f, rm, rv, ms, momentum, eps);
}

std::pair<at::Tensor, at::Tensor> channel_stats(const at::Tensor &x, const at::Tensor &rm, const at::Tensor &rv,
                                                double momentum, double eps) {
  const int64_t C = x.size(1);
  Members m({x}, C);
  return stats(m, 1, 1, rm.view({1, 1, C}), rv.view({1, 1, C}), momentum, eps);
}

}  // namespace mt

extern "C" {

bool mt_set_kernel_emulation(bool on) { return mt::emulate_kernels.exchange(on); }

// mt_ns_div_check returns the first n of [n0, n0 + count) (n below 2^31) whose quotient by d
// through mt_ns::Div, as the CUDA kernels index, differs from n / d; -1 where none does.
int64_t mt_ns_div_check(uint32_t d, uint32_t n0, uint32_t count) {
  if (d == 0) return n0;
  const mt_ns::Div v = mt_ns::make_div(d);
  for (uint64_t n = n0; n < uint64_t{n0} + count && n < (uint64_t{1} << 31); n++)
    if (mt_ns::div(v, static_cast<uint32_t>(n)) != static_cast<uint32_t>(n) / d) return static_cast<int64_t>(n);
  return -1;
}

}  // extern "C"
