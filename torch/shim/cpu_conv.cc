// A CPU kernel for dense (ungrouped) stride-1 "same" convolutions without bias: the 1x1,
// 1x5 and 5x1 convolutions of MetaNAS's cells (pointwise halves of sep_conv, dil_conv and
// conv_3x3, conv_1x5_5x1, the cells' preprocessing) and the stem's 3x3, and strided 1x1
// convolutions (FactorizedReduce), as the 1x1 convolution of their sub-grid. Debian's LibTorch
// 1.13 runs these through oneDNN, reordering NCHW data into its blocked layout and back on
// every call: on og_metanas's 20x28x28x28 activations (one thread of an AMD EPYC) a 1x1
// took 1.5 ms forward (16 GFLOP/s) and a 1x5 5.2 ms, and these convolutions were more than
// half of a CPU task step's operator time. Here each image's zero-padded planes are read
// flat: with padded rows of Wp floats, output position q of a plane reads input q + i*Wp + j
// for tap (i, j), so every tap of every input channel is one contiguous vector load, and a
// tile of 4 output channels x 24 positions stays in AVX2 registers while the input channels
// and taps stream through. The input gradient is the same convolution of the output
// gradient with the kernel turned and its channels transposed; the weight gradient sums
// output gradient times shifted input in float lanes over runs of images of about 2,048
// positions, each run's sums added in double. Machines without AVX2 and FMA (and non-x86
// builds) and every other geometry get LibTorch's convolution.
#pragma GCC optimize("O3")

#include "common.h"

#if defined(__x86_64__)
#include "avx2.h"

#include <ATen/Parallel.h>

#include <vector>

namespace mt {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// Plan is one image's stride-1 "same" convolution over flat padded planes: ci input planes
// of istride floats in rows of Wp = W + pw floats (pw zeros, then the row's W values: the
// zeros before a row are the right padding of the row above as well as its own left
// padding), ph zero rows above and below, and slack zeros after the last plane; co output
// planes computed at the q = H*Wp positions of that grid (columns at or beyond W of each
// row are not outputs); taps at offsets off of the padded input. The output gradient, padded
// the same way (co planes of istride floats), holds output position q at q + goff, and zeros
// at the positions that are not outputs (the next row's leading zeros). ximg and gimg are
// the floats from one image to the next in the padded input and the padded output gradient.
struct Plan {
  int64_t ci, co, istride, q, H, Wp, ph, pw, slack, goff, ximg, gimg;
  std::vector<int64_t> off;
};

// plan_for returns the plan of H x W planes convolved with a kh x kw kernel at dilation
// (dh, dw) and padding (dh*(kh-1)/2, dw*(kw-1)/2).
Plan plan_for(int64_t ci, int64_t co, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t dh, int64_t dw) {
  const int64_t ph = dh * (kh - 1) / 2, pw = dw * (kw - 1) / 2, Wp = W + pw;
  const int64_t istride = (H + 2 * ph) * Wp;
  Plan p{ci, co, istride, H * Wp, H, Wp, ph, pw, 2 * pw, ph * Wp + pw, ci * istride, co * istride, {}};
  for (int64_t i = 0; i < kh; i++)
    for (int64_t j = 0; j < kw; j++) p.off.push_back(i * dh * Wp + j * dw);
  return p;
}


// hsum returns the sum of v's eight lanes.
MT_AVX2_FMA inline float hsum(__m256 v) {
  alignas(32) float lane[8];
  _mm256_store_ps(lane, v);
  float s = 0;
  for (int l = 0; l < 8; l++) s += lane[l];
  return s;
}

// conv_tile writes MO output planes (q floats apart) at 8*NV positions from `out` on:
// out[m][k] = sum over input planes c and taps t of w[m*wrow + c*T + t] * in[c*istride +
// off[t] + k]. MASK: one vector, only the lanes of mask.
template <int MO, int NV, bool MASK>
MT_AVX2_FMA inline void conv_tile(const Plan &P, const float *in, const float *w, int64_t wrow, float *out,
                              __m256i mask) {
  __m256 acc[MO][NV];
#pragma GCC unroll 4
  for (int m = 0; m < MO; m++)
#pragma GCC unroll 3
    for (int v = 0; v < NV; v++) acc[m][v] = _mm256_setzero_ps();
  const int64_t T = static_cast<int64_t>(P.off.size());
  const int64_t *off = P.off.data();
  for (int64_t c = 0; c < P.ci; c++) {
    const float *xc = in + c * P.istride;
    const float *wc = w + c * T;
    for (int64_t t = 0; t < T; t++) {
      const float *xp = xc + off[t];
      __m256 xv[NV];
#pragma GCC unroll 3
      for (int v = 0; v < NV; v++) xv[v] = MASK ? _mm256_maskload_ps(xp, mask) : _mm256_loadu_ps(xp + 8 * v);
#pragma GCC unroll 4
      for (int m = 0; m < MO; m++) {
        const __m256 wv = _mm256_broadcast_ss(wc + m * wrow + t);
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) acc[m][v] = _mm256_fmadd_ps(wv, xv[v], acc[m][v]);
      }
    }
  }
#pragma GCC unroll 4
  for (int m = 0; m < MO; m++)
#pragma GCC unroll 3
    for (int v = 0; v < NV; v++) {
      if (MASK) {
        _mm256_maskstore_ps(out + m * P.q, mask, acc[m][v]);
      } else {
        _mm256_storeu_ps(out + m * P.q + 8 * v, acc[m][v]);
      }
    }
}

// conv_rows computes output planes [o0, o0+MO) of one image at all q positions.
template <int MO>
MT_AVX2_FMA void conv_rows(const Plan &P, const float *in, const float *w, float *out, int64_t o0) {
  const int64_t wrow = P.ci * static_cast<int64_t>(P.off.size());
  const float *wo = w + o0 * wrow;
  float *oo = out + o0 * P.q;
  const __m256i all = _mm256_set1_epi32(-1);
  int64_t k = 0;
  for (; k + 24 <= P.q; k += 24) conv_tile<MO, 3, false>(P, in + k, wo, wrow, oo + k, all);
  for (; k + 8 <= P.q; k += 8) conv_tile<MO, 1, false>(P, in + k, wo, wrow, oo + k, all);
  if (k < P.q) conv_tile<MO, 1, true>(P, in + k, wo, wrow, oo + k, tail_mask(P.q - k));
}

// conv_image convolves one image's padded input planes with w ([co][ci][T]) into planes of
// q floats at out.
MT_AVX2_FMA void conv_image(const Plan &P, const float *in, const float *w, float *out) {
  int64_t o = 0;
  for (; o + 4 <= P.co; o += 4) conv_rows<4>(P, in, w, out, o);
  switch (P.co - o) {
    case 3: conv_rows<3>(P, in, w, out, o); break;
    case 2: conv_rows<2>(P, in, w, out, o); break;
    case 1: conv_rows<1>(P, in, w, out, o); break;
    default: break;
  }
}

// wgrad_block adds to acc ([co][ci][T], double) the sums over the q positions of images
// [n0, n1) of g[o] * in[c] shifted by tap t, for output planes [o0, o0+MO) and input planes
// [c0, c0+MC); g is the padded output gradient (Plan). The sums run in float
// lanes over the images of the range (callers keep it to a few thousand positions) and go
// to acc in double once.
template <int MO, int MC>
MT_AVX2_FMA void wgrad_block(const Plan &P, const float *in, const float *g, int64_t n0, int64_t n1, int64_t o0,
                         int64_t c0, int64_t t, double *acc) {
  __m256 a[MO][MC];
#pragma GCC unroll 3
  for (int m = 0; m < MO; m++)
#pragma GCC unroll 4
    for (int j = 0; j < MC; j++) a[m][j] = _mm256_setzero_ps();
  const int64_t full = P.q & ~int64_t{7};
  const __m256i all = _mm256_set1_epi32(-1), tail = tail_mask(P.q - full);
  for (int64_t n = n0; n < n1; n++) {
    const float *gp = g + n * P.gimg + o0 * P.istride + P.goff;
    const float *xp = in + n * P.ximg + c0 * P.istride + P.off[t];
    auto step = [&](int64_t k, bool masked, __m256i mask) MT_AVX2_FMA {
      __m256 gv[MO];
#pragma GCC unroll 3
      for (int m = 0; m < MO; m++) {
        const float *gm = gp + m * P.istride + k;
        gv[m] = masked ? _mm256_maskload_ps(gm, mask) : _mm256_loadu_ps(gm);
      }
#pragma GCC unroll 4
      for (int j = 0; j < MC; j++) {
        const float *x = xp + j * P.istride + k;
        const __m256 xv = masked ? _mm256_maskload_ps(x, mask) : _mm256_loadu_ps(x);
#pragma GCC unroll 3
        for (int m = 0; m < MO; m++) a[m][j] = _mm256_fmadd_ps(gv[m], xv, a[m][j]);
      }
    };
    for (int64_t k = 0; k < full; k += 8) step(k, false, all);
    if (full < P.q) step(full, true, tail);
  }
  const int64_t T = static_cast<int64_t>(P.off.size());
  for (int m = 0; m < MO; m++)
    for (int j = 0; j < MC; j++) acc[((o0 + m) * P.ci + c0 + j) * T + t] += hsum(a[m][j]);
}

template <int MO>
MT_AVX2_FMA void wgrad_rows(const Plan &P, const float *in, const float *g, int64_t n0, int64_t n1, int64_t o0,
                        double *acc) {
  const int64_t T = static_cast<int64_t>(P.off.size());
  for (int64_t t = 0; t < T; t++) {
    int64_t c = 0;
    for (; c + 4 <= P.ci; c += 4) wgrad_block<MO, 4>(P, in, g, n0, n1, o0, c, t, acc);
    for (; c < P.ci; c++) wgrad_block<MO, 1>(P, in, g, n0, n1, o0, c, t, acc);
  }
}

// wgrad_images adds the weight gradient of images [n0, n1) for output planes [o0, o1) to acc.
MT_AVX2_FMA void wgrad_images(const Plan &P, const float *in, const float *g, int64_t n0, int64_t n1, int64_t o0,
                          int64_t o1, double *acc) {
  int64_t o = o0;
  for (; o + 3 <= o1; o += 3) wgrad_rows<3>(P, in, g, n0, n1, o, acc);
  switch (o1 - o) {
    case 2: wgrad_rows<2>(P, in, g, n0, n1, o, acc); break;
    case 1: wgrad_rows<1>(P, in, g, n0, n1, o, acc); break;
    default: break;
  }
}

// padded returns the planes of x ([N, C, H, W], contiguous) flat, each in a zero plane of
// Hp x Wp at row `top` and column `left`, followed by `slack` zeros (reads past the last
// plane's end by the taps of positions that are not outputs stay inside the buffer). Only
// the border is zeroed.
at::Tensor padded(const at::Tensor &x, int64_t top, int64_t left, int64_t Hp, int64_t Wp, int64_t slack) {
  const int64_t NC = x.size(0) * x.size(1), H = x.size(2), W = x.size(3);
  if (Hp == H && Wp == W && slack == 0) return x;
  auto y = at::empty({NC * Hp * Wp + slack}, x.options());
  const float *src = x.data_ptr<float>();
  float *dst = y.data_ptr<float>();
  at::parallel_for(0, NC, 1, [&](int64_t b, int64_t e) {
    for (int64_t pl = b; pl < e; pl++) embed_plane(src + pl * H * W, H, W, top, left, Hp, Wp, dst + pl * Hp * Wp);
  });
  std::fill(dst + NC * Hp * Wp, dst + NC * Hp * Wp + slack, 0.f);
  return y;
}

// padded_input returns x's planes padded for plan P.
at::Tensor padded_input(const at::Tensor &x, const Plan &P) {
  return padded(x, P.ph, P.pw, P.H + 2 * P.ph, P.Wp, P.slack);
}

// conv_planes convolves N images, padded for plan P (xp), with w ([co, ci, kh, kw], as
// [co][ci][T]) into a new [N, co, H, W] tensor. With padded rows longer than W, each image
// is computed on the padded grid in a scratch buffer and its outputs copied out.
at::Tensor conv_planes(const at::Tensor &xp, const Plan &P, const at::Tensor &w, int64_t N, int64_t W) {
  const int64_t co = P.co, H = P.H;
  auto out = at::empty({N, co, H, W}, xp.options());
  const float *ip = xp.data_ptr<float>(), *wp = w.data_ptr<float>();
  float *op = out.data_ptr<float>();
  at::parallel_for(0, N, 1, [&](int64_t b, int64_t e) {
    std::vector<float> scratch(P.Wp == W ? 0 : co * P.q);
    for (int64_t n = b; n < e; n++) {
      float *dst = op + n * co * H * W;
      if (P.Wp == W) {
        conv_image(P, ip + n * P.ximg, wp, dst);
        continue;
      }
      conv_image(P, ip + n * P.ximg, wp, scratch.data());
      for (int64_t o = 0; o < co; o++)
        for (int64_t h = 0; h < H; h++) {
          const float *s = scratch.data() + o * P.q + h * P.Wp;
          std::copy(s, s + W, dst + (o * H + h) * W);
        }
    }
  });
  return out;
}

// weight_grad returns the double sums acc as a float tensor of w's shape and options.
at::Tensor weight_grad(const std::vector<double> &acc, const at::Tensor &w) {
  auto gw = at::empty_like(w);
  float *gwp = gw.data_ptr<float>();
  for (size_t i = 0; i < acc.size(); i++) gwp[i] = static_cast<float>(acc[i]);
  return gw;
}

// images_per_run is how many images' positions the weight gradients sum in float lanes
// before a double sum: about 2,048 positions (256 terms per lane).
int64_t images_per_run(const Plan &P) { return std::max<int64_t>(1, 2048 / P.q); }

// DenseConv is the autograd function of a stride-1 "same" convolution (odd kernel,
// padding (k-1)/2 per axis, dilation 1, one group, no bias) of a float NCHW batch.
struct DenseConv : public torch::autograd::Function<DenseConv> {
  static at::Tensor forward(AutogradContext *ctx, const at::Tensor &input, const at::Tensor &weight) {
    auto x = input.contiguous();
    auto w = weight.contiguous();
    // x is saved, not its padded copy: the backward pass pads it again (one copy) rather
    // than hold a second copy of every input until then.
    ctx->save_for_backward({x, w});
    const Plan P = plan_for(x.size(1), w.size(0), x.size(2), x.size(3), w.size(2), w.size(3), 1, 1);
    return conv_planes(padded_input(x, P), P, w, x.size(0), x.size(3));
  }

  static tensor_list backward(AutogradContext *ctx, tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &w = saved[1];
    auto g = grads[0].contiguous();
    const int64_t N = x.size(0), ci = x.size(1), H = x.size(2), W = x.size(3);
    const int64_t co = w.size(0), kh = w.size(2), kw = w.size(3);
    // The output gradient, padded as an input of the same geometry, serves both gradients.
    const Plan Pg = plan_for(co, ci, H, W, kh, kw, 1, 1);
    auto gp = padded_input(g, Pg);
    at::Tensor gx, gw;
    if (ctx->needs_input_grad(0)) {
      // The input gradient: the output gradient convolved with the kernel turned by 180
      // degrees, input and output channels swapped ([ci][co][T]).
      gx = conv_planes(gp, Pg, w.flip({2, 3}).transpose(0, 1).contiguous(), N, W);
    }
    if (ctx->needs_input_grad(1)) {
      const Plan P = plan_for(ci, co, H, W, kh, kw, 1, 1);
      auto xp = padded_input(x, P);
      const float *ip = xp.data_ptr<float>(), *gpp = gp.data_ptr<float>();
      std::vector<double> acc(co * ci * kh * kw, 0.0);
      // Threads take disjoint blocks of output channels, all images each.
      const int64_t run = images_per_run(P);
      at::parallel_for(0, (co + 2) / 3, 1, [&](int64_t b, int64_t e) {
        for (int64_t n = 0; n < N; n += run)
          wgrad_images(P, ip, gpp, n, std::min(N, n + run), b * 3, std::min(co, e * 3), acc.data());
      });
      gw = weight_grad(acc, w);
    }
    return {gx, gw};
  }
};

}  // namespace

at::Tensor dense_conv_cpu(const at::Tensor &x, const at::Tensor &w, const c10::optional<at::Tensor> &b,
                          int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                          int64_t groups) {
  if (!fast_cpu_ops() || !cpu_avx2_fma()) return at::Tensor();
  if (!x.device().is_cpu() || x.dim() != 4 || x.scalar_type() != at::kFloat || x.layout() != at::kStrided)
    return at::Tensor();
  if (w.dim() != 4 || w.scalar_type() != at::kFloat || !w.device().is_cpu() || w.layout() != at::kStrided ||
      (b && b->defined()))
    return at::Tensor();
  if (groups != 1 || dh != 1 || dw != 1 || sh < 1 || sw < 1) return at::Tensor();
  const int64_t kh = w.size(2), kw = w.size(3);
  // A strided 1x1 convolution (FactorizedReduce) is the 1x1 convolution of the sub-grid it
  // reads.
  if (kh == 1 && kw == 1 && ph == 0 && pw == 0 && (sh > 1 || sw > 1) && w.size(1) == x.size(1) &&
      x.numel() > 0 && w.numel() > 0)
    return DenseConv::apply(x.slice(2, 0, x.size(2), sh).slice(3, 0, x.size(3), sw).contiguous(), w);
  if (sh != 1 || sw != 1) return at::Tensor();
  if (kh % 2 == 0 || kw % 2 == 0 || 2 * ph != kh - 1 || 2 * pw != kw - 1) return at::Tensor();
  if (w.size(1) != x.size(1) || x.numel() == 0 || w.numel() == 0) return at::Tensor();
  // The padded grid computes pw columns per row that are not outputs; where that is more
  // than a seventh of the row (1x5 on 7x7 planes) LibTorch was faster (AMD EPYC, one thread).
  if (7 * pw > x.size(3)) return at::Tensor();
  return DenseConv::apply(x, w);
}

}  // namespace mt

#else  // not x86-64: LibTorch's convolution everywhere

at::Tensor mt::dense_conv_cpu(const at::Tensor &, const at::Tensor &, const c10::optional<at::Tensor> &, int64_t,
                              int64_t, int64_t, int64_t, int64_t, int64_t, int64_t) {
  return at::Tensor();
}

#endif
