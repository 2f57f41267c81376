// plan_launch and plan_row_launch (common/launch_plan.h) with an H200's and an A100's limits, every
// dtype's accumulator size, shapes up to 3 x 512 x 512. Run by tests/test_block_emulator.py.
#include <cstdio>
#include <initializer_list>

#include "../common/launch_plan.h"

namespace {

int failures = 0;

void expect(bool ok, const char* what, const char* dev, int64_t acc, int64_t N, int64_t C, int64_t H, int64_t W) {
  if (!ok) {
    std::fprintf(stderr, "FAIL %s: %s acc %lld bytes N=%lld C=%lld H=%lld W=%lld\n", what, dev,
                 static_cast<long long>(acc), static_cast<long long>(N), static_cast<long long>(C),
                 static_cast<long long>(H), static_cast<long long>(W));
    ++failures;
  }
}

}  // namespace

int main() {
  using namespace dsa_fast;
  struct Dev {
    const char* name;
    DeviceLimits lim;
  };
  const Dev devices[] = {{"H200", {48 * 1024, 227 * 1024, 132}}, {"A100", {48 * 1024, 163 * 1024, 108}}};
  const int64_t threads = 256;
  int checked = 0;
  for (const Dev& d : devices) {
    for (const int64_t acc : {4, 8}) {  // float/half/bfloat16 accumulate in float; double in double
      for (const int64_t C : {1, 3}) {
        for (int64_t side = 1; side <= 512; side = side < 8 ? side + 1 : side * 2 - side / 2) {
          for (const int64_t N : {1, 10, 256, 100000}) {
            const int64_t H = side, W = side;
            const LaunchPlan p = plan_launch(N, C, H, W, acc, threads, d.lim);
            ++checked;
            const int64_t ws = (2 * C * H * W + H + W) * acc;
            expect(p.workspace_bytes == ws, "workspace bytes", d.name, acc, N, C, H, W);
            expect(p.block == threads, "block = threads", d.name, acc, N, C, H, W);
            const bool fits = threads * acc + ws <= d.lim.smem_optin_bytes;
            expect(p.shared_workspace == fits, "shared iff it fits the opt-in limit", d.name, acc, N, C, H, W);
            expect(p.smem_bytes <= d.lim.smem_optin_bytes, "dynamic smem within the opt-in limit", d.name, acc, N, C, H, W);
            expect(p.smem_bytes == threads * acc + (fits ? ws : 0), "dynamic smem = scratch (+ workspace)", d.name, acc,
                   N, C, H, W);
            expect(p.needs_optin == (p.smem_bytes > 48 * 1024), "opt-in above 48 KiB", d.name, acc, N, C, H, W);
            expect(p.grid >= 1 && p.grid <= N && p.grid <= 65535, "1 <= grid <= min(N, 65535)", d.name, acc, N, C, H, W);
            if (fits) {
              expect(p.grid == (N < 65535 ? N : 65535), "one block per image", d.name, acc, N, C, H, W);
              expect(p.global_bytes == 0, "no global workspace", d.name, acc, N, C, H, W);
            } else {
              expect(p.global_bytes == p.grid * ws, "a slice per block", d.name, acc, N, C, H, W);
              expect(p.global_bytes <= (int64_t(64) << 20), "global workspace <= 64 MiB", d.name, acc, N, C, H, W);
              expect(p.grid <= 4 * d.lim.sms, "grid <= 4 blocks per SM", d.name, acc, N, C, H, W);
            }
          }
        }
      }
    }
  }
  // Literal cases. 3x32x32 float: (2*3072 + 64) * 4 = 24832 B + 1 KiB scratch, shared, no opt-in.
  LaunchPlan p = plan_launch(256, 3, 32, 32, 4, 256, devices[0].lim);
  expect(p.shared_workspace && p.smem_bytes == 25856 && !p.needs_optin && p.grid == 256, "3x32x32 float", "H200", 4,
         256, 3, 32, 32);
  // 3x32x32 double: 49664 + 2048 = 51712 B > 48 KiB: shared with the opt-in.
  p = plan_launch(256, 3, 32, 32, 8, 256, devices[1].lim);
  expect(p.shared_workspace && p.smem_bytes == 51712 && p.needs_optin, "3x32x32 double", "A100", 8, 256, 3, 32, 32);
  // 3x64x64 float: (24576 + 128) * 4 + 1024 = 99840 B: shared on both (opt-in).
  p = plan_launch(10, 3, 64, 64, 4, 256, devices[1].lim);
  expect(p.shared_workspace && p.smem_bytes == 99840 && p.needs_optin && p.grid == 10, "3x64x64 float", "A100", 4, 10,
         3, 64, 64);
  // 1x128x128 float: (32768 + 256) * 4 + 1024 = 133120 B: shared on an H200 and an A100 (163 KiB).
  p = plan_launch(10, 1, 128, 128, 4, 256, devices[1].lim);
  expect(p.shared_workspace, "1x128x128 float", "A100", 4, 10, 1, 128, 128);
  // 1x128x128 double: 264192 + 2048 B: global on both.
  p = plan_launch(10, 1, 128, 128, 8, 256, devices[0].lim);
  expect(!p.shared_workspace && p.grid == 10 && p.smem_bytes == 2048, "1x128x128 double", "H200", 8, 10, 1, 128, 128);
  // 3x224x224 float: (301056 + 448) * 4 = 1206016 B per image: 64 MiB / that = 55 blocks (not 4 x 132).
  p = plan_launch(256, 3, 224, 224, 4, 256, devices[0].lim);
  expect(!p.shared_workspace && p.grid == 55 && p.global_bytes == 55 * 1206016, "3x224x224 float", "H200", 4, 256, 3,
         224, 224);
  // 3x512x512 float: (1572864 + 1024) * 4 = 6295552 B: 10 blocks.
  p = plan_launch(8, 3, 512, 512, 4, 256, devices[1].lim);
  expect(!p.shared_workspace && p.grid == 8 && p.global_bytes == 8 * 6295552, "3x512x512 float N=8", "A100", 4, 8, 3,
         512, 512);
  p = plan_launch(256, 3, 512, 512, 4, 256, devices[1].lim);
  expect(p.grid == 10, "3x512x512 float N=256", "A100", 4, 256, 3, 512, 512);
  // Table rows: one thread per row, at most 4 blocks per SM, no shared memory.
  for (const int64_t rows : {1, 127, 128, 129, 5000, 100000}) {
    p = plan_row_launch(rows, 128, devices[0].lim);
    const int64_t want = (rows + 127) / 128 < 4 * 132 ? (rows + 127) / 128 : 4 * 132;
    expect(p.grid == want && p.block == 128 && p.smem_bytes == 0 && !p.needs_optin && p.global_bytes == 0,
           "row launch", "H200", 0, rows, 0, 0, 0);
  }
  p = plan_row_launch(600, 128, DeviceLimits{4096, 4096, 1});
  expect(p.grid == 4, "row launch: 4 blocks on one SM", "tiny", 0, 600, 0, 0, 0);
  std::printf("launch plan: %d configurations checked, %d failures\n", checked + 15, failures);
  return failures == 0 ? 0 : 1;
}
