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
//
// The row loops are cpu/rows_cpu.h, the resamplings cpu/resample_cpu.h; this header holds the
// workspace, the per-call tap and gather plans, and the program that chains them.
#pragma once

#include <cstdint>

#include "resample_cpu.h"

namespace dsa_fast {
namespace cpu {

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
