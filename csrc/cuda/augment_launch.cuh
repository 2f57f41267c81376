#pragma once
// CUDA kernels: one thread block per image, running the shared per-image program of
// kernels/augment.h; the workspace (two [C, H, W] planes and the base table) lives in shared
// memory, or in global memory for images too large for it. No atomics: results are bitwise
// reproducible. Included by augment_cuda_fwd.cu and augment_cuda_bwd.cu, one direction each, so
// that the two compile in parallel.
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <mutex>
#include <vector>

#include "../common/checks.h"
#include "../common/launch_plan.h"
#include "../kernels/augment.h"

namespace dsa_fast {
namespace cuda_impl {

constexpr int kThreads = 256;  // a power of two: the tree reduction below relies on it

// One block per image: threads split the pixels, __syncthreads is the barrier, and sums reduce
// through shared memory in a fixed tree order. Host versions exist only to satisfy the
// __host__ __device__ templates; they are never called.
struct CudaBlockExec {
  DSA_HOST_DEVICE int begin() const {
#ifdef __CUDA_ARCH__
    return static_cast<int>(threadIdx.x);
#else
    return 0;
#endif
  }
  DSA_HOST_DEVICE int stride() const {
#ifdef __CUDA_ARCH__
    return static_cast<int>(blockDim.x);
#else
    return 1;
#endif
  }
  DSA_HOST_DEVICE void sync() const {
#ifdef __CUDA_ARCH__
    __syncthreads();
#endif
  }
  template <typename T>
  DSA_HOST_DEVICE T sum(T v, T* scratch) const {
#ifdef __CUDA_ARCH__
    const int t = threadIdx.x;
    scratch[t] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
      if (t < s) scratch[t] += scratch[t + s];
      __syncthreads();
    }
    const T total = scratch[0];
    __syncthreads();  // scratch is reused by the next sum
    return total;
#else
    return v;
#endif
  }
};

template <typename scalar_t, typename acc_t, bool kBackward>
__global__ void __launch_bounds__(kThreads)
    augment_kernel(const scalar_t* __restrict__ in, int64_t is0, int64_t is1, int64_t is2, int64_t is3,
                   scalar_t* __restrict__ out, int64_t os0, int64_t os1, int64_t os2, int64_t os3,
                   const double* __restrict__ omega, int64_t N, int64_t B, ImageGeometry<acc_t> g,
                   acc_t* global_ws) {
  extern __shared__ __align__(16) unsigned char smem[];
  acc_t* scratch = reinterpret_cast<acc_t*>(smem);
  const int64_t ws_size = workspace_size(g.C, g.H, g.W);
  acc_t* ws = global_ws != nullptr ? global_ws + blockIdx.x * ws_size : scratch + blockDim.x;
  CudaBlockExec ex;
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const Omega<acc_t> o = Omega<acc_t>::load(omega + (B == 1 ? 0 : n) * kOmegaWidth);
    const View<const scalar_t, acc_t> src{in + n * is0, is1, is2, is3};
    const View<scalar_t, acc_t> dst{out + n * os0, os1, os2, os3};
    if (kBackward) {
      augment_backward_image(ex, src, dst, g, o, ws, scratch);
    } else {
      augment_image(ex, src, dst, g, o, ws, scratch);
    }
    __syncthreads();  // the workspace is reused by this block's next image
  }
}

// The limits plan_launch needs, read once per device.
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
    int smem_optin = 0, sms = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    cache[device] = DeviceLimits{smem_optin, sms};
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
  if (device >= static_cast<int>(allowed.size())) allowed.resize(device + 1, kDefaultSmemBytes);
  if (smem <= allowed[device]) return;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  allowed[device] = smem;
}

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
    auto kernel = augment_kernel<scalar_t, acc_t, kBackward>;
    if (plan.needs_optin) {
      allow_dynamic_smem<KernelKey<scalar_t, kBackward>>(reinterpret_cast<const void*>(kernel), device,
                                                        plan.smem_bytes);
    }
    kernel<<<static_cast<unsigned>(plan.grid), kThreads, plan.smem_bytes, c10::cuda::getCurrentCUDAStream()>>>(
        in.const_data_ptr<scalar_t>(), in.stride(0), in.stride(1), in.stride(2), in.stride(3),
        out.mutable_data_ptr<scalar_t>(), out.stride(0), out.stride(1), out.stride(2), out.stride(3),
        om.const_data_ptr<double>(), N, B, g, plan.shared_workspace ? nullptr : static_cast<acc_t*>(global_ws.get()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace cuda_impl
}  // namespace dsa_fast
