// rng='device' draws, written once for the CPU and CUDA executors: the counter-based generator
// of dsa_fast/device_rng.py and the records' `device` formulas (dsa_fast/ops/: the readable
// reference; the two give the same bits) and the rows of
// the packed ω table (omega.h) it draws.
//
// Each uniform number is a hash of (key, draw index, element): element 0 is the Siamese draw
// (one row that broadcasts over the batch), element n the per-sample draw of sample n. The draw
// indices of a call's ops, its settings and the crop/cutout sizes arrive in a DrawPlan, built
// once per (strategy, settings, image size) on the Python side (dsa_fast/fused.py).
#pragma once

#include <cmath>
#include <cstdint>

#include "macros.h"
#include "omega.h"

namespace dsa_fast {
namespace rng {

constexpr uint32_t kGolden = 0x9E3779B9u;

// A 32-bit integer finaliser (xorshift-multiply rounds); products wrap modulo 2^32.
DSA_HOST_DEVICE DSA_INLINE uint32_t hash32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x7FEB352Du;
  h ^= h >> 15;
  h *= 0x846CA68Bu;
  return h ^ (h >> 16);
}

// The 64-bit key folded to 32 bits through two rounds. NB: arithmetic shift, as on int64 tensors.
DSA_HOST_DEVICE DSA_INLINE uint32_t fold_key(int64_t key) {
  return hash32(hash32(static_cast<uint32_t>(key & 0xFFFFFFFF)) ^ static_cast<uint32_t>((key >> 32) & 0xFFFFFFFF));
}

// Uniform [0, 1) with 24 random bits: exactly representable in float32.
DSA_HOST_DEVICE DSA_INLINE float uniform(uint32_t key, int64_t draw, int64_t element) {
  const uint32_t d = hash32(key ^ hash32(static_cast<uint32_t>(draw)));
  const uint32_t h = hash32(hash32(d ^ static_cast<uint32_t>(element)) ^ kGolden);
  return static_cast<float>(h >> 8) * (1.0f / 16777216.0f);
}

// float32 products and sums rounded one at a time, as the tensor ops of the reference round them
// (nvcc would otherwise contract a * b + c into one fused multiply-add).
DSA_HOST_DEVICE DSA_INLINE float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
DSA_HOST_DEVICE DSA_INLINE float add_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

// Uniform integer in [low, high): floor(u * (high - low)), clamped, + low.
DSA_HOST_DEVICE DSA_INLINE int64_t integer(float u, int64_t low, int64_t high) {
  const int64_t v = static_cast<int64_t>(::floor(mul_rn(u, static_cast<float>(high - low))));
  return (v < high - low - 1 ? v : high - low - 1) + low;
}

// The plan's slots (PlanSlot: the `plan` int[] of dsa_fast::augment_draw; SettingSlot: the
// `settings` float[], each op's constants rounded to float32 as a tensor op rounds a Python scalar),
// KeySource and the key space are in layout.h. kPlanDraw and kPlanGroup hold kNumOps entries each,
// by OpBit: the first draw index of each op (-1: absent) and its family ('S': kPlanFamilies > 0).
// KeySource: the int seed in the plan (already masked), a user seed tensor (masked to the user key
// space) or the per-device counter of unseeded calls (offset by kUnseededBase).

struct DrawPlan {
  int64_t v[kPlanSize];
  float s[kSettingsSize];
  int64_t flags;

  DSA_HOST_DEVICE bool per_sample() const { return v[kPlanPerSample] != 0; }
  DSA_HOST_DEVICE int64_t draw(int bit) const { return v[kPlanDraw + bit]; }
  DSA_HOST_DEVICE int64_t key_of(int64_t raw) const {
    return v[kPlanKeySource] == kKeyInt      ? v[kPlanSeed]
           : v[kPlanKeySource] == kKeyTensor ? (raw & kUserKeyMask)
                                             : raw + kUnseededBase;
  }
};

// Rounds a float32 draw to the input dtype (the colour factors are drawn in x's dtype), as double.
template <typename scalar_t>
DSA_HOST_DEVICE DSA_INLINE double in_dtype(float v) {
  return static_cast<double>(static_cast<scalar_t>(v));
}

// Fills one row of the ω table (omega.h) for `element` (0: Siamese; n: sample n). Ops absent
// from the plan keep 0, as the packing of a sampled Omega leaves them.
// cos and sin of the float32 angle in float32, as the packing of a sampled Omega takes them with
// torch.cos. trig = false leaves the angle in both columns for the caller to replace with torch's
// own float32 cos/sin (the CPU launcher: torch's vectorised cos may round one ulp away from libm's
// cosf); the CUDA executor's cosf is the one torch.cos uses there.
DSA_HOST_DEVICE DSA_INLINE void set_rotation(double* row, float angle, bool trig) {
  row[kSlotCos] = trig ? static_cast<double>(::cosf(angle)) : static_cast<double>(angle);
  row[kSlotSin] = trig ? static_cast<double>(::sinf(angle)) : static_cast<double>(angle);
}

template <typename scalar_t>
DSA_HOST_DEVICE void draw_row(const DrawPlan& p, uint32_t key, int64_t element, int H, int W, double* row,
                              bool trig) {
  for (int k = 0; k < kOmegaWidth; ++k) row[k] = 0.0;
  auto u = [&](int bit, int second) { return uniform(key, p.draw(bit) + second, element); };
  if (p.draw(kBitBrightness) >= 0) row[kSlotShift] = in_dtype<scalar_t>(mul_rn(add_rn(u(kBitBrightness, 0), -0.5f), p.s[kSetBrightness]));
  if (p.draw(kBitSaturation) >= 0) row[kSlotSat] = in_dtype<scalar_t>(mul_rn(u(kBitSaturation, 0), p.s[kSetSaturation]));
  if (p.draw(kBitContrast) >= 0) row[kSlotCon] = in_dtype<scalar_t>(add_rn(u(kBitContrast, 0), p.s[kSetContrast]));
  if (p.draw(kBitCrop) >= 0) {
    const int64_t sh = p.v[kPlanCropH], sw = p.v[kPlanCropW];
    row[kSlotCropH] = static_cast<double>(integer(u(kBitCrop, 0), -sh, sh + 1));
    row[kSlotCropW] = static_cast<double>(integer(u(kBitCrop, 1), -sw, sw + 1));
  }
  if (p.draw(kBitCutout) >= 0) {
    const int64_t bh = p.v[kPlanCutH], bw = p.v[kPlanCutW];
    // Box centres in [0, size + (1 - box % 2)); the zeroed rows start at centre - box / 2.
    row[kSlotCutTop] = static_cast<double>(integer(u(kBitCutout, 0), 0, H + (1 - bh % 2)) - bh / 2);
    row[kSlotCutLeft] = static_cast<double>(integer(u(kBitCutout, 1), 0, W + (1 - bw % 2)) - bw / 2);
    row[kSlotCutH] = static_cast<double>(bh);
    row[kSlotCutW] = static_cast<double>(bw);
  }
  if (p.draw(kBitFlip) >= 0) row[kSlotFlip] = u(kBitFlip, 0) < p.s[kSetProbFlip] ? 1.0 : 0.0;
  if (p.draw(kBitScale) >= 0) {
    row[kSlotScaleW] = add_rn(mul_rn(u(kBitScale, 0), p.s[kSetScaleMul]), p.s[kSetScaleAdd]);
    row[kSlotScaleH] = add_rn(mul_rn(u(kBitScale, 1), p.s[kSetScaleMul]), p.s[kSetScaleAdd]);
  }
  if (p.draw(kBitRotate) >= 0) {
    const float angle = mul_rn(add_rn(u(kBitRotate, 0), -0.5f), p.s[kSetRotateMul]);
    set_rotation(row, angle, trig);
  }
  int64_t active = p.flags;
  const int64_t families = p.v[kPlanFamilies];
  if (families > 0) {  // 'S': the family drawn once per call (element 0), its ops active
    const int64_t chosen = integer(uniform(key, p.v[kPlanChoiceDraw], 0), 0, families);
    active = 0;
    for (int bit = 0; bit < kNumOps; ++bit) {
      if (p.draw(bit) >= 0 && p.v[kPlanGroup + bit] == chosen) active |= int64_t(1) << bit;
    }
  }
  row[kSlotActive] = static_cast<double>(active);
}

}  // namespace rng
}  // namespace dsa_fast
