// Fused MetaNAS hot paths.
#include "common.h"

#include <map>
#include <string>

using mt::T;
using mt::wrap;

namespace {

// device_copy returns the host array data, of the given shape, as a tensor of type st on dev. On CUDA it keeps,
// per OS thread, the device copies of the small index and incidence arrays that a
// forward pass passes for every node (they change only when pruning changes): a copy
// from host memory on every call would wait for the GPU each time. The cache never
// evicts (an evicted tensor could still be read by queued kernels); past its bound it
// stops caching and copies without waiting instead.
template <class E>
at::Tensor device_copy(const E *data, std::vector<int64_t> shape, at::ScalarType st,
                       const c10::Device &dev) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  auto host = torch::from_blob(const_cast<E *>(data), shape, torch::TensorOptions().dtype(c10::CppTypeToScalarType<E>::value));
  if (dev.is_cpu()) return host.to(st, /*non_blocking=*/false, /*copy=*/true);
  thread_local std::map<std::string, at::Tensor> cache;
  std::string key(reinterpret_cast<const char *>(data), n * sizeof(E));
  key += '|' + dev.str() + '|' + std::to_string(static_cast<int>(st));
  for (auto d : shape) key += ',' + std::to_string(d);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  // The pinned staging copy lets the transfer run asynchronously without a host wait.
  auto t = host.to(st).pin_memory().to(dev, st, /*non_blocking=*/true);
  if (cache.size() < 4096) cache.emplace(std::move(key), t);
  return t;
}

// by_tasks returns t, an activation [N, tasks*C, ...], as [N, tasks, C*...]. Where t is a
// contiguous view of the whole of a contiguous tensor, the view is taken of that tensor
// instead: the same elements in the same order, but the gradient that comes back (a slice
// of a stacked gradient, strided by the stack) then reaches that tensor through a view of
// its own shape, where t's shape would need a copy. The 1x1 products' outputs
// ([N, tasks, C, H*W] under their 4-d view) and the node sums' ([N*tasks, 1, C*H*W]) are
// such tensors, so their backward passes (batched products) read the strided gradient as
// it is.
at::Tensor by_tasks(const at::Tensor &t, int64_t N, int64_t tasks) {
  if (t.is_view() && t.is_contiguous()) {
    const at::Tensor b(at::TensorBase(t._base()));
    if (b.defined() && b.is_contiguous() && b.numel() == t.numel() && b.storage_offset() == t.storage_offset() &&
        b.scalar_type() == t.scalar_type() && b.requires_grad() == t.requires_grad() && N * tasks > 0 &&
        b.numel() % (N * tasks) == 0)
      return b.view({N, tasks, -1});
  }
  return t.reshape({N, tasks, -1});
}

// node_sum_loop: METANAS_NODE_SUM=loop makes mt_mixed_tasks's non-CPU path sum the op
// outputs term by term instead of through a stacked copy (an experiment: GPU memory).
bool node_sum_loop() {
  static const bool on = mt::env_is("METANAS_NODE_SUM", "loop");
  return on;
}

// adjacent reports whether ts are contiguous tensors that lie back to back in one storage,
// in order, with equal trailing dimensions: their concatenation along the first dimension
// is then that storage's range as it is.
bool adjacent(at::TensorList ts) {
  const auto &a = ts[0];
  if (a.dim() < 1 || !a.is_contiguous()) return false;
  for (size_t i = 1; i < ts.size(); i++) {
    const auto &p = ts[i - 1], &t = ts[i];
    if (!t.is_contiguous() || t.scalar_type() != a.scalar_type() || t.device() != a.device() ||
        t.dim() != a.dim() || !t.storage().is_alias_of(a.storage()) ||
        t.storage_offset() != p.storage_offset() + p.numel() || t.sizes().slice(1) != a.sizes().slice(1))
      return false;
  }
  return true;
}

// AdjacentCat is the concatenation along the first dimension of tensors that lie back to
// back in one storage (adjacent), made without a copy: a tensor over their range of the
// storage. Its backward pass gives each input its slice of the gradient (contiguous slices
// of a contiguous gradient, which become the inputs' gradients as they are).
struct AdjacentCat : public torch::autograd::Function<AdjacentCat> {
  static at::Tensor forward(torch::autograd::AutogradContext *ctx, at::TensorList ts) {
    std::vector<int64_t> sizes;
    int64_t rows = 0;
    for (const auto &t : ts) {
      sizes.push_back(t.size(0));
      rows += t.size(0);
    }
    ctx->saved_data["sizes"] = sizes;
    auto shape = ts[0].sizes().vec();
    shape[0] = rows;
    std::vector<int64_t> strides(shape.size(), 1);
    for (int64_t d = static_cast<int64_t>(shape.size()) - 2; d >= 0; d--) strides[d] = strides[d + 1] * shape[d + 1];
    auto out = at::empty({0}, ts[0].options());
    out.set_(ts[0].storage(), ts[0].storage_offset(), shape, strides);
    return out;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext *ctx,
                                               torch::autograd::tensor_list grads) {
    auto g = grads[0].contiguous();
    return g.split_with_sizes(ctx->saved_data["sizes"].toIntVector(), 0);
  }
};

// drop_mask returns the drop-path mask [N, tasks, m] of a batched node's m columns of
// weights cm [tasks, m]: one draw per sample, task and column, 1/keep or 0, and 1 for the
// columns that droppable says have no drop-path; undefined for drop_prob 0.
at::Tensor drop_mask(const at::Tensor &cm, int64_t N, int64_t tasks, int64_t m, const uint8_t *droppable,
                     double drop_prob, mt_generator gen) {
  if (drop_prob <= 0) return at::Tensor();
  const double keep = 1.0 - drop_prob;
  c10::optional<at::Generator> g;
  if (gen != nullptr) g = *static_cast<at::Generator *>(gen);
  auto mask = at::empty({N, tasks, m}, cm.options().requires_grad(false)).bernoulli_(keep, g).div_(keep);
  bool all = true;
  for (int64_t i = 0; i < m; i++) all = all && droppable[i];
  if (!all) mask = at::where(device_copy(droppable, {m}, torch::kBool, cm.device()), mask, 1.0);
  return mask;
}

// NodeMembers: the members of a batched node's batch norm, m op outputs ([N, tasks*C, ...],
// or [N, tasks, C, ...] as a group's piece), checked against each other and against the
// node's running statistics rm and rv (contiguous [tasks, members, C]); sel lists the
// member of each output (rising), or is nil when they are all the members in order.
struct NodeMembers {
  std::vector<at::Tensor> ts;  // the outputs as given
  std::vector<int64_t> geom;   // [N, tasks, C, ...]
  std::vector<int64_t> sizes;  // [N, tasks*C, ...]
  int64_t N = 0, C = 0, tasks = 0;
  at::Tensor bm, bv;           // the running statistics
  at::Tensor srm, srv, selT;   // those of the selected members (copies where sel is given)

  NodeMembers(mt_tensor *outs, int64_t m, mt_tensor rm, mt_tensor rv, const int64_t *sel, int64_t tasks_)
      : tasks(tasks_), bm(T(rm)), bv(T(rv)) {
    if (m <= 0) throw std::invalid_argument("no op outputs");
    if (tasks < 1) throw std::invalid_argument("tasks must be >= 1");
    ts = mt::tensors(outs, m);
    if (bm.dim() != 3 || bm.size(0) != tasks || !bm.is_contiguous() || !bv.sizes().equals(bm.sizes()) ||
        !bv.is_contiguous())
      throw std::invalid_argument("running statistics " + std::string(c10::str(bm.sizes())) + " and " +
                                  std::string(c10::str(bv.sizes())) + " are not contiguous blocks [" +
                                  std::to_string(tasks) + ", members, C]");
    C = bm.size(2);
    const int64_t members = bm.size(1);
    // Each output as [N, tasks, C, ...]: given so (a group's piece, whose gradient then comes
    // back strided as it is), or as [N, tasks*C, ...].
    auto split = [&](const at::Tensor &t) {
      if (given(t)) return t;
      if (t.dim() >= 2 && t.size(1) == tasks * C) return t.unflatten(1, {tasks, C});
      throw std::invalid_argument("op output of shape " + std::string(c10::str(t.sizes())) + " is neither [N, " +
                                  std::to_string(tasks) + "*" + std::to_string(C) + ", ...] nor [N, " +
                                  std::to_string(tasks) + ", " + std::to_string(C) + ", ...]");
    };
    geom = split(ts[0]).sizes().vec();  // [N, tasks, C, ...]
    sizes = {geom[0], tasks * C};
    sizes.insert(sizes.end(), geom.begin() + 3, geom.end());
    N = geom[0];
    for (int64_t i = 0; i < m; i++)
      if (!split(ts[i]).sizes().equals(geom))
        throw std::invalid_argument("op output " + std::to_string(i) + " has shape " + std::string(c10::str(ts[i].sizes())) +
                                    ", output 0 " + std::string(c10::str(ts[0].sizes())));
    srm = bm;
    srv = bv;
    if (sel != nullptr) {
      for (int64_t i = 0; i < m; i++)
        if (sel[i] < 0 || sel[i] >= members || (i > 0 && sel[i] <= sel[i - 1]))
          throw std::invalid_argument("members must rise within [0, " + std::to_string(members) + "), got " +
                                      std::to_string(sel[i]) + " at " + std::to_string(i));
      selT = device_copy(sel, {m}, torch::kLong, bm.device());
      at::NoGradGuard guard;
      srm = bm.index_select(1, selT);
      srv = bv.index_select(1, selT);
    } else if (m != members) {
      throw std::invalid_argument(std::to_string(m) + " op outputs for " + std::to_string(members) + " members");
    }
  }

  // given reports an output given as [N, tasks, C, ...].
  bool given(const at::Tensor &t) const { return t.dim() >= 3 && t.size(1) == tasks && t.size(2) == C; }

  // views returns the outputs as [N, tasks, C*...].
  std::vector<at::Tensor> views() const {
    std::vector<at::Tensor> v;
    v.reserve(ts.size());
    for (const auto &t : ts) v.push_back(given(t) ? t.reshape({N, tasks, -1}) : by_tasks(t, N, tasks));
    return v;
  }

  // write_back copies the selected members' running statistics back into the blocks.
  void write_back() {
    if (!selT.defined()) return;
    at::NoGradGuard guard;
    bm.index_copy_(1, selT, srm);
    bv.index_copy_(1, selT, srv);
  }
};

// NormedSum is the weighted sum over the members of a node's batch norm, bmm(f, S) with S
// = (X - mean) * invstd per (task, member, channel), that keeps X and the statistics for
// its backward pass instead of S: S is made again there, and only where f needs a
// gradient. X is [N, T, m, C, HW] (the stacked members before the norm), f [N*T, 1, m],
// mean and invstd [1, T, m, C, 1]; the output is [N*T, 1, C*HW]. The gradient of X is the
// batch norm's in training mode (through the batch statistics too).
struct NormedSum : public torch::autograd::Function<NormedSum> {
  static at::Tensor forward(torch::autograd::AutogradContext *ctx, const at::Tensor &x, const at::Tensor &f,
                            const at::Tensor &mean, const at::Tensor &invstd) {
    ctx->save_for_backward({x, f, mean, invstd});
    const int64_t nt = f.size(0), m = f.size(2);
    return at::bmm(f, normed(x, mean, invstd).view({nt, m, -1}));
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext *ctx,
                                               torch::autograd::tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &f = saved[1], &mean = saved[2], &invstd = saved[3];
    const auto &g = grads[0];  // [N*T, 1, F]
    const int64_t nt = f.size(0), m = f.size(2), N = x.size(0);
    at::Tensor gx, gf;
    if (ctx->needs_input_grad(0)) {
      auto gs = at::bmm(f.transpose(1, 2), g);  // [N*T, m, F]
      const int64_t ch = mean.numel();
      auto r = at::native_batch_norm_backward(gs.view({N, ch, -1}), x.view({N, ch, -1}), c10::nullopt, c10::nullopt,
                                              c10::nullopt, mean.view({ch}), invstd.view({ch}), true, 0.0,
                                              {true, false, false});
      gx = std::get<0>(r).view(x.sizes());
    }
    if (ctx->needs_input_grad(1)) gf = at::bmm(g, normed(x, mean, invstd).view({nt, m, -1}).transpose(1, 2));
    return {gx, gf, at::Tensor(), at::Tensor()};
  }

  static at::Tensor normed(const at::Tensor &x, const at::Tensor &mean, const at::Tensor &invstd) {
    return (x - mean).mul_(invstd);
  }
};

}  // namespace

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
    auto incT = device_copy(inc, {p, n_in}, w.scalar_type(), dev);
    auto c = at::matmul(T(wpair).unsqueeze(0), incT).squeeze(0);  // [n_in]
    coef = w * c.unsqueeze(1);
  } else {
    coef = w;
  }
  auto idxT = device_copy(idx, {m}, torch::kLong, dev);
  auto cm = coef.flatten().index_select(0, idxT);  // [m]
  std::vector<at::Tensor> ts = mt::tensors(outs, m);
  if (m == 1 && drop_prob <= 0) {
    *out = wrap(ts[0] * cm);
    return nullptr;
  }
  const int64_t rank = ts[0].dim() + 1;  // of the stacked [m, N, C, H, W]
  std::vector<int64_t> shape(rank, 1);
  shape[0] = m;
  at::Tensor factor = cm.view(shape);
  if (drop_prob > 0) {
    const double keep = 1.0 - drop_prob;
    std::vector<int64_t> ms(rank, 1);
    ms[0] = m;
    ms[1] = ts[0].size(0);
    c10::optional<at::Generator> g;
    if (gen != nullptr) g = *static_cast<at::Generator *>(gen);
    auto mask = at::empty(ms, w.options().requires_grad(false)).bernoulli_(keep, g).div_(keep);
    bool all = true;
    for (int64_t i = 0; i < m; i++) all = all && droppable[i];
    if (!all) {
      // Ops without drop-path (identities) keep a mask of one: one where() on a cached
      // flag vector instead of a fill per op.
      std::vector<int64_t> fs(rank, 1);
      fs[0] = m;
      auto flags = device_copy(droppable, {m}, torch::kBool, dev).view(fs);
      mask = at::where(flags, mask, 1.0);
    }
    factor = factor * mask;
  }
  // On the CPU one pass over the op outputs (no [m, N, C, H, W] buffer); elsewhere three
  // kernels.
  auto fused = mt::mixed_sum_cpu(drop_prob > 0 ? factor.reshape({m, ts[0].size(0)}) : cm, ts);
  if (fused.defined()) {
    *out = wrap(fused);
    return nullptr;
  }
  *out = wrap((at::stack(ts, 0) * factor).sum(0));
  MT_CATCH("mixed_node", wops, wpair, m > 0 ? outs[0] : nullptr)
}

char *mt_factorized_reduce(mt_tensor x, mt_tensor w1, mt_tensor w2, int64_t groups, mt_tensor *out) {
  MT_TRY
  const auto &a = T(w1), &b = T(w2), &in = T(x);
  if (groups < 1 || a.dim() != 4 || !a.sizes().equals(b.sizes()) || a.size(2) != 1 || a.size(3) != 1 ||
      a.size(0) % groups != 0)
    throw std::invalid_argument("weights " + std::string(c10::str(a.sizes())) + " and " + std::string(c10::str(b.sizes())) +
                                " are not two equal [groups*co, ci, 1, 1] 1x1 kernels of " + std::to_string(groups) + " groups");
  if (in.dim() != 4 || in.size(2) % 2 != 0 || in.size(3) % 2 != 0)
    throw std::invalid_argument("input " + std::string(c10::str(in.sizes())) + " is not [N, C, H, W] of even height and width");
  const int64_t co = a.size(0) / groups, ci = a.size(1);
  // The kernels [groups, 2*co, ci, 2*2]: each group's co kernels of w1, then its co of w2,
  // times a constant mask that puts the first at tap (0, 0) and the second at tap (1, 1).
  std::vector<float> taps(2 * co * 4, 0.f);
  for (int64_t o = 0; o < co; o++) {
    taps[o * 4] = 1.f;
    taps[(co + o) * 4 + 3] = 1.f;
  }
  auto mask = device_copy(taps.data(), {1, 2 * co, 1, 4}, a.scalar_type(), a.device());
  auto k = at::cat({a.view({groups, co, ci, 1}), b.view({groups, co, ci, 1})}, 1) * mask;
  *out = wrap(at::conv2d(in, k.view({groups * 2 * co, ci, 2, 2}), c10::optional<at::Tensor>(), at::IntArrayRef{2, 2},
                         at::IntArrayRef{0, 0}, at::IntArrayRef{1, 1}, groups));
  MT_CATCH("factorized_reduce", x, w1, w2)
}

char *mt_node_batch_norm(mt_tensor *outs, int64_t m, mt_tensor rm, mt_tensor rv, const int64_t *sel,
                         int64_t tasks, bool training, double momentum, double eps, mt_tensor *out, mt_tensor *stats) {
  MT_TRY
  NodeMembers nm(outs, m, rm, rv, sel, tasks);
  const int64_t C = nm.C, N = nm.N;
  const auto v = nm.views();
  const auto &sizes = nm.sizes;
  at::Tensor srm = nm.srm, srv = nm.srv;
  // [N, tasks, m, C*H*W] is [N, tasks*m*C, H, W] in memory: one batch norm normalises every
  // (task, op, channel) over its samples and pixels, as the ops' own batch norms would.
  auto stacked = at::stack(v, 2);
  std::vector<int64_t> flat{N, tasks * m * C}, out_shape{N, tasks, m, C};
  for (size_t d = 2; d < sizes.size(); d++) {
    flat.push_back(sizes[d]);
    out_shape.push_back(sizes[d]);
  }
  if (stats != nullptr && training && stacked.scalar_type() == at::kFloat) {
    // The batch statistics only (NormedSum normalises): per (task, member, channel) over
    // the samples and positions, and the running statistics updated as a batch norm would
    // (the variance unbiased). Float32 only (autocast's 16-bit members take the batch norm).
    at::NoGradGuard guard;
    const int64_t ch = tasks * m * C;
    auto xs = stacked.view({N, ch, -1});
    auto vm = at::var_mean(xs, at::IntArrayRef{0, 2}, /*unbiased=*/false, /*keepdim=*/false);
    auto var = std::get<0>(vm), mean = std::get<1>(vm);
    const int64_t count = xs.size(0) * xs.size(2);
    auto rmv = srm.view({-1}), rvv = srv.view({-1});
    rmv.mul_(1 - momentum).add_(mean, momentum);
    rvv.mul_(1 - momentum).add_(var, momentum * count / std::max<int64_t>(count - 1, 1));
    *stats = wrap(at::stack({mean, (var + eps).rsqrt_()}));
  } else {
    auto y = mt::batch_norm(stacked.view(flat), at::Tensor(), at::Tensor(), srm.view({-1}), srv.view({-1}), training,
                            momentum, eps);
    stacked = y;
    if (stats != nullptr) *stats = nullptr;
  }
  if (training) nm.write_back();
  *out = wrap(stacked.view(out_shape));
  MT_CATCH("node_batch_norm", rm, rv, m > 0 ? outs[0] : nullptr)
}

char *mt_node_coefs(mt_tensor wpair, mt_tensor wops, const float *inc, int64_t p, int64_t n_in, const int64_t *idx,
                    int64_t m, double threshold, int64_t tasks, mt_tensor *out) {
  MT_TRY
  if (m <= 0) throw std::invalid_argument("no active ops");
  if (tasks < 1) throw std::invalid_argument("tasks must be >= 1");
  const auto &w0 = T(wops);
  const auto dev = w0.device();
  // Per task: weights at or below the threshold count as zero (the op or pair is pruned
  // for that task; another task may still need its output).
  auto w = w0.reshape({tasks, n_in, -1});
  w = w * w.gt(threshold);
  at::Tensor coef = w;  // [tasks, n_in, K]
  if (wpair != nullptr) {
    auto wp = T(wpair).reshape({tasks, p});
    wp = wp * wp.gt(threshold);
    auto incT = device_copy(inc, {p, n_in}, w.scalar_type(), dev);
    coef = w * at::matmul(wp, incT).unsqueeze(2);
  }
  auto idxT = device_copy(idx, {m}, torch::kLong, dev);
  *out = wrap(coef.reshape({tasks, -1}).index_select(1, idxT));  // [tasks, m]
  MT_CATCH("node_coefs", wops, wpair)
}

char *mt_mixed_tasks(mt_tensor stacked, mt_tensor stats, mt_tensor *outs, int64_t m, mt_tensor coefs,
                     const uint8_t *droppable, double drop_prob, mt_generator gen, int64_t tasks, mt_tensor *out) {
  MT_TRY
  if (m <= 0) throw std::invalid_argument("no active ops");
  if (tasks < 1) throw std::invalid_argument("tasks must be >= 1");
  const auto &cm = T(coefs);  // [tasks, m]
  if (cm.dim() != 2 || cm.size(0) != tasks || cm.size(1) != m)
    throw std::invalid_argument("coefficients of shape " + std::string(c10::str(cm.sizes())) + " are not [" +
                                std::to_string(tasks) + ", " + std::to_string(m) + "]");
  const auto dev = cm.device();
  // The first ms columns come stacked ([N, tasks, ms, C, ...], mt_node_batch_norm's
  // output), the other m - ms as outputs [N, tasks*C, ...].
  at::Tensor S;
  int64_t ms = 0;
  std::vector<int64_t> sizes;
  if (stacked != nullptr) {
    S = T(stacked);
    if (S.dim() < 4 || S.size(1) != tasks)
      throw std::invalid_argument("stacked outputs of shape " + std::string(c10::str(S.sizes())) +
                                  " are not [N, " + std::to_string(tasks) + ", ops, C, ...]");
    ms = S.size(2);
    sizes = {S.size(0), tasks * S.size(3)};
    for (int64_t d = 4; d < S.dim(); d++) sizes.push_back(S.size(d));
  }
  if (ms > m) throw std::invalid_argument(std::to_string(ms) + " stacked outputs for " + std::to_string(m) + " ops");
  std::vector<at::Tensor> ts = mt::tensors(outs, m - ms);
  if (!S.defined()) sizes = ts[0].sizes().vec();
  std::vector<at::Tensor> v;  // every output as [N, tasks, C*H*W]
  v.reserve(m);
  for (int64_t i = 0; i < ms; i++) v.push_back(S.select(2, i).reshape({sizes[0], tasks, -1}));
  for (size_t i = 0; i < ts.size(); i++) {
    if (!ts[i].sizes().equals(sizes))
      throw std::invalid_argument("op output " + std::to_string(i) + " has shape " + std::string(c10::str(ts[i].sizes())) +
                                  ", the node " + std::string(c10::str(at::IntArrayRef(sizes))));
    if (ts[i].dim() < 2 || ts[i].size(1) % tasks != 0)
      throw std::invalid_argument("op output channels do not hold " + std::to_string(tasks) + " tasks");
    v.push_back(by_tasks(ts[i], ts[i].size(0), tasks));
  }
  const int64_t N = sizes[0];
  at::Tensor mask = drop_mask(cm, N, tasks, m, droppable, drop_prob, gen);
  if (dev.is_cpu() && !S.defined()) {
    // The CPU's one-pass sum over op outputs, with each (sample, task) as a sample of its
    // own: [N, tasks*C, ...] is [N*tasks, C, ...] in memory.
    at::Tensor f = cm.t().unsqueeze(1).expand({m, N, tasks});  // [m, N, tasks]
    if (mask.defined()) f = f * mask.permute({2, 0, 1});
    std::vector<at::Tensor> flat;
    flat.reserve(m);
    for (const auto &t : ts) flat.push_back(t.reshape({N * tasks, -1}));
    auto fused = mt::mixed_sum_cpu(f.reshape({m, N * tasks}), flat);
    if (fused.defined()) {
      *out = wrap(fused.view(sizes));
      return nullptr;
    }
  }
  if (node_sum_loop()) {
    // Term by term (addcmul): autograd keeps the op outputs it already holds instead of a
    // stacked copy of them, for more and smaller kernels.
    at::Tensor f = mask.defined() ? cm.unsqueeze(0) * mask : cm.unsqueeze(0);  // [1|N, tasks, m]
    at::Tensor acc;
    for (int64_t i = 0; i < m; i++) {
      auto fi = f.select(2, i).unsqueeze(-1);  // [1|N, tasks, 1]
      acc = i == 0 ? v[i] * fi : at::addcmul(acc, v[i], fi);
    }
    *out = wrap(acc.view(sizes));
    return nullptr;
  }
  at::Tensor factor = cm.unsqueeze(1);  // [tasks, 1, m]
  if (mask.defined()) factor = (cm.unsqueeze(0) * mask).unsqueeze(2);  // [N, tasks, 1, m]
  if (!S.defined()) {
    // factor x [N, tasks, m, F]: one batched product weighs and sums every op output. The
    // outputs are stacked along dim 2, so each is copied in whole blocks of F values: a
    // stack along the last dim ([N, tasks, F, m]) interleaves them element by element, and
    // on an H200 took 1.9 ms per 28x28 node of the og_metanas batch of 10 (a fifth of a step).
    auto node = at::matmul(factor, at::stack(v, 2));
    *out = wrap(node.view(sizes));
    return nullptr;
  }
  // The stacked block is already [N*tasks, ms, F] in memory: one product for it, and one
  // more, accumulated into the first, for the outputs that came apart.
  // The factor's two parts come from one split (backward: one concatenation; two narrows
  // would each spread their gradient over zeros of the whole and add them).
  auto f = factor.expand({N, tasks, 1, m}).reshape({N * tasks, 1, m});
  auto fs = m > ms ? f.split_with_sizes({ms, m - ms}, 2) : std::vector<at::Tensor>{f};
  at::Tensor node;
  if (stats != nullptr) {
    // S holds the members before their batch norm, stats its mean and invstd [2, tasks*ms*C].
    const auto &st = T(stats);
    const int64_t C = S.size(3);
    if (st.dim() != 2 || st.size(0) != 2 || st.size(1) != tasks * ms * C)
      throw std::invalid_argument("batch statistics of shape " + std::string(c10::str(st.sizes())) + " are not [2, " +
                                  std::to_string(tasks * ms * C) + "]");
    auto x = S.reshape({S.size(0), tasks, ms, C, -1});
    node = NormedSum::apply(x, fs[0], st[0].view({1, tasks, ms, C, 1}), st[1].view({1, tasks, ms, C, 1}));
  } else {
    node = at::bmm(fs[0], S.reshape({N * tasks, ms, -1}));
  }
  if (m > ms) {
    std::vector<at::Tensor> rest(v.begin() + ms, v.end());
    node = at::baddbmm(node, fs[1], at::stack(rest, 2).view({N * tasks, m - ms, -1}));
  }
  *out = wrap(node.view(sizes));
  MT_CATCH("mixed_tasks", coefs, stacked != nullptr ? stacked : (m > 0 ? outs[0] : nullptr))
}

char *mt_node_norm_sum(mt_tensor *members, int64_t ms, mt_tensor rm, mt_tensor rv, const int64_t *sel,
                       double momentum, double eps, mt_tensor *rest, int64_t m, mt_tensor coefs,
                       const uint8_t *droppable, double drop_prob, mt_generator gen, int64_t tasks, mt_tensor *out) {
  MT_TRY
  NodeMembers nm(members, ms, rm, rv, sel, tasks);
  const auto &cm = T(coefs);  // [tasks, m]
  if (m < ms || cm.dim() != 2 || cm.size(0) != tasks || cm.size(1) != m)
    throw std::invalid_argument("coefficients of shape " + std::string(c10::str(cm.sizes())) + " are not [" +
                                std::to_string(tasks) + ", " + std::to_string(m) + "] for " + std::to_string(ms) +
                                " members and " + std::to_string(m - ms) + " other outputs");
  const int64_t N = nm.N;
  at::Tensor f = cm.unsqueeze(0).expand({N, tasks, m});
  auto mask = drop_mask(cm, N, tasks, m, droppable, drop_prob, gen);
  if (mask.defined()) f = f * mask;
  std::vector<at::Tensor> others;
  for (const auto &t : mt::tensors(rest, m - ms)) {
    if (!t.sizes().equals(nm.sizes))
      throw std::invalid_argument("op output of shape " + std::string(c10::str(t.sizes())) + ", the node " +
                                  std::string(c10::str(at::IntArrayRef(nm.sizes))));
    others.push_back(t);
  }
  auto node = mt::node_norm_sum(nm.ts, others, f, nm.srm, nm.srv, momentum, eps);  // [N*tasks, 1, F]
  nm.write_back();
  *out = wrap(node.view(nm.sizes));
  MT_CATCH("node_norm_sum", coefs, rm, ms > 0 ? members[0] : nullptr)
}

bool mt_node_norm_sum_on(int dev_type) { return mt::node_norm_sum_on(mt::device(dev_type, 0)); }

char *mt_adjacent_cat(mt_tensor *ts, int64_t n, mt_tensor *out) {
  MT_TRY
  auto xs = mt::tensors(ts, n);
  if (xs.empty()) throw std::invalid_argument("adjacent_cat: no tensors");
  *out = wrap(adjacent(xs) ? AdjacentCat::apply(at::TensorList(xs)) : at::cat(xs, 0));
  MT_CATCH("adjacent_cat", n > 0 ? ts[0] : nullptr, n > 1 ? ts[1] : nullptr)
}

char *mt_adjacent_leaves(mt_tensor *ts, int64_t n, mt_tensor *outs) {
  MT_TRY
  auto xs = mt::tensors(ts, n);
  if (xs.empty()) throw std::invalid_argument("adjacent_leaves: no tensors");
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> flat;
  std::vector<int64_t> sizes;
  for (const auto &x : xs) {
    if (x.dim() < 1) throw std::invalid_argument("adjacent_leaves: a 0-dim tensor");
    flat.push_back(x.detach());
    sizes.push_back(x.size(0));
  }
  auto parts = at::cat(flat, 0).split_with_sizes(sizes, 0);
  for (int64_t i = 0; i < n; i++) outs[i] = wrap(parts[i].detach().requires_grad_(xs[i].requires_grad()));
  MT_CATCH("adjacent_leaves", n > 0 ? ts[0] : nullptr, n > 1 ? ts[1] : nullptr)
}

}  // extern "C"
