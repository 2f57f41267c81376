// dsa_fast::augment_draw on the CPU: draws the ω table (kernels/rng.h), then applies it with the
// per-image program of augment_cpu.cpp. One op call for the whole rng='device' transform.
#include <torch/library.h>

#include <tuple>

#include "../common/draw.h"
#include "../kernels/rng.h"

namespace dsa_fast {

at::Tensor augment_cpu_table(const char* op, const at::Tensor& x, const at::Tensor& omega, int64_t flags,
                             bool align_corners);

namespace {

// Replaces the angle the rows hold in the cos/sin columns by torch's float32 cos/sin of it: the
// values the packing of a sampled Omega (and the reference's theta) get on the CPU.
void torch_trig(at::Tensor& omega, int64_t flags) {
  if (!(flags & kRotate) || omega.size(0) == 0) return;
  const at::Tensor angle = omega.select(1, kSlotCos).to(at::kFloat);
  omega.select(1, kSlotCos).copy_(at::cos(angle));
  omega.select(1, kSlotSin).copy_(at::sin(angle));
}

std::tuple<at::Tensor, at::Tensor> augment_draw_cpu(const at::Tensor& x, const std::optional<at::Tensor>& key,
                                                     int64_t flags, at::IntArrayRef plan,
                                                     at::ArrayRef<double> settings, bool align_corners) {
  const rng::DrawPlan p = make_draw_plan("dsa_fast.augment_draw", x, key, flags, plan, settings);
  at::Tensor omega = empty_draw_table(x, p);
  const int64_t raw = key.has_value() ? key->const_data_ptr<int64_t>()[0] : 0;
  const uint32_t folded = rng::fold_key(p.key_of(raw));
  double* rows = omega.mutable_data_ptr<double>();
  const int H = static_cast<int>(x.size(2)), W = static_cast<int>(x.size(3));
  DSA_DISPATCH_FLOATING(x.scalar_type(), "dsa_fast.augment_draw", [&] {
    for (int64_t b = 0; b < omega.size(0); ++b) {
      rng::draw_row<scalar_t>(p, folded, b, H, W, rows + b * kOmegaWidth, /*trig=*/false);
    }
  });
  torch_trig(omega, flags);
  return {augment_cpu_table("dsa_fast.augment_draw", x, omega, flags, align_corners), omega};
}

std::tuple<at::Tensor, at::Tensor> augment_compat_cpu(const at::Tensor& x, at::TensorList raw, int64_t flags,
                                                       at::IntArrayRef plan, at::ArrayRef<double> settings,
                                                       bool align_corners) {
  const char* op = "dsa_fast.augment_compat";
  const compat::CompatPlan p = make_compat_plan(op, x, flags, plan, settings);
  check_raw(op, x, raw, p);
  compat::RawDraws r{};
  r.count = static_cast<int>(raw.size());
  for (int k = 0; k < r.count; ++k) {
    TORCH_CHECK(raw[k].is_cpu(), op, ": raw draw ", k, " is on ", raw[k].device(), " but x is on the CPU");
    r.ptr[k] = raw[k].const_data_ptr();
    r.type[k] = raw_type(op, k, raw[k]);
  }
  at::Tensor omega = empty_compat_table(x, p);
  double* rows = omega.mutable_data_ptr<double>();
  DSA_DISPATCH_FLOATING(x.scalar_type(), "dsa_fast.augment_compat", [&] {
    for (int64_t b = 0; b < omega.size(0); ++b) {
      compat::compat_row<scalar_t>(p, r, b, rows + b * kOmegaWidth, /*trig=*/false);
    }
  });
  torch_trig(omega, flags);
  return {augment_cpu_table(op, x, omega, flags, align_corners), omega};
}

}  // namespace

TORCH_LIBRARY_IMPL(dsa_fast, CPU, m) {
  m.impl("augment_draw", &augment_draw_cpu);
  m.impl("augment_compat", &augment_compat_cpu);
}

}  // namespace dsa_fast
