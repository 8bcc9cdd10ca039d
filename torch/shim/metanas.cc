// Fused MetaNAS hot paths.
#include "common.h"

using mt::T;
using mt::wrap;

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
    auto incT = torch::from_blob(const_cast<float *>(inc), {p, n_in}, torch::kFloat)
                    .to(dev, w.scalar_type(), /*non_blocking=*/false, /*copy=*/true);
    auto c = at::matmul(T(wpair).unsqueeze(0), incT).squeeze(0);  // [n_in]
    coef = w * c.unsqueeze(1);
  } else {
    coef = w;
  }
  auto idxT = torch::from_blob(const_cast<int64_t *>(idx), {m}, torch::kLong).to(dev, true, true);
  auto cm = coef.flatten().index_select(0, idxT);  // [m]
  std::vector<at::Tensor> ts = mt::tensors(outs, m);
  if (m == 1 && drop_prob <= 0) {
    *out = wrap(ts[0] * cm);
    return nullptr;
  }
  auto stacked = at::stack(ts, 0);  // [m, N, C, H, W]
  std::vector<int64_t> shape(stacked.dim(), 1);
  shape[0] = m;
  at::Tensor factor = cm.view(shape);
  if (drop_prob > 0) {
    const double keep = 1.0 - drop_prob;
    std::vector<int64_t> ms(stacked.dim(), 1);
    ms[0] = m;
    ms[1] = stacked.size(1);
    c10::optional<at::Generator> g;
    if (gen != nullptr) g = *static_cast<at::Generator *>(gen);
    auto mask = at::empty(ms, w.options().requires_grad(false)).bernoulli_(keep, g).div_(keep);
    for (int64_t i = 0; i < m; i++) {
      if (!droppable[i]) mask[i].fill_(1.0);
    }
    factor = factor * mask;
  }
  *out = wrap((stacked * factor).sum(0));
  MT_CATCH("mixed_node", wops, wpair, m > 0 ? outs[0] : nullptr)
}

}  // extern "C"
