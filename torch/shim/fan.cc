// The fan-out of repeated states to several readers (mt_repeat_fan): the states' copies
// made once and handed to k readers as k tensors that share them, so that autograd hands
// the backward pass each reader's gradient instead of adding them up (an addition per
// reader, reading two tensors of the copies' size and writing one); the backward pass sums
// every reader's gradient of every copy of a state in one pass (a CPU loop, cpu_fast.cc's
// AVX2 one for float32, or nodesum.cu's fan kernel where native.mk compiled it), reading
// each gradient once.
#include <ATen/Parallel.h>

#include <type_traits>

#include "common.h"
#include "elem.h"
#include "nodesum_kernels.h"
#include "nodesum_math.h"

namespace {

// fan_sum returns [n, N, Q] (of gs[0]'s type): for each state m, sample b and offset q the
// sum of the gradients gs ([N, n*r*Q] each, of one type) at their r copies of m; where xs
// (the n states) are given, the copies were of their ReLUs, and the sum is 0 where the
// state is not positive.
at::Tensor fan_sum(const std::vector<at::Tensor> &grads, int64_t n, int64_t r, int64_t N, int64_t Q,
                   const std::vector<at::Tensor> &xs) {
  std::vector<at::Tensor> mats;
  std::vector<const void *> p;
  std::vector<int64_t> rows;
  const auto st = grads[0].scalar_type();
  if (st != at::kFloat && st != at::kBFloat16 && st != at::kHalf)
    throw std::invalid_argument(std::string("repeat_fan: gradients must be float32, bfloat16 or float16, not ") +
                                c10::toString(st));
  int64_t read = 0;
  for (const auto &g : grads) {
    // A contiguous gradient of the type is read as it is (no view: each is an operator call).
    at::Tensor mat = g.scalar_type() == st ? g : g.to(st);
    if (!mat.is_contiguous()) {
      mat = mat.reshape({N, n * r * Q});
      if (mat.stride(1) != 1) mat = mat.contiguous();
    }
    const int64_t row = mat.dim() == 2 && N > 1 ? mat.stride(0) : n * r * Q;
    rows.push_back(row);
    p.push_back(mat.data_ptr());
    read += mat.numel() * mat.element_size();
    mats.push_back(std::move(mat));
  }
  std::vector<at::Tensor> states;  // contiguous, of the gradients' type
  std::vector<const void *> px;
  for (const auto &x : xs) {
    states.push_back(x.to(st).contiguous());
    px.push_back(states.back().data_ptr());
    read += x.numel() * static_cast<int64_t>(c10::elementSize(st));
  }
  auto out = at::empty({n, N, Q}, mats[0].options());
  mt::add_profile_bytes("metanas::fan_sum", read + out.numel() * out.element_size());
  if (out.numel() == 0) return out;
  const int k = static_cast<int>(p.size());
  if (const auto *kn = mt::ns_kernels(out, "repeat_fan")) {
    mt::ns_check(kn,
                 kn->fan(p.data(), rows.data(), mt_ns_dtype(st), k, n, N, r, Q, px.empty() ? nullptr : px.data(),
                         out.data_ptr(), mt::ns_stream(out)),
                 "repeat_fan");
    return out;
  }
  if (st == at::kFloat) {
    std::vector<const float *> g, x;
    for (const void *q : p) g.push_back(static_cast<const float *>(q));
    for (const void *q : px) x.push_back(static_cast<const float *>(q));
    if (mt::fan_sum_cpu(g, rows, n, N, r, Q, x, out.data_ptr<float>())) return out;
  }
  mt_ns_by_type(st, [&](auto *type) {
    using S = std::remove_pointer_t<decltype(type)>;
    std::vector<const S *> g, x;
    for (const void *q : p) g.push_back(static_cast<const S *>(q));
    for (const void *q : px) x.push_back(static_cast<const S *>(q));
    const S *const *mask = x.empty() ? nullptr : x.data();
    S *o = static_cast<S *>(out.data_ptr());
    at::parallel_for(0, n * N, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t mb = b0; mb < b1; mb++) {
        const int64_t m = mb / N, b = mb % N;
        for (int64_t q = 0; q < Q; q++)
          mt_ns_st(o + mb * Q + q,
                   mt_ns::fan_mask(mt_ns::fan_value(0.f, g.data(), rows.data(), k, b, m, q, r, Q), mask, b, m, q, Q));
      }
    });
  });
  return out;
}

// RepeatFan: xs (n tensors [N, C, ...] of one shape), or their ReLUs where relu, each
// repeated r times along the channels, [N, n*r*C, ...] in the order (tensor, copy,
// channel), as k outputs that share one copy (none where n and r are 1 without relu: they
// share xs[0]'s memory); backward, each tensor's gradient is the sum of every output's
// gradient over its copies (through the ReLU where relu).
struct RepeatFan : public torch::autograd::Function<RepeatFan> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext *ctx, at::TensorList xs, int64_t r,
                                                int64_t k, bool relu) {
    const int64_t n = static_cast<int64_t>(xs.size());
    at::Tensor y = xs[0];
    if (relu) {
      // Each state's ReLU written into its r copies by one kernel that reads the state once.
      auto flat = xs[0].sizes().vec();
      flat[1] *= n * r;
      y = at::empty(flat, xs[0].options());
      auto blocks = y.view({xs[0].size(0), n, r, -1});
      for (int64_t m = 0; m < n; m++) {
        auto target = blocks.select(1, m);
        at::clamp_min_out(target, xs[m].reshape({xs[0].size(0), 1, -1}).expand(target.sizes()), 0);
      }
      // The mask of the backward pass: one tensor's single copy is its ReLU, positive where
      // the tensor is, and the readers keep it anyway (so the tensor itself can go); else
      // the tensors.
      ctx->save_for_backward(n == 1 && r == 1 ? std::vector<at::Tensor>{y} : xs.vec());
    } else if (n > 1 || r > 1) {
      y = mt::repeat_copies(xs, r);
    }
    ctx->set_materialize_grads(false);  // a reader that reached no loss adds nothing (no zeros)
    ctx->saved_data["n"] = n;
    ctx->saved_data["r"] = r;
    ctx->saved_data["sizes"] = xs[0].sizes().vec();
    ctx->saved_data["relu"] = relu;
    torch::autograd::variable_list out;
    // New tensors on y's memory (not autograd views of it, nor xs[0] itself), one per
    // reader, so that each reader's gradient reaches backward separately.
    for (int64_t i = 0; i < k; i++) out.push_back(y.variable_data());
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                 torch::autograd::variable_list grads) {
    const int64_t n = ctx->saved_data["n"].toInt(), r = ctx->saved_data["r"].toInt();
    const auto sizes = ctx->saved_data["sizes"].toIntVector();
    const bool relu = ctx->saved_data["relu"].toBool();
    torch::autograd::variable_list out(n + 3);  // xs, r, k, relu
    std::vector<at::Tensor> defined;
    for (const auto &g : grads)
      if (g.defined()) defined.push_back(g);
    if (defined.empty()) return out;
    if (defined.size() == 1 && n == 1 && r == 1 && !relu) {
      out[0] = defined[0].view(sizes);
      return out;
    }
    const int64_t N = sizes[0], Q = c10::multiply_integers(sizes.begin() + 1, sizes.end());
    auto sum = fan_sum(defined, n, r, N, Q, relu ? ctx->get_saved_variables() : std::vector<at::Tensor>{});
    if (n == 1) {
      out[0] = sum.view(sizes);
    } else {
      for (int64_t m = 0; m < n; m++) out[m] = sum[m].view(sizes);
    }
    return out;
  }
};

}  // namespace

extern "C" {

// mt_repeat_fan writes to outs k tensors that share one copy of xs (n tensors [N, C, ...] of
// one shape), or of their ReLUs where relu, each repeated r times along the channels ([N,
// n*r*C, ...], as mt_repeat_states), or with n and r 1 and no ReLU xs[0]'s own memory; the
// backward pass sums the k readers' gradients of each tensor's copies in one pass.
char *mt_repeat_fan(mt_tensor *xs, int64_t n, int64_t r, int64_t k, bool relu, mt_tensor *outs) {
  MT_TRY
  auto ts = mt::tensors(xs, n);
  if (ts.empty() || ts[0].dim() < 2 || r < 1 || k < 1)
    throw std::invalid_argument("repeat_fan: needs tensors [N, C, ...], r >= 1 and k >= 1");
  for (const auto &t : ts)
    if (!t.sizes().equals(ts[0].sizes()) || t.scalar_type() != ts[0].scalar_type() || t.device() != ts[0].device())
      throw std::invalid_argument("repeat_fan: tensors of shapes " + std::string(c10::str(t.sizes())) + " and " +
                                  std::string(c10::str(ts[0].sizes())) + ", or of other types or devices");
  if (!mt::node_norm_sum_on(ts[0].device()))
    throw std::invalid_argument("repeat_fan: the shim was built without nvcc, so it has no CUDA kernels");
  if (relu && n > 32) throw std::invalid_argument("repeat_fan: at most 32 tensors through a ReLU");
  auto ys = RepeatFan::apply(at::TensorList(ts), r, k, relu);
  for (int64_t i = 0; i < k; i++) outs[i] = mt::wrap(ys[i]);
  MT_CATCH("repeat_fan", n > 0 ? xs[0] : nullptr, n > 1 ? xs[1] : nullptr)
}

}  // extern "C"
