// Where the kernel headers (augment_kernel.cuh, draw_kernel.cuh) meet CUDA's syntax, so that they
// compile unchanged under nvcc (the extension) and under the host simulator of
// csrc/tests/cuda_sim.h, which defines DSA_CUDA_SIM and provides threadIdx, __syncthreads and a
// launch on CPU threads. No ATen, no c10.
//
// DSA_DEVICE_CODE: 1 where code runs as a thread of a block (nvcc's device pass, the simulator);
//   the __host__ __device__ helpers take their device-only branches under it.
// DSA_DYNAMIC_SMEM(name): the block's dynamic shared memory as `unsigned char* name`.
// DSA_LAUNCH(kernel, bound, plan, stream, args...): launches `kernel` (a function or pointer,
//   declared __launch_bounds__(bound)) with the grid, block and dynamic shared memory of `plan`
//   (a LaunchPlan, common/launch_plan.h).
#pragma once

#if defined(__CUDA_ARCH__) || defined(DSA_CUDA_SIM)
#define DSA_DEVICE_CODE 1
#else
#define DSA_DEVICE_CODE 0
#endif

#if defined(DSA_CUDA_SIM)
#define DSA_DYNAMIC_SMEM(name) unsigned char* const name = ::dsa_sim::dynamic_shared_memory()
#define DSA_LAUNCH(kernel, bound, plan, stream, ...) \
  ::dsa_sim::launch(kernel, bound, (plan).grid, (plan).block, (plan).smem_bytes, __VA_ARGS__)
#else
#define DSA_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#define DSA_LAUNCH(kernel, bound, plan, stream, ...)                                              \
  kernel<<<static_cast<unsigned>((plan).grid), static_cast<unsigned>((plan).block),               \
           static_cast<size_t>((plan).smem_bytes), stream>>>(__VA_ARGS__)
#endif
