// The fused batch norm + ReLU (mt_norm_relu): a batch norm without affine tensors in
// training followed by a ReLU, as sep_conv's middle layers are, in the passes of the batch
// norm alone. Forward: the statistics (node_norm_sum's, one pass over x) and one pass that
// writes the ReLU of the normalised x (no normalised tensor is made, no ReLU reads it).
// Backward: one pass of per-channel sums over the output's gradient and x, one that writes
// x's gradient; the ReLU's mask is recomputed from x and the statistics (the normalised x is
// positive where x is above its channel's mean), so no ReLU backward pass runs and the
// output need not be kept. Against LibTorch's batch norm and ReLU this leaves out a pass
// writing the normalised x and the ReLU's read of it forward, and the ReLU backward's three
// passes. CPU loops here (float32 with AVX2: cpu_fast.cc's), CUDA kernels in nodesum.cu where
// native.mk found nvcc.
#include <ATen/Parallel.h>

#include <type_traits>

#include "common.h"
#include "elem.h"
#include "nodesum_kernels.h"
#include "nodesum_math.h"

namespace {

// NormReLU: y = relu((x - mean) * invstd) per channel of x ([N, C, ...], contiguous), the
// statistics those of the batch, the running ones rm and rv moved; backward through the
// statistics, as a batch norm's.
struct NormReLU : public torch::autograd::Function<NormReLU> {
  static at::Tensor forward(torch::autograd::AutogradContext *ctx, const at::Tensor &x, const at::Tensor &rm,
                            const at::Tensor &rv, double momentum, double eps) {
    const int64_t N = x.size(0), C = x.size(1), HW = N * C > 0 ? x.numel() / (N * C) : 0;
    at::Tensor mean, invstd;
    std::tie(mean, invstd) = mt::channel_stats(x, rm, rv, momentum, eps);
    auto y = at::empty_like(x, at::MemoryFormat::Contiguous);
    mt::add_profile_bytes("metanas::norm_relu", x.nbytes() + y.nbytes());
    if (const auto *k = mt::ns_kernels(x, "norm_relu")) {
      mt::ns_check(k,
                   k->norm_relu(x.data_ptr(), mt_ns_dtype(x.scalar_type()), N, C, HW, mean.data_ptr<float>(),
                                invstd.data_ptr<float>(), y.data_ptr(), mt::ns_stream(x)),
                   "norm_relu");
    } else if (!mt::norm_relu_cpu(x, mean.data_ptr<float>(), invstd.data_ptr<float>(), y)) {
      const float *pm = mean.data_ptr<float>(), *pi = invstd.data_ptr<float>();
      mt_ns_by_type(x.scalar_type(), [&](auto *type) {
        using S = std::remove_pointer_t<decltype(type)>;
        const S *px = static_cast<const S *>(x.data_ptr());
        S *py = static_cast<S *>(y.data_ptr());
        at::parallel_for(0, N * C, 1, [&](int64_t b, int64_t e) {
          for (int64_t nc = b; nc < e; nc++) {
            const int64_t c = nc % C;
            for (int64_t h = nc * HW; h < (nc + 1) * HW; h++)
              mt_ns_st(py + h, mt_ns::norm_relu_value(mt_ns_ld(px + h), pm[c], pi[c]));
          }
        });
      });
    }
    ctx->save_for_backward({x, mean, invstd});
    return y;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext *ctx,
                                               torch::autograd::tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &mean = saved[1], &invstd = saved[2];
    torch::autograd::tensor_list out(5);  // x, rm, rv, momentum, eps
    if (!grads[0].defined()) return out;
    const int64_t N = x.size(0), C = x.size(1), HW = N * C > 0 ? x.numel() / (N * C) : 0;
    auto g = grads[0].to(x.scalar_type()).contiguous();
    auto beta = at::empty({C}, mean.options()), gamma = at::empty({C}, mean.options());
    auto dx = at::empty_like(x, at::MemoryFormat::Contiguous);
    mt::add_profile_bytes("metanas::norm_relu_backward", 2 * (x.nbytes() + g.nbytes()) + dx.nbytes());
    if (const auto *k = mt::ns_kernels(x, "norm_relu backward")) {
      mt::ns_check(k,
                   k->norm_relu_backward(x.data_ptr(), g.data_ptr(), mt_ns_dtype(x.scalar_type()), N, C, HW,
                                         mean.data_ptr<float>(), invstd.data_ptr<float>(), beta.data_ptr<float>(),
                                         gamma.data_ptr<float>(), dx.data_ptr(), mt::ns_stream(x)),
                   "norm_relu backward");
      out[0] = dx;
      return out;
    }
    const float *pm = mean.data_ptr<float>(), *pi = invstd.data_ptr<float>();
    float *pb = beta.data_ptr<float>(), *pg = gamma.data_ptr<float>();
    if (mt::norm_relu_backward_cpu(x, g, pm, pi, pb, pg, dx)) {
      out[0] = dx;
      return out;
    }
    mt_ns_by_type(x.scalar_type(), [&](auto *type) {
      using S = std::remove_pointer_t<decltype(type)>;
      const S *px = static_cast<const S *>(x.data_ptr()), *pgr = static_cast<const S *>(g.data_ptr());
      S *pd = static_cast<S *>(dx.data_ptr());
      at::parallel_for(0, C, 1, [&](int64_t b, int64_t e) {
        for (int64_t c = b; c < e; c++) {
          double s1 = 0, sx = 0;
          for (int64_t n = 0; n < N; n++)
            for (int64_t h = (n * C + c) * HW; h < (n * C + c + 1) * HW; h++) {
              const float xv = mt_ns_ld(px + h);
              if (mt_ns::norm_relu_passes(xv, pm[c], pi[c])) {
                const float gv = mt_ns_ld(pgr + h);
                s1 += gv;
                sx += static_cast<double>(gv) * xv;
              }
            }
          mt_ns::norm_relu_final(s1, sx, N * HW, pm[c], pi[c], pb + c, pg + c);
          for (int64_t n = 0; n < N; n++)
            for (int64_t h = (n * C + c) * HW; h < (n * C + c + 1) * HW; h++)
              mt_ns_st(pd + h, mt_ns::norm_relu_grad(mt_ns_ld(pgr + h), mt_ns_ld(px + h), pm[c], pi[c], pb[c], pg[c]));
        }
      });
    });
    out[0] = dx;
    return out;
  }
};

}  // namespace

extern "C" {

// mt_norm_relu writes to out relu(batch_norm(x)) in training, the batch norm without affine
// tensors (x [N, C, ...]: float32, bfloat16 or float16; rm and rv contiguous float32 [C],
// moved), fused (normrelu.cc). It fails where mt_node_norm_sum_on is false (CUDA without
// the shim's kernels).
char *mt_norm_relu(mt_tensor x, mt_tensor rm, mt_tensor rv, double momentum, double eps, mt_tensor *out) {
  MT_TRY
  const auto &t = mt::T(x), &m = mt::T(rm), &v = mt::T(rv);
  const auto st = t.scalar_type();
  if (t.dim() < 2 || (st != at::kFloat && st != at::kBFloat16 && st != at::kHalf))
    throw std::invalid_argument("norm_relu: x must be float32, bfloat16 or float16 [N, C, ...], not " +
                                std::string(c10::toString(st)) + " " + std::string(c10::str(t.sizes())));
  const int64_t C = t.size(1);
  for (const auto *r : {&m, &v})
    if (r->dim() != 1 || r->size(0) != C || !r->is_contiguous() || r->scalar_type() != at::kFloat ||
        r->device() != t.device())
      throw std::invalid_argument("norm_relu: running statistics of shape " + std::string(c10::str(r->sizes())) +
                                  " are not contiguous float32 [" + std::to_string(C) + "] on x's device");
  if (!mt::node_norm_sum_on(t.device()))
    throw std::invalid_argument("norm_relu: the shim was built without nvcc, so it has no CUDA kernels");
  *out = mt::wrap(NormReLU::apply(t.contiguous(), m, v, momentum, eps));
  MT_CATCH("norm_relu", x, rm)
}

}  // extern "C"
