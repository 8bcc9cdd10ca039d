// The CUDA kernels of the fused node batch norm and sum, of the fan-in of a repeated
// state's gradients, of the fused batch norm + ReLU and of a depthwise convolution's weight
// gradient (nodesum.cu), in plain C types so that
// the .cu file needs no LibTorch headers; nodesum.cc has a CPU loop for each.
//
// Each member i is a matrix [N, R*HW] whose rows lie ns[i] elements apart (R = T*C
// channels, tasks by channels, of HW positions, contiguous within a row); r = t*C + c. The
// members, the node's gradient g, the node and the members' gradients dx are of one type,
// dtype: MT_NS_FLOAT, MT_NS_BF16 or MT_NS_HALF (every sum and product is in float32).
// The small tensors are contiguous float32: mean and invstd [m, R] (member by channel);
// the running statistics rm and rv [T, m, C]; gx [N, m, R]; g1 [N, R]; beta and gamma
// [m, R]; gf [N, T, m]. The weights f of member i for sample n and task t are
// f[(n*T + t)*fs + i]. Every launcher queues its kernels on stream (a cudaStream_t) and
// returns a cudaError_t (0: queued), which the build's error function names.
#pragma once
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { MT_NS_FLOAT = 0, MT_NS_BF16 = 1, MT_NS_HALF = 2 };

// mean and invstd = 1/sqrt(var + eps) of channel r of member i < ms over its N*HW values
// (var biased), and the running statistics [T, ms, C] moved: rm = (1-momentum)*rm +
// momentum*mean, rv likewise with the unbiased variance; 0 and 1 for the members from ms
// on, which no batch norm normalises (not read).
typedef int mt_ns_stats_fn(const void *const *x, const int64_t *ns, int dtype, int m, int ms, int64_t N, int64_t T,
                     int64_t C, int64_t HW, double momentum, double eps, float *mean, float *invstd, float *rm,
                     float *rv, void *stream);
// out[n, r, :] = sum_i f[n, t, i] * invstd[i, r] * (x_i[n, r, :] - mean[i, r]); out is
// contiguous [N, R*HW]. Past 32 members the sum goes through acc, float32 [N, R*HW] (out
// itself for float32 members; unused, may be NULL, for fewer).
typedef int mt_ns_sum_fn(const void *const *x, const int64_t *ns, int dtype, int m, int64_t N, int64_t T, int64_t C,
                   int64_t HW, const float *f, int64_t fs, const float *mean, const float *invstd, void *out,
                   float *acc, void *stream);
// gx[n, i, r] = sum_h g[n, r, h] * x_i[n, r, h]; g1[n, r] = sum_h g[n, r, h]; g contiguous.
typedef int mt_ns_reduce_fn(const void *const *x, const int64_t *ns, int dtype, int m, int64_t N, int64_t T, int64_t C,
                      int64_t HW, const void *g, float *gx, float *g1, void *stream);
// From gx and g1: beta and gamma of the members' gradients (mt_ns_dx_fn; 0 for members
// from ms on, which no batch norm normalises: their mean is 0 and invstd 1), and where gf
// is not NULL the weights' gradient gf[n, t, i] = sum_c invstd * (gx - mean * g1).
typedef int mt_ns_finish_fn(int m, int ms, int64_t N, int64_t T, int64_t C, int64_t HW, const float *f, int64_t fs,
                      const float *mean, const float *invstd, const float *gx, const float *g1, float *beta,
                      float *gamma, float *gf, void *stream);
// dx_i[n, r, :] = f[n, t, i] * invstd[i, r] * g[n, r, :] + beta[i, r] * x_i[n, r, :] +
// gamma[i, r]; each dx_i a matrix [N, R*HW] whose rows lie ds[i] elements apart.
typedef int mt_ns_dx_fn(const void *const *x, const int64_t *ns, int dtype, int m, int64_t N, int64_t T, int64_t C,
                  int64_t HW, const float *f, int64_t fs, const float *invstd, const float *beta, const float *gamma,
                  const void *g, void *const *dx, const int64_t *ds, void *stream);
// The fan-in of a repeated state's gradients (fan.cc): out[m, b, q] = sum_j sum_i
// g_j[b, (m*r + i)*Q + q] over the k gradients g_j (rows gs[j] apart, of dtype) and the r
// copies of each of n states; out contiguous [n, N, Q], of dtype. Where x is not NULL the
// copies were of the states' ReLUs: x holds the n states (contiguous [N, Q], of dtype, at
// most 32), and out is 0 where x[m][b, q] <= 0.
typedef int mt_ns_fan_fn(const void *const *g, const int64_t *gs, int dtype, int k, int64_t n, int64_t N, int64_t r,
                   int64_t Q, const void *const *x, void *out, void *stream);
// The fused batch norm + ReLU (normrelu.cc) of x, contiguous [N, C, HW] of dtype, with its
// batch statistics mean and invstd [C] (mt_ns_stats_fn with m = ms = 1, T = 1):
// y = max(invstd * (x - mean), 0), contiguous like x.
typedef int mt_ns_norm_relu_fn(const void *x, int dtype, int64_t N, int64_t C, int64_t HW, const float *mean,
                         const float *invstd, void *y, void *stream);
// Its backward pass from y's gradient g (contiguous like x): beta and gamma [C] (float32
// scratch), then dx = invstd * g' + beta * x + gamma, g' = g where y > 0, else 0 (through the
// statistics too, as a batch norm's).
typedef int mt_ns_norm_relu_backward_fn(const void *x, const void *g, int dtype, int64_t N, int64_t C, int64_t HW,
                                  const float *mean, const float *invstd, float *beta, float *gamma, void *dx,
                                  void *stream);
// A depthwise convolution's weight gradient (dwconv.cc): gw [C, kh*kw] (of dtype) from the
// input x [N, C, H, W] and the output's gradient g [N, C, Ho, Wo] (both contiguous, of
// dtype), for a kh x kw kernel (3x3 or 5x5) at stride (sh, sw), padding (ph, pw) and
// dilation (dh, dw): gw[c, ky*kw + kx] = sum over n, oy, ox of g[n, c, oy, ox] *
// x[n, c, oy*sh - ph + ky*dh, ox*sw - pw + kx*dw] (0 outside the planes).
typedef int mt_ns_dw_wgrad_fn(const void *x, const void *g, int dtype, int64_t N, int64_t C, int64_t H, int64_t W,
                              int64_t Ho, int64_t Wo, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw,
                              void *gw, void *stream);
// mt_ns_error_fn names a launcher's error code.
typedef const char *mt_ns_error_fn(int code);

// mt_ns_kernels is one build of the launchers: nodesum.cu compiled by nvcc
// (mt_ns_cuda_kernels, NULL where native.mk found no nvcc), or as C++ on the host
// (mt_ns_emu_kernels, cuda_emu.h), which runs the same kernels on host memory for tests.
struct mt_ns_kernels {
  mt_ns_stats_fn *stats;
  mt_ns_sum_fn *sum;
  mt_ns_reduce_fn *reduce;
  mt_ns_finish_fn *finish;
  mt_ns_dx_fn *dx;
  mt_ns_fan_fn *fan;
  mt_ns_norm_relu_fn *norm_relu;
  mt_ns_norm_relu_backward_fn *norm_relu_backward;
  mt_ns_dw_wgrad_fn *dw_wgrad;
  mt_ns_error_fn *error;
};

const struct mt_ns_kernels *mt_ns_cuda_kernels(void);
const struct mt_ns_kernels *mt_ns_emu_kernels(void);

#ifdef __cplusplus
}
#endif
