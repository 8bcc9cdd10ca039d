// Internal helpers of the shim (C++ only): handle wrapping, error strings, dtype and device codes.
#pragma once
#include <torch/torch.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <sstream>
#include <string>

#include "nodesum_kernels.h"
#include "shim.h"

namespace mt {

extern std::atomic<int64_t> live_tensors;
extern std::atomic<int64_t> host_syncs;

inline at::Tensor &T(mt_tensor t) { return *static_cast<at::Tensor *>(t); }

inline mt_tensor wrap(at::Tensor t) {
  live_tensors.fetch_add(1, std::memory_order_relaxed);
  return new at::Tensor(std::move(t));
}

inline char *dup(const std::string &s) {
  char *r = static_cast<char *>(std::malloc(s.size() + 1));
  std::memcpy(r, s.data(), s.size() + 1);
  return r;
}

std::string shape_str(mt_tensor t);

// Formats "op: message (inputs [2, 3], [4])", without LibTorch's C++ backtrace.
char *error(const char *op, const std::exception &e, std::initializer_list<mt_tensor> inputs);

inline c10::optional<at::Tensor> opt(mt_tensor t) {
  if (t == nullptr) return c10::nullopt;
  return T(t);
}

at::ScalarType dtype(int code);
int dtype_code(at::ScalarType s);
at::Device device(int type, int index);
at::TensorOptions options(int dtype, int dev_type, int dev_index);
std::vector<at::Tensor> tensors(mt_tensor *ts, int64_t n);
// mul_by multiplies every tensor of ts in place by the one-element tensor s, with one
// multi-tensor kernel where LibTorch has one (>= 2.1), so that no value goes to the host.
void mul_by(std::vector<at::Tensor> &ts, const at::Tensor &s);
// env_is reports whether the environment variable name is set to value.
bool env_is(const char *name, const char *value);

// Faster CPU kernels (cpu_fast.cc); each returns an undefined tensor where it does not apply
// (fast_cpu_ops is false while the thread autocasts on the CPU: they compute in float32).
bool fast_cpu_ops();
// autocast_cpu reports whether the calling thread autocasts on the CPU (autocast.cc).
bool autocast_cpu();
// cpu_avx2_fma reports a CPU with AVX2 and FMA (the kernels that use them check it first).
bool cpu_avx2_fma();
// embed_plane writes the H x W plane src into the Hp x Wp plane dst at row top and column
// left, and zeros around it.
void embed_plane(const float *src, int64_t H, int64_t W, int64_t top, int64_t left, int64_t Hp, int64_t Wp,
                 float *dst);
at::Tensor max_pool2d_cpu(const at::Tensor &x, int64_t k, int64_t s, int64_t p);
at::Tensor avg_pool2d_excl_cpu(const at::Tensor &x, int64_t k, int64_t s, int64_t p);
at::Tensor dwconv_cpu(const at::Tensor &x, const at::Tensor &w, const c10::optional<at::Tensor> &b,
                      int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t groups);
// dense_conv_cpu: ungrouped stride-1 "same" convolutions without bias (cpu_conv.cc).
at::Tensor dense_conv_cpu(const at::Tensor &x, const at::Tensor &w, const c10::optional<at::Tensor> &b,
                          int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                          int64_t groups);
// batch_norm_train_cpu: training-mode batch norm of a contiguous float tensor; w, b, rm and
// rv may be undefined.
at::Tensor batch_norm_train_cpu(const at::Tensor &x, const at::Tensor &w, const at::Tensor &b,
                                const at::Tensor &rm, const at::Tensor &rv, double momentum, double eps);
// mixed_sum_cpu: sum_i f[i] * ts[i] (f of shape [m]) or sum_i f[i, n] * ts[i][n] (f of shape
// [m, N], one weight per sample), for m >= 2 contiguous float tensors of one shape.
at::Tensor mixed_sum_cpu(const at::Tensor &f, const std::vector<at::Tensor> &ts);

// norm_relu_cpu writes y = max(invstd[c] * (x - mean[c]), 0) for contiguous float32 x and y
// ([N, C, ...], per channel c), and norm_relu_backward_cpu the batch norm + ReLU's input
// gradient dx from x and the output gradient g (contiguous float32, x's shape) with
// nodesum_math.h's formulas, writing each channel's beta and gamma (cpu_fast.cc, AVX2 and
// FMA); both return false, writing nothing, where the CPU lacks them.
bool norm_relu_cpu(const at::Tensor &x, const float *mean, const float *invstd, at::Tensor &y);
bool norm_relu_backward_cpu(const at::Tensor &x, const at::Tensor &g, const float *mean, const float *invstd,
                            float *beta, float *gamma, at::Tensor &dx);
// fan_sum_cpu writes out ([n, N, Q] float32) as the repeat fan's backward pass does: for
// state m, sample b and offset q the sum over the k gradients g (float32, sample b's row
// at g[j] + b * rows[j]) of their r copies of m, in the gradients' order, and 0 where the
// state x[m] (contiguous [N, Q]; x empty: no ReLU) is not positive (cpu_fast.cc, AVX2);
// false, writing nothing, where the CPU lacks AVX2.
bool fan_sum_cpu(const std::vector<const float *> &g, const std::vector<int64_t> &rows, int64_t n, int64_t N,
                 int64_t r, int64_t Q, const std::vector<const float *> &x, float *out);

// batch_norm is mt_batch_norm's op (ops.cc): the shim's CPU kernel where it applies, else
// LibTorch's (cuDNN's for CUDA batch norms without affine tensors under
// METANAS_CUDNN_BATCH_NORM=1); w, b, rm and rv may be undefined.
at::Tensor batch_norm(const at::Tensor &x, const at::Tensor &w, const at::Tensor &b, const at::Tensor &rm,
                      const at::Tensor &rv, bool training, double momentum, double eps);


// node_norm_sum (nodesum.cc): a batched node's m members ([N, tasks*C, ...] or [N, tasks,
// C, ...]; float32, bfloat16 or float16, computed in float32) each normalised by a batch
// norm without affine tensors in training and summed with weights f [N, tasks, m +
// len(rest)] together with rest, the node's other outputs (its identities, summed as they
// are), as [N*tasks, 1, C*...]; the running statistics rm and rv ([tasks, m, C]) move as
// the batch norms' would. No normalised or stacked copy of the members or the others is
// made, forward or backward. node_norm_sum_on reports whether it has kernels for dev's
// type (CUDA's only where the shim was built with nvcc).
at::Tensor node_norm_sum(at::TensorList members, at::TensorList rest, const at::Tensor &f, const at::Tensor &rm,
                         const at::Tensor &rv, double momentum, double eps);
bool node_norm_sum_on(const c10::Device &dev);
// channel_stats (nodesum.cc) returns x's ([N, C, ...]; float32, bfloat16 or float16) batch
// mean and invstd = 1/sqrt(var + eps) per channel (float32 [C], var biased) and moves the
// running statistics rm and rv (contiguous float32 [C]) as a batch norm in training would,
// by node_norm_sum's kernels (node_norm_sum_on).
std::pair<at::Tensor, at::Tensor> channel_stats(const at::Tensor &x, const at::Tensor &rm, const at::Tensor &rv,
                                                double momentum, double eps);
// ns_kernels (nodesum.cc) returns the launchers of nodesum.cu's kernels for tensors on x's
// device: CUDA's for a CUDA tensor (an error naming op where the shim was built without
// nvcc), the host emulation's for a CPU tensor while mt_set_kernel_emulation is on, else
// nullptr (the CPU loops). ns_stream is x's current CUDA stream (nullptr on the CPU);
// ns_check throws op's error where a launcher returned one.
const mt_ns_kernels *ns_kernels(const at::Tensor &x, const char *op);
void *ns_stream(const at::Tensor &x);
void ns_check(const mt_ns_kernels *k, int code, const char *op);
// dwconv_kernel (dwconv.cc): a depthwise convolution (groups = channels, 3x3 or 5x5
// kernel, no bias) whose weight gradient is nodesum.cu's kernel, on CUDA while
// mt_set_dw_wgrad is on (METANAS_DW_WGRAD=1) or on the CPU while the kernels' emulation is
// on; an undefined tensor elsewhere. Under autocast it convolves in the autocast type.
at::Tensor dwconv_kernel(const at::Tensor &x, const at::Tensor &w, const c10::optional<at::Tensor> &b, int64_t sh,
                         int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t groups);
// autocast_active (autocast.cc) reports whether autocast is on for CUDA (cuda) or the CPU
// on this thread, autocast_dtype the type it lowers to.
bool autocast_active(bool cuda);
at::ScalarType autocast_dtype(bool cuda);
// repeat_copies (ops.cc) is xs (tensors [N, C, ...] of one shape) each repeated r times along
// the channels, [N, len*r*C, ...] in the order (tensor, copy, channel), by one copy.
at::Tensor repeat_copies(at::TensorList xs, int64_t r);
// split_pieces (pieces.cc) is y [N, parts*tasks*C, ...] as parts views [N, tasks, C, ...];
// the fused node sums write their members' gradients into its gradient buffer where
// piece_grad places them, so that its backward pass needs no concatenation.
std::vector<at::Tensor> split_pieces(const at::Tensor &y, int64_t parts, int64_t tasks);
// piece_grad returns, for x a piece of split_pieces (its output, as the autograd graph has
// it), a tensor of x's shape and strides at x's place in that split's gradient buffer
// (allocated at the first request), where a gradient written for x needs no copy; else an
// undefined tensor.
at::Tensor piece_grad(const at::Tensor &x);
// copy_all copies every s[i] into d[i] (pairs of one shape): one multi-tensor call where
// LibTorch has it (2.1 on), else a copy_ per pair (autograd.cc).
void copy_all(std::vector<at::Tensor> &d, const std::vector<at::Tensor> &s);
// add_profile_bytes adds bytes moved by a call of the shim's own kernels (name) to the
// memory-traffic profile (mt_profile_bytes), while it runs.
void add_profile_bytes(const char *name, int64_t bytes);

}  // namespace mt

#define MT_TRY try {
#define MT_CATCH(op, ...)                                \
  }                                                      \
  catch (const std::exception &e) {                      \
    return mt::error(op, e, {__VA_ARGS__});              \
  }                                                      \
  return nullptr;
