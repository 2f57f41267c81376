// The fused DSA program for ONE image, laid out for a CPU worker that owns the whole image.
//
// Same transform as augment_image / augment_backward_image (kernels/augment.h), with the same
// per-pixel formulas (ColorMap, ColorTranspose, Taps, Affine, base_coordinate), but loops shaped
// for one core instead of a thread block:
// - pointwise ops run row by row: a crop/flip is a shifted or reversed row copy, a cutout a zeroed
//   segment, the colour ops plain loops over contiguous rows (they vectorise; three channels in one
//   loop), or over whole planes when nothing moves the pixels; no pass at all for ops that are absent;
// - a resampling reads a zero-bordered copy of its source (Padded), so its inner loop has no
//   per-tap bounds tests; each row's taps come from vectorised loops (RowTaps), and the channels
//   are innermost; float images resample four pixels at a time (SSE2, bilinear4). When the batch
//   shares one ω, the taps of every row are filled once per call (TapPlan) and every image reads
//   them;
// - the transposed resampling is an ordered scatter: every output pixel, in row-major order, adds
//   its tap contributions to the four source pixels. That is the same sum in the same order as the
//   gather of resample_transpose_pixel (which visits the contributing output pixels in row-major
//   order too), without searching a candidate box per source pixel; one worker per image keeps it
//   deterministic. When the batch shares one ω, a table built once per call lists each source
//   pixel's contributions in that order (GatherTable), and the transposed resampling is a gather
//   with the same sums.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <type_traits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "../kernels/augment.h"

namespace dsa_fast {
namespace cpu {

// Which source row/column feeds each row/column of a pointwise output, and where the cutout box
// and the crop's zero fill are, in output coordinates. Forward: output w from x. Transposed:
// output (the gradient of the colour output) from the gradient of w.
struct RowMap {
  int H, W;
  int drow;         // source row = output row + drow
  bool flip;        // source column = flip ? K - t : t + d
  int K, d;
  int t0, t1;       // output columns [t0, t1) have a source column inside the image
  int r0, r1;       // output rows [r0, r1) cross the cutout box
  int c0, c1;       // ... in output columns [c0, c1)

  int src_row(int i) const {
    const int a = i + drow;
    return a >= 0 && a < H ? a : -1;
  }
  int src_col(int t) const { return flip ? K - t : t + d; }
  bool cut_row(int i) const { return i >= r0 && i < r1; }

  template <typename acc_t>
  static RowMap of(const ImageGeometry<acc_t>& g, const Omega<acc_t>& o, bool transposed) {
    RowMap m;
    m.H = g.H;
    m.W = g.W;
    const int ch = g.has(kCrop) ? o.crop_h : 0, cw = g.has(kCrop) ? o.crop_w : 0;
    m.flip = g.has(kFlip) && o.flip;
    // Forward: w[p, q] = x[p + ch, q1 + cw], q1 = flip ? W - 1 - q : q. Transposed: the gradient at
    // (a, b) of the crop input takes w's gradient at (a - ch, q) with q1 = b - cw.
    m.drow = transposed ? -ch : ch;
    m.K = g.W - 1 + cw;
    m.d = transposed ? -cw : cw;
    if (m.flip) {
      m.t0 = std::max(0, m.K - g.W + 1);
      m.t1 = std::min(g.W, m.K + 1);
    } else {
      m.t0 = std::max(0, -m.d);
      m.t1 = std::min(g.W, g.W - m.d);
    }
    m.r0 = m.r1 = m.c0 = m.c1 = 0;
    if (g.has(kCutout)) {
      // The box is tested at (p, q1) of w: forward p = the output row, q1 = the flipped output
      // column; transposed p = the output row - ch, q1 = the output column - cw.
      const int shift_r = transposed ? ch : 0;
      m.r0 = o.cut_top + shift_r;
      m.r1 = o.cut_top + o.cut_h + shift_r;
      int lo, hi;
      if (transposed) {
        lo = o.cut_left + cw;
        hi = o.cut_left + o.cut_w + cw;
      } else if (m.flip) {
        lo = g.W - o.cut_left - o.cut_w;
        hi = g.W - o.cut_left;
      } else {
        lo = o.cut_left;
        hi = o.cut_left + o.cut_w;
      }
      m.c0 = std::max(lo, 0);
      m.c1 = std::min(hi, g.W);
    }
    return m;
  }
};

// out[t] = src[map.src_col(t)] for the output columns with a source, 0 elsewhere, and the source
// value times 0 inside the cutout segment (NaN stays NaN, as the reference multiplies by the mask).
template <typename acc_t, typename Out, typename In>
DSA_INLINE void emit_row(Out* out, int64_t os, const In* in, int64_t is, const RowMap& m, bool cut) {
  const int W = m.W;
  auto put = [&](int t, acc_t v) { out[t * os] = static_cast<Out>(v); };
  auto get = [&](int t) { return static_cast<acc_t>(in[m.src_col(t) * is]); };
  for (int t = 0; t < m.t0; ++t) put(t, acc_t(0));
  if (os == 1 && is == 1) {
    if (m.flip) {
      const In* src = in + m.K;
      for (int t = m.t0; t < m.t1; ++t) out[t] = static_cast<Out>(static_cast<acc_t>(src[-t]));
    } else {
      const In* src = in + m.d;
      for (int t = m.t0; t < m.t1; ++t) out[t] = static_cast<Out>(static_cast<acc_t>(src[t]));
    }
  } else if (os == 1 && is == 0) {
    // A broadcast row (an expanded gradient, as y.sum().backward() passes): one value.
    const Out v = static_cast<Out>(static_cast<acc_t>(in[0]));
    for (int t = m.t0; t < m.t1; ++t) out[t] = v;
  } else {
    for (int t = m.t0; t < m.t1; ++t) put(t, get(t));
  }
  for (int t = m.t1; t < W; ++t) put(t, acc_t(0));
  if (cut) {
    const int lo = std::max(m.c0, m.t0), hi = std::min(m.c1, m.t1);
    for (int t = lo; t < hi; ++t) put(t, get(t) * acc_t(0));
  }
}

template <typename T>
DSA_INLINE void zero_row(T* out, int64_t os, int W) {
  for (int t = 0; t < W; ++t) out[t * os] = static_cast<T>(0);
}

// The element type a View or Plane stores.
template <typename V>
using dst_t = std::remove_const_t<std::remove_reference_t<decltype(*std::declval<V>().row(0, 0))>>;

// dst = src for one image: one memcpy when both are dense [C, H, W] blocks of one type.
template <typename Src, typename Dst>
void copy_image(const Src& x, const Dst& dst, int C, int H, int W) {
  const auto* in = x.row(0, 0);
  auto* out = dst.row(0, 0);
  const int64_t hw = int64_t(H) * W;
  const bool dense = x.col_stride() == 1 && dst.col_stride() == 1 && (H == 1 || (x.row(0, 1) - in == W && dst.row(0, 1) - out == W)) &&
                     (C == 1 || (x.row(1, 0) - in == hw && dst.row(1, 0) - out == hw));
  if constexpr (std::is_same_v<dst_t<Src>, dst_t<Dst>>) {
    if (dense) {
      std::memcpy(out, in, sizeof(*out) * C * hw);
      return;
    }
  }
  using T = dst_t<Dst>;
  const int64_t xs = x.col_stride(), ds = dst.col_stride();
  const bool dst_dense = ds == 1 && (H == 1 || dst.row(0, 1) - out == W);
  if (xs == 0 && (H == 1 || x.row(0, 1) == in) && dst_dense) {
    // Every row of a channel is one broadcast value (an expanded gradient, as y.sum().backward()
    // passes): one fill per channel.
    for (int c = 0; c < C; ++c) std::fill_n(dst.row(c, 0), hw, static_cast<T>(x.row(c, 0)[0]));
    return;
  }
  for (int c = 0; c < C; ++c) {
    for (int i = 0; i < H; ++i) {
      const auto* r = x.row(c, i);
      T* o = dst.row(c, i);
      if (xs == 0 && ds == 1) {  // a broadcast row (an expanded gradient)
        std::fill(o, o + W, static_cast<T>(r[0]));
        continue;
      }
      for (int j = 0; j < W; ++j) o[j * ds] = static_cast<T>(r[j * xs]);
    }
  }
}

// Sum of one image (all channels), in a fixed order whatever the layout: within each channel
// plane, element e = i W + j goes to partial sum e mod 16 while a whole group of 16 remains, the
// plane's last H W mod 16 elements to a running rest; the sixteen partial sums then add in a fixed
// tree. Independent partial sums vectorise without reassociation and hide the adds' latency; a
// dense plane (or rows of whole groups) takes that path, any other layout the same sums element
// by element.
template <typename acc_t, typename Src>
acc_t image_sum(const Src& x, int C, int H, int W) {
  constexpr int kLanes = 16;
  const int64_t s = x.col_stride(), n = int64_t(H) * W, full = n - n % kLanes;
  const bool planes = s == 1 && (H == 1 || x.row(0, 1) - x.row(0, 0) == W);
  const bool rows = s == 1 && W % kLanes == 0;  // each row starts a group and holds whole groups
  acc_t p[kLanes] = {};
  acc_t rest = 0;
  auto groups = [&](const auto* r, int64_t m) {
    for (int64_t j = 0; j < m; j += kLanes) {
      for (int k = 0; k < kLanes; ++k) p[k] += static_cast<acc_t>(r[j + k]);
    }
  };
  for (int c = 0; c < C; ++c) {
    if (planes) {
      const auto* r = x.row(c, 0);
      groups(r, full);
      for (int64_t e = full; e < n; ++e) rest += static_cast<acc_t>(r[e]);
      continue;
    }
    if (rows) {
      for (int i = 0; i < H; ++i) groups(x.row(c, i), W);
      continue;
    }
    int64_t e = 0;
    for (int i = 0; i < H; ++i) {
      const auto* r = x.row(c, i);
      for (int j = 0; j < W; ++j, ++e) {
        const acc_t v = static_cast<acc_t>(r[j * s]);
        if (e < full) {
          p[e % kLanes] += v;
        } else {
          rest += v;
        }
      }
    }
  }
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int k = 0; k < width; ++k) p[k] += p[k + width];
  }
  return p[0] + rest;
}

// dst = the crop/cutout/flip map m of src (no colour op), every channel.
template <typename acc_t, typename Src, typename Dst>
void map_image(const Src& x, const Dst& dst, const RowMap& m, int C) {
  const int H = m.H, W = m.W;
  const int64_t xs = x.col_stride(), ds = dst.col_stride();
  if (m.drow == 0 && !m.flip && m.d == 0) {
    // Only a cutout (or nothing): copy the image, then zero the box.
    copy_image(x, dst, C, H, W);
    using T = dst_t<Dst>;
    for (int i = m.r0 < 0 ? 0 : m.r0; i < H && i < m.r1; ++i) {
      for (int c = 0; c < C; ++c) {
        T* out = dst.row(c, i);
        const auto* in = x.row(c, i);
        if (ds == 1 && xs == 1) {
          for (int t = m.c0; t < m.c1; ++t) out[t] = static_cast<T>(static_cast<acc_t>(in[t]) * acc_t(0));
        } else if (ds == 1 && xs == 0) {
          std::fill(out + m.c0, out + std::max(m.c0, m.c1), static_cast<T>(static_cast<acc_t>(in[0]) * acc_t(0)));
        } else {
          for (int t = m.c0; t < m.c1; ++t) out[t * ds] = static_cast<T>(static_cast<acc_t>(in[t * xs]) * acc_t(0));
        }
      }
    }
    return;
  }
  for (int i = 0; i < H; ++i) {
    const int a = m.src_row(i);
    for (int c = 0; c < C; ++c) {
      if (a < 0) {
        zero_row(dst.row(c, i), ds, W);
      } else {
        emit_row<acc_t>(dst.row(c, i), ds, x.row(c, a), xs, m, m.cut_row(i));
      }
    }
  }
}

// True when every channel of the image is one contiguous run of H W elements (rows back to back).
template <typename V>
bool dense_planes(const V& v, int H, int W) {
  return v.col_stride() == 1 && (H == 1 || v.row(0, 1) - v.row(0, 0) == W);
}

// The colour ops on n pixels of three channel runs (r[c][k], k < n) into o[c][k]: per pixel the
// arithmetic of the channel loops below (shift, the channel mean ((v0 + v1) + v2) / 3,
// ColorMap::apply), all three channels in one loop that vectorises (kSat, kCon: cm.sat, cm.con).
template <bool kSat, bool kCon, typename acc_t, typename In, typename Out>
DSA_INLINE void colour_run3_as(const In* __restrict r0, const In* __restrict r1, const In* __restrict r2,
                               Out* __restrict o0, Out* __restrict o1, Out* __restrict o2, int64_t n,
                               const ColorMap<acc_t>& cm) {
  const acc_t shift = cm.shift, f = cm.f, k = cm.k, mu = cm.mu;
  for (int64_t j = 0; j < n; ++j) {
    acc_t v0 = static_cast<acc_t>(r0[j]) + shift, v1 = static_cast<acc_t>(r1[j]) + shift,
          v2 = static_cast<acc_t>(r2[j]) + shift;
    if constexpr (kSat) {
      const acc_t m = ((v0 + v1) + v2) / acc_t(3);
      v0 = (v0 - m) * f + m;
      v1 = (v1 - m) * f + m;
      v2 = (v2 - m) * f + m;
    }
    if constexpr (kCon) {
      v0 = (v0 - mu) * k + mu;
      v1 = (v1 - mu) * k + mu;
      v2 = (v2 - mu) * k + mu;
    }
    o0[j] = static_cast<Out>(v0);
    o1[j] = static_cast<Out>(v1);
    o2[j] = static_cast<Out>(v2);
  }
}

// mean[j] = the channel mean of C rows of W values back to back in buf, summed in channel order.
template <typename acc_t>
DSA_INLINE void channel_mean_row(const acc_t* buf, acc_t* mean, int C, int W) {
  for (int j = 0; j < W; ++j) mean[j] = buf[j];
  for (int c = 1; c < C; ++c) {
    for (int j = 0; j < W; ++j) mean[j] += buf[c * W + j];
  }
  for (int j = 0; j < W; ++j) mean[j] /= acc_t(C);
}

// f(std::bool_constant<sat>, std::bool_constant<con>): the colour loops compiled per pair of ops.
template <typename F>
DSA_INLINE void with_sat_con(bool sat, bool con, F&& f) {
  if (sat && con) {
    f(std::true_type{}, std::true_type{});
  } else if (sat) {
    f(std::true_type{}, std::false_type{});
  } else if (con) {
    f(std::false_type{}, std::true_type{});
  } else {
    f(std::false_type{}, std::false_type{});
  }
}

template <typename acc_t, typename In, typename Out>
void colour_run3(const In* r0, const In* r1, const In* r2, Out* o0, Out* o1, Out* o2, int64_t n,
                 const ColorMap<acc_t>& cm) {
  with_sat_con(cm.sat, cm.con, [&](auto sat, auto con) {
    colour_run3_as<decltype(sat)::value, decltype(con)::value>(r0, r1, r2, o0, o1, o2, n, cm);
  });
}

// The colour ops alone on dense planes, each plane as one run of n = H W pixels: the same
// per-pixel arithmetic as the row loop of pointwise_rows (shift, channel mean, ColorMap::apply),
// with loops long enough to amortise their set-up. mean: n acc_t.
template <typename acc_t, typename Src, typename Dst>
void colour_planes(const Src& x, const Dst& dst, int C, int n, const ColorMap<acc_t>& cm, acc_t* mean) {
  using Out = dst_t<Dst>;
  if (C == 3) {
    colour_run3(x.row(0, 0), x.row(1, 0), x.row(2, 0), dst.row(0, 0), dst.row(1, 0), dst.row(2, 0), n, cm);
    return;
  }
  if (cm.sat) {
    const auto* x0 = x.row(0, 0);
    for (int k = 0; k < n; ++k) mean[k] = static_cast<acc_t>(x0[k]) + cm.shift;
    for (int c = 1; c < C; ++c) {
      const auto* r = x.row(c, 0);
      for (int k = 0; k < n; ++k) mean[k] += static_cast<acc_t>(r[k]) + cm.shift;
    }
    for (int k = 0; k < n; ++k) mean[k] /= acc_t(C);
  }
  for (int c = 0; c < C; ++c) {
    const auto* r = x.row(c, 0);
    Out* out = dst.row(c, 0);
    for (int k = 0; k < n; ++k) out[k] = static_cast<Out>(cm.apply(static_cast<acc_t>(r[k]) + cm.shift, mean[k]));
  }
}

// Pointwise forward (colour, crop, cutout, flip), row by row, into dst. buf: (C + 1) W acc_t;
// scratch: H W acc_t or nullptr (then the colour-only case runs row by row too).
template <typename acc_t, typename Src, typename Dst>
void pointwise_rows(const Src& x, const Dst& dst, const ImageGeometry<acc_t>& g, const Omega<acc_t>& o,
                    acc_t* buf, acc_t* scratch = nullptr) {
  const int C = g.C, H = g.H, W = g.W;
  const RowMap m = RowMap::of(g, o, false);
  const bool colour = g.has(kBrightness) || g.has(kSaturation) || g.has(kContrast);
  acc_t mu = 0;
  if (g.has(kContrast)) {
    mu = image_sum<acc_t>(x, C, H, W) / acc_t(C * g.hw()) + (g.has(kBrightness) ? o.shift : acc_t(0));
  }
  const ColorMap<acc_t> cm = ColorMap<acc_t>::of(g, o, mu);
  const int64_t xs = x.col_stride(), ds = dst.col_stride();
  if (!colour) {
    map_image<acc_t>(x, dst, m, C);
    return;
  }
  const bool moved = m.drow != 0 || m.flip || m.d != 0 || g.has(kCutout);
  if (!moved && scratch != nullptr && dense_planes(x, H, W) && dense_planes(dst, H, W)) {
    colour_planes(x, dst, C, g.hw(), cm, scratch);
    return;
  }
  acc_t* mean = buf + C * W;
  for (int i = 0; i < H; ++i) {
    const int a = m.src_row(i);
    if (a < 0) {
      for (int c = 0; c < C; ++c) zero_row(dst.row(c, i), ds, W);
      continue;
    }
    const bool cut = m.cut_row(i);
    if (C == 3 && xs == 1) {
      colour_run3(x.row(0, a), x.row(1, a), x.row(2, a), buf, buf + W, buf + 2 * W, W, cm);
    } else {
      for (int c = 0; c < C; ++c) {
        const auto* r = x.row(c, a);
        acc_t* b = buf + c * W;
        if (xs == 1) {
          for (int j = 0; j < W; ++j) b[j] = static_cast<acc_t>(r[j]) + cm.shift;
        } else {
          for (int j = 0; j < W; ++j) b[j] = static_cast<acc_t>(r[j * xs]) + cm.shift;
        }
      }
      if (cm.sat) channel_mean_row(buf, mean, C, W);
      for (int c = 0; c < C; ++c) {
        acc_t* b = buf + c * W;
        for (int j = 0; j < W; ++j) b[j] = cm.apply(b[j], mean[j]);
      }
    }
    for (int c = 0; c < C; ++c) {
      emit_row<acc_t>(dst.row(c, i), ds, static_cast<const acc_t*>(buf + c * W), 1, m, cut);
    }
  }
}

// The transposed colour ops on n pixels of three channel runs (g[c][k]) into o[c][k]: per pixel the
// arithmetic of the channel loops below (the channel mean ((g0 + g1) + g2) / 3, then
// ColorTranspose::apply), all three channels in one loop that vectorises (kSat: ct.sat, kCon: ct.con).
template <bool kSat, bool kCon, typename acc_t, typename In, typename Out>
DSA_INLINE void colour_transpose_run3_as(const In* __restrict g0, const In* __restrict g1, const In* __restrict g2,
                                         Out* __restrict o0, Out* __restrict o1, Out* __restrict o2, int64_t n,
                                         const ColorTranspose<acc_t>& ct) {
  const acc_t a_g = ct.a_g, a_m = ct.a_m, a_G = ct.a_G;
  for (int64_t j = 0; j < n; ++j) {
    const acc_t v0 = static_cast<acc_t>(g0[j]), v1 = static_cast<acc_t>(g1[j]), v2 = static_cast<acc_t>(g2[j]);
    acc_t u0 = v0 * a_g, u1 = v1 * a_g, u2 = v2 * a_g;
    if constexpr (kSat) {
      const acc_t mc = ((v0 + v1) + v2) / acc_t(3);
      u0 += a_m * mc;
      u1 += a_m * mc;
      u2 += a_m * mc;
    }
    if constexpr (kCon) {
      u0 += a_G;
      u1 += a_G;
      u2 += a_G;
    }
    o0[j] = static_cast<Out>(u0);
    o1[j] = static_cast<Out>(u1);
    o2[j] = static_cast<Out>(u2);
  }
}

template <typename acc_t, typename In, typename Out>
void colour_transpose_run3(const In* g0, const In* g1, const In* g2, Out* o0, Out* o1, Out* o2, int64_t n,
                           const ColorTranspose<acc_t>& ct) {
  with_sat_con(ct.sat, ct.con, [&](auto sat, auto con) {
    colour_transpose_run3_as<decltype(sat)::value, decltype(con)::value>(g0, g1, g2, o0, o1, o2, n, ct);
  });
}

// The transposed colour ops alone on dense planes of n = H W pixels (ColorTranspose::apply, the
// channel mean summed in channel order). mean: n acc_t.
template <typename acc_t, typename Grad, typename Dst>
void colour_transpose_planes(const Grad& gw, const Dst& dx, int C, int n, const ColorTranspose<acc_t>& ct,
                             acc_t* mean) {
  using Out = dst_t<Dst>;
  if (C == 3) {
    colour_transpose_run3(gw.row(0, 0), gw.row(1, 0), gw.row(2, 0), dx.row(0, 0), dx.row(1, 0), dx.row(2, 0), n, ct);
    return;
  }
  if (ct.sat) {
    const auto* g0 = gw.row(0, 0);
    for (int k = 0; k < n; ++k) mean[k] = static_cast<acc_t>(g0[k]);
    for (int c = 1; c < C; ++c) {
      const auto* r = gw.row(c, 0);
      for (int k = 0; k < n; ++k) mean[k] += static_cast<acc_t>(r[k]);
    }
    for (int k = 0; k < n; ++k) mean[k] /= acc_t(C);
  }
  for (int c = 0; c < C; ++c) {
    const auto* r = gw.row(c, 0);
    Out* out = dx.row(c, 0);
    for (int k = 0; k < n; ++k) out[k] = static_cast<Out>(ct.apply(static_cast<acc_t>(r[k]), mean[k]));
  }
}

// Transposed pointwise ops, row by row: dx = colour^T(crop/cutout/flip^T(gw)). buf: (C + 1) W;
// scratch: H W acc_t or nullptr (then the colour-only case runs row by row too).
template <typename acc_t, typename Grad, typename Dst>
void pointwise_transpose_rows(const Grad& gw, const Dst& dx, const ImageGeometry<acc_t>& g, const Omega<acc_t>& o,
                              acc_t* buf, acc_t* scratch = nullptr) {
  const int C = g.C, H = g.H, W = g.W;
  const RowMap m = RowMap::of(g, o, true);
  const bool colour = g.has(kSaturation) || g.has(kContrast);
  const int64_t gs = gw.col_stride(), ds = dx.col_stride();
  const bool moved = m.drow != 0 || m.flip || m.d != 0 || g.has(kCutout);
  if (colour && !moved && scratch != nullptr && dense_planes(gw, H, W) && dense_planes(dx, H, W)) {
    const acc_t G = g.has(kContrast) ? image_sum<acc_t>(gw, C, H, W) / acc_t(C * g.hw()) : acc_t(0);
    colour_transpose_planes(gw, dx, C, g.hw(), ColorTranspose<acc_t>::of(g, o, G), scratch);
    return;
  }
  // The rows of the transposed crop/cutout/flip output, every channel, into buf.
  auto col_rows = [&](int a) {
    const int p = m.src_row(a);
    for (int c = 0; c < C; ++c) {
      if (p < 0) {
        zero_row(buf + c * W, 1, W);
      } else {
        emit_row<acc_t>(buf + c * W, 1, gw.row(c, p), gs, m, m.cut_row(a));
      }
    }
  };
  if (!colour) {
    map_image<acc_t>(gw, dx, m, C);
    return;
  }
  acc_t G = 0;
  if (g.has(kContrast)) {
    // The image mean of the transposed crop/cutout/flip output: a read-only pass.
    acc_t total = 0;
    for (int a = 0; a < H; ++a) {
      if (m.src_row(a) < 0) continue;
      col_rows(a);
      const Plane<acc_t> rows{buf, W, W};
      total += image_sum<acc_t>(rows, C, 1, W);
    }
    G = total / acc_t(C * g.hw());
  }
  const ColorTranspose<acc_t> ct = ColorTranspose<acc_t>::of(g, o, G);
  using dx_t = std::remove_reference_t<decltype(*dx.row(0, 0))>;
  acc_t* mean = buf + C * W;
  for (int a = 0; a < H; ++a) {
    col_rows(a);
    if (C == 3 && ds == 1) {
      colour_transpose_run3(buf, buf + W, buf + 2 * W, dx.row(0, a), dx.row(1, a), dx.row(2, a), W, ct);
      continue;
    }
    if (ct.sat) channel_mean_row(buf, mean, C, W);
    for (int c = 0; c < C; ++c) {
      dx_t* out = dx.row(c, a);
      const acc_t* b = buf + c * W;
      if (ds == 1) {
        for (int j = 0; j < W; ++j) out[j] = static_cast<dx_t>(ct.apply(b[j], mean[j]));
      } else {
        for (int j = 0; j < W; ++j) out[j * ds] = static_cast<dx_t>(ct.apply(b[j], mean[j]));
      }
    }
  }
}

// A zero-bordered [C, H + 3, W + 2] acc_t copy of an image: element (c, r, s) at
// c plane + (r + 1) Wp + s + 1 for rows r in [-1, H + 1] and columns s in [-1, W], zero outside the
// image. Every bilinear tap of a sample whose top-left tap (y0, x0) lies in [-1, H - 1] x [-1, W - 1]
// reads inside it, and reads 0 where the tap is outside the image; a sample with no tap in the
// image reads the 2 x 2 block at rows H, H + 1, columns -1, 0 (border only). So the resampling
// loops need no per-tap bounds test.
// NB: a tap outside the image then adds w * 0 = +0 instead of being skipped; adding +0 changes no
// sum (the skipping loop starts from +0 too), so results stay bit-identical to resample_pixel.
template <typename acc_t>
struct Padded {
  acc_t* data;
  int H, W;

  DSA_INLINE static int64_t size(int64_t C, int64_t H, int64_t W) { return C * (H + 3) * (W + 2); }
  DSA_INLINE int wp() const { return W + 2; }
  DSA_INLINE int plane() const { return (H + 3) * (W + 2); }
  DSA_INLINE int offset(int r, int s) const { return (r + 1) * wp() + s + 1; }
  // The image part, as a workspace plane (row stride W + 2).
  DSA_INLINE Plane<acc_t> interior() const { return Plane<acc_t>{data + offset(0, 0), plane(), wp()}; }

  void zero_border(int C) const {
    for (int c = 0; c < C; ++c) {
      acc_t* d = data + int64_t(c) * plane();
      std::fill(d, d + wp(), acc_t(0));
      for (int r = 0; r < H; ++r) {
        d[offset(r, -1)] = acc_t(0);
        d[offset(r, W)] = acc_t(0);
      }
      std::fill(d + offset(H, -1), d + plane(), acc_t(0));
    }
  }
  void zero_all(int C) const { std::fill(data, data + int64_t(C) * plane(), acc_t(0)); }
};

// The taps of every output pixel of one row, as a Padded offset of the top-left tap and the four
// weights (structure of arrays, read by the resampling loops once per channel).
// NB: two loops: the taps (Taps::at, float and int32 lanes) vectorise when the build allows
// if-conversion of float compares (-fno-trapping-math, setup.py); the offsets need an int32
// multiply, which baseline x86-64 lacks in vector form, so they get a scalar loop of their own.
template <typename acc_t>
struct RowTaps {
  int *idx, *y0;
  acc_t *w00, *w01, *w10, *w11, *X, *Y;

  DSA_INLINE static int64_t size(int64_t W) {
    return 6 * W + (2 * W * int64_t(sizeof(int)) + int64_t(sizeof(acc_t)) - 1) / int64_t(sizeof(acc_t));
  }
  static RowTaps at(acc_t* buf, int W) {
    int* ints = reinterpret_cast<int*>(buf + 6 * W);
    return RowTaps{ints, ints + W, buf, buf + W, buf + 2 * W, buf + 3 * W, buf + 4 * W, buf + 5 * W};
  }
  DSA_INLINE void fill(const Affine<acc_t>& A, const Padded<acc_t>& pad, int i) const {
    if (A.align_corners) {
      fill_as<true>(A, pad, i);
    } else {
      fill_as<false>(A, pad, i);
    }
  }
  template <bool kAlignCorners>
  DSA_INLINE void fill_as(const Affine<acc_t>& A, const Padded<acc_t>& pad, int i) const {
    const Affine<acc_t> a = A;  // a local copy: the stores below cannot alias its fields
    // The positions, then the taps: two loops that vectorise (one fused loop does not, with GCC 12).
    positions<kAlignCorners>(a, a.base, a.base[a.W + i], X, Y);
    taps(a.W, X, Y, idx, y0, w00, w01, w10, w11);
    for (int j = 0; j < a.W; ++j) {
      const int x = idx[j], y = y0[j];
      const bool near = (x >= -1) & (x < a.W) & (y >= -1) & (y < a.H);
      idx[j] = pad.offset(near ? y : a.H, near ? x : -1);
    }
  }
  template <bool kAlignCorners>
  DSA_INLINE static void positions(const Affine<acc_t>& a, const acc_t* __restrict base, acc_t yn,
                                   acc_t* __restrict X, acc_t* __restrict Y) {
    for (int j = 0; j < a.W; ++j) {
      X[j] = a.template x_as<kAlignCorners>(base[j], yn);
      Y[j] = a.template y_as<kAlignCorners>(base[j], yn);
    }
  }
  DSA_INLINE static void taps(int W, const acc_t* __restrict X, const acc_t* __restrict Y, int* __restrict x0,
                              int* __restrict y0, acc_t* __restrict w00, acc_t* __restrict w01,
                              acc_t* __restrict w10, acc_t* __restrict w11) {
    for (int j = 0; j < W; ++j) {
      const Taps<acc_t> p = Taps<acc_t>::at(X[j], Y[j]);
      x0[j] = p.x0;
      y0[j] = p.y0;
      w00[j] = p.weight(0, 0);
      w01[j] = p.weight(0, 1);
      w10[j] = p.weight(1, 0);
      w11[j] = p.weight(1, 1);
    }
  }
};

// dst = src for one image, src any View or Plane, dst a Padded interior (its border untouched).
template <typename Src, typename acc_t>
void copy_into(const Src& x, const Padded<acc_t>& pad, int C) {
  const Plane<acc_t> dst = pad.interior();
  const int64_t xs = x.col_stride();
  for (int c = 0; c < C; ++c) {
    for (int i = 0; i < pad.H; ++i) {
      const auto* r = x.row(c, i);
      acc_t* o = dst.row(c, i);
      if constexpr (std::is_same_v<std::remove_const_t<std::remove_reference_t<decltype(*r)>>, acc_t>) {
        if (xs == 1) {
          std::memcpy(o, r, sizeof(acc_t) * pad.W);
          continue;
        }
      }
      if (xs == 1) {
        for (int j = 0; j < pad.W; ++j) o[j] = static_cast<acc_t>(r[j]);
      } else {
        for (int j = 0; j < pad.W; ++j) o[j] = static_cast<acc_t>(r[j * xs]);
      }
    }
  }
}

// Where a resampling gets each row's taps: filled per row into one RowTaps (scratch), or read from
// a table of every row's taps filled once per call (TapPlan) when the batch shares ω.
template <typename acc_t>
struct TapRows {
  RowTaps<acc_t> scratch;
  const acc_t* planned;  // H rows of RowTaps::size(W) values, or nullptr
  int64_t stride;

  DSA_INLINE RowTaps<acc_t> row(const Affine<acc_t>& A, const Padded<acc_t>& pad, int i) const {
    if (planned == nullptr) {
      scratch.fill(A, pad, i);
      return scratch;
    }
    // NB: read only; RowTaps holds mutable pointers because fill writes through them.
    return RowTaps<acc_t>::at(const_cast<acc_t*>(planned) + i * stride, A.W);
  }
};

#if defined(__SSE2__)
// Four output pixels' bilinear sums from one channel plane p, their top-left taps at p + idx[0..3]:
// per lane ((q00 w00 + q01 w01) + q10 w10) + q11 w11, the scalar loop's products and sums in its
// order (mulps and addps round as mulss and addss do). Each pair of horizontal taps is one 8-byte
// load, then a 4x4 transpose: two loads per output value instead of four.
DSA_INLINE __m128 bilinear4(const float* p, const int* idx, int sp, __m128 w00, __m128 w01, __m128 w10,
                            __m128 w11) {
  auto pairs = [&](int off) {  // [q0 q1] of the four pixels, then the transpose to [q0 x4], [q1 x4]
    const __m128 t01 = _mm_loadh_pi(_mm_loadl_pi(_mm_setzero_ps(), reinterpret_cast<const __m64*>(p + idx[0] + off)),
                                    reinterpret_cast<const __m64*>(p + idx[1] + off));
    const __m128 t23 = _mm_loadh_pi(_mm_loadl_pi(_mm_setzero_ps(), reinterpret_cast<const __m64*>(p + idx[2] + off)),
                                    reinterpret_cast<const __m64*>(p + idx[3] + off));
    return std::make_pair(_mm_shuffle_ps(t01, t23, _MM_SHUFFLE(2, 0, 2, 0)), _mm_shuffle_ps(t01, t23, _MM_SHUFFLE(3, 1, 3, 1)));
  };
  const auto top = pairs(0), bottom = pairs(sp);
  __m128 r = _mm_add_ps(_mm_mul_ps(top.first, w00), _mm_mul_ps(top.second, w01));
  r = _mm_add_ps(r, _mm_mul_ps(bottom.first, w10));
  return _mm_add_ps(r, _mm_mul_ps(bottom.second, w11));
}
#endif

// Forward resampling of a Padded source into dst, row by row: the gather of resample_pixel (the
// same weights, the same sum order) with the row's taps ready. Channels innermost: a pixel's offset
// and weights are loaded once for all channels (kC: the channel count when known at compile time).
template <int kC, typename acc_t, typename Dst>
void resample_padded_as(const Padded<acc_t>& src, const Dst& dst, const Affine<acc_t>& A, int C,
                        const TapRows<acc_t>& rows) {
  using T = dst_t<Dst>;
  const int H = A.H, W = A.W, sp = src.wp(), plane = src.plane();
  const int n = kC > 0 ? kC : C;
  const int64_t ds = dst.col_stride();
  const int64_t dc = n > 1 ? dst.row(1, 0) - dst.row(0, 0) : 0;
  for (int i = 0; i < H; ++i) {
    const RowTaps<acc_t> t = rows.row(A, src, i);
    T* out = dst.row(0, i);
    int j = 0;
#if defined(__SSE2__)
    if constexpr (std::is_same_v<acc_t, float> && std::is_same_v<T, float>) {
      if (ds == 1) {
        for (; j + 4 <= W; j += 4) {
          const __m128 w00 = _mm_loadu_ps(t.w00 + j), w01 = _mm_loadu_ps(t.w01 + j);
          const __m128 w10 = _mm_loadu_ps(t.w10 + j), w11 = _mm_loadu_ps(t.w11 + j);
          for (int c = 0; c < n; ++c) {
            _mm_storeu_ps(out + c * dc + j, bilinear4(src.data + int64_t(c) * plane, t.idx + j, sp, w00, w01, w10, w11));
          }
        }
      }
    }
#endif
    for (; j < W; ++j) {
      const acc_t* q = src.data + t.idx[j];
      const acc_t w00 = t.w00[j], w01 = t.w01[j], w10 = t.w10[j], w11 = t.w11[j];
      T* o = out + j * ds;
      for (int c = 0; c < n; ++c, q += plane, o += dc) {
        *o = static_cast<T>(q[0] * w00 + q[1] * w01 + q[sp] * w10 + q[sp + 1] * w11);
      }
    }
  }
}

template <typename acc_t, typename Dst>
void resample_padded(const Padded<acc_t>& src, const Dst& dst, const Affine<acc_t>& A, int C, const TapRows<acc_t>& t) {
  if (C == 3) {
    resample_padded_as<3>(src, dst, A, C, t);
  } else {
    resample_padded_as<0>(src, dst, A, C, t);
  }
}

// Transposed resampling as an ordered scatter into a Padded accumulator (zeroed here): output pixel
// (i, j), in row-major order, adds g(c, i, j) * weight to each of its four taps. Per source pixel
// that is the sum of resample_transpose_pixel in the same order (row-major over the output pixels);
// the taps outside the image land in the border, which is discarded. One worker per image keeps
// it deterministic. Channels innermost, as resample_padded_as (each channel its own plane, so the
// order per element is unchanged).
template <int kC, typename acc_t, typename Grad>
void scatter_padded_as(const Grad& g, const Padded<acc_t>& dst, const Affine<acc_t>& A, int C,
                       const TapRows<acc_t>& rows) {
  const int H = A.H, W = A.W, sp = dst.wp(), plane = dst.plane();
  const int n = kC > 0 ? kC : C;
  const int64_t gs = g.col_stride();
  const int64_t gc = n > 1 ? g.row(1, 0) - g.row(0, 0) : 0;
  dst.zero_all(n);
  for (int i = 0; i < H; ++i) {
    const RowTaps<acc_t> t = rows.row(A, dst, i);
    const auto* in = g.row(0, i);
    for (int j = 0; j < W; ++j) {
      acc_t* q = dst.data + t.idx[j];
      const acc_t w00 = t.w00[j], w01 = t.w01[j], w10 = t.w10[j], w11 = t.w11[j];
      const auto* v = in + j * gs;
      for (int c = 0; c < n; ++c, q += plane, v += gc) {
        const acc_t x = static_cast<acc_t>(*v);
        q[0] += x * w00;
        q[1] += x * w01;
        q[sp] += x * w10;
        q[sp + 1] += x * w11;
      }
    }
  }
}

template <typename acc_t, typename Grad>
void scatter_padded(const Grad& g, const Padded<acc_t>& dst, const Affine<acc_t>& A, int C, const TapRows<acc_t>& t) {
  if (C == 3) {
    scatter_padded_as<3>(g, dst, A, C, t);
  } else {
    scatter_padded_as<0>(g, dst, A, C, t);
  }
}

// The transposed resampling as a gather, for a batch that shares ω: for each source pixel in
// row-major order, the output pixels whose taps reach it (their element offsets in the gradient
// read) and the weights, listed in row-major order of the output pixels (a CSR table). The gather
// then sums, per source pixel, from 0, the same products in the same order as scatter_padded_as:
// the same values, without the accumulator's zero fill and read-modify-writes.
template <typename acc_t>
struct GatherTable {
  std::vector<int32_t> start;   // H W + 1: source pixel p's entries are [start[p], start[p + 1])
  std::vector<int64_t> offset;  // the output pixel's offset i sh + j sw in the gradient read
  std::vector<acc_t> weight;

  // From the taps of every output row (a TapPlan table) and the strides (sh, sw) of the gradient
  // that will be read. pad: the Padded geometry the taps' offsets refer to.
  void build(const acc_t* rows, int64_t stride, const Padded<acc_t>& pad, int64_t sh, int64_t sw) {
    const int H = pad.H, W = pad.W, wp = pad.wp();
    start.assign(int64_t(H) * W + 1, 0);
    // Visits every tap inside the image, output pixels in row-major order, as f(source, i, j, w).
    auto taps = [&](auto&& f) {
      for (int i = 0; i < H; ++i) {
        const RowTaps<acc_t> t = RowTaps<acc_t>::at(const_cast<acc_t*>(rows) + i * stride, W);
        for (int j = 0; j < W; ++j) {
          // The top-left tap (r0, s0) from RowTaps::fill's offset and row: a pixel with no tap in
          // the image points at the border block (row H, column -1), which puts s0 beyond W.
          const int r0 = t.y0[j];
          if (r0 < -1 || r0 >= H) continue;
          const int s0 = t.idx[j] - (r0 + 1) * wp - 1;
          if (s0 < -1 || s0 >= W) continue;
          const acc_t w[4] = {t.w00[j], t.w01[j], t.w10[j], t.w11[j]};
          for (int k = 0; k < 4; ++k) {
            const int r = r0 + (k >> 1), c = s0 + (k & 1);
            if (r >= 0 && r < H && c >= 0 && c < W) f(r * W + c, i, j, w[k]);
          }
        }
      }
    };
    taps([&](int p, int, int, acc_t) { ++start[p + 1]; });
    for (int64_t p = 0; p < int64_t(H) * W; ++p) start[p + 1] += start[p];
    offset.resize(start.back());
    weight.resize(start.back());
    std::vector<int32_t> next(start.begin(), start.end() - 1);
    taps([&](int p, int i, int j, acc_t w) {
      const int32_t e = next[p]++;
      offset[e] = i * sh + j * sw;
      weight[e] = w;
    });
  }
};

// dst (a Padded interior; its border is not written) = the transposed resampling of g, by the
// gather of a GatherTable built for g's strides. Channels innermost.
template <int kC, typename acc_t, typename Grad>
void gather_padded_as(const Grad& g, const Padded<acc_t>& dst, int C, const GatherTable<acc_t>& table) {
  const int H = dst.H, W = dst.W, plane = dst.plane();
  const int n = kC > 0 ? kC : C;
  const auto* in = g.row(0, 0);
  const int64_t gc = n > 1 ? g.row(1, 0) - in : 0;
  const int32_t* start = table.start.data();
  const int64_t* offset = table.offset.data();
  const acc_t* weight = table.weight.data();
  constexpr int kN = kC > 0 ? kC : 1;
  for (int r = 0; r < H; ++r) {
    acc_t* out = dst.data + dst.offset(r, 0);
    for (int s = 0; s < W; ++s, ++start) {
      if constexpr (kC > 0) {
        acc_t a[kN] = {};
        for (int32_t e = start[0]; e < start[1]; ++e) {
          const auto* v = in + offset[e];
          for (int c = 0; c < kN; ++c) a[c] += static_cast<acc_t>(v[c * gc]) * weight[e];
        }
        for (int c = 0; c < kN; ++c) out[c * plane + s] = a[c];
      } else {
        for (int c = 0; c < n; ++c) {
          acc_t a = 0;
          for (int32_t e = start[0]; e < start[1]; ++e) a += static_cast<acc_t>(in[offset[e] + c * gc]) * weight[e];
          out[c * plane + s] = a;
        }
      }
    }
  }
}

template <typename acc_t, typename Grad>
void gather_padded(const Grad& g, const Padded<acc_t>& dst, int C, const GatherTable<acc_t>& table) {
  if (C == 3) {
    gather_padded_as<3>(g, dst, C, table);
  } else {
    gather_padded_as<0>(g, dst, C, table);
  }
}

// One worker's workspace, in acc_t values: two Padded images, the base table, a row buffer of
// (C + 1) W values and one row of taps.
struct CpuWorkspace {
  int64_t pad, base, rowbuf, taps, total;

  template <typename acc_t>
  static CpuWorkspace of(int64_t C, int64_t H, int64_t W) {
    CpuWorkspace w;
    w.pad = Padded<acc_t>::size(C, H, W);
    w.base = 2 * w.pad;
    w.rowbuf = w.base + H + W;
    w.taps = w.rowbuf + (C + 1) * W;
    w.total = w.taps + RowTaps<acc_t>::size(W);
    return w;
  }
};

template <typename acc_t>
int64_t cpu_workspace_size(int64_t C, int64_t H, int64_t W) {
  return CpuWorkspace::of<acc_t>(C, H, W).total;
}

// The taps of both resamplings for every row, filled once per call when the whole batch shares
// one ω (a Siamese draw): every image then reads them instead of recomputing them. Used for
// images of at most kMaxPlannedPixels pixels, which bounds the table (per-row taps above that).
constexpr int64_t kMaxPlannedPixels = 128 * 128;

template <typename acc_t>
struct TapPlan {
  const acc_t* scale = nullptr;   // H rows of RowTaps::size(W) values, or nullptr
  const acc_t* rotate = nullptr;
  int64_t stride = 0;

  static bool wanted(int64_t H, int64_t W) { return H * W <= kMaxPlannedPixels; }
  // acc_t values of the table: both resamplings' rows and a base table.
  static int64_t size(int64_t H, int64_t W) { return 2 * H * RowTaps<acc_t>::size(W) + H + W; }

  // Fills the table for the call's geometry restricted to ω's active ops (what forward_image and
  // backward_image use for every image of the call).
  static TapPlan build(const ImageGeometry<acc_t>& call, const Omega<acc_t>& o, acc_t* storage) {
    const ImageGeometry<acc_t> g = call.for_sample(o);
    TapPlan p;
    p.stride = RowTaps<acc_t>::size(g.W);
    acc_t* rows = storage;
    const acc_t* base = fill_base_table_at(SerialExec{}, storage + 2 * g.H * p.stride, g);
    const Padded<acc_t> pad{nullptr, g.H, g.W};  // only its offsets are read
    auto fill = [&](const Affine<acc_t>& A, acc_t* table) {
      for (int i = 0; i < g.H; ++i) RowTaps<acc_t>::at(table + i * p.stride, g.W).fill(A, pad, i);
      return table;
    };
    if (g.has(kScale)) p.scale = fill(g.scale(o, base), rows);
    if (g.has(kRotate)) p.rotate = fill(g.rotate(o, base), rows + g.H * p.stride);
    return p;
  }
};

// Batches smaller than this keep the scatter: building the gather tables costs about two images'
// scatters (32x32, both resamplings), and each image then saves about half of one.
constexpr int64_t kMinGatherBatch = 5;

// The transposed resamplings of a call whose batch shares ω, as gathers (GatherTable), for a
// gradient with row and column strides (sh, sw): the first transposed resampling reads it; the
// second (scale, after rotate) reads the first's Padded output.
template <typename acc_t>
struct GatherPlan {
  GatherTable<acc_t> scale, rotate;

  void build(const ImageGeometry<acc_t>& call, const Omega<acc_t>& o, const TapPlan<acc_t>& taps, int64_t sh,
             int64_t sw) {
    const ImageGeometry<acc_t> g = call.for_sample(o);
    const Padded<acc_t> pad{nullptr, g.H, g.W};
    if (g.has(kRotate)) rotate.build(taps.rotate, taps.stride, pad, sh, sw);
    if (g.has(kScale)) {
      const bool after_rotate = g.has(kRotate);
      scale.build(taps.scale, taps.stride, pad, after_rotate ? pad.wp() : sh, after_rotate ? 1 : sw);
    }
  }
};

// y = fused forward of x for one image. ws: cpu_workspace_size(C, H, W) acc_t. plan: the taps of
// ω's resamplings (TapPlan::build of this call and ω), or nullptr to fill them row by row.
template <typename acc_t, typename Src, typename Dst>
void forward_image(const Src& x, const Dst& y, const ImageGeometry<acc_t>& call, const Omega<acc_t>& o, acc_t* ws,
                   const TapPlan<acc_t>* plan = nullptr) {
  const ImageGeometry<acc_t> g = call.for_sample(o);
  const CpuWorkspace L = CpuWorkspace::of<acc_t>(g.C, g.H, g.W);
  acc_t* rowbuf = ws + L.rowbuf;
  const bool scale = g.has(kScale), rotate = g.has(kRotate);
  const bool pointwise = (g.flags & ~int64_t(kScale | kRotate)) != 0;
  if (!scale && !rotate) {
    pointwise_rows(x, y, g, o, rowbuf, /*scratch=*/ws);  // the resampling planes are free
    return;
  }
  const acc_t* base = fill_base_table_at(SerialExec{}, ws + L.base, g);
  const RowTaps<acc_t> taps = RowTaps<acc_t>::at(ws + L.taps, g.W);
  const TapRows<acc_t> scale_rows{taps, plan ? plan->scale : nullptr, plan ? plan->stride : 0};
  const TapRows<acc_t> rotate_rows{taps, plan ? plan->rotate : nullptr, plan ? plan->stride : 0};
  const Padded<acc_t> w{ws, g.H, g.W}, z{ws + L.pad, g.H, g.W};
  w.zero_border(g.C);
  if (pointwise) {
    pointwise_rows(x, w.interior(), g, o, rowbuf);
  } else {
    copy_into(x, w, g.C);
  }
  if (scale && rotate) {
    z.zero_border(g.C);
    resample_padded(w, z.interior(), g.scale(o, base), g.C, scale_rows);
    resample_padded(z, y, g.rotate(o, base), g.C, rotate_rows);
  } else if (scale) {
    resample_padded(w, y, g.scale(o, base), g.C, scale_rows);
  } else {
    resample_padded(w, y, g.rotate(o, base), g.C, rotate_rows);
  }
}

// dx = transposed fused map applied to dy, for one image. ws: cpu_workspace_size(C, H, W); plan:
// as forward_image; gather: the transposed resamplings as gathers (GatherPlan::build of this call,
// ω and dy's strides), or nullptr for the ordered scatter.
template <typename acc_t, typename Grad, typename Dst>
void backward_image(const Grad& dy, const Dst& dx, const ImageGeometry<acc_t>& call, const Omega<acc_t>& o,
                    acc_t* ws, const TapPlan<acc_t>* plan = nullptr, const GatherPlan<acc_t>* gather = nullptr) {
  const ImageGeometry<acc_t> g = call.for_sample(o);
  const CpuWorkspace L = CpuWorkspace::of<acc_t>(g.C, g.H, g.W);
  acc_t* rowbuf = ws + L.rowbuf;
  const bool scale = g.has(kScale), rotate = g.has(kRotate);
  const bool pointwise = (g.flags & ~int64_t(kScale | kRotate)) != 0;
  if (!scale && !rotate) {
    pointwise_transpose_rows(dy, dx, g, o, rowbuf, /*scratch=*/ws);  // the resampling planes are free
    return;
  }
  const acc_t* base = fill_base_table_at(SerialExec{}, ws + L.base, g);
  const RowTaps<acc_t> taps = RowTaps<acc_t>::at(ws + L.taps, g.W);
  const TapRows<acc_t> scale_rows{taps, plan ? plan->scale : nullptr, plan ? plan->stride : 0};
  const TapRows<acc_t> rotate_rows{taps, plan ? plan->rotate : nullptr, plan ? plan->stride : 0};
  const Padded<acc_t> p0{ws, g.H, g.W}, p1{ws + L.pad, g.H, g.W};
  if (gather != nullptr) {
    gather_padded(dy, p0, g.C, rotate ? gather->rotate : gather->scale);
  } else if (rotate) {
    scatter_padded(dy, p0, g.rotate(o, base), g.C, rotate_rows);
  } else {
    scatter_padded(dy, p0, g.scale(o, base), g.C, scale_rows);
  }
  Padded<acc_t> last = p0;
  if (scale && rotate) {
    if (gather != nullptr) {
      gather_padded(p0.interior(), p1, g.C, gather->scale);
    } else {
      scatter_padded(p0.interior(), p1, g.scale(o, base), g.C, scale_rows);
    }
    last = p1;
  }
  if (pointwise) {
    pointwise_transpose_rows(last.interior(), dx, g, o, rowbuf);
  } else {
    copy_image(last.interior(), dx, g.C, g.H, g.W);
  }
}

}  // namespace cpu
}  // namespace dsa_fast
