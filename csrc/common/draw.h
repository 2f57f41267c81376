// Host-side checks and plan decoding for dsa_fast::augment_draw, shared by the CPU and CUDA
// launchers. Every message names the op, the argument and the value.
#pragma once

#include <optional>

#include "../kernels/rng.h"
#include "checks.h"

namespace dsa_fast {

inline rng::DrawPlan make_draw_plan(const char* op, const at::Tensor& x, const std::optional<at::Tensor>& key,
                                    int64_t flags, at::IntArrayRef plan, at::ArrayRef<double> settings) {
  TORCH_CHECK(x.dim() == 4, op, ": expected x of shape [N, C, H, W], got ", x.sizes());
  TORCH_CHECK(flags >= 0 && flags <= kAllOps, op, ": flags must be in [0, ", static_cast<int64_t>(kAllOps),
              "], got ", flags);
  TORCH_CHECK(static_cast<int64_t>(plan.size()) == rng::kPlanSize, op, ": expected plan of ", rng::kPlanSize,
              " ints, got ", plan.size());
  TORCH_CHECK(static_cast<int64_t>(settings.size()) == rng::kSettingsSize, op, ": expected settings of ",
              rng::kSettingsSize, " floats, got ", settings.size());
  rng::DrawPlan p{};
  for (int k = 0; k < rng::kPlanSize; ++k) p.v[k] = plan[k];
  for (int k = 0; k < rng::kSettingsSize; ++k) p.s[k] = static_cast<float>(settings[k]);
  p.flags = flags;
  const int64_t source = p.v[rng::kPlanKeySource];
  TORCH_CHECK(source == rng::kKeyInt || source == rng::kKeyTensor || source == rng::kKeyCounter, op,
              ": plan key source must be 0, 1 or 2, got ", source);
  if (source == rng::kKeyInt) {
    TORCH_CHECK(!key.has_value(), op, ": plan says the key is the int seed, but a key tensor was given");
  } else {
    TORCH_CHECK(key.has_value(), op, ": plan says the key is a tensor, but key is None");
    TORCH_CHECK(key->numel() == 1 && key->scalar_type() == at::kLong, op,
                ": expected key of one int64 element, got shape ", key->sizes(), " ", key->scalar_type());
    TORCH_CHECK(key->device() == x.device(), op, ": key is on ", key->device(), " but x is on ", x.device());
  }
  for (int bit = 0; bit < kNumOps; ++bit) {
    const bool present = (flags >> bit) & 1;
    TORCH_CHECK(present == (p.draw(bit) >= 0), op, ": plan draw index of op bit ", bit, " is ", p.draw(bit),
                " but flags ", flags, present ? " include" : " exclude", " it");
  }
  TORCH_CHECK(p.v[rng::kPlanFamilies] >= 0, op, ": plan family count must be >= 0, got ", p.v[rng::kPlanFamilies]);
  return p;
}

// The drawn table: one row per sample (unseeded) or one row for the batch (Siamese).
inline at::Tensor empty_draw_table(const at::Tensor& x, const rng::DrawPlan& p) {
  return at::empty({p.per_sample() ? x.size(0) : 1, kOmegaWidth}, x.options().dtype(at::kDouble));
}

}  // namespace dsa_fast

#include "../kernels/compat.h"

namespace dsa_fast {

inline compat::CompatPlan make_compat_plan(const char* op, const at::Tensor& x, int64_t flags, at::IntArrayRef plan,
                                           at::ArrayRef<double> settings) {
  TORCH_CHECK(x.dim() == 4, op, ": expected x of shape [N, C, H, W], got ", x.sizes());
  TORCH_CHECK(flags >= 0 && flags <= kAllOps, op, ": flags must be in [0, ", static_cast<int64_t>(kAllOps),
              "], got ", flags);
  TORCH_CHECK(static_cast<int64_t>(plan.size()) == compat::kCPlanSize, op, ": expected plan of ",
              compat::kCPlanSize, " ints, got ", plan.size());
  TORCH_CHECK(static_cast<int64_t>(settings.size()) == compat::kCSettingsSize, op, ": expected settings of ",
              compat::kCSettingsSize, " floats, got ", settings.size());
  compat::CompatPlan p{};
  p.flags = flags;
  p.per_sample = plan[compat::kCPerSample] != 0;
  p.cut_h = plan[compat::kCCutH];
  p.cut_w = plan[compat::kCCutW];
  for (int k = 0; k < compat::kCSettingsSize; ++k) p.s[k] = settings[k];
  return p;
}

// Raw draws expected for `flags`: the official generator calls of each op (layout.h, kRawDraws).
inline int compat_raw_count(int64_t flags) {
  int n = 0;
  for (int bit = 0; bit < kNumOps; ++bit) {
    if ((flags >> bit) & 1) n += kRawDraws[bit];
  }
  return n;
}

inline int raw_type(const char* op, int k, const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return compat::kRawFloat;
    case at::kDouble: return compat::kRawDouble;
    case at::kHalf: return compat::kRawHalf;
    case at::kBFloat16: return compat::kRawBFloat16;
    case at::kLong: return compat::kRawLong;
    default: TORCH_CHECK(false, op, ": raw draw ", k, " has unsupported dtype ", t.scalar_type());
  }
  return 0;
}

// Checks the raw draw tensors (contiguous, enough elements) and the table's row count.
inline void check_raw(const char* op, const at::Tensor& x, at::TensorList raw, const compat::CompatPlan& p) {
  const int expected = compat_raw_count(p.flags);
  TORCH_CHECK(static_cast<int>(raw.size()) == expected, op, ": flags ", p.flags, " need ", expected,
              " raw draws, got ", raw.size());
  const int64_t need = p.per_sample ? x.size(0) : 1;
  for (size_t k = 0; k < raw.size(); ++k) {
    TORCH_CHECK(raw[k].is_contiguous(), op, ": raw draw ", k, " must be contiguous");
    TORCH_CHECK(raw[k].numel() >= need, op, ": raw draw ", k, " has ", raw[k].numel(), " elements, need ", need);
    TORCH_CHECK(raw[k].is_cpu() || raw[k].device() == x.device(), op, ": raw draw ", k, " is on ", raw[k].device(),
                " but x is on ", x.device());
  }
}

inline at::Tensor empty_compat_table(const at::Tensor& x, const compat::CompatPlan& p) {
  return at::empty({p.per_sample ? x.size(0) : 1, kOmegaWidth}, x.options().dtype(at::kDouble));
}

}  // namespace dsa_fast
