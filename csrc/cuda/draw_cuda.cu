// dsa_fast::augment_draw and augment_compat on CUDA, the ATen side: checks, guard, stream, the
// table and the staged raw draws, the launch check. The table kernels (draw_kernel.cuh) make the
// rows, then the augment kernel applies them. One op call; two kernel launches.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "../common/draw.h"
#include "augment_launch.cuh"
#include "draw_kernel.cuh"

namespace dsa_fast {
namespace cuda_impl {

at::Tensor augment_cuda(const at::Tensor& x, const at::Tensor& omega, int64_t flags, bool align_corners);

namespace {

std::tuple<at::Tensor, at::Tensor> augment_draw_cuda(const at::Tensor& x, const std::optional<at::Tensor>& key,
                                                      int64_t flags, at::IntArrayRef plan,
                                                      at::ArrayRef<double> settings, bool align_corners) {
  const rng::DrawPlan p = make_draw_plan("dsa_fast.augment_draw", x, key, flags, plan, settings);
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  at::Tensor omega = empty_draw_table(x, p);
  const int64_t B = omega.size(0);
  if (B > 0) {
    const LaunchPlan launch = plan_row_launch(B, kRowThreads, device_limits(x.get_device()));
    const int64_t* key_p = key.has_value() ? key->const_data_ptr<int64_t>() : nullptr;
    DSA_DISPATCH_FLOATING(x.scalar_type(), "dsa_fast.augment_draw", [&] {
      launch_draw<scalar_t>(launch, c10::cuda::getCurrentCUDAStream(), p, key_p, omega.mutable_data_ptr<double>(), B,
                            static_cast<int>(x.size(2)), static_cast<int>(x.size(3)));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {augment_cuda(x, omega, flags, align_corners), omega};
}

// The raw draws made on the CPU generator (scale, rotate) reach the device through one pinned
// buffer (their values as float64, exact) and one asynchronous copy; no pageable copy, no sync.
std::tuple<at::Tensor, at::Tensor> augment_compat_cuda(const at::Tensor& x, at::TensorList raw, int64_t flags,
                                                        at::IntArrayRef plan, at::ArrayRef<double> settings,
                                                        bool align_corners) {
  const char* op = "dsa_fast.augment_compat";
  const compat::CompatPlan p = make_compat_plan(op, x, flags, plan, settings);
  check_raw(op, x, raw, p);
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  const int64_t need = p.per_sample ? x.size(0) : 1;
  int64_t host_values = 0;
  for (const at::Tensor& t : raw) host_values += t.is_cpu() ? need : 0;
  at::Tensor staged;
  if (host_values > 0) {
    at::Tensor pinned = at::empty({host_values}, at::TensorOptions().dtype(at::kDouble).pinned_memory(true));
    int64_t at_ = 0;
    for (const at::Tensor& t : raw) {
      if (!t.is_cpu()) continue;
      pinned.narrow(0, at_, need).copy_(t.reshape({-1}).narrow(0, 0, need));
      at_ += need;
    }
    staged = pinned.to(x.device(), /*non_blocking=*/true);
  }
  compat::RawDraws r{};
  r.count = static_cast<int>(raw.size());
  int64_t at_ = 0;
  for (int k = 0; k < r.count; ++k) {
    if (raw[k].is_cpu()) {
      r.ptr[k] = staged.const_data_ptr<double>() + at_;
      r.type[k] = compat::kRawDouble;
      at_ += need;
    } else {
      r.ptr[k] = raw[k].const_data_ptr();
      r.type[k] = raw_type(op, k, raw[k]);
    }
  }
  at::Tensor omega = empty_compat_table(x, p);
  const int64_t B = omega.size(0);
  if (B > 0) {
    const LaunchPlan launch = plan_row_launch(B, kRowThreads, device_limits(x.get_device()));
    DSA_DISPATCH_FLOATING(x.scalar_type(), "dsa_fast.augment_compat", [&] {
      launch_compat<scalar_t>(launch, c10::cuda::getCurrentCUDAStream(), p, r, omega.mutable_data_ptr<double>(), B);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {augment_cuda(x, omega, flags, align_corners), omega};
}

}  // namespace

TORCH_LIBRARY_IMPL(dsa_fast, CUDA, m) {
  m.impl("augment_draw", &augment_draw_cuda);
  m.impl("augment_compat", &augment_compat_cuda);
}

}  // namespace cuda_impl
}  // namespace dsa_fast
