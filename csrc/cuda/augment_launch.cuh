#pragma once
// CUDA kernels: one thread block per image, running the shared per-image program of
// kernels/augment.h; the workspace (two [C, H, W] planes and the base table) lives in shared
// memory, or in global memory for images too large for it. No atomics: results are bitwise
// reproducible. Included by augment_cuda_fwd.cu and augment_cuda_bwd.cu, one direction each, so
// that the two compile in parallel.
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "../common/checks.h"
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
    const size_t ws_bytes = static_cast<size_t>(workspace_size(g.C, g.H, g.W)) * sizeof(acc_t);
    const size_t scratch_bytes = kThreads * sizeof(acc_t);
    int device = in.get_device(), smem_optin = 0, sms = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    const bool shared_ws = scratch_bytes + ws_bytes <= static_cast<size_t>(smem_optin);
    const size_t smem = scratch_bytes + (shared_ws ? ws_bytes : 0);
    // NB: with a global workspace each resident block owns one slice, so the grid is capped.
    const int64_t grid = std::min<int64_t>(N, shared_ws ? 65535 : 4 * static_cast<int64_t>(sms));
    at::Tensor global_ws;
    if (!shared_ws) {
      global_ws = at::empty({grid, static_cast<int64_t>(ws_bytes / sizeof(acc_t))},
                            in.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    }
    auto kernel = augment_kernel<scalar_t, acc_t, kBackward>;
    if (smem > 48 * 1024) {
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    }
    kernel<<<static_cast<unsigned>(grid), kThreads, smem, c10::cuda::getCurrentCUDAStream()>>>(
        in.const_data_ptr<scalar_t>(), in.stride(0), in.stride(1), in.stride(2), in.stride(3),
        out.mutable_data_ptr<scalar_t>(), out.stride(0), out.stride(1), out.stride(2), out.stride(3),
        om.const_data_ptr<double>(), N, B, g, shared_ws ? nullptr : global_ws.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace cuda_impl
}  // namespace dsa_fast
