// Diagnostics of the op-cost benchmark (cmd/opbench's BenchmarkChainSplit): the small-op chain
// run with more or less of it in C++, to split what issuing ops from Go costs.
#include "common.h"

using mt::T;

extern "C" {

char *mt_diag_chain(mt_tensor x, mt_tensor w, mt_tensor b, int64_t iters, bool held) {
  MT_TRY
  const at::Tensor &xt = T(x), &wt = T(w), &bt = T(b);
  std::vector<mt_tensor> hs;
  for (int64_t i = 0; i < iters; i++) {
    if (!held) {
      // As the C++ program does: every result a value, freed once nothing needs it.
      at::Tensor y = xt;
      for (int k = 0; k < 200; k++) y = at::relu(y * wt + bt);
      y.sum().backward();
      continue;
    }
    // As a Scope does: every result a shim handle, all freed at the iteration's end.
    auto check = [&hs](char *e) {
      if (e == nullptr) return;
      std::string msg(e);
      mt_free_str(e);
      mt_tensor_free_many(hs.data(), static_cast<int64_t>(hs.size()));
      throw std::runtime_error(msg);
    };
    auto keep = [&](char *e, const mt_tensor *h) {
      check(e);
      hs.push_back(*h);
      return *h;
    };
    mt_tensor y = x, o = nullptr;
    for (int k = 0; k < 200; k++) {
      o = keep(mt_binary(2, y, w, &o), &o);
      o = keep(mt_binary(0, o, b, &o), &o);
      y = keep(mt_relu(o, &o), &o);
    }
    keep(mt_reduce_all(0, y, &o), &o);
    check(mt_backward(o));
    mt_tensor_free_many(hs.data(), static_cast<int64_t>(hs.size()));
    hs.clear();
  }
  MT_CATCH("diag_chain", x, w, b)
}

char *mt_diag_triples(mt_tensor y, mt_tensor w, mt_tensor b, int64_t k, mt_tensor *out) {
  for (int64_t i = 0; i < k; i++, out += 3) {
    if (char *e = mt_binary(2, y, w, &out[0])) return e;
    if (char *e = mt_binary(0, out[0], b, &out[1])) return e;
    if (char *e = mt_relu(out[1], &out[2])) return e;
    y = out[2];
  }
  return nullptr;
}

}  // extern "C"
