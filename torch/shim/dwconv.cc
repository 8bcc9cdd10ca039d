// A depthwise convolution whose weight gradient is the shim's kernel (mt::dwconv_kernel):
// forward and the input's gradient stay LibTorch's (cuDNN), the weight gradient is one
// block per channel summing the output gradient times the input under each tap
// (nodesum.cu's dw_wgrad_kernel), reading both once. On an H200 cuDNN's weight gradient of
// a batched network's depthwise convolutions (tasks times channels as groups) took about
// 6 ms of a 56 ms og_metanas step. On CUDA it runs with METANAS_DW_WGRAD=1 (off by default
// until a GPU has measured it; mt_set_dw_wgrad switches it at run time, for benchmarks and
// tests); on the CPU only while the kernels' emulation is on (tests).
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common.h"
#include "elem.h"

namespace {

// dw_wgrad is the switch: METANAS_DW_WGRAD (1 on, 0 or unset off) until
// mt_set_dw_wgrad sets it.
std::atomic<int> dw_wgrad{-1};

bool dw_wgrad_on() {
  int v = dw_wgrad.load();
  if (v < 0) {
    const char *e = std::getenv("METANAS_DW_WGRAD");
    v = e != nullptr && std::strcmp(e, "1") == 0;
    if (e != nullptr && *e != 0 && std::strcmp(e, "0") != 0 && v == 0)
      std::fprintf(stderr, "metanas: METANAS_DW_WGRAD=%s is neither 1 nor 0; using 0\n", e);
    int unset = -1;
    if (!dw_wgrad.compare_exchange_strong(unset, v)) v = unset;
  }
  return v == 1;
}

struct DwConvK : public torch::autograd::Function<DwConvK> {
  // geo: stride, padding and dilation (sh, sw, ph, pw, dh, dw).
  static at::Tensor forward(torch::autograd::AutogradContext *ctx, const at::Tensor &x, const at::Tensor &w,
                            std::vector<int64_t> geo) {
    const int64_t C = x.size(1);
    auto y = at::convolution(x, w, c10::nullopt, {geo[0], geo[1]}, {geo[2], geo[3]}, {geo[4], geo[5]}, false, {0, 0},
                             C);
    ctx->save_for_backward({x, w});
    ctx->saved_data["geo"] = geo;
    return y;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext *ctx,
                                               torch::autograd::tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &w = saved[1];
    const auto geo = ctx->saved_data["geo"].toIntVector();
    torch::autograd::tensor_list out(3);  // x, w, geo
    if (!grads[0].defined()) return out;
    const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
    auto g = grads[0].to(x.scalar_type()).contiguous();
    if (ctx->needs_input_grad(0))
      out[0] = std::get<0>(at::convolution_backward(g, x, w, c10::nullopt, {geo[0], geo[1]}, {geo[2], geo[3]},
                                                    {geo[4], geo[5]}, false, {0, 0}, C, {true, false, false}));
    if (ctx->needs_input_grad(1)) {
      const auto *k = mt::ns_kernels(x, "conv2d backward (depthwise weight gradient)");
      auto xc = x.contiguous();
      auto gw = at::empty(w.sizes(), w.options().memory_format(at::MemoryFormat::Contiguous));
      mt::add_profile_bytes("metanas::dw_wgrad", xc.nbytes() + g.nbytes() + gw.nbytes());
      const auto i = [](int64_t v) { return static_cast<int>(v); };
      mt::ns_check(k,
                   k->dw_wgrad(xc.data_ptr(), g.data_ptr(), mt_ns_dtype(x.scalar_type()), N, C, H, W, g.size(2),
                               g.size(3), i(w.size(2)), i(w.size(3)), i(geo[0]), i(geo[1]), i(geo[2]), i(geo[3]),
                               i(geo[4]), i(geo[5]), gw.data_ptr(), mt::ns_stream(x)),
                   "conv2d backward (depthwise weight gradient)");
      out[1] = gw;
    }
    return out;
  }
};

}  // namespace

namespace mt {

at::Tensor dwconv_kernel(const at::Tensor &x, const at::Tensor &w, const c10::optional<at::Tensor> &b, int64_t sh,
                         int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t groups) {
  if (x.is_cuda() ? !(dw_wgrad_on() && node_norm_sum_on(x.device())) : !x.is_cpu()) return at::Tensor();
  if (x.dim() != 4 || w.dim() != 4 || groups < 1 || x.size(1) != groups || w.size(0) != groups || w.size(1) != 1)
    return at::Tensor();
  const int64_t k = w.size(2);
  if ((b && b->defined()) || w.size(3) != k || (k != 3 && k != 5) || x.numel() == 0 || x.device() != w.device())
    return at::Tensor();
  // Under autocast, convolve in its type (as at::conv2d would): the casts are recorded
  // outside the function, so that its saved input and kernel are of the type it ran in.
  at::Tensor xc = x, wc = w;
  if (autocast_active(x.is_cuda())) {
    const auto dt = autocast_dtype(x.is_cuda());
    if (x.scalar_type() == at::kFloat) xc = x.to(dt);
    if (w.scalar_type() == at::kFloat) wc = w.to(dt);
  }
  const auto st = xc.scalar_type();
  if (wc.scalar_type() != st || (st != at::kFloat && st != at::kBFloat16 && st != at::kHalf)) return at::Tensor();
  const int64_t Ho = (x.size(2) + 2 * ph - dh * (w.size(2) - 1) - 1) / sh + 1,
                Wo = (x.size(3) + 2 * pw - dw * (w.size(3) - 1) - 1) / sw + 1;
  if (Ho < 1 || Wo < 1 || x.size(0) * Ho * Wo >= (int64_t{1} << 30)) return at::Tensor();
  if (ns_kernels(x, "conv2d") == nullptr) return at::Tensor();  // the CPU without emulation
  return DwConvK::apply(xc, wc, std::vector<int64_t>{sh, sw, ph, pw, dh, dw});
}

}  // namespace mt

extern "C" {

int mt_set_dw_wgrad(int on) {
  const int was = dw_wgrad_on();
  dw_wgrad.store(on != 0);
  return was;
}

}  // extern "C"
