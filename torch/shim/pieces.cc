// The task pieces of a group's output (mt_split_channels with tasks), whose gradients the
// fused node sums write straight into one buffer of the output's shape: the split's
// backward pass then returns that buffer instead of concatenating the pieces' gradients
// (a pass that reads and writes the whole output's size). A piece whose gradient comes
// from elsewhere (another consumer, a conversion) gets it concatenated as autograd's split
// would.
#include "common.h"

namespace mt {
namespace {

// SplitPieces: y [N, parts*tasks*C, ...] as parts views [N, tasks, C, ...] (y as [N,
// parts*tasks, C, ...], split along dim 1 in blocks of tasks). Its context keeps y's shape
// and address, and "buf", the gradient buffer that piece_grad allocates at the first
// request (contiguous y only).
struct SplitPieces : public torch::autograd::Function<SplitPieces> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext *ctx, const at::Tensor &y,
                                                int64_t parts, int64_t tasks) {
    ctx->set_materialize_grads(false);
    ctx->saved_data["parts"] = parts;
    ctx->saved_data["tasks"] = tasks;
    ctx->saved_data["sizes"] = y.sizes().vec();
    ctx->saved_data["base"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(y.data_ptr()));
    ctx->saved_data["contiguous"] = y.is_contiguous();
    return pieces(y, parts, tasks);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                 torch::autograd::variable_list grads) {
    const int64_t parts = ctx->saved_data["parts"].toInt(), tasks = ctx->saved_data["tasks"].toInt();
    at::Tensor buf;
    auto it = ctx->saved_data.find("buf");
    if (it != ctx->saved_data.end() && it->second.isTensor()) {
      buf = it->second.toTensor();
      ctx->saved_data.erase(it);
    }
    torch::autograd::variable_list out(3);  // y, parts, tasks
    at::Tensor any;
    for (const auto &g : grads)
      if (g.defined()) any = g;
    if (!any.defined()) return out;
    if (buf.defined()) {
      auto places = pieces(buf, parts, tasks);
      bool ours = true;
      for (size_t e = 0; e < grads.size() && ours; e++)
        ours = !grads[e].defined() || (grads[e].data_ptr() == places[e].data_ptr() &&
                                        grads[e].strides().equals(places[e].strides()) &&
                                        grads[e].sizes().equals(places[e].sizes()));
      if (ours) {
        for (size_t e = 0; e < grads.size(); e++)
          if (!grads[e].defined()) places[e].zero_();
        out[0] = buf;
        return out;
      }
    }
    const auto sizes = ctx->saved_data["sizes"].toIntVector();
    std::vector<at::Tensor> gs;
    for (const auto &g : grads) {
      if (g.defined()) {
        gs.push_back(g);
      } else {
        auto shape = any.sizes().vec();
        gs.push_back(at::zeros(shape, any.options()));
      }
    }
    out[0] = at::cat(gs, 1).view(sizes);
    return out;
  }

  static torch::autograd::variable_list pieces(const at::Tensor &y, int64_t parts, int64_t tasks) {
    return y.unflatten(1, {parts * tasks, y.size(1) / (parts * tasks)}).split(tasks, 1);
  }
};

}  // namespace

std::vector<at::Tensor> split_pieces(const at::Tensor &y, int64_t parts, int64_t tasks) {
  return SplitPieces::apply(y, parts, tasks);
}

at::Tensor piece_grad(const at::Tensor &x) {
  const auto &fn = x.grad_fn();
  auto *node = dynamic_cast<torch::autograd::CppNode<SplitPieces> *>(fn.get());
  if (node == nullptr) return {};
  auto &data = node->ctx_.saved_data;
  if (!data["contiguous"].toBool()) return {};
  const auto sizes = data["sizes"].toIntVector();
  at::Tensor buf;
  auto it = data.find("buf");
  if (it != data.end() && it->second.isTensor()) buf = it->second.toTensor();
  if (!buf.defined()) {
    buf = at::empty(sizes, x.options());
    data["buf"] = buf;
  }
  if (buf.scalar_type() != x.scalar_type() || buf.device() != x.device()) return {};
  const intptr_t bytes = reinterpret_cast<intptr_t>(x.data_ptr()) - static_cast<intptr_t>(data["base"].toInt());
  const int64_t off = bytes / static_cast<int64_t>(x.element_size());
  if (bytes < 0 || bytes % static_cast<int64_t>(x.element_size()) != 0 || x.numel() == 0) return {};
  int64_t last = off;  // x's last element, which must lie in the buffer
  for (int64_t d = 0; d < x.dim(); d++) last += (x.size(d) - 1) * x.stride(d);
  if (last >= buf.numel()) return {};
  return buf.as_strided(x.sizes(), x.strides(), buf.storage_offset() + off);
}

}  // namespace mt
