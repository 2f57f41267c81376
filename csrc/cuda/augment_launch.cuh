#pragma once
// The ATen side of the augment kernels (augment_kernel.cuh): argument checks, device guard,
// stream, output and workspace allocation, the dynamic shared memory opt-in and the launch check.
// Included by augment_cuda_fwd.cu and augment_cuda_bwd.cu, one direction each, so that the two
// compile in parallel.
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <mutex>
#include <vector>

#include "../common/checks.h"
#include "../common/launch_plan.h"
#include "augment_kernel.cuh"

namespace dsa_fast {
namespace cuda_impl {

// The limits the launch plans need, read once per device.
inline DeviceLimits device_limits(int device) {
  static std::mutex mutex;
  static std::vector<DeviceLimits> cache;
  static std::vector<bool> known;
  const std::lock_guard<std::mutex> lock(mutex);
  if (device >= static_cast<int>(cache.size())) {
    cache.resize(device + 1);
    known.resize(device + 1, false);
  }
  if (!known[device]) {
    int smem_default = 0, smem_optin = 0, sms = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&smem_default, cudaDevAttrMaxSharedMemoryPerBlock, device));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    cache[device] = DeviceLimits{smem_default, smem_optin, sms};
    known[device] = true;
  }
  return cache[device];
}

// One type per kernel instantiation (the forward and backward kernels share a signature).
template <typename scalar_t, bool kBackward>
struct KernelKey {};

// Raises a kernel's dynamic shared memory limit to smem bytes on this device, calling
// cudaFuncSetAttribute only when a larger size than any set before is needed (once per kernel
// instantiation and size in practice). KernelTag: a KernelKey.
template <typename KernelTag>
void allow_dynamic_smem(const void* kernel, int device, int64_t smem) {
  static std::mutex mutex;
  static std::vector<int64_t> allowed;  // per device: the largest size set so far
  const std::lock_guard<std::mutex> lock(mutex);
  if (device >= static_cast<int>(allowed.size())) allowed.resize(device + 1, 0);
  if (smem <= allowed[device]) return;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  allowed[device] = smem;
}

inline Strides4 strides_of(const at::Tensor& t) { return Strides4{t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

template <bool kBackward>
at::Tensor run(const char* op, const at::Tensor& in, const at::Tensor& omega, int64_t flags, bool align_corners) {
  check_augment_args(op, in, omega, flags);
  const c10::cuda::OptionalCUDAGuard guard(in.device());
  at::Tensor out = empty_output(in);
  if (in.numel() == 0) return out;
  const at::Tensor om = omega.contiguous();
  DSA_DISPATCH_FLOATING(in.scalar_type(), "dsa_fast.augment", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t N = in.size(0), B = om.size(0);
    const ImageGeometry<acc_t> g{static_cast<int>(in.size(1)), static_cast<int>(in.size(2)),
                                 static_cast<int>(in.size(3)), flags, align_corners};
    const int device = in.get_device();
    const LaunchPlan plan = plan_launch(N, g.C, g.H, g.W, sizeof(acc_t), kThreads, device_limits(device));
    // NB: straight from the caching allocator, not at::empty: the workspace is written before it is
    // read, so the NaN fill of deterministic mode would be wasted work.
    at::DataPtr global_ws;
    if (!plan.shared_workspace) global_ws = c10::cuda::CUDACachingAllocator::get()->allocate(plan.global_bytes);
    if (plan.needs_optin) {
      allow_dynamic_smem<KernelKey<scalar_t, kBackward>>(
          reinterpret_cast<const void*>(augment_kernel<scalar_t, acc_t, kBackward>), device, plan.smem_bytes);
    }
    launch_augment<scalar_t, acc_t, kBackward>(plan, c10::cuda::getCurrentCUDAStream(), in.const_data_ptr<scalar_t>(),
                                               strides_of(in), out.mutable_data_ptr<scalar_t>(), strides_of(out),
                                               om.const_data_ptr<double>(), N, B, g, global_ws.get());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace cuda_impl
}  // namespace dsa_fast
