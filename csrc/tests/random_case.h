// Random ω rows for the C++ tests of the per-image program (block_emulator_test.cpp,
// cuda_sim_test.cpp): every op's parameter in or a little beyond its sampled range, so that crops,
// cutout boxes and resamplings reach past the image border.
#pragma once

#include <cmath>
#include <random>

#include "../kernels/omega.h"

namespace dsa_fast {
namespace testing {

inline double uniform(std::mt19937& rng, double lo, double hi) {
  return std::uniform_real_distribution<double>(lo, hi)(rng);
}

inline int pick(std::mt19937& rng, int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }

// One packed row (kOmegaWidth values) for an H x W image; the active ops are every op, or now and
// then a random subset ('S' mode's per-sample choice).
inline void random_omega_row(std::mt19937& rng, int H, int W, double* o) {
  o[kSlotShift] = uniform(rng, -0.5, 0.5);
  o[kSlotSat] = uniform(rng, 0.0, 2.0);
  o[kSlotCon] = uniform(rng, 0.5, 1.5);
  o[kSlotCropH] = pick(rng, -H / 2, H / 2);
  o[kSlotCropW] = pick(rng, -W / 2, W / 2);
  o[kSlotCutH] = pick(rng, 0, H);
  o[kSlotCutW] = pick(rng, 0, W);
  o[kSlotCutTop] = pick(rng, -2, H);
  o[kSlotCutLeft] = pick(rng, -2, W);
  o[kSlotFlip] = pick(rng, 0, 1);
  o[kSlotScaleW] = uniform(rng, 0.8, 1.2);
  o[kSlotScaleH] = uniform(rng, 0.8, 1.2);
  const double a = uniform(rng, -0.27, 0.27);
  o[kSlotCos] = std::cos(a);
  o[kSlotSin] = std::sin(a);
  o[kSlotActive] = pick(rng, 0, 3) == 0 ? pick(rng, 0, kAllOps) : kAllOps;
}

}  // namespace testing
}  // namespace dsa_fast
