// The fused DSA program for ONE image, forward and backward, for a block of workers, and the
// per-pixel formulas every executor shares (ColorMap, ColorTranspose, the index maps; the bilinear
// taps in bilinear.h).
//
// An Exec runs the loops: worker ex.begin() of ex.stride() takes pixels begin, begin + stride, ...
// (for_each_pixel), `ex.sync()` is a barrier, `ex.sum(v, scratch)` sums a value over workers in a
// fixed order (deterministic) and hands the total to every worker. The CUDA executor runs it with
// one thread block per image; csrc/tests/block_emulator_test.cpp runs it on CPU threads against
// SerialExec. The CPU executor runs the row-wise program of cpu/image_cpu.h instead (the same
// transform and formulas, loops shaped for one core that owns the image).
//
// Forward, for the ops present in `flags` (always in the order of omega.h):
//   w = flip(cutout(crop(contrast(saturation(brightness(x))))))   pointwise, per pixel
//   z = resample(w, theta_scale);  y = resample(z, theta_rotate)    two bilinear passes
// The per-image contrast mean is taken first: mean(saturation(brightness(x))) = mean(x) + shift,
// because saturation keeps each pixel's channel mean. Intermediates live in a workspace of two
// [C, H, W] planes of acc_t plus the base-coordinate table of bilinear.h (shared memory on CUDA):
// workspace_size() values.
//
// Backward is the transposed linear map (every op is linear in x for fixed ω, brightness affine):
// the transposed resamplings (gathers, see bilinear.h), the transposed crop/cutout/flip, then
//   dx_c = f k g_c + (1 - f) k mean_c(g) + (1 - k) mean(g)
// with f the saturation factor, k the contrast factor (1 where the op is absent) and g the
// gradient that reaches the colour output.
#pragma once

#include "macros.h"
#include "bilinear.h"
#include "omega.h"

namespace dsa_fast {

template <typename acc_t>
struct ImageGeometry {
  int C, H, W;
  int64_t flags;
  bool align_corners;

  DSA_HOST_DEVICE bool has(int64_t op) const { return (flags & op) != 0; }
  // The call's ops restricted to those active for this sample (uniform over a CUDA block).
  DSA_HOST_DEVICE ImageGeometry for_sample(const Omega<acc_t>& o) const {
    ImageGeometry g = *this;
    g.flags &= o.active;
    return g;
  }
  DSA_HOST_DEVICE int hw() const { return H * W; }
  DSA_HOST_DEVICE Affine<acc_t> scale(const Omega<acc_t>& o, const acc_t* base) const {
    return Affine<acc_t>{o.scale_w, acc_t(0), acc_t(0), o.scale_h, H, W, align_corners, base};
  }
  DSA_HOST_DEVICE Affine<acc_t> rotate(const Omega<acc_t>& o, const acc_t* base) const {
    return Affine<acc_t>{o.cos, -o.sin, o.sin, o.cos, H, W, align_corners, base};
  }
  DSA_HOST_DEVICE bool in_cutout(const Omega<acc_t>& o, int p, int q) const {
    return has(kCutout) && p >= o.cut_top && p < o.cut_top + o.cut_h && q >= o.cut_left && q < o.cut_left + o.cut_w;
  }
};

// The colour ops at one pixel: v = x + shift (brightness) of one channel, m = the mean of
// x + shift over the channels (saturation), mu = the contrast mean (of the brightened image).
template <typename acc_t>
struct ColorMap {
  bool sat, con;
  acc_t shift, f, k, mu;

  DSA_HOST_DEVICE static ColorMap of(const ImageGeometry<acc_t>& g, const Omega<acc_t>& o, acc_t mu) {
    return ColorMap{g.has(kSaturation), g.has(kContrast), g.has(kBrightness) ? o.shift : acc_t(0), o.sat, o.con, mu};
  }
  DSA_HOST_DEVICE DSA_INLINE acc_t apply(acc_t v, acc_t m) const {
    if (sat) v = (v - m) * f + m;
    if (con) v = (v - mu) * k + mu;
    return v;
  }
};

// The transposed colour ops at one pixel: dx_c = f k g_c + (1 - f) k mean_c(g) + (1 - k) G, with the
// constants folded once (G: the image mean of g, mc: the channel mean at the pixel).
template <typename acc_t>
struct ColorTranspose {
  bool sat, con;
  acc_t a_g, a_m, a_G;

  DSA_HOST_DEVICE static ColorTranspose of(const ImageGeometry<acc_t>& g, const Omega<acc_t>& o, acc_t G) {
    const bool sat = g.has(kSaturation), con = g.has(kContrast);
    const acc_t f = sat ? o.sat : acc_t(1);
    const acc_t kc = con ? o.con : acc_t(1);
    return ColorTranspose{sat, con, f * kc, (acc_t(1) - f) * kc, (acc_t(1) - kc) * G};
  }
  DSA_HOST_DEVICE DSA_INLINE acc_t apply(acc_t v, acc_t mc) const {
    v = v * a_g;
    if (sat) v += a_m * mc;
    if (con) v += a_G;
    return v;
  }
};

// Pointwise part of the forward at pixel (p, q) of w, every channel. mu: the contrast mean.
template <typename acc_t, typename Src, typename Dst>
DSA_HOST_DEVICE DSA_INLINE void pointwise_pixel(const Src& x, const Dst& dst, const ImageGeometry<acc_t>& g,
                                                const Omega<acc_t>& o, acc_t mu, int p, int q) {
  const int q1 = g.has(kFlip) && o.flip ? g.W - 1 - q : q;  // w[p, q] = cutout(crop(...))[p, q1]
  const bool cut = g.in_cutout(o, p, q1);
  const int a = g.has(kCrop) ? p + o.crop_h : p;
  const int b = g.has(kCrop) ? q1 + o.crop_w : q1;
  const int C = g.C;
  const auto out = dst.pixel(p, q);
  if (a < 0 || a >= g.H || b < 0 || b >= g.W) {  // crop's zero fill
    for (int c = 0; c < C; ++c) dst.store(out, c, acc_t(0));
    return;
  }
  // NB: a local copy, not reads through o and g: stores to dst could alias them as far as the
  // compiler knows, which would force a reload per channel.
  const ColorMap<acc_t> cm = ColorMap<acc_t>::of(g, o, mu);
  const auto in = x.pixel(a, b);
  acc_t m = 0;
  if (cm.sat) {
    for (int c = 0; c < C; ++c) m += x.load(in, c) + cm.shift;
    m /= acc_t(C);
  }
  for (int c = 0; c < C; ++c) {
    acc_t v = cm.apply(x.load(in, c) + cm.shift, m);
    // NB: cutout multiplies by 0 as the reference does, so NaN/Inf inside the box stay NaN.
    if (cut) v = v * acc_t(0);
    dst.store(out, c, v);
  }
}

// Transposed crop/cutout/flip at pixel (a, b) of the colour output: gathers the gradient of w.
template <typename acc_t, typename Grad, typename Dst>
DSA_HOST_DEVICE DSA_INLINE void pointwise_transpose_pixel(const Grad& gw, const Dst& dst, const ImageGeometry<acc_t>& g,
                                                          const Omega<acc_t>& o, int a, int b) {
  const int p = g.has(kCrop) ? a - o.crop_h : a;
  const int q1 = g.has(kCrop) ? b - o.crop_w : b;
  const auto out = dst.pixel(a, b);
  if (p < 0 || p >= g.H || q1 < 0 || q1 >= g.W) {
    for (int c = 0; c < g.C; ++c) dst.store(out, c, acc_t(0));
    return;
  }
  const bool cut = g.in_cutout(o, p, q1);
  const auto in = gw.pixel(p, g.has(kFlip) && o.flip ? g.W - 1 - q1 : q1);
  for (int c = 0; c < g.C; ++c) {
    acc_t v = gw.load(in, c);
    if (cut) v = v * acc_t(0);
    dst.store(out, c, v);
  }
}

// acc_t values of workspace one image needs: two [C, H, W] planes and the base table.
DSA_HOST_DEVICE inline int64_t workspace_size(int64_t C, int64_t H, int64_t W) { return 2 * C * H * W + H + W; }

// Workspace planes: [C, H, W] contiguous acc_t.
template <typename acc_t>
DSA_HOST_DEVICE DSA_INLINE Plane<acc_t> plane(acc_t* ws, const ImageGeometry<acc_t>& g) {
  return Plane<acc_t>{ws, g.hw(), g.W};
}

// The trivial Exec: one worker runs every loop; sums are its own.
struct SerialExec {
  DSA_HOST_DEVICE int begin() const { return 0; }
  DSA_HOST_DEVICE int stride() const { return 1; }
  DSA_HOST_DEVICE void sync() const {}
  template <typename T>
  DSA_HOST_DEVICE T sum(T v, T*) const {
    return v;
  }
};

// Calls f(i, j) for this worker's pixels (k = i W + j = begin, begin + stride, ...), stepping
// (i, j) without a division per pixel.
template <typename Exec, typename F>
DSA_HOST_DEVICE DSA_INLINE void for_each_pixel(const Exec& ex, int H, int W, F&& f) {
  const int first = ex.begin(), step = ex.stride();
  const int di = step / W, dj = step - di * W;
  int i = first / W, j = first - (first / W) * W;
  while (i < H) {
    f(i, j);
    i += di;
    j += dj;
    if (j >= W) {
      j -= W;
      ++i;
    }
  }
}

// Fills the base-coordinate table of bilinear.h (W + H values) at `table` and returns it.
template <typename Exec, typename acc_t>
DSA_HOST_DEVICE const acc_t* fill_base_table_at(const Exec& ex, acc_t* table, const ImageGeometry<acc_t>& g) {
  for (int k = ex.begin(); k < g.W + g.H; k += ex.stride()) {
    table[k] = k < g.W ? base_coordinate<acc_t>(k, g.W, g.align_corners)
                       : base_coordinate<acc_t>(k - g.W, g.H, g.align_corners);
  }
  ex.sync();
  return table;
}

// The table in its place in the workspace of workspace_size(): ws[2 C H W ...].
template <typename Exec, typename acc_t>
DSA_HOST_DEVICE const acc_t* fill_base_table(const Exec& ex, acc_t* ws, const ImageGeometry<acc_t>& g) {
  return fill_base_table_at(ex, ws + 2 * g.C * g.hw(), g);
}

template <typename Exec, typename acc_t, typename Src, typename Dst>
DSA_HOST_DEVICE void resample_image(const Exec& ex, const Src& src, const Dst& dst, const Affine<acc_t>& A,
                                    const ImageGeometry<acc_t>& g) {
  for_each_pixel(ex, g.H, g.W, [&](int i, int j) { resample_pixel(src, dst, A, g.C, i, j); });
}

template <typename Exec, typename acc_t, typename Grad, typename Dst>
DSA_HOST_DEVICE void resample_transpose_image(const Exec& ex, const Grad& grad, const Dst& dst,
                                              const Affine<acc_t>& A, const ImageGeometry<acc_t>& g) {
  const AffineInverse<acc_t> inv = AffineInverse<acc_t>::of(A);
  for_each_pixel(ex, g.H, g.W, [&](int r, int s) { resample_transpose_pixel(grad, dst, A, inv, g.C, r, s); });
}

// y = fused forward of x. ws: workspace_size(C, H, W) acc_t; scratch: the Exec's reduction scratch.
template <typename Exec, typename acc_t, typename Src, typename Dst>
DSA_HOST_DEVICE void augment_image(const Exec& ex, const Src& x, const Dst& y, const ImageGeometry<acc_t>& call,
                                   const Omega<acc_t>& o, acc_t* ws, acc_t* scratch) {
  const ImageGeometry<acc_t> g = call.for_sample(o);
  acc_t mu = 0;
  if (g.has(kContrast)) {
    acc_t part = 0;
    for_each_pixel(ex, g.H, g.W, [&](int i, int j) {
      const auto pix = x.pixel(i, j);
      for (int c = 0; c < g.C; ++c) part += x.load(pix, c);
    });
    mu = ex.sum(part, scratch) / acc_t(g.C * g.hw()) + (g.has(kBrightness) ? o.shift : acc_t(0));
  }
  const bool scale = g.has(kScale), rotate = g.has(kRotate);
  if (!scale && !rotate) {
    for_each_pixel(ex, g.H, g.W, [&](int i, int j) { pointwise_pixel(x, y, g, o, mu, i, j); });
    return;
  }
  const acc_t* base = fill_base_table(ex, ws, g);
  const Plane<acc_t> w = plane(ws, g), z = plane(ws + g.C * g.hw(), g);
  for_each_pixel(ex, g.H, g.W, [&](int i, int j) { pointwise_pixel(x, w, g, o, mu, i, j); });
  ex.sync();
  if (scale && rotate) {
    resample_image(ex, w, z, g.scale(o, base), g);
    ex.sync();
    resample_image(ex, z, y, g.rotate(o, base), g);
  } else {
    resample_image(ex, w, y, scale ? g.scale(o, base) : g.rotate(o, base), g);
  }
}

// Colour backward from the gradient gw of w, through the transposed pointwise ops. col: a free
// workspace plane.
template <typename Exec, typename acc_t, typename Grad, typename Dst>
DSA_HOST_DEVICE void color_backward_image(const Exec& ex, const Grad& gw, const Plane<acc_t>& col,
                                          const Dst& dx, const ImageGeometry<acc_t>& g, const Omega<acc_t>& o,
                                          acc_t* scratch) {
  acc_t part = 0;
  for_each_pixel(ex, g.H, g.W, [&](int a, int b) {
    pointwise_transpose_pixel(gw, col, g, o, a, b);
    const auto pix = col.pixel(a, b);
    for (int c = 0; c < g.C; ++c) part += col.load(pix, c);
  });
  const int C = g.C;
  acc_t G = 0;
  if (g.has(kContrast)) G = ex.sum(part, scratch) / acc_t(C * g.hw());
  const ColorTranspose<acc_t> ct = ColorTranspose<acc_t>::of(g, o, G);
  // Each worker reads back only the pixels it wrote above: no barrier needed.
  for_each_pixel(ex, g.H, g.W, [&](int a, int b) {
    const auto pix = col.pixel(a, b);
    const auto out = dx.pixel(a, b);
    acc_t mc = 0;
    if (ct.sat) {
      for (int c = 0; c < C; ++c) mc += col.load(pix, c);
      mc /= acc_t(C);
    }
    for (int c = 0; c < C; ++c) dx.store(out, c, ct.apply(col.load(pix, c), mc));
  });
}

// dx = transposed fused map applied to dy. ws: workspace_size(C, H, W) acc_t.
template <typename Exec, typename acc_t, typename Grad, typename Dst>
DSA_HOST_DEVICE void augment_backward_image(const Exec& ex, const Grad& dy, const Dst& dx,
                                            const ImageGeometry<acc_t>& call, const Omega<acc_t>& o, acc_t* ws,
                                            acc_t* scratch) {
  const ImageGeometry<acc_t> g = call.for_sample(o);
  const Plane<acc_t> p0 = plane(ws, g), p1 = plane(ws + g.C * g.hw(), g);
  const bool scale = g.has(kScale), rotate = g.has(kRotate);
  if (!scale && !rotate) {
    color_backward_image(ex, dy, p0, dx, g, o, scratch);
    return;
  }
  const acc_t* base = fill_base_table(ex, ws, g);
  if (scale && rotate) {
    resample_transpose_image(ex, dy, p0, g.rotate(o, base), g);
    ex.sync();
    resample_transpose_image(ex, p0, p1, g.scale(o, base), g);
    ex.sync();
    color_backward_image(ex, p1, p0, dx, g, o, scratch);
  } else {
    resample_transpose_image(ex, dy, p0, scale ? g.scale(o, base) : g.rotate(o, base), g);
    ex.sync();
    color_backward_image(ex, p0, p1, dx, g, o, scratch);
  }
}

}  // namespace dsa_fast
