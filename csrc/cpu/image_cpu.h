// The fused DSA program for ONE image, laid out for a CPU worker that owns the whole image.
//
// Same transform as augment_image / augment_backward_image (kernels/augment.h), with the same
// per-pixel formulas (ColorMap, ColorTranspose, Taps, Affine, base_coordinate), but loops shaped
// for one core instead of a thread block:
// - pointwise ops run row by row: a crop/flip is a shifted or reversed row copy, a cutout a zeroed
//   segment, the colour ops plain loops over contiguous rows (they vectorise); no pass at all for
//   ops that are absent;
// - a resampling reads x directly when no pointwise op precedes it;
// - the transposed resampling is an ordered scatter: every output pixel, in row-major order, adds
//   its tap contributions to the four source pixels. That is the same sum in the same order as the
//   gather of resample_transpose_pixel (which visits the contributing output pixels in row-major
//   order too), without searching a candidate box per source pixel; one worker per image keeps it
//   deterministic.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <type_traits>

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
  for (int c = 0; c < C; ++c) {
    for (int i = 0; i < H; ++i) {
      const auto* r = x.row(c, i);
      T* o = dst.row(c, i);
      for (int j = 0; j < W; ++j) o[j * ds] = static_cast<T>(r[j * xs]);
    }
  }
}

// Sum of one image (all channels), in a fixed order: rows in order, four partial sums per row.
template <typename acc_t, typename Src>
acc_t image_sum(const Src& x, int C, int H, int W) {
  acc_t total = 0;
  const int64_t s = x.col_stride();
  for (int c = 0; c < C; ++c) {
    for (int i = 0; i < H; ++i) {
      const auto* r = x.row(c, i);
      acc_t p[4] = {0, 0, 0, 0};
      int j = 0;
      if (s == 1) {
        for (; j + 4 <= W; j += 4) {
          for (int k = 0; k < 4; ++k) p[k] += static_cast<acc_t>(r[j + k]);
        }
      } else {
        for (; j + 4 <= W; j += 4) {
          for (int k = 0; k < 4; ++k) p[k] += static_cast<acc_t>(r[(j + k) * s]);
        }
      }
      for (; j < W; ++j) p[0] += static_cast<acc_t>(r[j * s]);
      total += (p[0] + p[1]) + (p[2] + p[3]);
    }
  }
  return total;
}

// dst = the crop/cutout/flip map m of src (no colour op), every channel.
template <typename acc_t, typename Src, typename Dst>
void map_image(const Src& x, const Dst& dst, const RowMap& m, int C) {
  const int H = m.H, W = m.W;
  const int64_t xs = x.col_stride(), ds = dst.col_stride();
  if (m.drow == 0 && !m.flip && m.d == 0) {
    // Only a cutout (or nothing): copy the image, then zero the box.
    copy_image(x, dst, C, H, W);
    for (int i = m.r0 < 0 ? 0 : m.r0; i < H && i < m.r1; ++i) {
      for (int c = 0; c < C; ++c) {
        auto* out = dst.row(c, i);
        const auto* in = x.row(c, i);
        for (int t = m.c0; t < m.c1; ++t) out[t * ds] = static_cast<dst_t<Dst>>(static_cast<acc_t>(in[t * xs]) * acc_t(0));
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

// Pointwise forward (colour, crop, cutout, flip), row by row, into dst. buf: (C + 1) W acc_t.
template <typename acc_t, typename Src, typename Dst>
void pointwise_rows(const Src& x, const Dst& dst, const ImageGeometry<acc_t>& g, const Omega<acc_t>& o,
                    acc_t* buf) {
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
  acc_t* mean = buf + C * W;
  for (int i = 0; i < H; ++i) {
    const int a = m.src_row(i);
    if (a < 0) {
      for (int c = 0; c < C; ++c) zero_row(dst.row(c, i), ds, W);
      continue;
    }
    const bool cut = m.cut_row(i);
    for (int c = 0; c < C; ++c) {
      const auto* r = x.row(c, a);
      acc_t* b = buf + c * W;
      if (xs == 1) {
        for (int j = 0; j < W; ++j) b[j] = static_cast<acc_t>(r[j]) + cm.shift;
      } else {
        for (int j = 0; j < W; ++j) b[j] = static_cast<acc_t>(r[j * xs]) + cm.shift;
      }
    }
    if (cm.sat) {
      for (int j = 0; j < W; ++j) mean[j] = buf[j];
      for (int c = 1; c < C; ++c) {
        for (int j = 0; j < W; ++j) mean[j] += buf[c * W + j];
      }
      for (int j = 0; j < W; ++j) mean[j] /= acc_t(C);
    }
    for (int c = 0; c < C; ++c) {
      acc_t* b = buf + c * W;
      for (int j = 0; j < W; ++j) b[j] = cm.apply(b[j], mean[j]);
      emit_row<acc_t>(dst.row(c, i), ds, static_cast<const acc_t*>(b), 1, m, cut);
    }
  }
}

// Transposed pointwise ops, row by row: dx = colour^T(crop/cutout/flip^T(gw)). buf: (C + 1) W.
template <typename acc_t, typename Grad, typename Dst>
void pointwise_transpose_rows(const Grad& gw, const Dst& dx, const ImageGeometry<acc_t>& g, const Omega<acc_t>& o,
                              acc_t* buf) {
  const int C = g.C, H = g.H, W = g.W;
  const RowMap m = RowMap::of(g, o, true);
  const bool colour = g.has(kSaturation) || g.has(kContrast);
  const int64_t gs = gw.col_stride(), ds = dx.col_stride();
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
    if (ct.sat) {
      for (int j = 0; j < W; ++j) mean[j] = buf[j];
      for (int c = 1; c < C; ++c) {
        for (int j = 0; j < W; ++j) mean[j] += buf[c * W + j];
      }
      for (int j = 0; j < W; ++j) mean[j] /= acc_t(C);
    }
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

// The taps of every output pixel of row i (a loop of its own, so it vectorises apart from the
// memory-bound loops that use them).
template <typename acc_t>
DSA_INLINE void row_taps(const Affine<acc_t>& A, int i, Taps<acc_t>* taps) {
  for (int j = 0; j < A.W; ++j) taps[j] = A.taps(i, j);
}

// Forward resampling in row-major order (the body of resample_pixel, with the row's taps ready).
template <typename acc_t, typename Src, typename Dst>
void resample_rows(const Src& src, const Dst& dst, const Affine<acc_t>& A, int C, Taps<acc_t>* taps) {
  const int H = A.H, W = A.W;
  const auto si = src.step_i(), sj = src.step_j();
  for (int i = 0; i < H; ++i) {
    row_taps(A, i, taps);
    for (int j = 0; j < W; ++j) {
      const Taps<acc_t>& p = taps[j];
      const bool x0in = p.col_in(0, W), x1in = p.col_in(1, W);
      const bool y0in = p.row_in(0, H), y1in = p.row_in(1, H);
      const acc_t w00 = p.weight(0, 0), w01 = p.weight(0, 1), w10 = p.weight(1, 0), w11 = p.weight(1, 1);
      const auto o00 = src.pixel(p.y0, p.x0);
      const auto out = dst.pixel(i, j);
      if (x0in && x1in && y0in && y1in) {
        for (int c = 0; c < C; ++c) {
          dst.store(out, c, src.load(o00, c) * w00 + src.load(o00 + sj, c) * w01 + src.load(o00 + si, c) * w10 +
                                src.load(o00 + si + sj, c) * w11);
        }
        continue;
      }
      for (int c = 0; c < C; ++c) {
        acc_t v = 0;
        if (y0in && x0in) v += src.load(o00, c) * w00;
        if (y0in && x1in) v += src.load(o00 + sj, c) * w01;
        if (y1in && x0in) v += src.load(o00 + si, c) * w10;
        if (y1in && x1in) v += src.load(o00 + si + sj, c) * w11;
        dst.store(out, c, v);
      }
    }
  }
}

// Transposed resampling as an ordered scatter into dst (an acc_t image, zeroed here): output pixel
// (i, j), in row-major order, adds g(c, i, j) * weight to each of its taps inside the image.
template <typename acc_t, typename Grad, typename Acc>
void resample_transpose_scatter(const Grad& g, const Acc& dst, const Affine<acc_t>& A, int C, Taps<acc_t>* taps) {
  const int H = A.H, W = A.W;
  const int64_t ds = dst.col_stride();
  for (int c = 0; c < C; ++c) {
    for (int i = 0; i < H; ++i) zero_row(dst.row(c, i), ds, W);
  }
  const auto si = dst.step_i(), sj = dst.step_j();
  for (int i = 0; i < H; ++i) {
    row_taps(A, i, taps);
    for (int j = 0; j < W; ++j) {
      const Taps<acc_t>& p = taps[j];
      const bool x0in = p.col_in(0, W), x1in = p.col_in(1, W);
      const bool y0in = p.row_in(0, H), y1in = p.row_in(1, H);
      if (!((x0in || x1in) && (y0in || y1in))) continue;
      const acc_t w00 = p.weight(0, 0), w01 = p.weight(0, 1), w10 = p.weight(1, 0), w11 = p.weight(1, 1);
      const auto in = g.pixel(i, j);
      const auto o00 = dst.pixel(p.y0, p.x0);
      if (x0in && x1in && y0in && y1in) {
        for (int c = 0; c < C; ++c) {
          const acc_t v = g.load(in, c);
          dst.store(o00, c, dst.load(o00, c) + v * w00);
          dst.store(o00 + sj, c, dst.load(o00 + sj, c) + v * w01);
          dst.store(o00 + si, c, dst.load(o00 + si, c) + v * w10);
          dst.store(o00 + si + sj, c, dst.load(o00 + si + sj, c) + v * w11);
        }
        continue;
      }
      for (int c = 0; c < C; ++c) {
        const acc_t v = g.load(in, c);
        if (y0in && x0in) dst.store(o00, c, dst.load(o00, c) + v * w00);
        if (y0in && x1in) dst.store(o00 + sj, c, dst.load(o00 + sj, c) + v * w01);
        if (y1in && x0in) dst.store(o00 + si, c, dst.load(o00 + si, c) + v * w10);
        if (y1in && x1in) dst.store(o00 + si + sj, c, dst.load(o00 + si + sj, c) + v * w11);
      }
    }
  }
}

// acc_t values of workspace one worker needs: two [C, H, W] planes and the base table
// (workspace_size), a row buffer of (C + 1) W values, and one row of taps.
template <typename acc_t>
int64_t cpu_workspace_size(int64_t C, int64_t H, int64_t W) {
  return workspace_size(C, H, W) + (C + 1) * W + (W * int64_t(sizeof(Taps<acc_t>)) + int64_t(sizeof(acc_t)) - 1) / int64_t(sizeof(acc_t));
}

template <typename acc_t>
Taps<acc_t>* taps_buffer(acc_t* ws, const ImageGeometry<acc_t>& g) {
  return reinterpret_cast<Taps<acc_t>*>(ws + workspace_size(g.C, g.H, g.W) + (g.C + 1) * g.W);
}

// y = fused forward of x for one image. ws: cpu_workspace_size(C, H, W) acc_t.
template <typename acc_t, typename Src, typename Dst>
void forward_image(const Src& x, const Dst& y, const ImageGeometry<acc_t>& call, const Omega<acc_t>& o, acc_t* ws) {
  const ImageGeometry<acc_t> g = call.for_sample(o);
  acc_t* rowbuf = ws + workspace_size(g.C, g.H, g.W);
  const bool scale = g.has(kScale), rotate = g.has(kRotate);
  const bool pointwise = (g.flags & ~int64_t(kScale | kRotate)) != 0;
  if (!scale && !rotate) {
    pointwise_rows(x, y, g, o, rowbuf);
    return;
  }
  const SerialExec ex;
  const acc_t* base = fill_base_table(ex, ws, g);
  Taps<acc_t>* taps = taps_buffer(ws, g);
  const Plane<acc_t> w = plane(ws, g), z = plane(ws + g.C * g.hw(), g);
  auto geometric = [&](const auto& src) {
    if (scale && rotate) {
      resample_rows(src, z, g.scale(o, base), g.C, taps);
      resample_rows(z, y, g.rotate(o, base), g.C, taps);
    } else {
      resample_rows(src, y, scale ? g.scale(o, base) : g.rotate(o, base), g.C, taps);
    }
  };
  if (pointwise) {
    pointwise_rows(x, w, g, o, rowbuf);
    geometric(w);
  } else {
    geometric(x);
  }
}

// dx = transposed fused map applied to dy, for one image. ws: cpu_workspace_size(C, H, W).
template <typename acc_t, typename Grad, typename Dst>
void backward_image(const Grad& dy, const Dst& dx, const ImageGeometry<acc_t>& call, const Omega<acc_t>& o,
                    acc_t* ws) {
  const ImageGeometry<acc_t> g = call.for_sample(o);
  acc_t* rowbuf = ws + workspace_size(g.C, g.H, g.W);
  const bool scale = g.has(kScale), rotate = g.has(kRotate);
  const bool pointwise = (g.flags & ~int64_t(kScale | kRotate)) != 0;
  if (!scale && !rotate) {
    pointwise_transpose_rows(dy, dx, g, o, rowbuf);
    return;
  }
  const SerialExec ex;
  const acc_t* base = fill_base_table(ex, ws, g);
  Taps<acc_t>* taps = taps_buffer(ws, g);
  const Plane<acc_t> p0 = plane(ws, g), p1 = plane(ws + g.C * g.hw(), g);
  using dx_t = std::remove_const_t<std::remove_reference_t<decltype(*dx.row(0, 0))>>;
  // Without pointwise ops the last scatter may write dx itself when dx holds acc_t.
  constexpr bool direct_ok = std::is_same_v<dx_t, acc_t>;
  const Affine<acc_t> first = rotate ? g.rotate(o, base) : g.scale(o, base);
  if (scale && rotate) {
    resample_transpose_scatter(dy, p0, first, g.C, taps);
    if constexpr (direct_ok) {
      if (!pointwise) {
        resample_transpose_scatter(p0, dx, g.scale(o, base), g.C, taps);
        return;
      }
    }
    resample_transpose_scatter(p0, p1, g.scale(o, base), g.C, taps);
    pointwise_transpose_rows(p1, dx, g, o, rowbuf);
    return;
  }
  if constexpr (direct_ok) {
    if (!pointwise) {
      resample_transpose_scatter(dy, dx, first, g.C, taps);
      return;
    }
  }
  resample_transpose_scatter(dy, p0, first, g.C, taps);
  pointwise_transpose_rows(p0, dx, g, o, rowbuf);
}

}  // namespace cpu
}  // namespace dsa_fast
