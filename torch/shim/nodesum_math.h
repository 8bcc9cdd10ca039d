// The per-element arithmetic of the fused node batch norm and sum, shared by nodesum.cc's
// CPU loops and nodesum.cu's CUDA kernels, so that the CPU tests check the kernels' own
// formulas and indices (the kernels add only their launch and reduction shells).
//
// Layouts (nodesum_kernels.h): member k of a chunk starting at node member i0 is p[k], rows
// ns[k] apart; its element at sample n, channel r = t*C + c, position h is
// p[k][n*ns[k] + r*HW + h] (rem = r*HW + h); weights f[(n*T + t)*fs + i]; mean, invstd, beta
// and gamma [m, R]; gx [N, m, R]; g1 [N, R]; gf [N, T, m]; rm and rv [T, m, C].
//
// A translation unit declares mt_ns_ld(const S *) -> float and mt_ns_st(S *, float) for its
// element types before including this header.
#pragma once
#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define MT_NS_FN __device__ __forceinline__
#else
#define MT_NS_FN inline
#endif

namespace mt_ns {

// Div divides unsigned 32-bit numbers below 2^31 by a fixed divisor d (1 <= d <= 2^31) with
// a multiply and a shift (div): the kernels' index arithmetic, where an integer division
// per element would cost more than the element's loads. make_div computes it on the host.
struct Div {
  uint32_t d, m, s;
};

inline Div make_div(uint32_t d) {
  uint32_t s = 0;
  while (s < 31 && (uint64_t{1} << s) < d) s++;
  const uint64_t m = ((uint64_t{1} << 32) * ((uint64_t{1} << s) - d)) / d + 1;
  return Div{d, static_cast<uint32_t>(m), s};
}

MT_NS_FN uint32_t div(const Div &v, uint32_t n) {
#ifdef __CUDA_ARCH__
  const uint32_t t = __umulhi(n, v.m);
#else
  const uint32_t t = static_cast<uint32_t>((static_cast<uint64_t>(n) * v.m) >> 32);
#endif
  return (t + n) >> v.s;
}

// row returns member k's row of sample n, channel r.
template <class S>
MT_NS_FN const S *row(const S *const *p, const int64_t *ns, int k, int64_t n, int64_t r, int64_t HW) {
  return p[k] + n * ns[k] + r * HW;
}

// node_value adds to acc the chunk's cm members' normalised values, weighed, at sample n,
// channel r of task t, position rem.
template <class S>
MT_NS_FN float node_value(float acc, int64_t n, int64_t r, int64_t t, int64_t rem, const S *const *p,
                          const int64_t *ns, int cm, int i0, int64_t T, int64_t R, const float *f, int64_t fs,
                          const float *mean, const float *invstd) {
  const float *fn = f + (n * T + t) * fs + i0;
  for (int k = 0; k < cm; k++) {
    const int64_t o = (i0 + k) * R + r;
    acc += fn[k] * invstd[o] * (mt_ns_ld(p[k] + n * ns[k] + rem) - mean[o]);
  }
  return acc;
}

// member_grads_at writes the chunk's members' gradients d[k][n*ds[k] + rem] (rows ds[k]
// apart) at sample n, channel r of task t, position rem, from the node's gradient gv there.
template <class S>
MT_NS_FN void member_grads_at(int64_t n, int64_t r, int64_t t, int64_t rem, float gv, const S *const *p,
                              const int64_t *ns, int cm, int i0, int64_t T, int64_t R, const float *f, int64_t fs,
                              const float *invstd, const float *beta, const float *gamma, S *const *d,
                              const int64_t *ds) {
  const float *fn = f + (n * T + t) * fs + i0;
  for (int k = 0; k < cm; k++) {
    const int64_t o = (i0 + k) * R + r;
    const float b = beta[o];
    float v = fn[k] * invstd[o] * gv + gamma[o];
    if (b != 0.f) v += b * mt_ns_ld(p[k] + n * ns[k] + rem);  // members without a batch norm: not read
    mt_ns_st(d[k] + n * ds[k] + rem, v);
  }
}

// gx_index is the index of member i's dot product at sample n, channel r in gx.
MT_NS_FN int64_t gx_index(int64_t n, int64_t i, int64_t m, int64_t R, int64_t r) { return (n * m + i) * R + r; }

// stats_final writes member i's channel r's mean and invstd from the sums s and ss of its
// N*HW values, and moves its running statistics (the variance unbiased; ms members with a
// batch norm, rm and rv [T, ms, C]); R = T*C.
MT_NS_FN void stats_final(double s, double ss, int64_t i, int64_t r, int64_t ms, int64_t N, int64_t C, int64_t R,
                          int64_t HW, double momentum, double eps, float *mean, float *invstd, float *rm, float *rv) {
  const int64_t count = N * HW, t = r / C, ch = r - t * C, o = (t * ms + i) * C + ch;
  const double mu = s / count, d = ss / count - mu * mu, var = d > 0 ? d : 0;
  mean[i * R + r] = static_cast<float>(mu);
  invstd[i * R + r] = static_cast<float>(1.0 / sqrt(var + eps));
  rm[o] = static_cast<float>((1 - momentum) * rm[o] + momentum * mu);
  rv[o] = static_cast<float>((1 - momentum) * rv[o] + momentum * var * count / (count > 1 ? count - 1 : 1));
}

// stats_plain writes the statistics of member i's channel r where the member has no batch
// norm (an identity): mean 0, invstd 1, so that the passes take it as it is.
MT_NS_FN void stats_plain(int64_t i, int64_t r, int64_t R, float *mean, float *invstd) {
  mean[i * R + r] = 0;
  invstd[i * R + r] = 1;
}

// finish_channel writes beta and gamma of member i's channel r (task t = r / C): the batch
// norm's backward pass through its statistics, from the dot products gx and sums g1; 0 for
// the members from ms on, which no batch norm normalises.
MT_NS_FN void finish_channel(int64_t i, int64_t r, int64_t m, int64_t ms, int64_t N, int64_t T, int64_t C,
                             int64_t HW, const float *f, int64_t fs, const float *mean, const float *invstd,
                             const float *gx, const float *g1, float *beta, float *gamma) {
  const int64_t R = T * C, t = r / C, o = i * R + r;
  if (i >= ms) {
    beta[o] = 0;
    gamma[o] = 0;
    return;
  }
  const float mu = mean[o], is = invstd[o];
  float sg = 0, sh = 0;
  for (int64_t n = 0; n < N; n++) {
    const float fv = f[(n * T + t) * fs + i], g = g1[n * R + r];
    sg += fv * g;
    sh += fv * (gx[gx_index(n, i, m, R, r)] - mu * g);
  }
  const float cnt = static_cast<float>(N * HW);
  const float mdy = sg / cnt, mdyy = is * sh / cnt, b = -is * is * mdyy;
  beta[o] = b;
  gamma[o] = -is * mdy - b * mu;
}

// finish_weight writes the weights' gradient gf[j], j = (n*T + t)*m + i.
MT_NS_FN void finish_weight(int64_t j, int64_t m, int64_t T, int64_t C, const float *mean, const float *invstd,
                            const float *gx, const float *g1, float *gf) {
  const int64_t R = T * C, n = j / (T * m), t = (j / m) % T, i = j % m;
  float s = 0;
  for (int64_t ch = 0; ch < C; ch++) {
    const int64_t r = t * C + ch, o = i * R + r;
    s += invstd[o] * (gx[gx_index(n, i, m, R, r)] - mean[o] * g1[n * R + r]);
  }
  gf[j] = s;
}

// fan_value adds to acc the k gradients' (g[j], rows gs[j] apart) r copies of state m at
// sample b, offset q of a copy's Q elements: sum_j sum_i g[j][b*gs[j] + (m*r + i)*Q + q]
// (mt_ns_fan_fn).
template <class S>
MT_NS_FN float fan_value(float acc, const S *const *g, const int64_t *gs, int k, int64_t b, int64_t m, int64_t q,
                         int64_t r, int64_t Q) {
  for (int j = 0; j < k; j++) {
    const S *p = g[j] + b * gs[j] + m * r * Q + q;
    for (int64_t i = 0; i < r; i++) acc += mt_ns_ld(p + i * Q);
  }
  return acc;
}

// fan_mask is a fan's sum v at sample b, offset q of state m where the state x[m]
// (contiguous [N, Q]; x NULL: no ReLU) is positive, else 0: the gradient of the state
// through a ReLU before its copies (mt_ns_fan_fn).
template <class S>
MT_NS_FN float fan_mask(float v, const S *const *x, int64_t b, int64_t m, int64_t q, int64_t Q) {
  if (x == nullptr) return v;
  return mt_ns_ld(x[m] + b * Q + q) > 0.f ? v : 0.f;
}

// norm_relu_passes reports whether the batch norm + ReLU passes x: its normalised value is
// positive (the mask of its backward pass, recomputed from x and the statistics).
MT_NS_FN bool norm_relu_passes(float x, float mean, float invstd) { return invstd * (x - mean) > 0.f; }

// norm_relu_value is the ReLU of x normalised with a channel's mean and invstd
// (mt_ns_norm_relu_fn): max(invstd * (x - mean), 0).
MT_NS_FN float norm_relu_value(float x, float mean, float invstd) {
  const float v = invstd * (x - mean);
  return v > 0.f ? v : 0.f;
}

// norm_relu_final writes a channel's beta and gamma of the batch norm + ReLU's backward pass
// from s1 = sum g' and sx = sum g' * x over its count values, g' the gradient passed by the
// ReLU (g where the normalised x is positive, else 0): dx = invstd * (g' - mean(g') - y *
// mean(g' * y)), y = invstd * (x - mean), is invstd * g' + beta * x + gamma.
MT_NS_FN void norm_relu_final(double s1, double sx, int64_t count, float mean, float invstd, float *beta,
                              float *gamma) {
  const double mdy = s1 / count, mdyy = invstd * (sx - mean * s1) / count, b = -double(invstd) * invstd * mdyy;
  *beta = static_cast<float>(b);
  *gamma = static_cast<float>(-invstd * mdy - b * mean);
}

// norm_relu_grad is the batch norm + ReLU's gradient at x from the gradient g of its output
// and its channel's numbers (norm_relu_final).
MT_NS_FN float norm_relu_grad(float g, float x, float mean, float invstd, float beta, float gamma) {
  const float pass = norm_relu_passes(x, mean, invstd) ? invstd * g : 0.f;
  return pass + beta * x + gamma;
}

}  // namespace mt_ns
