// The resamplings of the CPU executor's per-image program (cpu/image_cpu.h):
// - a resampling reads a zero-bordered copy of its source (Padded), so its inner loop has no
//   per-tap bounds tests; each row's taps come from vectorised loops (RowTaps), and the channels
//   are innermost; float images resample four pixels at a time (SSE2, bilinear4);
// - the transposed resampling is an ordered scatter: every output pixel, in row-major order, adds
//   its tap contributions to the four source pixels. That is the same sum in the same order as the
//   gather of resample_transpose_pixel (which visits the contributing output pixels in row-major
//   order too), without searching a candidate box per source pixel; one worker per image keeps it
//   deterministic. A table listing each source pixel's contributions in that order (GatherTable)
//   turns it into a gather with the same sums.
// The taps and weights are those of kernels/bilinear.h (Taps, Affine, base_coordinate).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "rows_cpu.h"

namespace dsa_fast {
namespace cpu {

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

}  // namespace cpu
}  // namespace dsa_fast
