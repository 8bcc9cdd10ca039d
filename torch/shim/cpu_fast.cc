// Faster CPU kernels for the pooling, depthwise convolutions, batch norm and node
// sums of MetaNAS's search cells. Some LibTorch builds (Debian's 1.13 among them) run these
// far below the speed of the convolutions around them: a 3x3 max or average pool of a
// 20x28x28x28 batch took 18-20 ms forward and backward, as long as a full 3x3 convolution,
// and training batch norm 1.5 ms forward. The functions here give the same results (max
// pooling picks the same element, in PyTorch's scan order; sums may round differently in
// the last bit) and return an undefined tensor where they do not apply, so that the caller
// falls back to LibTorch's op. METANAS_FAST_CPU_OPS=0 turns them off (for comparisons).
// Built with the vectoriser on (the shim's other files use -O2); the max pool's passes use
// AVX2 where the CPU has it.
#pragma GCC optimize("O3")

#include <ATen/Parallel.h>

#include <cmath>
#include <limits>
#include <vector>

#include "common.h"
#include "nodesum_math.h"

#if defined(__x86_64__)
#include "avx2.h"
#define MT_HAVE_AVX2_PATHS 1
#endif

namespace mt {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

#ifdef MT_HAVE_AVX2_PATHS
// max_step lets v (with indices vi) take over from the running maximum bv (indices bi)
// where PyTorch's scan would: a strictly larger value or a NaN.
__attribute__((target("avx2"))) inline void max_step(__m256 v, __m256i vi, __m256 &bv, __m256i &bi) {
  const __m256 take = _mm256_or_ps(_mm256_cmp_ps(v, bv, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  bv = _mm256_blendv_ps(bv, v, take);
  bi = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(bi), _mm256_castsi256_ps(vi), take));
}

// store_max writes eight maxima and their indices.
__attribute__((target("avx2"))) inline void store_max(__m256 bv, __m256i bi, float *m, int32_t *id) {
  _mm256_storeu_ps(m, bv);
  _mm256_storeu_si256(reinterpret_cast<__m256i *>(id), bi);
}

// row_max3_avx2 does max_pool_3p1's row pass for the interior columns [1, W-1) of one row
// r, eight at a time, and returns the first column it left to the scalar loop.
__attribute__((target("avx2"))) int64_t row_max3_avx2(const float *r, int64_t W, int32_t base, float *m,
                                                      int32_t *id) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), one = _mm256_set1_epi32(1);
  int64_t w = 1;
  for (; w + 8 < W; w += 8) {
    __m256 bv = _mm256_loadu_ps(r + w - 1);
    __m256i bi = _mm256_add_epi32(_mm256_set1_epi32(base + static_cast<int32_t>(w - 1)), lane);
    __m256i vi = bi;
    for (int j = 1; j <= 2; j++) {
      vi = _mm256_add_epi32(vi, one);
      max_step(_mm256_loadu_ps(r + w - 1 + j), vi, bv, bi);
    }
    store_max(bv, bi, m + w, id + w);
  }
  return w;
}

// col_max3_avx2 does max_pool_3p1's column pass for output row oh (input rows [h0, h1),
// stride s; S1: s == 1) eight outputs at a time (gathered at stride 2), and returns the
// first output it left to the scalar loop.
template <bool S1>
__attribute__((target("avx2"))) int64_t col_max3_avx2(const float *rm, const int32_t *ri, int64_t W, int64_t s,
                                                      int64_t OW, int64_t h0, int64_t h1, float *d, int32_t *dd) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i row0 = _mm256_set1_epi32(static_cast<int32_t>(h0 * W));
  const __m256i step = _mm256_mullo_epi32(lane, _mm256_set1_epi32(static_cast<int32_t>(s)));
  int64_t ow = 0;
  for (; ow + 8 <= OW && (ow + 7) * s < W; ow += 8) {
    const __m256i cols = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(ow * s)), step);
    // The window's first element: (h0, max(ow*s - 1, 0)).
    __m256i bi = _mm256_max_epi32(_mm256_add_epi32(_mm256_sub_epi32(cols, _mm256_set1_epi32(1)), row0), row0);
    __m256 bv = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
    for (int64_t h = h0; h < h1; h++) {
      const float *m = rm + h * W;
      const int32_t *id = ri + h * W;
      __m256 v;
      __m256i vi;
      if (S1) {
        v = _mm256_loadu_ps(m + ow);
        vi = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(id + ow));
      } else {
        v = _mm256_i32gather_ps(m, cols, 4);
        vi = _mm256_i32gather_epi32(id, cols, 4);
      }
      max_step(v, vi, bv, bi);
    }
    store_max(bv, bi, d + ow, dd + ow);
  }
  return ow;
}
#endif

bool applies(const at::Tensor &x) {
  return fast_cpu_ops() && x.device().is_cpu() && x.dim() == 4 &&
         x.scalar_type() == at::kFloat && x.layout() == at::kStrided;
}

int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p) { return (in + 2 * p - k) / s + 1; }

struct Window {
  int64_t h0, h1, w0, w1;  // input rows [h0, h1) and columns [w0, w1), clipped
};

// window is the part inside the image of output (oh, ow)'s k x k window (stride s, padding p).
Window window(int64_t oh, int64_t ow, int64_t k, int64_t s, int64_t p, int64_t H, int64_t W) {
  return {std::max<int64_t>(oh * s - p, 0), std::min<int64_t>(oh * s - p + k, H),
          std::max<int64_t>(ow * s - p, 0), std::min<int64_t>(ow * s - p + k, W)};
}

// max_pool_3p1 computes one plane of a 3x3 max pool with padding 1 and stride s (1 or 2)
// separably: the maximum of each row's three neighbours first (rm, with its flat index ri),
// then of three rows. Taking the first strictly larger value (or the last NaN) in each pass
// picks the element PyTorch's row-major scan picks. rm and ri hold H*W values. On AVX2
// machines both passes go eight columns at a time.
void max_pool_3p1(const float *src, int64_t H, int64_t W, int64_t s, float *rm, int32_t *ri,
                  float *dst, int32_t *di, int64_t OH, int64_t OW) {
  const float ninf = -std::numeric_limits<float>::infinity();
  const bool avx2 = cpu_avx2_fma();
  // Starting from the window's first element gives the same result as starting from -inf
  // with that element's index (a -inf first element is never replaced by another -inf).
  auto step = [](float v, int32_t i, float &bv, int32_t &bi) {
    const bool take = (v > bv) | (v != v);
    bv = take ? v : bv;
    bi = take ? i : bi;
  };
  for (int64_t h = 0; h < H; h++) {
    const float *r = src + h * W;
    float *m = rm + h * W;
    int32_t *id = ri + h * W;
    const int32_t base = static_cast<int32_t>(h * W);
    if (W == 1) {
      m[0] = r[0];
      id[0] = base;
      continue;
    }
    {
      float bv = r[0];
      int32_t bi = base;
      step(r[1], base + 1, bv, bi);
      m[0] = bv;
      id[0] = bi;
    }
    int64_t w = 1;
#ifdef MT_HAVE_AVX2_PATHS
    if (avx2) w = row_max3_avx2(r, W, base, m, id);
#endif
    for (; w + 1 < W; w++) {
      float bv = r[w - 1];
      int32_t bi = base + static_cast<int32_t>(w - 1);
      step(r[w], base + static_cast<int32_t>(w), bv, bi);
      step(r[w + 1], base + static_cast<int32_t>(w + 1), bv, bi);
      m[w] = bv;
      id[w] = bi;
    }
    {
      float bv = r[W - 2];
      int32_t bi = base + static_cast<int32_t>(W - 2);
      step(r[W - 1], base + static_cast<int32_t>(W - 1), bv, bi);
      m[W - 1] = bv;
      id[W - 1] = bi;
    }
  }
  for (int64_t oh = 0; oh < OH; oh++) {
    const int64_t h0 = std::max<int64_t>(oh * s - 1, 0), h1 = std::min<int64_t>(oh * s + 2, H);
    float *d = dst + oh * OW;
    int32_t *dd = di + oh * OW;
    int64_t ow0 = 0;
#ifdef MT_HAVE_AVX2_PATHS
    if (avx2) {
      ow0 = s == 1 ? col_max3_avx2<true>(rm, ri, W, s, OW, h0, h1, d, dd)
                   : col_max3_avx2<false>(rm, ri, W, s, OW, h0, h1, d, dd);
    }
#endif
    for (int64_t ow = ow0; ow < OW; ow++) {
      d[ow] = ninf;
      dd[ow] = static_cast<int32_t>(h0 * W + std::max<int64_t>(ow * s - 1, 0));
    }
    for (int64_t h = h0; h < h1; h++) {
      const float *m = rm + h * W;
      const int32_t *id = ri + h * W;
      for (int64_t ow = ow0; ow < OW; ow++) {
        const float v = m[ow * s];
        const bool take = (v > d[ow]) | (v != v);
        d[ow] = take ? v : d[ow];
        dd[ow] = take ? id[ow * s] : dd[ow];
      }
    }
  }
}

// box3_sums writes the 3x3 window sums (padding 1, clipped at the borders, stride s) of one
// H x W plane to dst (OH x OW), separably through the row sums rs (H*W values).
void box3_sums(const float *src, int64_t H, int64_t W, int64_t s, float *rs, float *dst,
               int64_t OH, int64_t OW) {
  for (int64_t h = 0; h < H; h++) {
    const float *r = src + h * W;
    float *o = rs + h * W;
    if (W == 1) {
      o[0] = r[0];
      continue;
    }
    o[0] = r[0] + r[1];
    for (int64_t w = 1; w + 1 < W; w++) o[w] = r[w - 1] + r[w] + r[w + 1];
    o[W - 1] = r[W - 2] + r[W - 1];
  }
  for (int64_t oh = 0; oh < OH; oh++) {
    const int64_t h0 = std::max<int64_t>(oh * s - 1, 0), h1 = std::min<int64_t>(oh * s + 2, H);
    float *d = dst + oh * OW;
    for (int64_t ow = 0; ow < OW; ow++) d[ow] = 0.f;
    for (int64_t h = h0; h < h1; h++) {
      const float *o = rs + h * W;
      for (int64_t ow = 0; ow < OW; ow++) d[ow] += o[ow * s];
    }
  }
}

// avg_pool_3p1 is one plane of a 3x3 average pool with padding 1, stride s, without the
// padding in the count.
void avg_pool_3p1(const float *src, int64_t H, int64_t W, int64_t s, float *rs, float *dst,
                  int64_t OH, int64_t OW) {
  box3_sums(src, H, W, s, rs, dst, OH, OW);
  for (int64_t oh = 0; oh < OH; oh++) {
    const int64_t h0 = std::max<int64_t>(oh * s - 1, 0), h1 = std::min<int64_t>(oh * s + 2, H);
    const float rows = static_cast<float>(h1 - h0);
    float *d = dst + oh * OW;
    for (int64_t ow = 0; ow < OW; ow++) {
      const int64_t w0 = std::max<int64_t>(ow * s - 1, 0), w1 = std::min<int64_t>(ow * s + 2, W);
      d[ow] /= rows * static_cast<float>(w1 - w0);
    }
  }
}

// Planes is a pooling op's input made contiguous, its sizes, and its output.
struct Planes {
  at::Tensor x, out;
  int64_t N, C, H, W, OH, OW;
};

Planes planes(const at::Tensor &input, int64_t k, int64_t s, int64_t p) {
  Planes q;
  q.x = input.contiguous();
  q.N = q.x.size(0), q.C = q.x.size(1), q.H = q.x.size(2), q.W = q.x.size(3);
  q.OH = out_size(q.H, k, s, p), q.OW = out_size(q.W, k, s, p);
  q.out = at::empty({q.N, q.C, q.OH, q.OW}, q.x.options());
  return q;
}

struct MaxPool : public torch::autograd::Function<MaxPool> {
  static at::Tensor forward(AutogradContext *ctx, const at::Tensor &input, int64_t k, int64_t s,
                            int64_t p) {
    auto q = planes(input, k, s, p);
    auto &x = q.x, &out = q.out;
    const int64_t N = q.N, C = q.C, H = q.H, W = q.W, OH = q.OH, OW = q.OW;
    auto idx = at::empty({N, C, OH, OW}, x.options().dtype(at::kInt));
    const float *xp = x.data_ptr<float>();
    float *op = out.data_ptr<float>();
    int32_t *ip = idx.data_ptr<int32_t>();
    const bool k3p1 = k == 3 && p == 1 && (s == 1 || s == 2);
    at::parallel_for(0, N * C, 1, [&](int64_t b, int64_t e) {
      std::vector<float> rm(k3p1 ? H * W : 0);
      std::vector<int32_t> ri(k3p1 ? H * W : 0);
      for (int64_t pl = b; pl < e; pl++) {
        const float *src = xp + pl * H * W;
        float *dst = op + pl * OH * OW;
        int32_t *di = ip + pl * OH * OW;
        if (k3p1) {
          max_pool_3p1(src, H, W, s, rm.data(), ri.data(), dst, di, OH, OW);
          continue;
        }
        for (int64_t oh = 0; oh < OH; oh++) {
          for (int64_t ow = 0; ow < OW; ow++) {
            const auto [h0, h1, w0, w1] = window(oh, ow, k, s, p, H, W);
            // PyTorch's rule: scan the window row by row; a strictly larger value or a NaN
            // takes over; the first element of the window is the index when none does.
            int64_t best = h0 * W + w0;
            float bv = -std::numeric_limits<float>::infinity();
            for (int64_t h = h0; h < h1; h++) {
              for (int64_t w = w0; w < w1; w++) {
                const float v = src[h * W + w];
                if (v > bv || std::isnan(v)) {
                  bv = v;
                  best = h * W + w;
                }
              }
            }
            dst[oh * OW + ow] = bv;
            di[oh * OW + ow] = static_cast<int32_t>(best);
          }
        }
      }
    });
    ctx->saved_data["idx"] = idx;
    ctx->saved_data["shape"] = x.sizes().vec();
    return out;
  }

  static tensor_list backward(AutogradContext *ctx, tensor_list grads) {
    auto idx = ctx->saved_data["idx"].toTensor();
    auto shape = ctx->saved_data["shape"].toIntVector();
    auto g = grads[0].contiguous();
    auto gx = at::zeros(shape, g.options());
    const int64_t planes = shape[0] * shape[1], HW = shape[2] * shape[3];
    const int64_t OHW = idx.size(2) * idx.size(3);
    const float *gp = g.data_ptr<float>();
    const int32_t *ip = idx.data_ptr<int32_t>();
    float *xp = gx.data_ptr<float>();
    at::parallel_for(0, planes, 1, [&](int64_t b, int64_t e) {
      for (int64_t pl = b; pl < e; pl++) {
        for (int64_t o = 0; o < OHW; o++) xp[pl * HW + ip[pl * OHW + o]] += gp[pl * OHW + o];
      }
    });
    return {gx, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// Average pooling without the padding in the count (count_include_pad=false).
struct AvgPoolExcl : public torch::autograd::Function<AvgPoolExcl> {
  static at::Tensor forward(AutogradContext *ctx, const at::Tensor &input, int64_t k, int64_t s,
                            int64_t p) {
    auto q = planes(input, k, s, p);
    auto &x = q.x, &out = q.out;
    const int64_t N = q.N, C = q.C, H = q.H, W = q.W, OH = q.OH, OW = q.OW;
    const float *xp = x.data_ptr<float>();
    float *op = out.data_ptr<float>();
    const bool k3p1 = k == 3 && p == 1 && (s == 1 || s == 2);
    at::parallel_for(0, N * C, 1, [&](int64_t b, int64_t e) {
      std::vector<float> rs(k3p1 ? H * W : 0);
      for (int64_t pl = b; pl < e; pl++) {
        const float *src = xp + pl * H * W;
        float *dst = op + pl * OH * OW;
        if (k3p1) {
          avg_pool_3p1(src, H, W, s, rs.data(), dst, OH, OW);
          continue;
        }
        for (int64_t oh = 0; oh < OH; oh++) {
          for (int64_t ow = 0; ow < OW; ow++) {
            const auto [h0, h1, w0, w1] = window(oh, ow, k, s, p, H, W);
            float sum = 0;
            for (int64_t h = h0; h < h1; h++) {
              for (int64_t w = w0; w < w1; w++) sum += src[h * W + w];
            }
            const int64_t n = (h1 - h0) * (w1 - w0);
            dst[oh * OW + ow] = n > 0 ? sum / static_cast<float>(n) : 0.f;
          }
        }
      }
    });
    ctx->saved_data["shape"] = x.sizes().vec();
    ctx->saved_data["ksp"] = std::vector<int64_t>{k, s, p};
    return out;
  }

  static tensor_list backward(AutogradContext *ctx, tensor_list grads) {
    auto shape = ctx->saved_data["shape"].toIntVector();
    auto ksp = ctx->saved_data["ksp"].toIntVector();
    const int64_t k = ksp[0], s = ksp[1], p = ksp[2];
    const int64_t H = shape[2], W = shape[3];
    auto g = grads[0].contiguous();
    const int64_t OH = g.size(2), OW = g.size(3);
    const bool k3p1s1 = k == 3 && p == 1 && s == 1;  // then OH == H and OW == W
    // box3_sums writes every input gradient; the window-by-window path adds to zeros.
    auto gx = k3p1s1 ? at::empty(shape, g.options()) : at::zeros(shape, g.options());
    const float *gp = g.data_ptr<float>();
    float *xp = gx.data_ptr<float>();
    at::parallel_for(0, shape[0] * shape[1], 1, [&](int64_t b, int64_t e) {
      std::vector<float> q(k3p1s1 ? H * W : 0), rs(k3p1s1 ? H * W : 0);
      for (int64_t pl = b; pl < e; pl++) {
        const float *src = gp + pl * OH * OW;
        float *dst = xp + pl * H * W;
        if (k3p1s1) {
          // The input gradient is the same 3x3 box sum over the output gradients divided
          // by their counts: separably, rows then columns.
          for (int64_t h = 0; h < H; h++) {
            const float rows = static_cast<float>(std::min<int64_t>(h + 2, H) - std::max<int64_t>(h - 1, 0));
            for (int64_t w = 0; w < W; w++) {
              const float cols = static_cast<float>(std::min<int64_t>(w + 2, W) - std::max<int64_t>(w - 1, 0));
              q[h * W + w] = src[h * W + w] / (rows * cols);
            }
          }
          box3_sums(q.data(), H, W, 1, rs.data(), dst, H, W);
          continue;
        }
        for (int64_t oh = 0; oh < OH; oh++) {
          for (int64_t ow = 0; ow < OW; ow++) {
            const auto [h0, h1, w0, w1] = window(oh, ow, k, s, p, H, W);
            const int64_t n = (h1 - h0) * (w1 - w0);
            if (n == 0) continue;
            const float v = src[oh * OW + ow] / static_cast<float>(n);
            for (int64_t h = h0; h < h1; h++) {
              for (int64_t w = w0; w < w1; w++) dst[h * W + w] += v;
            }
          }
        }
      }
    });
    return {gx, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// Geom is a depthwise convolution's geometry: kernel, stride, padding and dilation per axis.
struct Geom {
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
};

// same3x3 reports a 3x3 kernel at stride 1 with dilation d and padding d on both axes (the
// output has the input's size): DARTS's sep_conv and dil_conv at stride 1.
bool same3x3(const Geom &g) {
  return g.kh == 3 && g.kw == 3 && g.sh == 1 && g.sw == 1 && g.dh == g.dw && g.ph == g.dh && g.pw == g.dw;
}

// tap_range returns the outputs [lo, hi) of one axis whose input o*s - p + t*d for tap t
// lies inside [0, n).
std::pair<int64_t, int64_t> tap_range(int64_t t, int64_t s, int64_t p, int64_t d, int64_t n, int64_t on) {
  const int64_t off = t * d - p;  // input = o*s + off
  int64_t lo = off >= 0 ? 0 : (-off + s - 1) / s;
  int64_t hi = n - 1 - off < 0 ? 0 : (n - 1 - off) / s + 1;
  return {std::min(lo, on), std::min(hi, on)};
}

// each_tap_row calls f(t, ih, oh, offw, ow0, ow1) for every kernel tap t = i*kw + j of a
// stride-1 convolution and every output row oh whose input row ih = oh - ph + i*dh lies in
// the image, with the outputs [ow0, ow1) whose inputs ow + offw lie in that row.
template <typename F>
void each_tap_row(const Geom &G, int64_t H, int64_t W, int64_t OH, int64_t OW, F f) {
  for (int64_t i = 0; i < G.kh; i++) {
    const auto [oh0, oh1] = tap_range(i, 1, G.ph, G.dh, H, OH);
    for (int64_t j = 0; j < G.kw; j++) {
      const auto [ow0, ow1] = tap_range(j, 1, G.pw, G.dw, W, OW);
      for (int64_t oh = oh0; oh < oh1; oh++) f(i * G.kw + j, oh + i * G.dh - G.ph, oh, j * G.dw - G.pw, ow0, ow1);
    }
  }
}

// each_plane runs f(i, P) for i in [0, n) in parallel, P a scratch buffer of pad floats
// per thread.
template <typename F>
void each_plane(int64_t n, int64_t pad, F f) {
  at::parallel_for(0, n, 1, [&](int64_t b, int64_t e) {
    std::vector<float> P(pad);
    for (int64_t i = b; i < e; i++) f(i, P.data());
  });
}

// pad_plane copies an H x W plane into the middle of P, a zero border of p around it
// ((H+2p) x (W+2p)); the border is written too, so P may be reused.
void pad_plane(const float *src, int64_t H, int64_t W, int64_t p, float *P) {
  embed_plane(src, H, W, p, p, H + 2 * p, W + 2 * p, P);
}

// conv3_same writes out[oh, ow] = sum_ij k[3i+j] * P[oh + i*d, ow + j*d] for an H x W output
// from the padded plane P ((H+2d) x (W+2d)): a 3x3 convolution with dilation d and padding
// d at stride 1, all nine taps per output at once along contiguous rows (vectorised).
void conv3_same(const float *P, const float *k, int64_t d, float *__restrict out, int64_t H, int64_t W) {
  const int64_t PW = W + 2 * d;
  const float k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3], k4 = k[4], k5 = k[5], k6 = k[6], k7 = k[7], k8 = k[8];
  for (int64_t oh = 0; oh < H; oh++) {
    const float *r0 = P + oh * PW, *r1 = r0 + d * PW, *r2 = r1 + d * PW;
    float *o = out + oh * W;
    for (int64_t ow = 0; ow < W; ow++) {
      o[ow] = k0 * r0[ow] + k1 * r0[ow + d] + k2 * r0[ow + 2 * d] + k3 * r1[ow] + k4 * r1[ow + d] +
              k5 * r1[ow + 2 * d] + k6 * r2[ow] + k7 * r2[ow + d] + k8 * r2[ow + 2 * d];
    }
  }
}

#ifdef MT_HAVE_AVX2_PATHS
// conv3_same_avx2 is conv3_same eight outputs at a time with fused multiply-adds (one chain
// per kernel row, added at the end), the last partial vector of each row masked.
MT_AVX2_FMA void conv3_same_avx2(const float *P, const float *k, int64_t d, float *__restrict out, int64_t H,
                                 int64_t W) {
  const int64_t PW = W + 2 * d, full = W & ~int64_t{7};
  __m256 kv[9];
  for (int t = 0; t < 9; t++) kv[t] = _mm256_set1_ps(k[t]);
  const __m256i tail = tail_mask(W - full);
  for (int64_t oh = 0; oh < H; oh++) {
    const float *r0 = P + oh * PW, *r1 = r0 + d * PW, *r2 = r1 + d * PW;
    float *o = out + oh * W;
    auto step = [&](int64_t ow, bool masked) MT_AVX2_FMA {
      auto ld = [&](const float *q) MT_AVX2_FMA { return masked ? _mm256_maskload_ps(q, tail) : _mm256_loadu_ps(q); };
      __m256 a = _mm256_mul_ps(kv[0], ld(r0 + ow)), b = _mm256_mul_ps(kv[3], ld(r1 + ow)),
             c = _mm256_mul_ps(kv[6], ld(r2 + ow));
      a = _mm256_fmadd_ps(kv[1], ld(r0 + ow + d), a);
      b = _mm256_fmadd_ps(kv[4], ld(r1 + ow + d), b);
      c = _mm256_fmadd_ps(kv[7], ld(r2 + ow + d), c);
      a = _mm256_fmadd_ps(kv[2], ld(r0 + ow + 2 * d), a);
      b = _mm256_fmadd_ps(kv[5], ld(r1 + ow + 2 * d), b);
      c = _mm256_fmadd_ps(kv[8], ld(r2 + ow + 2 * d), c);
      const __m256 s = _mm256_add_ps(_mm256_add_ps(a, b), c);
      if (masked) {
        _mm256_maskstore_ps(o + ow, tail, s);
      } else {
        _mm256_storeu_ps(o + ow, s);
      }
    };
    for (int64_t ow = 0; ow < full; ow += 8) step(ow, false);
    if (full < W) step(full, true);
  }
}
#endif

// conv3 runs conv3_same, with AVX2 and FMA where avx2 says the CPU has them.
inline void conv3(bool avx2, const float *P, const float *k, int64_t d, float *__restrict out, int64_t H,
                  int64_t W) {
#ifdef MT_HAVE_AVX2_PATHS
  if (avx2) {
    conv3_same_avx2(P, k, d, out, H, W);
    return;
  }
#endif
  (void)avx2;
  conv3_same(P, k, d, out, H, W);
}

#ifdef MT_HAVE_AVX2_PATHS
// taps3_padded_g_avx2 adds to acc[3i+j] (double) the weight gradients of one plane of a 3x3
// depthwise convolution with dilation and padding d from its input x (H x W) and its output
// gradient padded as conv3_same's input (gp, (H+2d) x (W+2d)): sum over h, w of x[h, w] *
// gp[h + (2-i)d, w + (2-j)d] (the output gradient at h + (1-i)d, w + (1-j)d, zero outside),
// so that the padded gradient of the input gradient's convolution serves both. Eight float
// lanes per tap, added in double at most every 256 terms per lane.
MT_AVX2_FMA void taps3_padded_g_avx2(const float *x, const float *gp, int64_t d, int64_t H, int64_t W,
                                     double *acc) {
  const int64_t PW = W + 2 * d, full = W & ~int64_t{7}, vecs = (W + 7) / 8;
  const int64_t rows_per_block = std::max<int64_t>(1, 256 / vecs);
  const __m256i tail = tail_mask(W - full);
  __m256 a[9];
  for (int64_t h0 = 0; h0 < H; h0 += rows_per_block) {
    for (int t = 0; t < 9; t++) a[t] = _mm256_setzero_ps();
    for (int64_t h = h0; h < std::min(H, h0 + rows_per_block); h++) {
      const float *xr = x + h * W;
      auto step = [&](int64_t w, bool masked) MT_AVX2_FMA {
        const __m256 xv = masked ? _mm256_maskload_ps(xr + w, tail) : _mm256_loadu_ps(xr + w);
#pragma GCC unroll 3
        for (int i = 0; i < 3; i++) {
          const float *gr = gp + (h + (2 - i) * d) * PW + w;
#pragma GCC unroll 3
          for (int j = 0; j < 3; j++) {
            const float *q = gr + (2 - j) * d;
            a[3 * i + j] = _mm256_fmadd_ps(xv, masked ? _mm256_maskload_ps(q, tail) : _mm256_loadu_ps(q), a[3 * i + j]);
          }
        }
      };
      for (int64_t w = 0; w < full; w += 8) step(w, false);
      if (full < W) step(full, true);
    }
    for (int t = 0; t < 9; t++) {
      alignas(32) float lane[8];
      _mm256_store_ps(lane, a[t]);
      double sum = 0;
      for (int l = 0; l < 8; l++) sum += lane[l];
      acc[t] += sum;
    }
  }
}
#endif

// taps3_same adds to acc[3i+j] the sum over the H x W plane g of g[oh, ow] * P[oh + i*d,
// ow + j*d] (P padded as for conv3_same): the nine weight gradients of one plane, in eight
// float lanes per tap (vectorised), each row's lanes added in double.
void taps3_same(const float *P, const float *g, int64_t d, int64_t H, int64_t W, double *acc) {
  const int64_t PW = W + 2 * d;
  for (int64_t oh = 0; oh < H; oh++) {
    const float *gr = g + oh * W;
    float lane[9][8] = {};
    int64_t ow = 0;
    for (; ow + 8 <= W; ow += 8) {
      for (int64_t i = 0; i < 3; i++) {
        const float *r = P + (oh + i * d) * PW + ow;
        for (int64_t j = 0; j < 3; j++) {
          for (int l = 0; l < 8; l++) lane[i * 3 + j][l] += gr[ow + l] * r[j * d + l];
        }
      }
    }
    for (; ow < W; ow++) {
      for (int64_t i = 0; i < 3; i++) {
        const float *r = P + (oh + i * d) * PW;
        for (int64_t j = 0; j < 3; j++) lane[i * 3 + j][0] += gr[ow] * r[ow + j * d];
      }
    }
    for (int t = 0; t < 9; t++) {
      float sum = 0;
      for (int l = 0; l < 8; l++) sum += lane[t][l];
      acc[t] += sum;
    }
  }
}

// DwConv is a depthwise convolution at stride 1 (one filter per channel, no bias) of a
// float NCHW batch. 3x3 "same" convolutions (dilation d, padding d) take all nine taps per
// output along rows of a zero-padded copy of each plane; other kernels go tap by tap, a
// row of outputs taking one weight times a row of inputs. The backward pass convolves the
// output gradient with the turned kernel (3x3 same) or scatters it back tap by tap, and
// sums each weight's gradient over the batch; with AVX2, for 3x3 same, in the same pass
// over the planes, from the output gradient's padded copy.
struct DwConv : public torch::autograd::Function<DwConv> {
  static at::Tensor forward(AutogradContext *ctx, const at::Tensor &input, const at::Tensor &weight,
                            std::vector<int64_t> g) {
    const Geom G{g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]};
    if (G.sh != 1 || G.sw != 1) throw std::logic_error("depthwise kernel: stride 1 only");
    auto x = input.contiguous();
    auto w = weight.contiguous();
    const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
    const int64_t OH = (H + 2 * G.ph - G.dh * (G.kh - 1) - 1) / G.sh + 1;
    const int64_t OW = (W + 2 * G.pw - G.dw * (G.kw - 1) - 1) / G.sw + 1;
    const bool same3 = same3x3(G), avx2 = cpu_avx2_fma();
    // conv3_same writes every output; the tap-by-tap path adds to zeros.
    auto out = same3 ? at::empty({N, C, OH, OW}, x.options()) : at::zeros({N, C, OH, OW}, x.options());
    const float *xp = x.data_ptr<float>(), *wp = w.data_ptr<float>();
    float *op = out.data_ptr<float>();
    const int64_t pad = same3 ? (H + 2 * G.dh) * (W + 2 * G.dw) : 0;
    each_plane(N * C, pad, [&](int64_t pl, float *P) {
      const float *src = xp + pl * H * W, *wc = wp + (pl % C) * G.kh * G.kw;
      float *dst = op + pl * OH * OW;
      if (same3) {
        pad_plane(src, H, W, G.dh, P);
        conv3(avx2, P, wc, G.dh, dst, H, W);
        return;
      }
      each_tap_row(G, H, W, OH, OW, [&](int64_t t, int64_t ih, int64_t oh, int64_t offw, int64_t ow0, int64_t ow1) {
        const float wt = wc[t], *in = src + ih * W + offw;
        float *o = dst + oh * OW;
        for (int64_t ow = ow0; ow < ow1; ow++) o[ow] += wt * in[ow];
      });
    });
    ctx->save_for_backward({x, w});
    ctx->saved_data["geom"] = g;
    return out;
  }

  static tensor_list backward(AutogradContext *ctx, tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &w = saved[1];
    auto gv = ctx->saved_data["geom"].toIntVector();
    const Geom G{gv[0], gv[1], gv[2], gv[3], gv[4], gv[5], gv[6], gv[7]};
    auto gy = grads[0].contiguous();
    const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
    const int64_t OH = gy.size(2), OW = gy.size(3);
    const float *xp = x.data_ptr<float>(), *wp = w.data_ptr<float>(), *gp = gy.data_ptr<float>();
    at::Tensor gx, gw;
    const bool same3 = same3x3(G), avx2 = cpu_avx2_fma();
    const int64_t pad = same3 ? (H + 2 * G.dh) * (W + 2 * G.dw) : 0;
#ifdef MT_HAVE_AVX2_PATHS
    if (same3 && avx2) {
      // One pass over the planes: each plane's output gradient padded once serves the
      // input gradient (the convolution with the kernel turned by 180 degrees) and the
      // weight gradient (taps3_padded_g_avx2), summed per plane in double, then over the
      // images in order (the same sums whatever the threads).
      const bool need_x = ctx->needs_input_grad(0), need_w = ctx->needs_input_grad(1);
      if (need_x) gx = at::empty_like(x);
      float *gxp = need_x ? gx.data_ptr<float>() : nullptr;
      std::vector<double> part(need_w ? N * C * 9 : 0, 0.0);
      each_plane(N * C, pad, [&](int64_t pl, float *P) {
        const float *wc = wp + (pl % C) * 9;
        pad_plane(gp + pl * H * W, H, W, G.dh, P);
        if (need_x) {
          const float flip[9] = {wc[8], wc[7], wc[6], wc[5], wc[4], wc[3], wc[2], wc[1], wc[0]};
          conv3_same_avx2(P, flip, G.dh, gxp + pl * H * W, H, W);
        }
        if (need_w) taps3_padded_g_avx2(xp + pl * H * W, P, G.dh, H, W, part.data() + pl * 9);
      });
      if (need_w) {
        gw = at::empty_like(w);
        float *gwp = gw.data_ptr<float>();
        for (int64_t c = 0; c < C; c++)
          for (int64_t t = 0; t < 9; t++) {
            double sum = 0;
            for (int64_t n = 0; n < N; n++) sum += part[(n * C + c) * 9 + t];
            gwp[c * 9 + t] = static_cast<float>(sum);
          }
      }
      return {gx, gw, at::Tensor()};
    }
#endif
    if (ctx->needs_input_grad(0)) {
      gx = same3 ? at::empty_like(x) : at::zeros_like(x);
      float *gxp = gx.data_ptr<float>();
      each_plane(N * C, pad, [&](int64_t pl, float *P) {
        const float *src = gp + pl * OH * OW, *wc = wp + (pl % C) * G.kh * G.kw;
        float *dst = gxp + pl * H * W;
        if (same3) {
          // The input gradient is the same convolution of the output gradient with the
          // kernel turned by 180 degrees.
          const float flip[9] = {wc[8], wc[7], wc[6], wc[5], wc[4], wc[3], wc[2], wc[1], wc[0]};
          pad_plane(src, H, W, G.dh, P);
          conv3(avx2, P, flip, G.dh, dst, H, W);
          return;
        }
        each_tap_row(G, H, W, OH, OW, [&](int64_t t, int64_t ih, int64_t oh, int64_t offw, int64_t ow0, int64_t ow1) {
          const float wt = wc[t], *o = src + oh * OW;
          float *in = dst + ih * W + offw;
          for (int64_t ow = ow0; ow < ow1; ow++) in[ow] += wt * o[ow];
        });
      });
    }
    if (ctx->needs_input_grad(1)) {
      gw = at::zeros_like(w);
      float *gwp = gw.data_ptr<float>();
      each_plane(C, pad, [&](int64_t c, float *P) {
        std::vector<double> acc(G.kh * G.kw, 0.0);
        for (int64_t n = 0; n < N; n++) {
          const float *src = xp + (n * C + c) * H * W, *o = gp + (n * C + c) * OH * OW;
          if (same3) {
            pad_plane(src, H, W, G.dh, P);
            taps3_same(P, o, G.dh, H, W, acc.data());
            continue;
          }
          each_tap_row(G, H, W, OH, OW, [&](int64_t t, int64_t ih, int64_t oh, int64_t offw, int64_t ow0, int64_t ow1) {
            const float *in = src + ih * W + offw, *orow = o + oh * OW;
            float row = 0;
            for (int64_t ow = ow0; ow < ow1; ow++) row += orow[ow] * in[ow];
            acc[t] += row;
          });
        }
        for (int64_t t = 0; t < G.kh * G.kw; t++) gwp[c * G.kh * G.kw + t] = static_cast<float>(acc[t]);
      });
    }
    return {gx, gw, at::Tensor()};
  }
};

// sum_f sums n floats f(r) for r in [0, n): eight float lanes in blocks of 256, each block
// added in double, so that the loop vectorises and the rounding error stays that of a
// 256-term float sum.
template <typename F>
double sum_f(int64_t n, F f) {
  double total = 0;
  int64_t r = 0;
  while (r < n) {
    const int64_t end = std::min<int64_t>(n, r + 256);
    float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (; r + 8 <= end; r += 8) {
      for (int l = 0; l < 8; l++) lane[l] += f(r + l);
    }
    for (; r < end; r++) lane[0] += f(r);
    for (int l = 0; l < 8; l++) total += lane[l];
  }
  return total;
}

#ifdef MT_HAVE_AVX2_PATHS
// hsum_block returns the sum of the 32 lanes of a, b, c and d: added in float, then the
// last eight in double.
MT_AVX2_FMA inline double hsum_block(__m256 a, __m256 b, __m256 c, __m256 d) {
  const __m256 s = _mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d));
  const __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  const __m256d w = _mm256_cvtps_pd(h);
  const __m128d v = _mm_add_pd(_mm256_castpd256_pd128(w), _mm256_extractf128_pd(w, 1));
  return _mm_cvtsd_f64(_mm_add_sd(v, _mm_unpackhi_pd(v, v)));
}

// mixed_row_avx2 writes o[r] = sum_i f[i] * t[i][r] for r in [0, R) (m >= 1 inputs): eight
// values at a time through all inputs, so that each input is read once and o written once;
// the terms are added in input order.
MT_AVX2_FMA void mixed_row_avx2(float *o, const float *const *t, const float *f, int64_t m, int64_t R) {
  const int64_t full = R & ~int64_t{7};
  int64_t r = 0;
  for (; r < full; r += 8) {
    __m256 acc = _mm256_mul_ps(_mm256_broadcast_ss(f), _mm256_loadu_ps(t[0] + r));
    for (int64_t i = 1; i < m; i++) acc = _mm256_fmadd_ps(_mm256_broadcast_ss(f + i), _mm256_loadu_ps(t[i] + r), acc);
    _mm256_storeu_ps(o + r, acc);
  }
  for (; r < R; r++) {
    float acc = f[0] * t[0][r];
    for (int64_t i = 1; i < m; i++) acc += f[i] * t[i][r];
    o[r] = acc;
  }
}

// mixed_grad_row_avx2 writes d[r] = g[r] * fi for r in [0, R) where d is not null, and
// returns sum_r g[r] * t[r] where dot is set (else 0), in one pass: 32 float lanes per
// block of 256 values, each block's sum added in double (the rounding of sum_f's blocks).
MT_AVX2_FMA double mixed_grad_row_avx2(const float *g, const float *t, float fi, float *d, bool dot, int64_t R) {
  const __m256 vf = _mm256_set1_ps(fi);
  double total = 0;
  int64_t r = 0;
  while (r < R) {
    const int64_t end = std::min<int64_t>(R, r + 256);
    __m256 a = _mm256_setzero_ps(), b = a, c = a, e = a;
    for (; r + 32 <= end; r += 32) {
      const __m256 g0 = _mm256_loadu_ps(g + r), g1 = _mm256_loadu_ps(g + r + 8), g2 = _mm256_loadu_ps(g + r + 16),
                   g3 = _mm256_loadu_ps(g + r + 24);
      if (d != nullptr) {
        _mm256_storeu_ps(d + r, _mm256_mul_ps(g0, vf));
        _mm256_storeu_ps(d + r + 8, _mm256_mul_ps(g1, vf));
        _mm256_storeu_ps(d + r + 16, _mm256_mul_ps(g2, vf));
        _mm256_storeu_ps(d + r + 24, _mm256_mul_ps(g3, vf));
      }
      if (dot) {
        a = _mm256_fmadd_ps(g0, _mm256_loadu_ps(t + r), a);
        b = _mm256_fmadd_ps(g1, _mm256_loadu_ps(t + r + 8), b);
        c = _mm256_fmadd_ps(g2, _mm256_loadu_ps(t + r + 16), c);
        e = _mm256_fmadd_ps(g3, _mm256_loadu_ps(t + r + 24), e);
      }
    }
    for (; r + 8 <= end; r += 8) {
      const __m256 g0 = _mm256_loadu_ps(g + r);
      if (d != nullptr) _mm256_storeu_ps(d + r, _mm256_mul_ps(g0, vf));
      if (dot) a = _mm256_fmadd_ps(g0, _mm256_loadu_ps(t + r), a);
    }
    double rest = 0;
    for (; r < end; r++) {
      if (d != nullptr) d[r] = g[r] * fi;
      if (dot) rest += static_cast<double>(g[r]) * t[r];
    }
    if (dot) total += hsum_block(a, b, c, e) + rest;
  }
  return total;
}
#endif

// MixedSum computes out[n] = sum_i f[i, n] * t_i[n] for m tensors t_i of one shape [N, ...]
// and weights f of shape [m, N] (per-sample weights: drop-path masks folded in) in one pass
// over each sample, without stacking the m tensors into one [m, N, ...] buffer. Its backward
// pass gives each t_i its gradient g * f[i, n] and each weight sum_r g[n, r] * t_i[n, r],
// reading every tensor once. fshape is the shape of the weights as given ([m] or [m, N]) so
// that their gradient has it. Each t_i's samples are contiguous rows, one row stride apart
// (stride(0): a grouped op's output part has rows of its group's width).
struct MixedSum : public torch::autograd::Function<MixedSum> {
  static at::Tensor forward(AutogradContext *ctx, const at::Tensor &f, at::TensorList ts) {
    const int64_t m = static_cast<int64_t>(ts.size()), N = ts[0].size(0);
    const int64_t R = ts[0].numel() / N;
    auto fe = (f.dim() == 1 ? f.unsqueeze(1).expand({m, N}) : f).contiguous();
    auto out = at::empty(ts[0].sizes(), ts[0].options());
    std::vector<const float *> tp(m);
    std::vector<int64_t> rs(m);
    for (int64_t i = 0; i < m; i++) tp[i] = ts[i].data_ptr<float>(), rs[i] = ts[i].stride(0);
    const float *fp = fe.data_ptr<float>();
    float *op = out.data_ptr<float>();
    const bool avx2 = cpu_avx2_fma();
    (void)avx2;  // without the AVX2 paths
    at::parallel_for(0, N, 1, [&](int64_t b, int64_t e) {
#ifdef MT_HAVE_AVX2_PATHS
      if (avx2) {
        std::vector<const float *> rows(m);
        std::vector<float> fn(m);
        for (int64_t n = b; n < e; n++) {
          for (int64_t i = 0; i < m; i++) rows[i] = tp[i] + n * rs[i], fn[i] = fp[i * N + n];
          mixed_row_avx2(op + n * R, rows.data(), fn.data(), m, R);
        }
        return;
      }
#endif
      for (int64_t n = b; n < e; n++) {
        float *o = op + n * R;
        const float f0 = fp[n];
        const float *t0 = tp[0] + n * rs[0];
        for (int64_t r = 0; r < R; r++) o[r] = f0 * t0[r];
        for (int64_t i = 1; i < m; i++) {
          const float fi = fp[i * N + n];
          const float *ti = tp[i] + n * rs[i];
          for (int64_t r = 0; r < R; r++) o[r] += fi * ti[r];
        }
      }
    });
    std::vector<at::Tensor> saved{fe};
    saved.insert(saved.end(), ts.begin(), ts.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["f_dim"] = f.dim();
    return out;
  }

  static tensor_list backward(AutogradContext *ctx, tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &fe = saved[0];
    const int64_t m = static_cast<int64_t>(saved.size()) - 1, N = saved[1].size(0);
    const int64_t R = saved[1].numel() / N;
    auto g = grads[0].contiguous();
    const bool need_f = ctx->needs_input_grad(0);
    tensor_list out(m + 1);
    std::vector<float *> gtp(m, nullptr);
    std::vector<const float *> tp(m);
    std::vector<int64_t> rs(m);
    for (int64_t i = 0; i < m; i++) {
      tp[i] = saved[i + 1].data_ptr<float>();
      rs[i] = saved[i + 1].stride(0);
      if (ctx->needs_input_grad(i + 1)) {
        out[i + 1] = at::empty(saved[i + 1].sizes(), g.options());
        gtp[i] = out[i + 1].data_ptr<float>();
      }
    }
    std::vector<double> gf(need_f ? m * N : 0);
    const float *gp = g.data_ptr<float>();
    const float *fp = fe.data_ptr<float>();
    const bool avx2 = cpu_avx2_fma();
    (void)avx2;  // without the AVX2 paths
    at::parallel_for(0, N, 1, [&](int64_t b, int64_t e) {
      for (int64_t n = b; n < e; n++) {
        const float *gn = gp + n * R;
        for (int64_t i = 0; i < m; i++) {
          const float fi = fp[i * N + n];
          const float *ti = tp[i] + n * rs[i];
#ifdef MT_HAVE_AVX2_PATHS
          if (avx2) {
            const double s = mixed_grad_row_avx2(gn, ti, fi, gtp[i] ? gtp[i] + n * R : nullptr, need_f, R);
            if (need_f) gf[i * N + n] = s;
            continue;
          }
#endif
          if (gtp[i] != nullptr) {
            float *d = gtp[i] + n * R;
            for (int64_t r = 0; r < R; r++) d[r] = gn[r] * fi;
          }
          if (need_f) gf[i * N + n] = sum_f(R, [gn, ti](int64_t r) { return gn[r] * ti[r]; });
        }
      }
    });
    if (need_f) {
      auto gft = at::empty({m, N}, fe.options());
      float *q = gft.data_ptr<float>();
      for (int64_t j = 0; j < m * N; j++) q[j] = static_cast<float>(gf[j]);
      out[0] = ctx->saved_data["f_dim"].toInt() == 1 ? gft.sum(1) : gft;
    }
    return out;
  }
};

#ifdef MT_HAVE_AVX2_PATHS
// The batch norm's passes over one plane of n contiguous floats, with AVX2 and FMA: four
// accumulators of eight lanes each (one add chain would wait on its own latency), summed in
// blocks of 256 values and each block added in double, as sum_f does with its eight lanes.


// PlainTerm and SqDevTerm are what plane_reduce_avx2 sums: x itself, or (x - m)^2 (the
// variance pass), added to a lane accumulator, with scalar forms for a plane's tail.
struct PlainTerm {
  MT_AVX2_FMA __m256 operator()(__m256 x, __m256 acc) const { return _mm256_add_ps(acc, x); }
  double scalar(float x) const { return x; }
};
struct SqDevTerm {
  float m;
  MT_AVX2_FMA __m256 operator()(__m256 x, __m256 acc) const {
    const __m256 d = _mm256_sub_ps(x, _mm256_set1_ps(m));
    return _mm256_fmadd_ps(d, d, acc);
  }
  double scalar(float x) const { return static_cast<double>(x - m) * (x - m); }
};

// plane_reduce_avx2 returns the sum of term over the plane.
template <typename T>
MT_AVX2_FMA double plane_reduce_avx2(const float *p, int64_t n, T term) {
  double total = 0;
  int64_t r = 0;
  while (r < n) {
    const int64_t end = std::min<int64_t>(n, r + 256);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (; r + 32 <= end; r += 32) {
      a0 = term(_mm256_loadu_ps(p + r), a0);
      a1 = term(_mm256_loadu_ps(p + r + 8), a1);
      a2 = term(_mm256_loadu_ps(p + r + 16), a2);
      a3 = term(_mm256_loadu_ps(p + r + 24), a3);
    }
    for (; r + 8 <= end; r += 8) a0 = term(_mm256_loadu_ps(p + r), a0);
    double tail = 0;
    for (; r < end; r++) tail += term.scalar(p[r]);
    total += hsum_block(a0, a1, a2, a3) + tail;
  }
  return total;
}

// plane_grad_sums_avx2 adds sum g and sum (x - m) * g over the plane to *gsum and *dot:
// four accumulators for each (one add chain would wait on its own latency).
MT_AVX2_FMA void plane_grad_sums_avx2(const float *x, const float *g, int64_t n, float m, double *gsum, double *dot) {
  const __m256 vm = _mm256_set1_ps(m);
  int64_t r = 0;
  while (r < n) {
    const int64_t end = std::min<int64_t>(n, r + 256);
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, d0 = s0, d1 = s0, d2 = s0, d3 = s0;
    for (; r + 32 <= end; r += 32) {
      const __m256 g0 = _mm256_loadu_ps(g + r), g1 = _mm256_loadu_ps(g + r + 8), g2 = _mm256_loadu_ps(g + r + 16),
                   g3 = _mm256_loadu_ps(g + r + 24);
      s0 = _mm256_add_ps(s0, g0);
      s1 = _mm256_add_ps(s1, g1);
      s2 = _mm256_add_ps(s2, g2);
      s3 = _mm256_add_ps(s3, g3);
      d0 = _mm256_fmadd_ps(_mm256_sub_ps(_mm256_loadu_ps(x + r), vm), g0, d0);
      d1 = _mm256_fmadd_ps(_mm256_sub_ps(_mm256_loadu_ps(x + r + 8), vm), g1, d1);
      d2 = _mm256_fmadd_ps(_mm256_sub_ps(_mm256_loadu_ps(x + r + 16), vm), g2, d2);
      d3 = _mm256_fmadd_ps(_mm256_sub_ps(_mm256_loadu_ps(x + r + 24), vm), g3, d3);
    }
    for (; r + 8 <= end; r += 8) {
      const __m256 g0 = _mm256_loadu_ps(g + r);
      s0 = _mm256_add_ps(s0, g0);
      d0 = _mm256_fmadd_ps(_mm256_sub_ps(_mm256_loadu_ps(x + r), vm), g0, d0);
    }
    double ts = 0, td = 0;
    for (; r < end; r++) {
      ts += g[r];
      td += static_cast<double>(x[r] - m) * g[r];
    }
    *gsum += hsum_block(s0, s1, s2, s3) + ts;
    *dot += hsum_block(d0, d1, d2, d3) + td;
  }
}

// plane_affine_avx2 writes y = x * a + b over the plane.
MT_AVX2_FMA void plane_affine_avx2(const float *x, float *y, int64_t n, float a, float b) {
  const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
  int64_t r = 0;
  for (; r + 8 <= n; r += 8) _mm256_storeu_ps(y + r, _mm256_fmadd_ps(_mm256_loadu_ps(x + r), va, vb));
  for (; r < n; r++) y[r] = x[r] * a + b;
}

// plane_input_grad_avx2 writes d = (g - gm - (x - m) * k) * scale over the plane.
MT_AVX2_FMA void plane_input_grad_avx2(const float *x, const float *g, float *d, int64_t n, float gm, float m, float k,
                                       float scale) {
  const __m256 vgm = _mm256_set1_ps(gm), vm = _mm256_set1_ps(m), vk = _mm256_set1_ps(k), vs = _mm256_set1_ps(scale);
  int64_t r = 0;
  for (; r + 8 <= n; r += 8) {
    const __m256 c = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + r), vm), vk);
    _mm256_storeu_ps(d + r, _mm256_mul_ps(_mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(g + r), vgm), c), vs));
  }
  for (; r < n; r++) d[r] = (g[r] - gm - (x[r] - m) * k) * scale;
}
#endif

// BatchNormTrain is training-mode batch norm of a contiguous [N, C, ...] float tensor, per
// channel over N and the spatial positions, with PyTorch's formulas: biased variance for
// the normalisation, unbiased for the running variance, y = x * (invstd * w) + (b - mean *
// invstd * w). Each channel's values are read in place (one pass for the mean, one for the
// variance, one for the output; likewise backward), in parallel over channels, with AVX2 and
// FMA where the CPU has them. running_mean
// and running_var (may be null) are updated in the forward pass, as at::batch_norm does.
struct BatchNormTrain : public torch::autograd::Function<BatchNormTrain> {
  static at::Tensor forward(AutogradContext *ctx, const at::Tensor &x, const c10::optional<at::Tensor> &wo,
                            const c10::optional<at::Tensor> &bo, double eps, double momentum, float *rm,
                            float *rv) {
    const at::Tensor w = wo.value_or(at::Tensor()), b = bo.value_or(at::Tensor());
    const int64_t N = x.size(0), C = x.size(1), S = x.numel() / (N * C), cnt = N * S;
    auto y = at::empty_like(x);
    auto mean = at::empty({C}, x.options()), invstd = at::empty({C}, x.options());
    const float *xp = x.data_ptr<float>();
    const float *wp = w.defined() ? w.data_ptr<float>() : nullptr;
    const float *bp = b.defined() ? b.data_ptr<float>() : nullptr;
    float *yp = y.data_ptr<float>(), *mp = mean.data_ptr<float>(), *ip = invstd.data_ptr<float>();
    const bool avx2 = cpu_avx2_fma();
    at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; c++) {
        double sum = 0;
        for (int64_t n = 0; n < N; n++) {
          const float *p = xp + (n * C + c) * S;
#ifdef MT_HAVE_AVX2_PATHS
          if (avx2) {
            sum += plane_reduce_avx2(p, S, PlainTerm{});
            continue;
          }
#endif
          sum += sum_f(S, [p](int64_t r) { return p[r]; });
        }
        const float m = static_cast<float>(sum / cnt);
        double var_sum = 0;
        for (int64_t n = 0; n < N; n++) {
          const float *p = xp + (n * C + c) * S;
#ifdef MT_HAVE_AVX2_PATHS
          if (avx2) {
            var_sum += plane_reduce_avx2(p, S, SqDevTerm{m});
            continue;
          }
#endif
          var_sum += sum_f(S, [p, m](int64_t r) { return (p[r] - m) * (p[r] - m); });
        }
        const double is = 1.0 / std::sqrt(var_sum / cnt + eps);
        mp[c] = m;
        ip[c] = static_cast<float>(is);
        if (rm != nullptr) rm[c] = static_cast<float>(momentum * (sum / cnt) + (1 - momentum) * rm[c]);
        if (rv != nullptr) rv[c] = static_cast<float>(momentum * (var_sum / (cnt - 1)) + (1 - momentum) * rv[c]);
        const float alpha = static_cast<float>(is) * (wp != nullptr ? wp[c] : 1.0f);
        const float beta = (bp != nullptr ? bp[c] : 0.0f) - m * alpha;
        for (int64_t n = 0; n < N; n++) {
          const float *p = xp + (n * C + c) * S;
          float *q = yp + (n * C + c) * S;
#ifdef MT_HAVE_AVX2_PATHS
          if (avx2) {
            plane_affine_avx2(p, q, S, alpha, beta);
            continue;
          }
#endif
          for (int64_t r = 0; r < S; r++) q[r] = p[r] * alpha + beta;
        }
      }
    });
    ctx->save_for_backward({x, w, mean, invstd});
    ctx->saved_data["has_b"] = b.defined();
    return y;
  }

  static tensor_list backward(AutogradContext *ctx, tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &w = saved[1], &mean = saved[2], &invstd = saved[3];
    auto g = grads[0].contiguous();
    const int64_t N = x.size(0), C = x.size(1), S = x.numel() / (N * C), cnt = N * S;
    // Only x's index is fixed (absent optional inputs have no edge); the per-channel weight
    // and bias gradients cost nothing extra, so they are always returned.
    const bool need_x = ctx->needs_input_grad(0);
    at::Tensor gx = need_x ? at::empty_like(x) : at::Tensor();
    auto gw = at::empty({C}, x.options()), gb = at::empty({C}, x.options());
    const float *xp = x.data_ptr<float>(), *gp = g.data_ptr<float>();
    const float *wp = w.defined() ? w.data_ptr<float>() : nullptr;
    const float *mp = mean.data_ptr<float>(), *ip = invstd.data_ptr<float>();
    float *gxp = need_x ? gx.data_ptr<float>() : nullptr;
    float *gwp = gw.data_ptr<float>(), *gbp = gb.data_ptr<float>();
    const bool avx2 = cpu_avx2_fma();
    at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; c++) {
        const float m = mp[c], is = ip[c];
        double gsum = 0, dot = 0;
        for (int64_t n = 0; n < N; n++) {
          const float *p = xp + (n * C + c) * S, *q = gp + (n * C + c) * S;
#ifdef MT_HAVE_AVX2_PATHS
          if (avx2) {
            plane_grad_sums_avx2(p, q, S, m, &gsum, &dot);
            continue;
          }
#endif
          gsum += sum_f(S, [q](int64_t r) { return q[r]; });
          dot += sum_f(S, [p, q, m](int64_t r) { return (p[r] - m) * q[r]; });
        }
        gwp[c] = static_cast<float>(dot * is);
        gbp[c] = static_cast<float>(gsum);
        if (gxp == nullptr) continue;
        const float k = static_cast<float>(dot * is * is / cnt);
        const float gm = static_cast<float>(gsum / cnt);
        const float scale = is * (wp != nullptr ? wp[c] : 1.0f);
        for (int64_t n = 0; n < N; n++) {
          const float *p = xp + (n * C + c) * S, *q = gp + (n * C + c) * S;
          float *d = gxp + (n * C + c) * S;
#ifdef MT_HAVE_AVX2_PATHS
          if (avx2) {
            plane_input_grad_avx2(p, q, d, S, gm, m, k, scale);
            continue;
          }
#endif
          for (int64_t r = 0; r < S; r++) d[r] = (q[r] - gm - (p[r] - m) * k) * scale;
        }
      }
    });
    const bool has_b = ctx->saved_data["has_b"].toBool();
    return {gx, w.defined() ? gw : at::Tensor(), has_b ? gb : at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

void embed_plane(const float *src, int64_t H, int64_t W, int64_t top, int64_t left, int64_t Hp, int64_t Wp,
                 float *dst) {
  std::fill(dst, dst + top * Wp, 0.f);
  for (int64_t h = 0; h < H; h++) {
    float *row = dst + (top + h) * Wp;
    std::fill(row, row + left, 0.f);
    std::copy(src + h * W, src + (h + 1) * W, row + left);
    std::fill(row + left + W, row + Wp, 0.f);
  }
  std::fill(dst + (top + H) * Wp, dst + Hp * Wp, 0.f);
}

#ifdef MT_HAVE_AVX2_PATHS
namespace {

// norm_relu_plane_avx2 writes y = max(vi * (x - vm), 0) over n floats (norm_relu_value).
MT_AVX2_FMA void norm_relu_plane_avx2(const float *x, float *y, int64_t n, float m, float is) {
  const __m256 vm = _mm256_set1_ps(m), vi = _mm256_set1_ps(is), z = _mm256_setzero_ps();
  int64_t r = 0;
  // max(v, 0) is 0 for a NaN v and +0 for -0, as norm_relu_value's comparison.
  for (; r + 8 <= n; r += 8) _mm256_storeu_ps(y + r, _mm256_max_ps(_mm256_mul_ps(vi, _mm256_sub_ps(_mm256_loadu_ps(x + r), vm)), z));
  for (; r < n; r++) y[r] = mt_ns::norm_relu_value(x[r], m, is);
}

// norm_relu_sums_avx2 adds over n floats sum g' and sum g' * (x - m) to *s1 and *sxc, g' = g
// where vi * (x - m) > 0 (norm_relu_passes), else 0: four accumulators each, blocks of 256
// added in double.
MT_AVX2_FMA void norm_relu_sums_avx2(const float *x, const float *g, int64_t n, float m, float is, double *s1,
                                     double *sxc) {
  const __m256 vm = _mm256_set1_ps(m), vi = _mm256_set1_ps(is), z = _mm256_setzero_ps();
  int64_t r = 0;
  while (r < n) {
    const int64_t end = std::min<int64_t>(n, r + 256);
    __m256 a[4] = {z, z, z, z}, c[4] = {z, z, z, z};
    for (; r + 32 <= end; r += 32) {
#pragma GCC unroll 4
      for (int u = 0; u < 4; u++) {
        const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + r + 8 * u), vm);
        const __m256 gp = _mm256_and_ps(_mm256_cmp_ps(_mm256_mul_ps(vi, d), z, _CMP_GT_OQ), _mm256_loadu_ps(g + r + 8 * u));
        a[u] = _mm256_add_ps(a[u], gp);
        c[u] = _mm256_fmadd_ps(gp, d, c[u]);
      }
    }
    for (; r + 8 <= end; r += 8) {
      const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + r), vm);
      const __m256 gp = _mm256_and_ps(_mm256_cmp_ps(_mm256_mul_ps(vi, d), z, _CMP_GT_OQ), _mm256_loadu_ps(g + r));
      a[0] = _mm256_add_ps(a[0], gp);
      c[0] = _mm256_fmadd_ps(gp, d, c[0]);
    }
    double t1 = 0, tc = 0;
    for (; r < end; r++) {
      if (mt_ns::norm_relu_passes(x[r], m, is)) {
        t1 += g[r];
        tc += static_cast<double>(g[r]) * (x[r] - m);
      }
    }
    *s1 += hsum_block(a[0], a[1], a[2], a[3]) + t1;
    *sxc += hsum_block(c[0], c[1], c[2], c[3]) + tc;
  }
}

// norm_relu_grad_plane_avx2 writes dx = (passes ? is * g : 0) + beta * x + gamma over n
// floats (norm_relu_grad).
MT_AVX2_FMA void norm_relu_grad_plane_avx2(const float *x, const float *g, float *dx, int64_t n, float m, float is,
                                           float beta, float gamma) {
  const __m256 vm = _mm256_set1_ps(m), vi = _mm256_set1_ps(is), vb = _mm256_set1_ps(beta),
               vg = _mm256_set1_ps(gamma), z = _mm256_setzero_ps();
  int64_t r = 0;
  for (; r + 8 <= n; r += 8) {
    const __m256 xv = _mm256_loadu_ps(x + r);
    const __m256 pass = _mm256_and_ps(_mm256_cmp_ps(_mm256_mul_ps(vi, _mm256_sub_ps(xv, vm)), z, _CMP_GT_OQ),
                                      _mm256_mul_ps(vi, _mm256_loadu_ps(g + r)));
    _mm256_storeu_ps(dx + r, _mm256_add_ps(_mm256_add_ps(pass, _mm256_mul_ps(vb, xv)), vg));
  }
  for (; r < n; r++) dx[r] = mt_ns::norm_relu_grad(g[r], x[r], m, is, beta, gamma);
}

// fan_row_avx2 writes out[q] for q in [0, Q): the sum over the k rows g[j] (each with its r
// copies Q floats apart) in fan_value's order, 0 where mask (may be null) is not positive.
MT_AVX2_FMA void fan_row_avx2(const float *const *g, int64_t k, int64_t r, int64_t Q, const float *mask, float *out) {
  const __m256 z = _mm256_setzero_ps();
  int64_t q = 0;
  for (; q + 8 <= Q; q += 8) {
    __m256 acc = z;
    for (int64_t j = 0; j < k; j++)
      for (int64_t i = 0; i < r; i++) acc = _mm256_add_ps(acc, _mm256_loadu_ps(g[j] + i * Q + q));
    if (mask != nullptr) acc = _mm256_and_ps(_mm256_cmp_ps(_mm256_loadu_ps(mask + q), z, _CMP_GT_OQ), acc);
    _mm256_storeu_ps(out + q, acc);
  }
  for (; q < Q; q++) {
    float acc = 0.f;
    for (int64_t j = 0; j < k; j++)
      for (int64_t i = 0; i < r; i++) acc += g[j][i * Q + q];
    out[q] = mask == nullptr || mask[q] > 0.f ? acc : 0.f;
  }
}

}  // namespace
#endif

bool norm_relu_cpu(const at::Tensor &x, const float *mean, const float *invstd, at::Tensor &y) {
#ifdef MT_HAVE_AVX2_PATHS
  if (!cpu_avx2_fma() || x.scalar_type() != at::kFloat || !x.is_contiguous() || !y.is_contiguous()) return false;
  const int64_t N = x.size(0), C = x.size(1), HW = N * C > 0 ? x.numel() / (N * C) : 0;
  const float *px = x.data_ptr<float>();
  float *py = y.data_ptr<float>();
  at::parallel_for(0, N * C, 1, [&](int64_t b, int64_t e) {
    for (int64_t nc = b; nc < e; nc++)
      norm_relu_plane_avx2(px + nc * HW, py + nc * HW, HW, mean[nc % C], invstd[nc % C]);
  });
  return true;
#else
  (void)x, (void)mean, (void)invstd, (void)y;
  return false;
#endif
}

bool norm_relu_backward_cpu(const at::Tensor &x, const at::Tensor &g, const float *mean, const float *invstd,
                            float *beta, float *gamma, at::Tensor &dx) {
#ifdef MT_HAVE_AVX2_PATHS
  if (!cpu_avx2_fma() || x.scalar_type() != at::kFloat || g.scalar_type() != at::kFloat || !x.is_contiguous() ||
      !g.is_contiguous() || !dx.is_contiguous())
    return false;
  const int64_t N = x.size(0), C = x.size(1), HW = N * C > 0 ? x.numel() / (N * C) : 0;
  const float *px = x.data_ptr<float>(), *pg = g.data_ptr<float>();
  float *pd = dx.data_ptr<float>();
  at::parallel_for(0, C, 1, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; c++) {
      const float m = mean[c], is = invstd[c];
      double s1 = 0, sxc = 0;
      for (int64_t n = 0; n < N; n++) {
        const int64_t o = (n * C + c) * HW;
        norm_relu_sums_avx2(px + o, pg + o, HW, m, is, &s1, &sxc);
      }
      // norm_relu_final takes sum g' * x; it is summed centred (x far from 0 would cancel).
      mt_ns::norm_relu_final(s1, sxc + static_cast<double>(m) * s1, N * HW, m, is, beta + c, gamma + c);
      for (int64_t n = 0; n < N; n++) {
        const int64_t o = (n * C + c) * HW;
        norm_relu_grad_plane_avx2(px + o, pg + o, pd + o, HW, m, is, beta[c], gamma[c]);
      }
    }
  });
  return true;
#else
  (void)x, (void)g, (void)mean, (void)invstd, (void)beta, (void)gamma, (void)dx;
  return false;
#endif
}

bool fan_sum_cpu(const std::vector<const float *> &g, const std::vector<int64_t> &rows, int64_t n, int64_t N,
                 int64_t r, int64_t Q, const std::vector<const float *> &x, float *out) {
#ifdef MT_HAVE_AVX2_PATHS
  if (!cpu_avx2_fma()) return false;
  const int64_t k = static_cast<int64_t>(g.size());
  at::parallel_for(0, n * N, 1, [&](int64_t b0, int64_t b1) {
    std::vector<const float *> rowp(k);
    for (int64_t mb = b0; mb < b1; mb++) {
      const int64_t m = mb / N, b = mb % N;
      for (int64_t j = 0; j < k; j++) rowp[j] = g[j] + b * rows[j] + m * r * Q;
      fan_row_avx2(rowp.data(), k, r, Q, x.empty() ? nullptr : x[m] + b * Q, out + mb * Q);
    }
  });
  return true;
#else
  (void)g, (void)rows, (void)n, (void)N, (void)r, (void)Q, (void)x, (void)out;
  return false;
#endif
}

bool fast_cpu_ops() {
  static const bool on = !env_is("METANAS_FAST_CPU_OPS", "0");
  return on && !autocast_cpu();
}

at::Tensor max_pool2d_cpu(const at::Tensor &x, int64_t k, int64_t s, int64_t p) {
  // PyTorch requires p <= k/2; larger paddings and empty outputs go to LibTorch (and its
  // error messages).
  if (!applies(x) || k <= 0 || s <= 0 || p < 0 || 2 * p > k) return at::Tensor();
  if (out_size(x.size(2), k, s, p) <= 0 || out_size(x.size(3), k, s, p) <= 0) return at::Tensor();
  if (x.size(2) * x.size(3) >= (int64_t{1} << 31)) return at::Tensor();
  return MaxPool::apply(x, k, s, p);
}

at::Tensor avg_pool2d_excl_cpu(const at::Tensor &x, int64_t k, int64_t s, int64_t p) {
  if (!applies(x) || k <= 0 || s <= 0 || p < 0 || 2 * p > k) return at::Tensor();
  if (out_size(x.size(2), k, s, p) <= 0 || out_size(x.size(3), k, s, p) <= 0) return at::Tensor();
  return AvgPoolExcl::apply(x, k, s, p);
}

at::Tensor dwconv_cpu(const at::Tensor &x, const at::Tensor &w, const c10::optional<at::Tensor> &b,
                      int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t groups) {
  // Depthwise (one filter per channel), without bias, with a non-empty output; anything else
  // goes to LibTorch (and its error messages).
  if (!applies(x) || w.dim() != 4 || w.scalar_type() != at::kFloat || !w.device().is_cpu() ||
      w.layout() != at::kStrided || (b && b->defined()))
    return at::Tensor();
  const int64_t C = x.size(1), H = x.size(2), W = x.size(3);
  if (groups != C || w.size(0) != C || w.size(1) != 1 || x.size(0) == 0 || C == 0) return at::Tensor();
  if (sh <= 0 || sw <= 0 || dh <= 0 || dw <= 0 || ph < 0 || pw < 0) return at::Tensor();
  const int64_t kh = w.size(2), kw = w.size(3);
  if (kh <= 0 || kw <= 0 || H + 2 * ph < dh * (kh - 1) + 1 || W + 2 * pw < dw * (kw - 1) + 1) return at::Tensor();
  const Geom g{kh, kw, sh, sw, ph, pw, dh, dw};
  if (same3x3(g)) return DwConv::apply(x, w, std::vector<int64_t>{kh, kw, sh, sw, ph, pw, dh, dw});
  // A 3x3 kernel with dilation 2, padding 2 and stride 2 reads only the even rows and
  // columns: it is the stride-1 "same" convolution of that sub-grid.
  if (kh == 3 && kw == 3 && sh == 2 && sw == 2 && dh == 2 && dw == 2 && ph == 2 && pw == 2)
    return DwConv::apply(x.slice(2, 0, H, 2).slice(3, 0, W, 2).contiguous(), w,
                         std::vector<int64_t>{3, 3, 1, 1, 1, 1, 1, 1});
  // Elsewhere (a strided convolution: a quarter of the outputs) the direct kernel is no
  // faster than LibTorch's; it stays for the geometries of tests and odd settings.
  if (sh != 1 || sw != 1) return at::Tensor();
  return DwConv::apply(x, w, std::vector<int64_t>{kh, kw, sh, sw, ph, pw, dh, dw});
}

at::Tensor mixed_sum_cpu(const at::Tensor &f, const std::vector<at::Tensor> &ts) {
  if (!fast_cpu_ops() || ts.size() < 2 || !f.device().is_cpu() || f.scalar_type() != at::kFloat) return at::Tensor();
  const int64_t m = static_cast<int64_t>(ts.size());
  const auto &t0 = ts[0];
  if (t0.dim() < 1 || t0.size(0) == 0 || t0.numel() == 0) return at::Tensor();
  for (const auto &t : ts) {
    // Samples as contiguous rows (the tensor contiguous, or its rows one stride apart).
    if (!t.device().is_cpu() || t.scalar_type() != at::kFloat || t.layout() != at::kStrided ||
        t.sizes() != t0.sizes() || !(t.is_contiguous() || t.select(0, 0).is_contiguous()) ||
        (t.size(0) > 1 && t.stride(0) < t.numel() / t.size(0)))
      return at::Tensor();
  }
  const bool per_task = f.dim() == 1 && f.size(0) == m;
  const bool per_sample = f.dim() == 2 && f.size(0) == m && f.size(1) == t0.size(0);
  if (!per_task && !per_sample) return at::Tensor();
  // An ArrayRef, not the vector: apply registers the tensors of a TensorList argument as
  // inputs but ignores arguments of other types.
  return MixedSum::apply(f, at::TensorList(ts));
}

at::Tensor batch_norm_train_cpu(const at::Tensor &x, const at::Tensor &w, const at::Tensor &b,
                                const at::Tensor &rm, const at::Tensor &rv, double momentum, double eps) {
  if (!fast_cpu_ops() || !x.device().is_cpu() || x.scalar_type() != at::kFloat || x.dim() < 2 ||
      !x.is_contiguous() || x.layout() != at::kStrided)
    return at::Tensor();
  const int64_t C = x.size(1);
  if (x.numel() == 0 || x.numel() / C < 2) return at::Tensor();  // LibTorch's error for one value
  auto fits = [C](const at::Tensor &t) {
    return !t.defined() || (t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == 1 &&
                            t.size(0) == C && t.is_contiguous());
  };
  if (!fits(w) || !fits(b) || !fits(rm) || !fits(rv) || rm.defined() != rv.defined()) return at::Tensor();
  if ((rm.defined() && rm.requires_grad()) || (rv.defined() && rv.requires_grad())) return at::Tensor();
  auto opt = [](const at::Tensor &t) { return t.defined() ? c10::optional<at::Tensor>(t) : c10::nullopt; };
  return BatchNormTrain::apply(x, opt(w), opt(b), eps, momentum, rm.defined() ? rm.data_ptr<float>() : nullptr,
                               rv.defined() ? rv.data_ptr<float>() : nullptr);
}

}  // namespace mt
