// Diagnostics of the op-cost benchmark (cmd/opbench's BenchmarkChainSplit): the small-op chain
// run with more or less of it in C++, to split what issuing ops from Go costs.
#include "common.h"

using mt::T;

extern "C" {

char *mt_diag_triples(mt_tensor y, mt_tensor w, mt_tensor b, int64_t k, mt_tensor *out) {
  for (int64_t i = 0; i < k; i++, out += 3) {
    if (char *e = mt_binary(2, y, w, &out[0])) return e;
    if (char *e = mt_binary(0, out[0], b, &out[1])) return e;
    if (char *e = mt_relu(out[1], &out[2])) return e;
    y = out[2];
  }
  return nullptr;
}

char *mt_diag_chain(mt_tensor x, mt_tensor w, mt_tensor b, int64_t steps, int64_t iters, bool held) {
  if (steps < 1) return mt::dup("diag_chain: steps must be at least 1");
  if (!held) {
    MT_TRY
    // As a C++ program does: every result a value, freed once nothing needs it.
    const at::Tensor &xt = T(x), &wt = T(w), &bt = T(b);
    for (int64_t i = 0; i < iters; i++) {
      at::Tensor y = xt;
      for (int64_t k = 0; k < steps; k++) y = at::relu(y * wt + bt);
      y.sum().backward();
    }
    MT_CATCH("diag_chain", x, w, b)
  }
  // As a Scope does: every result a shim handle, all freed at the iteration's end (an op
  // that fails writes no handle, so its slot stays null).
  std::vector<mt_tensor> hs(3 * steps + 1);
  for (int64_t i = 0; i < iters; i++) {
    char *e = mt_diag_triples(x, w, b, steps, hs.data());
    if (e == nullptr) e = mt_reduce_all(0, hs[3 * steps - 1], &hs[3 * steps]);
    if (e == nullptr) e = mt_backward(hs[3 * steps]);
    mt_tensor_free_many(hs.data(), static_cast<int64_t>(hs.size()));
    std::fill(hs.begin(), hs.end(), nullptr);
    if (e != nullptr) return e;
  }
  return nullptr;
}

}  // extern "C"
