// How the CUDA executor launches one call, as a pure host function of the problem and the
// device's limits (no CUDA, no torch: csrc/tests/launch_plan_test.cpp checks it on any machine).
//
// One thread block per image (a grid-stride loop when N exceeds the grid). Each block needs
// `threads` acc_t of reduction scratch and a workspace of workspace_size(C, H, W) acc_t
// (kernels/augment.h). The workspace goes to shared memory when scratch + workspace fit the
// device's opt-in limit per block; else to one global slice per block, with the grid capped so that
// all slices together stay within kGlobalWorkspaceLimit bytes (the call's extra memory is then the
// output plus at most that bound, whatever N, C, H, W).
#pragma once

#include <cstdint>

#include "../kernels/augment.h"

namespace dsa_fast {

struct DeviceLimits {
  int64_t smem_optin_bytes;  // cudaDevAttrMaxSharedMemoryPerBlockOptin
  int64_t sms;               // cudaDevAttrMultiProcessorCount
};

struct LaunchPlan {
  bool shared_workspace;    // workspace in shared memory (else a global slice per block)
  int64_t grid;             // blocks
  int64_t smem_bytes;       // dynamic shared memory per block
  bool needs_optin;         // smem_bytes above the default 48 KiB: cudaFuncSetAttribute first
  int64_t workspace_bytes;  // one image's workspace
  int64_t global_bytes;     // global workspace of the whole launch (0 when shared)
};

constexpr int64_t kDefaultSmemBytes = 48 * 1024;
constexpr int64_t kMaxGridBlocks = 65535;
constexpr int64_t kGlobalWorkspaceLimit = int64_t(64) << 20;  // bytes
constexpr int64_t kBlocksPerSmGlobal = 4;  // enough resident blocks to hide latency

inline LaunchPlan plan_launch(int64_t N, int64_t C, int64_t H, int64_t W, int64_t acc_bytes, int64_t threads,
                              const DeviceLimits& dev) {
  LaunchPlan p;
  p.workspace_bytes = workspace_size(C, H, W) * acc_bytes;
  const int64_t scratch = threads * acc_bytes;
  p.shared_workspace = scratch + p.workspace_bytes <= dev.smem_optin_bytes;
  p.smem_bytes = scratch + (p.shared_workspace ? p.workspace_bytes : 0);
  p.needs_optin = p.smem_bytes > kDefaultSmemBytes;
  const int64_t n = N > 1 ? N : 1;
  if (p.shared_workspace) {
    p.grid = n < kMaxGridBlocks ? n : kMaxGridBlocks;
    p.global_bytes = 0;
  } else {
    // NB: every resident block owns one slice, so the grid is what bounds the memory.
    int64_t grid = kBlocksPerSmGlobal * dev.sms;
    const int64_t fit = kGlobalWorkspaceLimit / p.workspace_bytes;
    if (grid > fit) grid = fit;
    if (grid > n) grid = n;
    p.grid = grid > 1 ? grid : 1;
    p.global_bytes = p.grid * p.workspace_bytes;
  }
  return p;
}

}  // namespace dsa_fast
