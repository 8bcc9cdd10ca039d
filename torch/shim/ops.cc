// Tensor operations: neural-network ops, shape ops, arithmetic, reductions.
#include "common.h"

using mt::T;
using mt::wrap;

namespace {

// cudnn_batch_norm: METANAS_CUDNN_BATCH_NORM=1 gives CUDA batch norms without affine
// parameters an identity weight and bias, so that LibTorch runs cuDNN's kernels instead of
// its own (an experiment: on an H200 ATen's backward kernel took 16 % of a batched step).
bool cudnn_batch_norm() {
  static const bool on = mt::env_is("METANAS_CUDNN_BATCH_NORM", "1");
  return on;
}

// cuda_default_switch reads the switch name once per call site (the caller keeps the
// result): on is the value that turns it on everywhere, off the one that turns it off; unset,
// it is on for CUDA only. It returns 1 for on, 2 for off, 0 for unset; another value is
// reported and read as unset.
int cuda_default_switch(const char *name, const char *on, const char *off) {
  const char *e = std::getenv(name);
  if (e == nullptr || *e == '\0') return 0;
  if (std::strcmp(e, on) == 0) return 1;
  if (std::strcmp(e, off) == 0) return 2;
  std::fprintf(stderr, "metanas: %s=%s is neither %s nor %s; using the default (%s on CUDA)\n", name, e, on, off, on);
  return 0;
}

// switch_on reports whether a cuda_default_switch of mode m is on for a device of this kind.
bool switch_on(int m, bool cuda) { return m == 1 || (m == 0 && cuda); }

// pointwise_mode is METANAS_POINTWISE: matmul or conv (on CUDA by default: on an H200 the
// products took 16 % off a batched og_metanas step, while on the CPU the shim's own 1x1
// kernel is faster).
int pointwise_mode() {
  static const int mode = cuda_default_switch("METANAS_POINTWISE", "matmul", "conv");
  return mode;
}

// pointwise_on reports whether 1x1 convolutions on a device of this kind (cuda) run as
// matrix products (see pointwise_matmul).
bool pointwise_on(bool cuda) { return switch_on(pointwise_mode(), cuda); }

// pointwise_matmul: where pointwise_on, bias-free 1x1 convolutions at stride 1 and without
// padding run as one batched matrix product, [g, Co, Ci] x [N, g, Ci, H*W] = [N, g, Co, H*W]
// for g groups (cuDNN's grouped convolutions of a batched network changed the layout to NHWC
// and back around every call). It returns an undefined tensor where it does not apply.
at::Tensor pointwise_matmul(const at::Tensor &x, const at::Tensor &w, const c10::optional<at::Tensor> &b,
                            int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t groups) {
  if (!pointwise_on(x.is_cuda()) || x.dim() != 4 || w.dim() != 4 || w.size(2) != 1 || w.size(3) != 1) return at::Tensor();
  if (sh != 1 || sw != 1 || ph != 0 || pw != 0 || (b && b->defined()) || groups < 1) return at::Tensor();
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), wd = x.size(3);
  if (c % groups != 0 || w.size(0) % groups != 0 || w.size(1) != c / groups || x.numel() == 0) return at::Tensor();
  const int64_t ci = c / groups, co = w.size(0) / groups;
  auto y = at::matmul(w.reshape({groups, co, ci}), x.reshape({n, groups, ci, h * wd}));
  return y.view({n, groups * co, h, wd});
}

// reduce_mode is METANAS_FACTORIZED_REDUCE: patch or split (on CUDA by default: one
// convolution instead of two, a copy, two zero fills and an addition; on the CPU the shim's
// strided 1x1 kernel runs the halves).
int reduce_mode() {
  static const int mode = cuda_default_switch("METANAS_FACTORIZED_REDUCE", "patch", "split");
  return mode;
}

}  // namespace

namespace mt {

at::Tensor batch_norm(const at::Tensor &x, const at::Tensor &w, const at::Tensor &b, const at::Tensor &rm,
                      const at::Tensor &rv, bool training, double momentum, double eps) {
  if (training) {
    auto y = batch_norm_train_cpu(x, w, b, rm, rv, momentum, eps);
    if (y.defined()) return y;
  }
  auto some = [](const at::Tensor &t) { return t.defined() ? c10::optional<at::Tensor>(t) : c10::nullopt; };
  auto wt = some(w), bt = some(b);
  if (x.is_cuda() && !wt && !bt && x.dim() >= 2 && cudnn_batch_norm()) {
    // LibTorch takes cuDNN's batch norm only with both affine tensors: the identity ones,
    // float32 for 16-bit inputs (as cuDNN and LibTorch's mixed-type batch norm want).
    const auto pt = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    wt = at::ones({x.size(1)}, x.options().dtype(pt).requires_grad(false));
    bt = at::zeros({x.size(1)}, x.options().dtype(pt).requires_grad(false));
  }
  return at::batch_norm(x, wt, bt, some(rm), some(rv), training, momentum, eps,
                        at::globalContext().userEnabledCuDNN());
}

at::Tensor repeat_copies(at::TensorList xs, int64_t r) {
  // Each tensor as [N, r, C, ...] (an expanded view), concatenated along the copies (one
  // copy kernel): backward, each view's gradient is summed over its copies.
  std::vector<at::Tensor> views;
  for (const auto &t : xs) {
    auto sizes = t.sizes().vec();
    sizes.insert(sizes.begin() + 1, r);
    views.push_back(t.unsqueeze(1).expand(sizes));
  }
  auto flat = xs[0].sizes().vec();
  flat[1] *= static_cast<int64_t>(xs.size()) * r;
  return at::cat(views, 1).view(flat);
}

}  // namespace mt

extern "C" {

bool mt_pointwise_matmul(bool cuda) { return pointwise_on(cuda); }

bool mt_factorized_reduce_patch(bool cuda) { return switch_on(reduce_mode(), cuda); }


char *mt_conv2d(mt_tensor x, mt_tensor w, mt_tensor b, int64_t sh, int64_t sw, int64_t ph,
                int64_t pw, int64_t dh, int64_t dw, int64_t groups, mt_tensor *out) {
  MT_TRY
  auto y = pointwise_matmul(T(x), T(w), mt::opt(b), sh, sw, ph, pw, groups);
  if (!y.defined()) y = mt::dwconv_kernel(T(x), T(w), mt::opt(b), sh, sw, ph, pw, dh, dw, groups);
  if (!y.defined()) y = mt::dwconv_cpu(T(x), T(w), mt::opt(b), sh, sw, ph, pw, dh, dw, groups);
  if (!y.defined()) y = mt::dense_conv_cpu(T(x), T(w), mt::opt(b), sh, sw, ph, pw, dh, dw, groups);
  if (!y.defined()) y = at::conv2d(T(x), T(w), mt::opt(b), {sh, sw}, {ph, pw}, {dh, dw}, groups);
  *out = wrap(y);
  MT_CATCH("conv2d", x, w)
}

char *mt_batch_norm(mt_tensor x, mt_tensor w, mt_tensor b, mt_tensor rm, mt_tensor rv,
                    bool training, double momentum, double eps, mt_tensor *out) {
  MT_TRY
  auto def = [](mt_tensor t) { return t == nullptr ? at::Tensor() : T(t); };
  *out = wrap(mt::batch_norm(T(x), def(w), def(b), def(rm), def(rv), training, momentum, eps));
  MT_CATCH("batch_norm", x, w, rm)
}

char *mt_relu(mt_tensor x, mt_tensor *out) {
  MT_TRY
  *out = wrap(at::relu(T(x)));
  MT_CATCH("relu", x)
}

char *mt_max_pool2d(mt_tensor x, int64_t k, int64_t s, int64_t p, mt_tensor *out) {
  MT_TRY
  auto y = mt::max_pool2d_cpu(T(x), k, s, p);
  if (!y.defined()) y = at::max_pool2d(T(x), {k, k}, {s, s}, {p, p});
  *out = wrap(y);
  MT_CATCH("max_pool2d", x)
}

char *mt_avg_pool2d(mt_tensor x, int64_t k, int64_t s, int64_t p, bool count_include_pad,
                    mt_tensor *out) {
  MT_TRY
  at::Tensor y;
  if (!count_include_pad) y = mt::avg_pool2d_excl_cpu(T(x), k, s, p);
  if (!y.defined()) y = at::avg_pool2d(T(x), {k, k}, {s, s}, {p, p}, false, count_include_pad);
  *out = wrap(y);
  MT_CATCH("avg_pool2d", x)
}

char *mt_adaptive_avg_pool2d(mt_tensor x, int64_t oh, int64_t ow, mt_tensor *out) {
  MT_TRY
  *out = wrap(at::adaptive_avg_pool2d(T(x), {oh, ow}));
  MT_CATCH("adaptive_avg_pool2d", x)
}

char *mt_linear(mt_tensor x, mt_tensor w, mt_tensor b, mt_tensor *out) {
  MT_TRY
  *out = wrap(at::linear(T(x), T(w), mt::opt(b)));
  MT_CATCH("linear", x, w)
}

char *mt_softmax(mt_tensor x, int64_t dim, mt_tensor *out) {
  MT_TRY
  *out = wrap(at::softmax(T(x), dim));
  MT_CATCH("softmax", x)
}

char *mt_log_softmax(mt_tensor x, int64_t dim, mt_tensor *out) {
  MT_TRY
  *out = wrap(at::log_softmax(T(x), dim));
  MT_CATCH("log_softmax", x)
}

char *mt_cross_entropy(mt_tensor logits, mt_tensor target, mt_tensor *out) {
  MT_TRY
  *out = wrap(at::cross_entropy_loss(T(logits), T(target)));
  MT_CATCH("cross_entropy", logits, target)
}

char *mt_cat(mt_tensor *ts, int64_t n, int64_t dim, mt_tensor *out) {
  MT_TRY
  *out = wrap(at::cat(mt::tensors(ts, n), dim));
  MT_CATCH("cat", n > 0 ? ts[0] : nullptr, n > 1 ? ts[1] : nullptr)
}

char *mt_stack(mt_tensor *ts, int64_t n, int64_t dim, mt_tensor *out) {
  MT_TRY
  *out = wrap(at::stack(mt::tensors(ts, n), dim));
  MT_CATCH("stack", n > 0 ? ts[0] : nullptr, n > 1 ? ts[1] : nullptr)
}

char *mt_slice(mt_tensor x, int64_t dim, int64_t start, int64_t end, int64_t step,
               mt_tensor *out) {
  MT_TRY
  *out = wrap(T(x).slice(dim, start, end, step));
  MT_CATCH("slice", x)
}

char *mt_narrow(mt_tensor x, int64_t dim, int64_t start, int64_t length, mt_tensor *out) {
  MT_TRY
  *out = wrap(T(x).narrow(dim, start, length));
  MT_CATCH("narrow", x)
}

// mt_repeat_states returns xs (n tensors [N, C, ...] of one shape) each repeated r times
// along the channels, [N, n*r*C, ...] in the order (tensor, copy, channel), as one copy; its
// backward pass sums each tensor's r copies' gradients in one reduction per tensor.
char *mt_repeat_states(mt_tensor *xs, int64_t n, int64_t r, mt_tensor *out) {
  MT_TRY
  auto ts = mt::tensors(xs, n);
  if (ts.empty() || ts[0].dim() < 2 || r < 1)
    throw std::invalid_argument("repeat_states: needs tensors [N, C, ...] and r >= 1");
  *out = wrap(mt::repeat_copies(ts, r));
  MT_CATCH("repeat_states", n > 0 ? xs[0] : nullptr, n > 1 ? xs[1] : nullptr)
}

// mt_split_channels writes to outs the parts views of x ([N, parts*C, ...]) along its
// channels, [N, C, ...] each, made by one split: their gradients come back as one
// concatenation (separate narrows would each spread theirs over zeros of x's size). With
// tasks > 0 each part is [N, tasks, C/tasks, ...] (x as [N, parts*tasks, C/tasks, ...],
// split), so that a gradient strided along the tasks fits it without a copy, and the fused
// node sums write the parts' gradients into one buffer that the backward pass returns
// without concatenating them (split_pieces).
char *mt_split_channels(mt_tensor x, int64_t parts, int64_t tasks, mt_tensor *outs) {
  MT_TRY
  const auto &t = T(x);
  if (t.dim() < 2 || parts < 1 || t.size(1) % parts != 0 || (tasks > 0 && t.size(1) % (parts * tasks) != 0))
    throw std::invalid_argument("split_channels: needs [N, parts*C, ...], parts >= 1 and C a multiple of tasks");
  auto ys = tasks > 0 ? mt::split_pieces(t, parts, tasks) : t.split(t.size(1) / parts, 1);
  for (int64_t i = 0; i < parts; i++) outs[i] = wrap(ys[i]);
  MT_CATCH("split_channels", x)
}

char *mt_reshape(mt_tensor x, const int64_t *shape, int ndim, mt_tensor *out) {
  MT_TRY
  *out = wrap(T(x).reshape(at::IntArrayRef(shape, ndim)));
  MT_CATCH("reshape", x)
}

char *mt_view(mt_tensor x, const int64_t *shape, int ndim, mt_tensor *out) {
  MT_TRY
  *out = wrap(T(x).view(at::IntArrayRef(shape, ndim)));
  MT_CATCH("view", x)
}

char *mt_flatten(mt_tensor x, int64_t start, int64_t end, mt_tensor *out) {
  MT_TRY
  *out = wrap(T(x).flatten(start, end));
  MT_CATCH("flatten", x)
}

char *mt_permute(mt_tensor x, const int64_t *dims, int ndim, mt_tensor *out) {
  MT_TRY
  *out = wrap(T(x).permute(at::IntArrayRef(dims, ndim)));
  MT_CATCH("permute", x)
}

char *mt_contiguous(mt_tensor x, mt_tensor *out) {
  MT_TRY
  *out = wrap(T(x).contiguous());
  MT_CATCH("contiguous", x)
}

char *mt_index_select(mt_tensor x, int64_t dim, mt_tensor index, mt_tensor *out) {
  MT_TRY
  *out = wrap(T(x).index_select(dim, T(index)));
  MT_CATCH("index_select", x, index)
}

static const char *binary_names[] = {"add", "sub", "mul", "div", "maximum", "minimum"};

char *mt_binary(int op, mt_tensor a, mt_tensor b, mt_tensor *out) {
  MT_TRY
  const auto &x = T(a);
  const auto &y = T(b);
  switch (op) {
    case 0: *out = wrap(x + y); break;
    case 1: *out = wrap(x - y); break;
    case 2: *out = wrap(x * y); break;
    case 3: *out = wrap(x / y); break;
    case 4: *out = wrap(at::maximum(x, y)); break;
    case 5: *out = wrap(at::minimum(x, y)); break;
    default: throw std::invalid_argument("unknown binary op");
  }
  MT_CATCH(op >= 0 && op < 6 ? binary_names[op] : "binary", a, b)
}

char *mt_add_scaled(mt_tensor a, mt_tensor b, double alpha, mt_tensor *out) {
  MT_TRY
  *out = wrap(at::add(T(a), T(b), alpha));
  MT_CATCH("add", a, b)
}

char *mt_binary_scalar(int op, mt_tensor a, double s, mt_tensor *out) {
  MT_TRY
  const auto &x = T(a);
  switch (op) {
    case 0: *out = wrap(x + s); break;
    case 1: *out = wrap(x - s); break;
    case 2: *out = wrap(x * s); break;
    case 3: *out = wrap(x / s); break;
    case 4: *out = wrap(at::clamp_min(x, s)); break;
    case 5: *out = wrap(at::clamp_max(x, s)); break;
    case 6: *out = wrap(at::pow(x, s)); break;
    default: throw std::invalid_argument("unknown scalar op");
  }
  MT_CATCH("scalar_op", a)
}

char *mt_unary(int op, mt_tensor a, mt_tensor *out) {
  MT_TRY
  const auto &x = T(a);
  switch (op) {
    case 0: *out = wrap(-x); break;
    case 1: *out = wrap(x.exp()); break;
    case 2: *out = wrap(x.log()); break;
    case 3: *out = wrap(x.sqrt()); break;
    case 4: *out = wrap(x.abs()); break;
    case 5: *out = wrap(x.sigmoid()); break;
    case 6: *out = wrap(x.tanh()); break;
    case 7: *out = wrap(x * x); break;
    default: throw std::invalid_argument("unknown unary op");
  }
  MT_CATCH("unary", a)
}

static at::Tensor compare(int op, const at::Tensor &x, const at::Scalar &s) {
  switch (op) {
    case 0: return x.eq(s);
    case 1: return x.ne(s);
    case 2: return x.lt(s);
    case 3: return x.le(s);
    case 4: return x.gt(s);
    case 5: return x.ge(s);
  }
  throw std::invalid_argument("unknown comparison");
}

char *mt_compare(int op, mt_tensor a, mt_tensor b, mt_tensor *out) {
  MT_TRY
  const auto &x = T(a);
  const auto &y = T(b);
  switch (op) {
    case 0: *out = wrap(x.eq(y)); break;
    case 1: *out = wrap(x.ne(y)); break;
    case 2: *out = wrap(x.lt(y)); break;
    case 3: *out = wrap(x.le(y)); break;
    case 4: *out = wrap(x.gt(y)); break;
    case 5: *out = wrap(x.ge(y)); break;
    default: throw std::invalid_argument("unknown comparison");
  }
  MT_CATCH("compare", a, b)
}

char *mt_compare_scalar(int op, mt_tensor a, double s, mt_tensor *out) {
  MT_TRY
  *out = wrap(compare(op, T(a), s));
  MT_CATCH("compare", a)
}

char *mt_where(mt_tensor cond, mt_tensor a, mt_tensor b, mt_tensor *out) {
  MT_TRY
  *out = wrap(at::where(T(cond), T(a), T(b)));
  MT_CATCH("where", cond, a, b)
}

char *mt_clamp(mt_tensor a, double lo, double hi, bool has_lo, bool has_hi, mt_tensor *out) {
  MT_TRY
  c10::optional<at::Scalar> l, h;
  if (has_lo) l = lo;
  if (has_hi) h = hi;
  *out = wrap(at::clamp(T(a), l, h));
  MT_CATCH("clamp", a)
}

char *mt_reduce_all(int op, mt_tensor x, mt_tensor *out) {
  MT_TRY
  const auto &t = T(x);
  switch (op) {
    case 0: *out = wrap(t.sum()); break;
    case 1: *out = wrap(t.mean()); break;
    case 2: *out = wrap(t.max()); break;
    case 3: *out = wrap(t.min()); break;
    default: throw std::invalid_argument("unknown reduction");
  }
  MT_CATCH("reduce", x)
}

char *mt_reduce_dims(int op, mt_tensor x, const int64_t *dims, int ndims, bool keepdim,
                     mt_tensor *out) {
  MT_TRY
  const auto &t = T(x);
  auto d = at::IntArrayRef(dims, ndims);
  switch (op) {
    case 0: *out = wrap(t.sum(d, keepdim)); break;
    case 1: *out = wrap(t.mean(d, keepdim)); break;
    case 2:
      if (ndims != 1) throw std::invalid_argument("max over one dim only");
      *out = wrap(std::get<0>(t.max(dims[0], keepdim)));
      break;
    case 3:
      if (ndims != 1) throw std::invalid_argument("min over one dim only");
      *out = wrap(std::get<0>(t.min(dims[0], keepdim)));
      break;
    default: throw std::invalid_argument("unknown reduction");
  }
  MT_CATCH("reduce", x)
}

char *mt_argmax(mt_tensor x, int64_t dim, bool keepdim, mt_tensor *out) {
  MT_TRY
  *out = wrap(T(x).argmax(dim, keepdim));
  MT_CATCH("argmax", x)
}

char *mt_topk(mt_tensor x, int64_t k, int64_t dim, bool largest, mt_tensor *values,
              mt_tensor *indices) {
  MT_TRY
  auto r = T(x).topk(k, dim, largest, true);
  *values = wrap(std::get<0>(r));
  *indices = wrap(std::get<1>(r));
  MT_CATCH("topk", x)
}

char *mt_norm(mt_tensor x, mt_tensor *out) {
  MT_TRY
  *out = wrap(T(x).norm());
  MT_CATCH("norm", x)
}

}  // extern "C"
