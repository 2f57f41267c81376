// rng='compat' rows of the ω table from the raw draws of the official generators, written once for
// the CPU and CUDA executors. The draws themselves (the official generators, reseeded per draw,
// in the official order) are made by dsa_fast/compat.py; this header only turns each raw number
// into the op parameter with the official formula, rounding as the official tensor ops round.
// Each op record's `compat` formula (dsa_fast/ops/) is the readable reference of these formulas.
#pragma once

#include <ATen/OpMathType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>

#include "macros.h"
#include "omega.h"
#include "rng.h"

namespace dsa_fast {
namespace compat {

enum RawType : int { kRawFloat = 0, kRawDouble = 1, kRawHalf = 2, kRawBFloat16 = 3, kRawLong = 4 };

// The raw draw tensors of one call, in canonical op order, each read at element b (per sample)
// or 0 (Siamese).
struct RawDraws {
  const void* ptr[kMaxRaw];
  int type[kMaxRaw];
  int count;

  DSA_HOST_DEVICE double value(int k, int64_t b) const {
    switch (type[k]) {
      case kRawFloat: return static_cast<const float*>(ptr[k])[b];
      case kRawDouble: return static_cast<const double*>(ptr[k])[b];
      case kRawHalf: return static_cast<float>(static_cast<const c10::Half*>(ptr[k])[b]);
      case kRawBFloat16: return static_cast<float>(static_cast<const c10::BFloat16*>(ptr[k])[b]);
      default: return static_cast<double>(static_cast<const int64_t*>(ptr[k])[b]);
    }
  }
};

// The slots of the `plan` int[] of dsa_fast::augment_compat (CompatPlanSlot) and of the
// `settings` float[] (CompatSettingSlot: the official formulas' constants, used below) and kMaxRaw
// are in layout.h.

struct CompatPlan {
  int64_t flags, cut_h, cut_w;
  bool per_sample;
  double s[kCSettingsSize];
};

DSA_HOST_DEVICE DSA_INLINE float div_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

// One colour op in x's dtype: each tensor op computes in opmath and rounds to scalar_t.
template <typename scalar_t>
DSA_HOST_DEVICE DSA_INLINE double round_to(at::opmath_type<scalar_t> v) {
  return static_cast<double>(static_cast<scalar_t>(v));
}

template <typename scalar_t>
DSA_HOST_DEVICE void compat_row(const CompatPlan& p, const RawDraws& r, int64_t b, double* row, bool trig) {
  using opmath = at::opmath_type<scalar_t>;
  for (int k = 0; k < kOmegaWidth; ++k) row[k] = 0.0;
  const int64_t e = p.per_sample ? b : 0;
  int k = 0;
  if (p.flags & kBrightness) {
    const double t = round_to<scalar_t>(static_cast<opmath>(r.value(k++, e)) - opmath(0.5));
    row[kSlotShift] = round_to<scalar_t>(static_cast<opmath>(t) * static_cast<opmath>(p.s[kCBrightness]));
  }
  if (p.flags & kSaturation) {
    row[kSlotSat] = round_to<scalar_t>(static_cast<opmath>(r.value(k++, e)) * static_cast<opmath>(p.s[kCSaturation]));
  }
  if (p.flags & kContrast) {
    row[kSlotCon] = round_to<scalar_t>(static_cast<opmath>(r.value(k++, e)) + static_cast<opmath>(p.s[kCContrast]));
  }
  if (p.flags & kCrop) {
    row[kSlotCropH] = r.value(k++, e);
    row[kSlotCropW] = r.value(k++, e);
  }
  if (p.flags & kCutout) {
    // Box centres drawn; the zeroed rows start at centre - box / 2.
    row[kSlotCutTop] = r.value(k++, e) - static_cast<double>(p.cut_h / 2);
    row[kSlotCutLeft] = r.value(k++, e) - static_cast<double>(p.cut_w / 2);
    row[kSlotCutH] = static_cast<double>(p.cut_h);
    row[kSlotCutW] = static_cast<double>(p.cut_w);
  }
  if (p.flags & kFlip) {
    row[kSlotFlip] = static_cast<float>(r.value(k++, e)) < static_cast<float>(p.s[kCProbFlip]) ? 1.0 : 0.0;
  }
  if (p.flags & kScale) {
    const float mul = static_cast<float>(p.s[kCScaleMul]), add = static_cast<float>(p.s[kCScaleAdd]);
    row[kSlotScaleW] = rng::add_rn(rng::mul_rn(static_cast<float>(r.value(k++, e)), mul), add);
    row[kSlotScaleH] = rng::add_rn(rng::mul_rn(static_cast<float>(r.value(k++, e)), mul), add);
  }
  if (p.flags & kRotate) {
    float a = rng::add_rn(static_cast<float>(r.value(k++, e)), -0.5f);
    a = rng::mul_rn(a, 2.0f);
    a = rng::mul_rn(a, static_cast<float>(p.s[kCRatioRotate]));
    a = div_rn(a, 180.0f);
    a = rng::mul_rn(a, static_cast<float>(p.s[kCPi]));
    rng::set_rotation(row, a, trig);
  }
  row[kSlotActive] = static_cast<double>(p.flags);
}

}  // namespace compat
}  // namespace dsa_fast
