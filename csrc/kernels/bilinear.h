// Bilinear resampling with zero fill at an affine grid: the only copy of this math (sample
// positions, taps, weights), used by the CPU and the CUDA kernels. Forward: a gather. Backward, the
// transposed map: on CUDA also a gather (resample_transpose_pixel), deterministic without atomics;
// on the CPU an ordered scatter, or a gather over a per-call table, with the same weights in the
// same order (cpu/image_cpu.h).
//
// Conventions are torch's affine_grid + grid_sample (mode='bilinear', padding_mode='zeros'):
// output pixel (i, j) (row, column) has normalised base coordinates (xn(j), yn(i)); theta maps
// them to (gx, gy) = (t00 xn + t01 yn, t10 xn + t11 yn) (DSA's thetas have no translation), and
// grid_sample unnormalises those to a source location (X, Y) in pixels, X along the width.
//   align_corners=false: xn(j) = (2j + 1) / W - 1,   X = ((gx + 1) W - 1) / 2
//   align_corners=true:  xn(j) = 2j / (W - 1) - 1,   X = (gx + 1) (W - 1) / 2
// (xn = 0 when W == 1, as affine_grid has it).
#pragma once

#include <cmath>

#include "macros.h"

namespace dsa_fast {

// One [C, H, W] image with element strides (an input or output tensor); T may be const. Element
// (c, i, j) lives at pixel(i, j) + c * sc; load/store convert to/from acc_t.
template <typename T, typename acc_t>
struct View {
  T* data;
  int64_t sc, sh, sw;
  DSA_HOST_DEVICE DSA_INLINE int64_t pixel(int i, int j) const { return i * sh + j * sw; }
  DSA_HOST_DEVICE DSA_INLINE int64_t step_i() const { return sh; }
  DSA_HOST_DEVICE DSA_INLINE int64_t step_j() const { return sw; }
  DSA_HOST_DEVICE DSA_INLINE acc_t load(int64_t pix, int c) const { return static_cast<acc_t>(data[pix + c * sc]); }
  DSA_HOST_DEVICE DSA_INLINE void store(int64_t pix, int c, acc_t v) const { data[pix + c * sc] = static_cast<T>(v); }
  // Row access for row-wise loops: element (c, i, j) is row(c, i)[j * col_stride()].
  DSA_HOST_DEVICE DSA_INLINE T* row(int c, int i) const { return data + c * sc + i * sh; }
  DSA_HOST_DEVICE DSA_INLINE int64_t col_stride() const { return sw; }
};

// A workspace image: [C, H, W] contiguous acc_t, with 32-bit offsets.
template <typename acc_t>
struct Plane {
  acc_t* data;
  int hw, w;
  DSA_HOST_DEVICE DSA_INLINE int pixel(int i, int j) const { return i * w + j; }
  DSA_HOST_DEVICE DSA_INLINE int step_i() const { return w; }
  DSA_HOST_DEVICE DSA_INLINE int step_j() const { return 1; }
  DSA_HOST_DEVICE DSA_INLINE acc_t load(int pix, int c) const { return data[pix + c * hw]; }
  DSA_HOST_DEVICE DSA_INLINE void store(int pix, int c, acc_t v) const { data[pix + c * hw] = v; }
  DSA_HOST_DEVICE DSA_INLINE acc_t* row(int c, int i) const { return data + c * hw + i * w; }
  DSA_HOST_DEVICE DSA_INLINE int64_t col_stride() const { return 1; }
};

// floor() of the argument clamped to +-2^30, a NaN taken as -2^30, so that the result always
// converts to int (on every executor alike): beyond 2^30 every position lies outside any image
// (C H W < 2^30), where the clamped value selects the same (absent) taps; a NaN position likewise
// has no tap inside the image (docs/semantics.md §6). On the host without a libm call (baseline
// x86-64 has no rounding instruction) and without a branch: a 32-bit conversion, which vectorises.
template <typename T>
DSA_HOST_DEVICE DSA_INLINE T floor_fast(T v) {
  constexpr T kLimit = T(1 << 30);
  const T c = v >= -kLimit ? (v > kLimit ? kLimit : v) : -kLimit;  // NB: NaN fails >=
#ifdef __CUDA_ARCH__
  return ::floor(c);
#else
  const T t = static_cast<T>(static_cast<int>(c));
  return t - static_cast<T>(t > c);
#endif
}

// The four taps of a bilinear sample at (X, Y): columns x0, x0 + 1 with weights wx0, wx1, rows
// y0, y0 + 1 with weights wy0, wy1. A tap's weight is wx * wy, as grid_sample forms it.
template <typename acc_t>
struct Taps {
  int x0, y0;
  acc_t wx0, wx1, wy0, wy1;

  DSA_HOST_DEVICE DSA_INLINE static Taps at(acc_t X, acc_t Y) {
    Taps t;
    const acc_t fx = floor_fast(X), fy = floor_fast(Y);
    t.x0 = static_cast<int>(fx);
    t.y0 = static_cast<int>(fy);
    t.wx1 = X - fx;
    t.wx0 = acc_t(1) - t.wx1;
    t.wy1 = Y - fy;
    t.wy0 = acc_t(1) - t.wy1;
    return t;
  }
  // Weight of the tap at row y0 + dy, column x0 + dx (dy, dx in {0, 1}).
  DSA_HOST_DEVICE DSA_INLINE acc_t weight(int dy, int dx) const { return (dx ? wx1 : wx0) * (dy ? wy1 : wy0); }
  DSA_HOST_DEVICE DSA_INLINE bool col_in(int dx, int W) const { return x0 + dx >= 0 && x0 + dx < W; }
  DSA_HOST_DEVICE DSA_INLINE bool row_in(int dy, int H) const { return y0 + dy >= 0 && y0 + dy < H; }
};

// Normalised base coordinates of every column and row (affine_grid's base grid), computed once
// per image into a table of W + H values: xn(j) = table[j], yn(i) = table[W + i].
// NB: torch's own arithmetic (linspace from both ends, then * (size - 1) / size) so positions
// agree with the reference to the last bit or so.
template <typename acc_t>
DSA_HOST_DEVICE DSA_INLINE acc_t base_coordinate(int k, int size, bool align_corners) {
  if (size <= 1) return acc_t(0);
  const acc_t step = acc_t(2) / acc_t(size - 1);
  const acc_t lin = k < size / 2 ? acc_t(-1) + step * acc_t(k) : acc_t(1) - step * acc_t(size - k - 1);
  return align_corners ? lin : lin * acc_t(size - 1) / acc_t(size);
}

template <typename acc_t>
struct Affine {
  acc_t t00, t01, t10, t11;
  int H, W;
  bool align_corners;
  const acc_t* base;  // the base-coordinate table (base_coordinate), W + H values

  template <bool kAlignCorners>
  DSA_HOST_DEVICE DSA_INLINE static acc_t unnormalise_as(acc_t g, int size) {
    return kAlignCorners ? (g + acc_t(1)) * (acc_t(size - 1) * acc_t(0.5))
                         : (g + acc_t(1)) * (acc_t(size) * acc_t(0.5)) - acc_t(0.5);
  }
  DSA_HOST_DEVICE DSA_INLINE acc_t unnormalise(acc_t g, int size) const {
    return align_corners ? unnormalise_as<true>(g, size) : unnormalise_as<false>(g, size);
  }
  // Source location (X, Y) sampled at base coordinates (xn, yn); the _as forms take align_corners
  // as a template parameter, so a loop over pixels has no branch (it vectorises).
  template <bool kAlignCorners>
  DSA_HOST_DEVICE DSA_INLINE acc_t x_as(acc_t xn, acc_t yn) const {
    return unnormalise_as<kAlignCorners>(t00 * xn + t01 * yn, W);
  }
  template <bool kAlignCorners>
  DSA_HOST_DEVICE DSA_INLINE acc_t y_as(acc_t xn, acc_t yn) const {
    return unnormalise_as<kAlignCorners>(t10 * xn + t11 * yn, H);
  }
  // The taps of output pixel (i, j).
  template <bool kAlignCorners>
  DSA_HOST_DEVICE DSA_INLINE Taps<acc_t> taps_as(int i, int j) const {
    const acc_t xn = base[j], yn = base[W + i];
    return Taps<acc_t>::at(x_as<kAlignCorners>(xn, yn), y_as<kAlignCorners>(xn, yn));
  }
  DSA_HOST_DEVICE DSA_INLINE Taps<acc_t> taps(int i, int j) const {
    return align_corners ? taps_as<true>(i, j) : taps_as<false>(i, j);
  }
};

// Resample every channel of src at output pixel (i, j) and store into dst. Taps outside the image
// are skipped (not multiplied by 0), as grid_sample does with zero padding; a position that is not
// finite (a NaN or infinite ω) has no tap inside the image and gives NaN (docs/semantics.md §6).
template <typename acc_t, typename Src, typename Dst>
DSA_HOST_DEVICE DSA_INLINE void resample_pixel(const Src& src, const Dst& dst, const Affine<acc_t>& A,
                                               int C, int i, int j) {
  const Taps<acc_t> p = A.taps(i, j);
  const int H = A.H, W = A.W;
  const bool x0in = p.col_in(0, W), x1in = p.col_in(1, W);
  const bool y0in = p.row_in(0, H), y1in = p.row_in(1, H);
  const auto out = dst.pixel(i, j);
  // +0 for a finite position, NaN for one that is not (its weights are then NaN or infinite).
  const acc_t start = (p.wx1 - p.wx1) + (p.wy1 - p.wy1);
  if (!((x0in || x1in) && (y0in || y1in))) {
    // No tap inside: nothing to read (the corner's offset, far outside, could overflow).
    for (int c = 0; c < C; ++c) dst.store(out, c, start);
    return;
  }
  const acc_t w00 = p.weight(0, 0), w01 = p.weight(0, 1), w10 = p.weight(1, 0), w11 = p.weight(1, 1);
  const auto o00 = src.pixel(p.y0, p.x0);
  const auto o01 = o00 + src.step_j(), o10 = o00 + src.step_i(), o11 = o10 + src.step_j();
  if (x0in && x1in && y0in && y1in) {  // the common case: no per-tap checks
    for (int c = 0; c < C; ++c) {
      dst.store(out, c, src.load(o00, c) * w00 + src.load(o01, c) * w01 + src.load(o10, c) * w10 +
                            src.load(o11, c) * w11);
    }
    return;
  }
  for (int c = 0; c < C; ++c) {
    acc_t v = 0;
    if (y0in && x0in) v += src.load(o00, c) * w00;
    if (y0in && x1in) v += src.load(o01, c) * w01;
    if (y1in && x0in) v += src.load(o10, c) * w10;
    if (y1in && x1in) v += src.load(o11, c) * w11;
    dst.store(out, c, v);
  }
}

// The output pixels whose taps can reach source pixel (r, s): a tap at column s needs
// X in [s - 1, s + 1), so invert the (affine, in pixels) map of that square, in double, and take
// its bounding box with a margin for the float rounding of the forward positions.
struct CandidateBox {
  int i0, i1, j0, j1;  // inclusive ranges, clipped to the image
};

template <typename acc_t>
struct AffineInverse {
  // Pixel-space map of Affine::taps: (X, Y) = M (j, i) + c. Stores M^-1, c, and the half-extents
  // (ej, ei) of the preimage of a 2 x 2 pixel square.
  double m00, m01, m10, m11, cx, cy, ej, ei;
  bool invertible;
  int H, W;

  DSA_HOST_DEVICE static AffineInverse of(const Affine<acc_t>& A) {
    AffineInverse inv;
    inv.H = A.H;
    inv.W = A.W;
    // xn(j) = ax j + bx, X = kx gx + lx (likewise for y), from base_coordinate / unnormalise.
    double ax, bx, ay, by, kx, lx, ky, ly;
    if (A.align_corners) {
      ax = A.W > 1 ? 2.0 / (A.W - 1) : 0.0;
      bx = A.W > 1 ? -1.0 : 0.0;
      ay = A.H > 1 ? 2.0 / (A.H - 1) : 0.0;
      by = A.H > 1 ? -1.0 : 0.0;
      kx = (A.W - 1) / 2.0;
      lx = kx;
      ky = (A.H - 1) / 2.0;
      ly = ky;
    } else {
      ax = 2.0 / A.W;
      bx = 1.0 / A.W - 1.0;
      ay = 2.0 / A.H;
      by = 1.0 / A.H - 1.0;
      kx = A.W / 2.0;
      lx = (A.W - 1) / 2.0;
      ky = A.H / 2.0;
      ly = (A.H - 1) / 2.0;
    }
    const double t00 = A.t00, t01 = A.t01, t10 = A.t10, t11 = A.t11;
    const double M00 = kx * t00 * ax, M01 = kx * t01 * ay;
    const double M10 = ky * t10 * ax, M11 = ky * t11 * ay;
    inv.cx = kx * (t00 * bx + t01 * by) + lx;
    inv.cy = ky * (t10 * bx + t11 * by) + ly;
    const double det = M00 * M11 - M01 * M10;
    // A single row or column has no meaningful slope: search the whole (tiny) image.
    inv.invertible = ::fabs(det) > 1e-12 && A.H > 1 && A.W > 1;
    inv.m00 = inv.m01 = inv.m10 = inv.m11 = inv.ej = inv.ei = 0.0;
    if (inv.invertible) {
      inv.m00 = M11 / det;
      inv.m01 = -M01 / det;
      inv.m10 = -M10 / det;
      inv.m11 = M00 / det;
      // NB: 0.01 px of slack covers the float rounding of the forward positions; candidates
      // whose taps miss the pixel are rejected exactly, so extra ones cost time only.
      inv.ej = ::fabs(inv.m00) + ::fabs(inv.m01) + 0.01;
      inv.ei = ::fabs(inv.m10) + ::fabs(inv.m11) + 0.01;
    }
    return inv;
  }

  // The output pixels whose taps can reach source pixel (r, s): a tap at column s needs
  // X in [s - 1, s + 1), so take the bounding box of that square's preimage.
  DSA_HOST_DEVICE DSA_INLINE CandidateBox box(int r, int s) const {
    CandidateBox b{0, H - 1, 0, W - 1};
    if (!invertible) return b;
    const double X = s - cx, Y = r - cy;
    const double jc = m00 * X + m01 * Y, ic = m10 * X + m11 * Y;
    const int lo_j = static_cast<int>(-floor_fast(-(jc - ej))), hi_j = static_cast<int>(floor_fast(jc + ej));
    const int lo_i = static_cast<int>(-floor_fast(-(ic - ei))), hi_i = static_cast<int>(floor_fast(ic + ei));
    b.j0 = lo_j > 0 ? lo_j : 0;
    b.j1 = hi_j < W - 1 ? hi_j : W - 1;
    b.i0 = lo_i > 0 ? lo_i : 0;
    b.i1 = hi_i < H - 1 ? hi_i : H - 1;
    return b;
  }
};

// Transposed resampling at source pixel (r, s): dst(c, r, s) = sum over output pixels (i, j) of
// weight((i, j) -> (r, s)) * g(c, i, j), with exactly the weights of resample_pixel.
template <typename acc_t, typename Grad, typename Dst>
DSA_HOST_DEVICE DSA_INLINE void resample_transpose_pixel(const Grad& g, const Dst& dst, const Affine<acc_t>& A,
                                                         const AffineInverse<acc_t>& inv, int C, int r, int s) {
  const auto out = dst.pixel(r, s);
  for (int c = 0; c < C; ++c) dst.store(out, c, acc_t(0));
  const CandidateBox b = inv.box(r, s);
  for (int i = b.i0; i <= b.i1; ++i) {
    const acc_t yn = A.base[A.W + i];
    for (int j = b.j0; j <= b.j1; ++j) {
      // The same arithmetic as Affine::taps, column first so most misses exit early.
      const acc_t xn = A.base[j];
      const acc_t X = A.unnormalise(A.t00 * xn + A.t01 * yn, A.W);
      const acc_t fx = floor_fast(X);
      const int x0 = static_cast<int>(fx);
      if (x0 != s && x0 + 1 != s) continue;
      const acc_t Y = A.unnormalise(A.t10 * xn + A.t11 * yn, A.H);
      const acc_t fy = floor_fast(Y);
      const int y0 = static_cast<int>(fy);
      if (y0 != r && y0 + 1 != r) continue;
      Taps<acc_t> t;
      t.x0 = x0;
      t.y0 = y0;
      t.wx1 = X - fx;
      t.wx0 = acc_t(1) - t.wx1;
      t.wy1 = Y - fy;
      t.wy0 = acc_t(1) - t.wy1;
      const acc_t w = t.weight(y0 == r ? 0 : 1, x0 == s ? 0 : 1);
      const auto in = g.pixel(i, j);
      for (int c = 0; c < C; ++c) dst.store(out, c, dst.load(out, c) + g.load(in, c) * w);
    }
  }
}

}  // namespace dsa_fast
