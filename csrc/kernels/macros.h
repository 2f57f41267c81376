// Host/device portability for the per-pixel headers in csrc/kernels/, compiled by both the C++
// compiler (CPU kernels) and nvcc (CUDA kernels).
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define DSA_HOST_DEVICE __host__ __device__
#define DSA_INLINE __forceinline__
#elif defined(__GNUC__)
#define DSA_HOST_DEVICE
#define DSA_INLINE inline __attribute__((always_inline))
#else
#define DSA_HOST_DEVICE
#define DSA_INLINE inline
#endif
