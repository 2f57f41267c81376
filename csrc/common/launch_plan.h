// How the CUDA executor launches each kernel, as pure host functions of the problem and the
// device's limits (no CUDA, no torch): csrc/tests/launch_plan_test.cpp checks them on any machine,
// and csrc/tests/cuda_sim_test.cpp runs every kernel on CPU threads with exactly these launches.
//
// augment: one thread block per image (a grid-stride loop when N exceeds the grid). Each block
// needs `threads` acc_t of reduction scratch and a workspace of workspace_size(C, H, W) acc_t
// (kernels/augment.h). The workspace goes to shared memory when scratch + workspace fit the
// device's opt-in limit per block; else to one global slice per block, with the grid capped so that
// all slices together stay within kGlobalWorkspaceLimit bytes (the call's extra memory is then the
// output plus at most that bound, whatever N, C, H, W).
// Table rows (augment_draw, augment_compat): one thread per row, no shared memory.
#pragma once

#include <cstdint>

#include "../kernels/augment.h"

namespace dsa_fast {

struct DeviceLimits {
  int64_t smem_default_bytes;  // cudaDevAttrMaxSharedMemoryPerBlock: dynamic shared memory without the opt-in
  int64_t smem_optin_bytes;    // cudaDevAttrMaxSharedMemoryPerBlockOptin
  int64_t sms;                 // cudaDevAttrMultiProcessorCount
};

struct LaunchPlan {
  int64_t grid;             // blocks
  int64_t block;            // threads per block
  int64_t smem_bytes;       // dynamic shared memory per block
  bool needs_optin;         // smem_bytes above the device's default: cudaFuncSetAttribute first
  bool shared_workspace;    // workspace in shared memory (else a global slice per block)
  int64_t workspace_bytes;  // one image's workspace
  int64_t global_bytes;     // global workspace of the whole launch (0 when shared)
};

constexpr int64_t kMaxGridBlocks = 65535;
constexpr int64_t kGlobalWorkspaceLimit = int64_t(64) << 20;  // bytes
constexpr int64_t kBlocksPerSm = 4;  // enough resident blocks to hide latency in a grid-stride loop

// The augment kernels (cuda/augment_kernel.cuh) for N images of C x H x W, accumulating in
// acc_bytes-wide values, with blocks of `threads`.
inline LaunchPlan plan_launch(int64_t N, int64_t C, int64_t H, int64_t W, int64_t acc_bytes, int64_t threads,
                              const DeviceLimits& dev) {
  LaunchPlan p;
  p.block = threads;
  p.workspace_bytes = workspace_size(C, H, W) * acc_bytes;
  const int64_t scratch = threads * acc_bytes;
  p.shared_workspace = scratch + p.workspace_bytes <= dev.smem_optin_bytes;
  p.smem_bytes = scratch + (p.shared_workspace ? p.workspace_bytes : 0);
  p.needs_optin = p.smem_bytes > dev.smem_default_bytes;
  const int64_t n = N > 1 ? N : 1;
  if (p.shared_workspace) {
    p.grid = n < kMaxGridBlocks ? n : kMaxGridBlocks;
    p.global_bytes = 0;
  } else {
    // NB: every resident block owns one slice, so the grid is what bounds the memory.
    int64_t grid = kBlocksPerSm * dev.sms;
    const int64_t fit = kGlobalWorkspaceLimit / p.workspace_bytes;
    if (grid > fit) grid = fit;
    if (grid > n) grid = n;
    p.grid = grid > 1 ? grid : 1;
    p.global_bytes = p.grid * p.workspace_bytes;
  }
  return p;
}

// The row kernels (cuda/draw_kernel.cuh) for a table of `rows` rows: one thread per row, a
// grid-stride loop beyond kBlocksPerSm blocks per multiprocessor.
inline LaunchPlan plan_row_launch(int64_t rows, int64_t threads, const DeviceLimits& dev) {
  LaunchPlan p{};
  p.block = threads;
  const int64_t want = (rows + threads - 1) / threads, cap = kBlocksPerSm * dev.sms;
  p.grid = want < cap ? want : cap;
  if (p.grid < 1) p.grid = 1;
  p.shared_workspace = true;  // no workspace at all
  return p;
}

}  // namespace dsa_fast
