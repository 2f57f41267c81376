// The pointwise part of the CPU executor's per-image program (cpu/image_cpu.h), row by row: a
// crop/flip is a shifted or reversed row copy, a cutout a zeroed segment, the colour ops plain
// loops over contiguous rows (they vectorise; three channels in one loop), or over whole planes
// when nothing moves the pixels; no pass at all for ops that are absent. The per-pixel formulas are
// those of kernels/augment.h (ColorMap, ColorTranspose).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

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

}  // namespace cpu
}  // namespace dsa_fast
