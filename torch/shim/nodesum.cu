// The shim's CUDA kernels (nodesum_kernels.h): the fused node batch norm and sum, the fans
// of gradients, the fused batch norm + ReLU, a depthwise convolution's weight gradient.
// Compiled by nvcc
// where native.mk finds one for a CUDA LibTorch; TestCUDANodeNormSum checks them against
// LibTorch's batch norm and products on a GPU, as TestNodeNormSum checks nodesum.cc's CPU
// loops, which compute the same per element. native.mk also compiles this file as C++ with
// MT_CUDA_EMU (cuda_emu.h), whose build runs the same kernels on the host: the CPU tests
// run them there too (torch.EmulateKernels).
#ifdef MT_CUDA_EMU
#include "cuda_emu.h"
#else
#include <cuda_runtime.h>
// A kernel's launch; cuda_emu.h runs it on the host.
#define MT_LAUNCH(kernel, grid, block, stream) kernel<<<grid, block, 0, stream>>>
#endif

#include <algorithm>

#include <type_traits>

#include "elem.h"
#include "nodesum_kernels.h"
#include "nodesum_math.h"

namespace {

// Members go to the kernels by value, kChunk at a time (a kernel's parameters are limited).
constexpr int kChunk = 32;
constexpr int kThreads = 256;

template <class S>
struct Members {
  const S *p[kChunk];
  int64_t ns[kChunk];
  int m;   // members in this chunk
  int i0;  // index of its first member
};

template <class S>
struct Outs {
  S *p[kChunk];
  int64_t ds[kChunk];  // rows apart
};

// Divs are the divisors of an element index [N, T*C, HW] into its sample n, channel r and
// task t = r / C.
struct Divs {
  mt_ns::Div row, hw, c;
};

// divs_of returns the divisors for N samples of T*C channels of HW positions.
Divs divs_of(int64_t T, int64_t C, int64_t HW) {
  return Divs{mt_ns::make_div(static_cast<uint32_t>(std::max<int64_t>(1, T * C * HW))),
              mt_ns::make_div(static_cast<uint32_t>(std::max<int64_t>(1, HW))),
              mt_ns::make_div(static_cast<uint32_t>(std::max<int64_t>(1, C)))};
}

// div_of is make_div of a size (at least 1).
mt_ns::Div div_of(int64_t d) { return mt_ns::make_div(static_cast<uint32_t>(std::max<int64_t>(1, d))); }

template <class S>
Members<S> chunk(const void *const *x, const int64_t *ns, int m, int i0) {
  Members<S> c{};
  c.m = m - i0 < kChunk ? m - i0 : kChunk;
  c.i0 = i0;
  for (int k = 0; k < c.m; k++) {
    c.p[k] = static_cast<const S *>(x[i0 + k]);
    c.ns[k] = ns[i0 + k];
  }
  return c;
}

// fits32 reports whether the elementwise kernels' 32-bit indices cover N*R*HW (64-bit
// division is emulated on the GPU and would cost more than the loads).
bool fits32(int64_t n) { return n < (int64_t{1} << 31) - int64_t{65536} * 32 * kThreads; }

unsigned blocks_for(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  if (b > 65535L * 32) b = 65535L * 32;  // grid-stride loops cover the rest
  return static_cast<unsigned>(b < 1 ? 1 : b);
}

__device__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

__device__ float warp_sumf(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

// block_sums sums a and b over the block's kThreads threads; it returns true in the one
// thread that then holds both totals (every thread must call it).
__device__ bool block_sums(double &a, double &b) {
  __shared__ double sh[2][kThreads / 32];
  a = warp_sum(a);
  b = warp_sum(b);
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    sh[0][w] = a;
    sh[1][w] = b;
  }
  __syncthreads();
  if (w != 0) return false;
  a = lane < kThreads / 32 ? sh[0][lane] : 0.0;
  b = lane < kThreads / 32 ? sh[1][lane] : 0.0;
  a = warp_sum(a);
  b = warp_sum(b);
  return lane == 0;
}

// One block per (channel r, member k of the chunk): sums and squares over N*HW values in
// double, then the statistics and the running statistics' step.
template <class S>
__global__ void stats_kernel(Members<S> c, int ms, int64_t N, int64_t T, int64_t C, int64_t HW, mt_ns::Div dhw,
                             double momentum, double eps, float *mean, float *invstd, float *rm, float *rv) {
  const int64_t r = blockIdx.x, R = T * C;
  const int k = blockIdx.y;
  if (c.i0 + k >= ms) {  // the whole block: no batch norm
    if (threadIdx.x == 0) mt_ns::stats_plain(c.i0 + k, r, R, mean, invstd);
    return;
  }
  double s = 0, ss = 0;
  const unsigned count = static_cast<unsigned>(N * HW);
  for (unsigned j = threadIdx.x; j < count; j += blockDim.x) {
    const unsigned n = mt_ns::div(dhw, j), h = j - n * static_cast<unsigned>(HW);
    const double v = mt_ns_ld(mt_ns::row(c.p, c.ns, k, n, r, HW) + h);
    s += v;
    ss += v * v;
  }
  if (!block_sums(s, ss)) return;
  mt_ns::stats_final(s, ss, c.i0 + k, r, ms, N, C, R, HW, momentum, eps, mean, invstd, rm, rv);
}

// out = (first ? 0 : out) + the chunk's members' normalised values weighed by f.
template <class S>
__global__ void sum_kernel(Members<S> c, int64_t N, int64_t T, int64_t C, int64_t HW, Divs dv, const float *f,
                           int64_t fs, const float *mean, const float *invstd, float *acc_out, S *out, bool first,
                           bool last) {
  const unsigned hw = static_cast<unsigned>(HW), R = static_cast<unsigned>(T * C);
  const unsigned row = R * hw, total = static_cast<unsigned>(N) * row;
  for (unsigned idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += gridDim.x * blockDim.x) {
    const unsigned n = mt_ns::div(dv.row, idx), rem = idx - n * row, r = mt_ns::div(dv.hw, rem),
                   t = mt_ns::div(dv.c, r);
    const float acc = mt_ns::node_value(first ? 0.f : acc_out[idx], n, r, t, rem, c.p, c.ns, c.m, c.i0, T, R, f, fs,
                                        mean, invstd);
    if (last) {
      mt_ns_st(out + idx, acc);
    } else {
      acc_out[idx] = acc;
    }
  }
}

// One warp per row (n, r): the dot products of g's row with each member's, and g's sum.
template <class S>
__global__ void reduce_kernel(Members<S> c, int m, int64_t N, int64_t R, int64_t HW, const S *g, float *gx, float *g1,
                              bool first) {
  const int64_t rows = N * R;
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32; row < rows;
       row += warps) {
    const int64_t n = row / R, r = row - n * R;
    const S *gr = g + row * HW;
    if (first) {
      float s = 0;
      for (int64_t h = lane; h < HW; h += 32) s += mt_ns_ld(gr + h);
      s = warp_sumf(s);
      if (lane == 0) g1[row] = s;
    }
    for (int k = 0; k < c.m; k++) {
      const S *xr = mt_ns::row(c.p, c.ns, k, n, r, HW);
      float s = 0;
      for (int64_t h = lane; h < HW; h += 32) s += mt_ns_ld(gr + h) * mt_ns_ld(xr + h);
      s = warp_sumf(s);
      if (lane == 0) gx[mt_ns::gx_index(n, c.i0 + k, m, R, r)] = s;
    }
  }
}

// Threads [0, m*R): beta and gamma of (member i, channel r); then, where gf is wanted,
// [m*R, m*R + N*T*m): the weights' gradient of (n, t, i).
__global__ void finish_kernel(int m, int ms, int64_t N, int64_t T, int64_t C, int64_t HW, const float *f, int64_t fs,
                              const float *mean, const float *invstd, const float *gx, const float *g1, float *beta,
                              float *gamma, float *gf) {
  const int64_t R = T * C, first = m * R, total = first + (gf != nullptr ? N * T * m : 0);
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (idx < first) {
      mt_ns::finish_channel(idx / R, idx % R, m, ms, N, T, C, HW, f, fs, mean, invstd, gx, g1, beta, gamma);
    } else {
      mt_ns::finish_weight(idx - first, m, T, C, mean, invstd, gx, g1, gf);
    }
  }
}

template <class S>
__global__ void dx_kernel(Members<S> c, Outs<S> d, int64_t N, int64_t T, int64_t C, int64_t HW, Divs dv,
                          const float *f, int64_t fs, const float *invstd, const float *beta, const float *gamma,
                          const S *g) {
  const unsigned hw = static_cast<unsigned>(HW), R = static_cast<unsigned>(T * C);
  const unsigned row = R * hw, total = static_cast<unsigned>(N) * row;
  for (unsigned idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += gridDim.x * blockDim.x) {
    const unsigned n = mt_ns::div(dv.row, idx), rem = idx - n * row, r = mt_ns::div(dv.hw, rem),
                   t = mt_ns::div(dv.c, r);
    mt_ns::member_grads_at(n, r, t, rem, mt_ns_ld(g + idx), c.p, c.ns, c.m, c.i0, T, R, f, fs, invstd, beta, gamma,
                           d.p, d.ds);
  }
}

// out[m, b, q] = (first ? 0 : out) + the chunk's gradients summed over each state's copies.
template <class S>
__global__ void fan_kernel(Members<S> c, Members<S> x, bool relu, int64_t N, int64_t r, int64_t Q, int64_t total,
                           mt_ns::Div dbq, mt_ns::Div dq, S *out, bool first) {
  const unsigned q32 = static_cast<unsigned>(Q), bq = static_cast<unsigned>(N) * q32, all = static_cast<unsigned>(total);
  for (unsigned idx = blockIdx.x * blockDim.x + threadIdx.x; idx < all; idx += gridDim.x * blockDim.x) {
    const unsigned m = mt_ns::div(dbq, idx), rem = idx - m * bq, b = mt_ns::div(dq, rem), q = rem - b * q32;
    const float v = mt_ns::fan_value(first ? 0.f : mt_ns_ld(out + idx), c.p, c.ns, c.m, b, m, q, r, Q);
    mt_ns_st(out + idx, mt_ns::fan_mask(v, relu ? x.p : nullptr, b, m, q, Q));
  }
}

// y = the ReLU of x normalised per channel, x and y contiguous [N, C, HW].
template <class S>
__global__ void norm_relu_kernel(const S *x, mt_ns::Div dhw, mt_ns::Div dc, unsigned total, const float *mean,
                                 const float *invstd, S *y) {
  for (unsigned idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += gridDim.x * blockDim.x) {
    const unsigned nc = mt_ns::div(dhw, idx), c = nc - mt_ns::div(dc, nc) * dc.d;
    mt_ns_st(y + idx, mt_ns::norm_relu_value(mt_ns_ld(x + idx), mean[c], invstd[c]));
  }
}

// One block per channel c: the sums of g' and g' * x over its N*HW values (g' the gradient
// that the ReLU passes), then its beta and gamma.
template <class S>
__global__ void norm_relu_reduce_kernel(const S *x, const S *g, int64_t N, int64_t C, int64_t HW, mt_ns::Div dhw,
                                        const float *mean, const float *invstd, float *beta, float *gamma) {
  const int64_t c = blockIdx.x;
  const unsigned count = static_cast<unsigned>(N * HW);
  const float mu = mean[c], is = invstd[c];
  double s1 = 0, sx = 0;
  for (unsigned j = threadIdx.x; j < count; j += blockDim.x) {
    const unsigned n = mt_ns::div(dhw, j);
    const int64_t o = (n * C + c) * HW + (j - n * static_cast<unsigned>(HW));
    const float xv = mt_ns_ld(x + o);
    if (mt_ns::norm_relu_passes(xv, mu, is)) {
      const float gv = mt_ns_ld(g + o);
      s1 += gv;
      sx += double(gv) * xv;
    }
  }
  if (block_sums(s1, sx)) mt_ns::norm_relu_final(s1, sx, count, mu, is, beta + c, gamma + c);
}

template <class S>
__global__ void norm_relu_dx_kernel(const S *x, const S *g, mt_ns::Div dhw, mt_ns::Div dc, unsigned total,
                                    const float *mean, const float *invstd, const float *beta, const float *gamma,
                                    S *dx) {
  for (unsigned idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += gridDim.x * blockDim.x) {
    const unsigned nc = mt_ns::div(dhw, idx), c = nc - mt_ns::div(dc, nc) * dc.d;
    mt_ns_st(dx + idx, mt_ns::norm_relu_grad(mt_ns_ld(g + idx), mt_ns_ld(x + idx), mean[c], invstd[c], beta[c],
                                             gamma[c]));
  }
}

// block_sums_k sums K values of each thread over the block's kThreads threads into v; it
// returns true in the one thread that then holds the K totals (every thread must call it).
template <int K>
__device__ bool block_sums_k(double (&v)[K]) {
  __shared__ double sh[K][kThreads / 32];
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int t = 0; t < K; t++) {
    v[t] = warp_sum(v[t]);
    if (lane == 0) sh[t][w] = v[t];
  }
  __syncthreads();
  if (w != 0) return false;
  for (int t = 0; t < K; t++) v[t] = warp_sum(lane < kThreads / 32 ? sh[t][lane] : 0.0);
  return lane == 0;
}

// DwGeom is a depthwise convolution's geometry: C channels of H x W planes in, Ho x Wo
// out, a square kernel's stride, padding and dilation.
struct DwGeom {
  int64_t N, C, H, W, Ho, Wo;
  int sh, sw, ph, pw, dh, dw;
};

// One block per channel c: the gradient of its KS x KS kernel taps, the sums over the
// N*Ho*Wo output positions of g times the input each tap read there; per thread in float
// (a few dozen terms, in registers: the taps are unrolled), over the block in double.
template <class S, int KS>
__global__ void dw_wgrad_kernel(const S *x, const S *g, DwGeom q, mt_ns::Div dhw, mt_ns::Div dwo, S *gw) {
  constexpr int K = KS * KS;
  const int64_t c = blockIdx.x;
  const unsigned hw = static_cast<unsigned>(q.Ho * q.Wo), count = static_cast<unsigned>(q.N) * hw;
  float acc[K];
#pragma unroll
  for (int t = 0; t < K; t++) acc[t] = 0.f;
  for (unsigned j = threadIdx.x; j < count; j += blockDim.x) {
    const unsigned n = mt_ns::div(dhw, j), rem = j - n * hw, oy = mt_ns::div(dwo, rem),
                   ox = rem - oy * static_cast<unsigned>(q.Wo);
    const int64_t plane = static_cast<int64_t>(n) * q.C + c;
    const float gv = mt_ns_ld(g + plane * hw + rem);
    const S *xp = x + plane * q.H * q.W;
    const int64_t y0 = static_cast<int64_t>(oy) * q.sh - q.ph, x0 = static_cast<int64_t>(ox) * q.sw - q.pw;
#pragma unroll
    for (int ky = 0; ky < KS; ky++) {
      const int64_t iy = y0 + ky * q.dh;
      const bool row = iy >= 0 && iy < q.H;
#pragma unroll
      for (int kx = 0; kx < KS; kx++) {
        const int64_t ix = x0 + kx * q.dw;
        if (row && ix >= 0 && ix < q.W) acc[ky * KS + kx] += gv * mt_ns_ld(xp + iy * q.W + ix);
      }
    }
  }
  double v[K];
#pragma unroll
  for (int t = 0; t < K; t++) v[t] = acc[t];
  if (block_sums_k<K>(v))
    for (int t = 0; t < K; t++) mt_ns_st(gw + c * K + t, static_cast<float>(v[t]));
}

int last_error() { return static_cast<int>(cudaGetLastError()); }

// by_type calls fn with a null pointer of the element type that dtype names.
template <class Fn>
int by_type(int dtype, Fn fn) {
  switch (dtype) {
    case MT_NS_FLOAT:
      return fn(static_cast<float *>(nullptr));
    case MT_NS_BF16:
      return fn(static_cast<__nv_bfloat16 *>(nullptr));
    case MT_NS_HALF:
      return fn(static_cast<__half *>(nullptr));
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

// The launchers (nodesum_kernels.h).

int launch_stats(const void *const *x, const int64_t *ns, int dtype, int m, int ms, int64_t N, int64_t T,
                     int64_t C, int64_t HW, double momentum, double eps, float *mean, float *invstd, float *rm,
                     float *rv, void *stream) {
  return by_type(dtype, [&](auto *type) {
    using S = std::remove_pointer_t<decltype(type)>;
    for (int i0 = 0; i0 < m; i0 += kChunk) {
      const Members<S> c = chunk<S>(x, ns, m, i0);
      const dim3 grid(static_cast<unsigned>(T * C), static_cast<unsigned>(c.m));
      MT_LAUNCH(stats_kernel<S>, grid, kThreads, static_cast<cudaStream_t>(stream))(
          c, ms, N, T, C, HW, div_of(HW), momentum, eps, mean, invstd, rm, rv);
      if (int e = last_error()) return e;
    }
    return 0;
  });
}

int launch_sum(const void *const *x, const int64_t *ns, int dtype, int m, int64_t N, int64_t T, int64_t C,
                   int64_t HW, const float *f, int64_t fs, const float *mean, const float *invstd, void *out,
                   float *acc, void *stream) {
  if (!fits32(N * T * C * HW)) return static_cast<int>(cudaErrorInvalidValue);
  return by_type(dtype, [&](auto *type) {
    using S = std::remove_pointer_t<decltype(type)>;
    for (int i0 = 0; i0 < m; i0 += kChunk) {
      const Members<S> c = chunk<S>(x, ns, m, i0);
      MT_LAUNCH(sum_kernel<S>, blocks_for(N * T * C * HW), kThreads, static_cast<cudaStream_t>(stream))(
          c, N, T, C, HW, divs_of(T, C, HW), f, fs, mean, invstd, acc, static_cast<S *>(out), i0 == 0,
          i0 + kChunk >= m);
      if (int e = last_error()) return e;
    }
    return 0;
  });
}

int launch_reduce(const void *const *x, const int64_t *ns, int dtype, int m, int64_t N, int64_t T, int64_t C,
                      int64_t HW, const void *g, float *gx, float *g1, void *stream) {
  return by_type(dtype, [&](auto *type) {
    using S = std::remove_pointer_t<decltype(type)>;
    for (int i0 = 0; i0 < m; i0 += kChunk) {
      const Members<S> c = chunk<S>(x, ns, m, i0);
      MT_LAUNCH(reduce_kernel<S>, blocks_for(N * T * C * 32), kThreads, static_cast<cudaStream_t>(stream))(
          c, m, N, T * C, HW, static_cast<const S *>(g), gx, g1, i0 == 0);
      if (int e = last_error()) return e;
    }
    return 0;
  });
}

int launch_finish(int m, int ms, int64_t N, int64_t T, int64_t C, int64_t HW, const float *f, int64_t fs,
                      const float *mean, const float *invstd, const float *gx, const float *g1, float *beta,
                      float *gamma, float *gf, void *stream) {
  const int64_t total = m * T * C + (gf != nullptr ? N * T * m : 0);
  MT_LAUNCH(finish_kernel, blocks_for(total), kThreads, static_cast<cudaStream_t>(stream))(
      m, ms, N, T, C, HW, f, fs, mean, invstd, gx, g1, beta, gamma, gf);
  return last_error();
}

int launch_dx(const void *const *x, const int64_t *ns, int dtype, int m, int64_t N, int64_t T, int64_t C,
                  int64_t HW, const float *f, int64_t fs, const float *invstd, const float *beta, const float *gamma,
                  const void *g, void *const *dx, const int64_t *ds, void *stream) {
  if (!fits32(N * T * C * HW)) return static_cast<int>(cudaErrorInvalidValue);
  return by_type(dtype, [&](auto *type) {
    using S = std::remove_pointer_t<decltype(type)>;
    for (int i0 = 0; i0 < m; i0 += kChunk) {
      const Members<S> c = chunk<S>(x, ns, m, i0);
      Outs<S> d{};
      for (int k = 0; k < c.m; k++) {
        d.p[k] = static_cast<S *>(dx[i0 + k]);
        d.ds[k] = ds[i0 + k];
      }
      MT_LAUNCH(dx_kernel<S>, blocks_for(N * T * C * HW), kThreads, static_cast<cudaStream_t>(stream))(
          c, d, N, T, C, HW, divs_of(T, C, HW), f, fs, invstd, beta, gamma, static_cast<const S *>(g));
      if (int e = last_error()) return e;
    }
    return 0;
  });
}

int launch_fan(const void *const *g, const int64_t *gs, int dtype, int k, int64_t n, int64_t N, int64_t r,
                   int64_t Q, const void *const *x, void *out, void *stream) {
  if (!fits32(n * N * Q) || (x != nullptr && n > kChunk)) return static_cast<int>(cudaErrorInvalidValue);
  return by_type(dtype, [&](auto *type) {
    using S = std::remove_pointer_t<decltype(type)>;
    Members<S> xs{};  // the states, where the copies were of their ReLUs
    if (x != nullptr) {
      xs.m = static_cast<int>(n);
      for (int64_t i = 0; i < n; i++) xs.p[i] = static_cast<const S *>(x[i]);
    }
    for (int j0 = 0; j0 < k; j0 += kChunk) {
      const Members<S> c = chunk<S>(g, gs, k, j0);
      MT_LAUNCH(fan_kernel<S>, blocks_for(n * N * Q), kThreads, static_cast<cudaStream_t>(stream))(
          c, xs, x != nullptr, N, r, Q, n * N * Q, div_of(N * Q), div_of(Q), static_cast<S *>(out), j0 == 0);
      if (int e = last_error()) return e;
    }
    return 0;
  });
}

int launch_norm_relu(const void *x, int dtype, int64_t N, int64_t C, int64_t HW, const float *mean,
                         const float *invstd, void *y, void *stream) {
  const int64_t total = N * C * HW;
  if (!fits32(total)) return static_cast<int>(cudaErrorInvalidValue);
  return by_type(dtype, [&](auto *type) {
    using S = std::remove_pointer_t<decltype(type)>;
    MT_LAUNCH(norm_relu_kernel<S>, blocks_for(total), kThreads, static_cast<cudaStream_t>(stream))(
        static_cast<const S *>(x), div_of(HW), div_of(C), static_cast<unsigned>(total), mean, invstd,
        static_cast<S *>(y));
    return last_error();
  });
}

int launch_norm_relu_backward(const void *x, const void *g, int dtype, int64_t N, int64_t C, int64_t HW,
                                  const float *mean, const float *invstd, float *beta, float *gamma, void *dx,
                                  void *stream) {
  const int64_t total = N * C * HW;
  if (!fits32(total) || C > 2147483647) return static_cast<int>(cudaErrorInvalidValue);
  return by_type(dtype, [&](auto *type) {
    using S = std::remove_pointer_t<decltype(type)>;
    const auto st = static_cast<cudaStream_t>(stream);
    MT_LAUNCH(norm_relu_reduce_kernel<S>, static_cast<unsigned>(C), kThreads, st)(
        static_cast<const S *>(x), static_cast<const S *>(g), N, C, HW, div_of(HW), mean, invstd, beta, gamma);
    if (int e = last_error()) return e;
    MT_LAUNCH(norm_relu_dx_kernel<S>, blocks_for(total), kThreads, st)(
        static_cast<const S *>(x), static_cast<const S *>(g), div_of(HW), div_of(C), static_cast<unsigned>(total),
        mean, invstd, beta, gamma, static_cast<S *>(dx));
    return last_error();
  });
}

int launch_dw_wgrad(const void *x, const void *g, int dtype, int64_t N, int64_t C, int64_t H, int64_t W, int64_t Ho,
                    int64_t Wo, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw, void *gw,
                    void *stream) {
  const int64_t count = N * Ho * Wo;
  if (!fits32(count) || C < 1 || C > 2147483647 || kh != kw || (kh != 3 && kh != 5))
    return static_cast<int>(cudaErrorInvalidValue);
  const DwGeom q{N, C, H, W, Ho, Wo, sh, sw, ph, pw, dh, dw};
  return by_type(dtype, [&](auto *type) {
    using S = std::remove_pointer_t<decltype(type)>;
    const auto st = static_cast<cudaStream_t>(stream);
    const auto *px = static_cast<const S *>(x), *pg = static_cast<const S *>(g);
    void (*kernel)(const S *, const S *, DwGeom, mt_ns::Div, mt_ns::Div, S *) =
        kh == 3 ? dw_wgrad_kernel<S, 3> : dw_wgrad_kernel<S, 5>;
    MT_LAUNCH(kernel, static_cast<unsigned>(C), kThreads, st)(px, pg, q, div_of(Ho * Wo), div_of(Wo),
                                                            static_cast<S *>(gw));
    return last_error();
  });
}

const char *error_name(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

const mt_ns_kernels kKernels{launch_stats,    launch_sum,       launch_reduce,
                             launch_finish,   launch_dx,        launch_fan,
                             launch_norm_relu, launch_norm_relu_backward, launch_dw_wgrad,
                             error_name};

}  // namespace

#ifdef MT_CUDA_EMU
extern "C" const struct mt_ns_kernels *mt_ns_emu_kernels(void) { return &kKernels; }
extern "C" int64_t mt_ns_emu_launches(void) { return mt_emu::launches().load(); }
#else
extern "C" const struct mt_ns_kernels *mt_ns_cuda_kernels(void) { return &kKernels; }
#endif
