// Every __global__ kernel of the project (csrc/cuda/augment_kernel.cuh, draw_kernel.cuh), compiled
// unmodified against the host simulator of cuda_sim.h and launched with exactly the launch that
// common/launch_plan.h computes, on an H100-like device (48 KiB default and 232,448 B opt-in shared
// memory per block, 132 SMs) and on a tiny one (4 KiB, 1 SM: global workspaces and grids smaller
// than N). Results are compared with the CPU executor (csrc/cpu/image_cpu.h, compiled into this
// binary) for float, double, half and bfloat16, forward and backward, contiguous / channels_last /
// strided tensors, H or W = 1, one ω for the batch and one per image, NaN in ω (docs/semantics.md
// §6), and targeted cases that need every barrier; the table kernels against the serial rows.
// Launches the driver would refuse (dynamic shared memory above the default without the opt-in,
// above the opt-in limit, a block beyond __launch_bounds__) must be refused.
//
// Equality: exact (the same value; NaN matches NaN, and -0 matches +0: a transposed cutout zeroes
// by multiplying, the CPU's row copies in another order) unless the call has contrast, whose image
// mean the block sums in a tree and the CPU in sixteen lanes; then
// |got - want| <= (2 eps(scalar_t) + 64 eps(acc_t)) (1 + |want|).
//
// Built and run by tests/test_cuda_sim.py under ThreadSanitizer and under AddressSanitizer +
// UndefinedBehaviorSanitizer (it needs torch's include directory for c10's Half and BFloat16):
//   g++ -std=c++20 -O1 -g -pthread -fsanitize=thread -I<torch>/include csrc/tests/cuda_sim_test.cpp -o sim && ./sim
#include "cuda_sim.h"  // first: the kernel headers compile against it

#include <ATen/OpMathType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "../cpu/image_cpu.h"
#include "../cuda/augment_kernel.cuh"
#include "../cuda/draw_kernel.cuh"
#include "random_case.h"

namespace dsa_fast {
namespace {

using cuda_impl::kRowThreads;
using cuda_impl::kThreads;
using cuda_impl::Strides4;

const dsa_sim::Device kH100{"H100-like", {48 * 1024, 232448, 132}};
const dsa_sim::Device kTiny{"tiny", {4096, 4096, 1}};

int failures = 0, checks = 0;

void fail(const std::string& what) {
  if (++failures <= 20) std::fprintf(stderr, "FAIL %s\n", what.c_str());
}

enum Layout { kContiguous, kChannelsLast, kStrided };
const char* layout_name(Layout l) { return l == kContiguous ? "contiguous" : l == kChannelsLast ? "channels_last" : "strided"; }

Strides4 strides_of(Layout l, int C, int H, int W) {
  switch (l) {
    case kContiguous: return {int64_t(C) * H * W, int64_t(H) * W, W, 1};
    case kChannelsLast: return {int64_t(H) * W * C, 1, int64_t(W) * C, C};
    default: {  // every other column of rows padded by one, channel and image gaps
      const int64_t sh = 2 * W + 1, sc = H * sh + 3;
      return {C * sc + 7, sc, sh, 2};
    }
  }
}

int64_t extent(const Strides4& s, int N, int C, int H, int W) {
  return (N - 1) * s.n + (C - 1) * s.c + (H - 1) * s.h + (W - 1) * s.w + 1;
}

enum TypeBit : int { kFloat = 1, kDouble = 2, kHalf = 4, kBFloat16 = 8, kAllTypes = 15 };

struct Case {
  std::string name;
  int N, C, H, W;
  int64_t flags;
  bool align_corners;
  Layout layout;
  std::vector<double> omega;  // B rows
  int dtypes = kAllTypes;     // which of float, double, half, bfloat16 run it
  int B() const { return static_cast<int>(omega.size() / kOmegaWidth); }
};

Case random_case(std::mt19937& rng, int index) {
  using testing::pick;
  Case k;
  k.name = "random " + std::to_string(index);
  k.N = pick(rng, 1, 6);
  k.C = pick(rng, 1, 4);
  k.H = pick(rng, 1, 4) == 1 ? 1 : pick(rng, 2, 21);
  k.W = pick(rng, 1, 4) == 1 ? 1 : pick(rng, 2, 21);
  k.flags = pick(rng, 0, 2) == 0 ? kAllOps : pick(rng, 0, kAllOps);
  k.align_corners = pick(rng, 0, 1) == 1;
  k.layout = static_cast<Layout>(index % 3);
  const int B = pick(rng, 0, 1) == 0 ? 1 : k.N;
  k.omega.resize(size_t(B) * kOmegaWidth);
  for (int b = 0; b < B; ++b) testing::random_omega_row(rng, k.H, k.W, &k.omega[size_t(b) * kOmegaWidth]);
  // Each random case in one full-precision and one half type, every pairing in turn.
  k.dtypes = (index % 2 == 0 ? kFloat : kDouble) | (index % 4 < 2 ? kHalf : kBFloat16);
  return k;
}

// A case whose every image takes all of `flags` (ω per image when per_image).
Case fixed_case(std::mt19937& rng, std::string name, int N, int C, int H, int W, int64_t flags, bool per_image,
                Layout layout = kContiguous, bool align_corners = false) {
  Case k{std::move(name), N, C, H, W, flags, align_corners, layout, {}};
  const int B = per_image ? N : 1;
  k.omega.resize(size_t(B) * kOmegaWidth);
  for (int b = 0; b < B; ++b) {
    double* row = &k.omega[size_t(b) * kOmegaWidth];
    testing::random_omega_row(rng, H, W, row);
    row[kSlotActive] = kAllOps;
  }
  return k;
}

template <typename T>
struct TypeName;
template <> struct TypeName<float> { static constexpr const char* value = "float"; };
template <> struct TypeName<double> { static constexpr const char* value = "double"; };
template <> struct TypeName<c10::Half> { static constexpr const char* value = "half"; };
template <> struct TypeName<c10::BFloat16> { static constexpr const char* value = "bfloat16"; };

template <typename T>
double as_double(T v) {
  return static_cast<double>(static_cast<float>(v));
}
template <>
double as_double<double>(double v) {
  return v;
}

// The spacing of T's values at 1.
template <typename T>
constexpr double epsilon() {
  if constexpr (std::is_same_v<T, c10::Half>) {
    return 0x1p-10;
  } else if constexpr (std::is_same_v<T, c10::BFloat16>) {
    return 0x1p-7;
  } else {
    return std::numeric_limits<T>::epsilon();
  }
}

// One call of the kernel (forward or backward) on the current simulated device against the CPU
// executor; the sim's output and global workspace start as NaN, the input's gaps (strided) too.
template <typename scalar_t, bool kBackward>
void check_augment(const Case& k, uint32_t seed) {
  using acc_t = at::opmath_type<scalar_t>;
  const Strides4 is = strides_of(k.layout, k.C, k.H, k.W);
  const Strides4 os = strides_of(k.layout == kChannelsLast ? kChannelsLast : kContiguous, k.C, k.H, k.W);
  const scalar_t nan = static_cast<scalar_t>(std::numeric_limits<float>::quiet_NaN());
  std::vector<scalar_t> in(extent(is, k.N, k.C, k.H, k.W), nan);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  for (int n = 0; n < k.N; ++n)
    for (int c = 0; c < k.C; ++c)
      for (int i = 0; i < k.H; ++i)
        for (int j = 0; j < k.W; ++j) in[n * is.n + c * is.c + i * is.h + j * is.w] = static_cast<scalar_t>(normal(rng));
  std::vector<scalar_t> got(extent(os, k.N, k.C, k.H, k.W), nan), want(got.size(), nan);
  const ImageGeometry<acc_t> g{k.C, k.H, k.W, k.flags, k.align_corners};

  const LaunchPlan plan = plan_launch(k.N, k.C, k.H, k.W, sizeof(acc_t), kThreads, dsa_sim::limits());
  std::unique_ptr<unsigned char[]> global_ws(plan.shared_workspace ? nullptr : new unsigned char[plan.global_bytes]);
  if (global_ws) dsa_sim::fill_nan(global_ws.get(), plan.global_bytes);
  if (plan.needs_optin) dsa_sim::set_max_dynamic_smem(cuda_impl::augment_kernel<scalar_t, acc_t, kBackward>, plan.smem_bytes);
  const std::string what = std::string(TypeName<scalar_t>::value) + (kBackward ? " backward " : " forward ") + k.name +
                           " on " + dsa_sim::state().device.name + " (N=" + std::to_string(k.N) + " C=" +
                           std::to_string(k.C) + " H=" + std::to_string(k.H) + " W=" + std::to_string(k.W) +
                           " flags=" + std::to_string(k.flags) + " B=" + std::to_string(k.B()) + " " +
                           layout_name(k.layout) + (k.align_corners ? " align_corners" : "") + "; grid " +
                           std::to_string(plan.grid) + ", smem " + std::to_string(plan.smem_bytes) + " B, " +
                           (plan.shared_workspace ? "shared" : "global") + " workspace)";
  try {
    cuda_impl::launch_augment<scalar_t, acc_t, kBackward>(plan, nullptr, in.data(), is, got.data(), os,
                                                          k.omega.data(), k.N, k.B(), g, global_ws.get());
  } catch (const dsa_sim::LaunchError& e) {
    fail(what + ": " + e.what());
    return;
  }

  std::vector<acc_t> ws(cpu::cpu_workspace_size<acc_t>(k.C, k.H, k.W));
  for (int n = 0; n < k.N; ++n) {
    const Omega<acc_t> o = Omega<acc_t>::load(k.omega.data() + (k.B() == 1 ? 0 : n) * kOmegaWidth);
    const View<const scalar_t, acc_t> src{in.data() + n * is.n, is.c, is.h, is.w};
    const View<scalar_t, acc_t> dst{want.data() + n * os.n, os.c, os.h, os.w};
    if (kBackward) {
      cpu::backward_image(src, dst, g, o, ws.data());
    } else {
      cpu::forward_image(src, dst, g, o, ws.data());
    }
  }

  const bool exact = (k.flags & kContrast) == 0;
  const double tol = 2.0 * epsilon<scalar_t>() + 64.0 * epsilon<acc_t>();
  ++checks;
  for (size_t e = 0; e < got.size(); ++e) {
    const double a = as_double(got[e]), b = as_double(want[e]);
    const bool ok = (std::isnan(a) && std::isnan(b)) || (exact ? a == b : std::fabs(a - b) <= tol * (1.0 + std::fabs(b)));
    if (!ok) {
      fail(what + ": element " + std::to_string(e) + " is " + std::to_string(a) + ", the CPU executor's " +
           std::to_string(b));
      return;
    }
  }
}

template <typename scalar_t>
void check_augment_both(const Case& k, uint32_t seed) {
  check_augment<scalar_t, false>(k, seed);
  check_augment<scalar_t, true>(k, seed + 1);
}

// Every case in both directions for each of its dtypes.
void check_cases(const std::vector<Case>& cases) {
  uint32_t seed = 1;
  for (const Case& k : cases) {
    if (k.dtypes & kFloat) check_augment_both<float>(k, seed);
    if (k.dtypes & kDouble) check_augment_both<double>(k, seed);
    if (k.dtypes & kHalf) check_augment_both<c10::Half>(k, seed);
    if (k.dtypes & kBFloat16) check_augment_both<c10::BFloat16>(k, seed);
    seed += 2;
  }
}

// The cases of one device. Targeted ones first: each needs a barrier (named) to come out right.
std::vector<Case> cases_for(const dsa_sim::Device& d, std::mt19937& rng) {
  std::vector<Case> v;
  // The end-of-image barrier: a grid-stride loop (N > grid on the tiny device, global workspace)
  // whose next image rewrites the base table and the planes with no contrast sum in between.
  v.push_back(fixed_case(rng, "grid-stride resamplings, no contrast", 7, 3, 12, 12, kScale | kRotate | kFlip, true));
  v.push_back(fixed_case(rng, "grid-stride rotate, one omega", 6, 3, 12, 12, kRotate, false, kChannelsLast));
  // The base-table barrier and the barrier after the pointwise pass: one resampling.
  v.push_back(fixed_case(rng, "scale after crop", 3, 2, 9, 14, kCrop | kScale, true, kStrided, true));
  // The barrier between the two resamplings (and the two transposed ones).
  v.push_back(fixed_case(rng, "scale and rotate", 3, 3, 16, 16, kScale | kRotate, true));
  // The contrast sum's barriers (and the backward's mean of the gradient).
  v.push_back(fixed_case(rng, "contrast", 4, 3, 17, 15, kBrightness | kContrast, true, kChannelsLast));
  v.push_back(fixed_case(rng, "the full chain", 3, 3, 20, 20, kAllOps, true, kStrided));
  // H or W = 1.
  v.push_back(fixed_case(rng, "H = 1", 3, 2, 1, 9, kAllOps, true));
  v.push_back(fixed_case(rng, "W = 1", 3, 3, 9, 1, kAllOps, false, kChannelsLast, true));
  if (d.limits.sms > 1) {
    // Shared memory above the 48 KiB default (double) and a global workspace (double) next to an
    // opt-in shared one (float) on the large device.
    v.push_back(fixed_case(rng, "3x32x32", 2, 3, 32, 32, kAllOps, true));
    v.push_back(fixed_case(rng, "1x128x128", 2, 1, 128, 128, kScale | kRotate | kContrast, false));
    v.back().dtypes = kFloat | kDouble;  // half and bfloat16 take float's plan
  }
  // NaN in ω (docs/semantics.md §6): a NaN resampling parameter, a NaN colour factor.
  Case nan_scale = fixed_case(rng, "NaN scale", 2, 3, 7, 6, kAllOps, true);
  nan_scale.omega[kSlotScaleW] = std::nan("");
  v.push_back(nan_scale);
  Case nan_rotate = fixed_case(rng, "NaN sin", 2, 2, 6, 7, kRotate | kFlip, false);
  nan_rotate.omega[kSlotSin] = std::nan("");
  v.push_back(nan_rotate);
  Case nan_sat = fixed_case(rng, "NaN saturation", 2, 3, 5, 5, kSaturation | kCrop, true);
  nan_sat.omega[kOmegaWidth + kSlotSat] = std::nan("");
  v.push_back(nan_sat);
  for (int r = 0; r < 8; ++r) v.push_back(random_case(rng, r));
  return v;
}

// The forward of a NaN position is NaN and its backward reaches no input pixel: checked literally
// here, beyond the agreement of both executors.
void check_nan_rule() {
  using acc_t = float;
  const int C = 1, H = 4, W = 5;
  double row[kOmegaWidth] = {};
  row[kSlotScaleW] = std::nan("");
  row[kSlotScaleH] = 1.0;
  row[kSlotActive] = kAllOps;
  const ImageGeometry<acc_t> g{C, H, W, kScale, false};
  std::vector<float> x(H * W, 1.0f), y(H * W, 0.0f), dx(H * W, 7.0f);
  const LaunchPlan plan = plan_launch(1, C, H, W, sizeof(acc_t), kThreads, dsa_sim::limits());
  cuda_impl::launch_augment<float, acc_t, false>(plan, nullptr, x.data(), {H * W, H * W, W, 1}, y.data(),
                                                 {H * W, H * W, W, 1}, row, 1, 1, g, nullptr);
  cuda_impl::launch_augment<float, acc_t, true>(plan, nullptr, x.data(), {H * W, H * W, W, 1}, dx.data(),
                                                {H * W, H * W, W, 1}, row, 1, 1, g, nullptr);
  ++checks;
  for (int e = 0; e < H * W; ++e) {
    if (!std::isnan(y[e]) || dx[e] != 0.0f) {
      fail("NaN rule: pixel " + std::to_string(e) + " forward " + std::to_string(y[e]) + " (want NaN), backward " +
           std::to_string(dx[e]) + " (want 0)");
      return;
    }
  }
}

// Table kernels: the rows of draw_kernel / compat_kernel against the serial rows, every row written
// once (the table starts as NaN), with the grid of plan_row_launch.
template <typename scalar_t>
void check_draw(int64_t B, int families, int64_t key_source) {
  rng::DrawPlan p{};
  for (int bit = 0; bit < kNumOps; ++bit) {
    p.v[rng::kPlanDraw + bit] = 2 * bit + 3;
    p.v[rng::kPlanGroup + bit] = families > 0 ? bit % families : 0;
  }
  p.v[rng::kPlanFamilies] = families;
  p.v[rng::kPlanPerSample] = 1;
  p.v[rng::kPlanKeySource] = key_source;
  p.v[rng::kPlanSeed] = 1234567;
  p.v[rng::kPlanChoiceDraw] = 1;
  p.v[rng::kPlanCropH] = 2;
  p.v[rng::kPlanCropW] = 3;
  p.v[rng::kPlanCutH] = 5;
  p.v[rng::kPlanCutW] = 4;
  const float settings[rng::kSettingsSize] = {0.6f, 0.83f, 0.52f, 0.5f, 1.0f, 2.0f, 0.5f};
  for (int s = 0; s < rng::kSettingsSize; ++s) p.s[s] = settings[s];
  p.flags = kAllOps;
  const int64_t key = 987654321012345;
  const int H = 9, W = 10;
  std::vector<double> got(size_t(B) * kOmegaWidth, std::nan("")), want(got.size());
  const LaunchPlan plan = plan_row_launch(B, kRowThreads, dsa_sim::limits());
  cuda_impl::launch_draw<scalar_t>(plan, nullptr, p, key_source == rng::kKeyInt ? nullptr : &key, got.data(), B, H, W);
  const uint32_t folded = rng::fold_key(p.key_of(key_source == rng::kKeyInt ? 0 : key));
  for (int64_t b = 0; b < B; ++b) rng::draw_row<scalar_t>(p, folded, b, H, W, &want[b * kOmegaWidth], true);
  ++checks;
  if (std::memcmp(got.data(), want.data(), got.size() * sizeof(double)) != 0) {
    fail(std::string("draw_kernel<") + TypeName<scalar_t>::value + "> B=" + std::to_string(B) + " on " +
         dsa_sim::state().device.name + " (grid " + std::to_string(plan.grid) + "): rows differ from draw_row's");
  }
}

template <typename scalar_t>
void check_compat(int64_t B, bool per_sample) {
  std::mt19937 rng(static_cast<uint32_t>(B));
  const int n = per_sample ? static_cast<int>(B) : 1;
  // Eleven raw draws of the full chain in canonical order, of every raw dtype.
  std::vector<float> f(n);
  std::vector<double> d(n);
  std::vector<c10::Half> h(n);
  std::vector<c10::BFloat16> bf(n);
  std::vector<int64_t> crop_h(n), crop_w(n), top(n), left(n);
  for (int e = 0; e < n; ++e) {
    f[e] = testing::uniform(rng, 0, 1);
    d[e] = testing::uniform(rng, 0, 1);
    h[e] = static_cast<c10::Half>(testing::uniform(rng, 0, 1));
    bf[e] = static_cast<c10::BFloat16>(testing::uniform(rng, 0, 1));
    crop_h[e] = testing::pick(rng, -2, 2);
    crop_w[e] = testing::pick(rng, -3, 3);
    top[e] = testing::pick(rng, 0, 9);
    left[e] = testing::pick(rng, 0, 10);
  }
  compat::RawDraws r{};
  const void* ptrs[] = {f.data(), h.data(), bf.data(), crop_h.data(), crop_w.data(), top.data(),
                        left.data(), d.data(), f.data(), d.data(), bf.data()};
  const int types[] = {compat::kRawFloat, compat::kRawHalf, compat::kRawBFloat16, compat::kRawLong,
                       compat::kRawLong,  compat::kRawLong, compat::kRawLong,     compat::kRawDouble,
                       compat::kRawFloat, compat::kRawDouble, compat::kRawBFloat16};
  r.count = 11;
  for (int k = 0; k < r.count; ++k) {
    r.ptr[k] = ptrs[k];
    r.type[k] = types[k];
  }
  compat::CompatPlan p{};
  p.flags = kAllOps;
  p.per_sample = per_sample;
  p.cut_h = 5;
  p.cut_w = 4;
  const double settings[compat::kCSettingsSize] = {0.3667, 0.8333, 15.0, 3.14159265358979, 0.5, 1.0, 2.0, 0.5};
  for (int s = 0; s < compat::kCSettingsSize; ++s) p.s[s] = settings[s];
  const int64_t rows = per_sample ? B : 1;
  std::vector<double> got(size_t(rows) * kOmegaWidth, std::nan("")), want(got.size());
  const LaunchPlan plan = plan_row_launch(rows, kRowThreads, dsa_sim::limits());
  cuda_impl::launch_compat<scalar_t>(plan, nullptr, p, r, got.data(), rows);
  for (int64_t b = 0; b < rows; ++b) compat::compat_row<scalar_t>(p, r, b, &want[b * kOmegaWidth], true);
  ++checks;
  if (std::memcmp(got.data(), want.data(), got.size() * sizeof(double)) != 0) {
    fail(std::string("compat_kernel<") + TypeName<scalar_t>::value + "> rows=" + std::to_string(rows) + " on " +
         dsa_sim::state().device.name + ": rows differ from compat_row's");
  }
}

// 600 rows exceed the tiny device's 4 blocks of 128 threads: a grid-stride loop there.
template <typename scalar_t>
void check_tables() {
  check_draw<scalar_t>(5, 0, rng::kKeyInt);
  check_draw<scalar_t>(600, 3, rng::kKeyTensor);
  check_compat<scalar_t>(600, true);
  if (std::is_same_v<scalar_t, float>) {
    check_draw<scalar_t>(7, 0, rng::kKeyCounter);
    check_compat<scalar_t>(7, false);
  }
}

// CudaBlockExec::sum twice in a row: its last barrier lets the second sum reuse the scratch.
__global__ void __launch_bounds__(kThreads) sum_twice_kernel(double* out) {
  DSA_DYNAMIC_SMEM(smem);
  double* scratch = reinterpret_cast<double*>(smem);
  const cuda_impl::CudaBlockExec ex;
  const double a = ex.sum(static_cast<double>(threadIdx.x), scratch);
  const double b = ex.sum(static_cast<double>(2 * threadIdx.x + 1), scratch);
  out[(blockIdx.x * blockDim.x + threadIdx.x) * 2] = a;
  out[(blockIdx.x * blockDim.x + threadIdx.x) * 2 + 1] = b;
}

void check_sum_twice() {
  LaunchPlan plan{};
  plan.grid = 3;
  plan.block = kThreads;
  plan.smem_bytes = kThreads * sizeof(double);
  std::vector<double> out(plan.grid * kThreads * 2, std::nan(""));
  const auto kernel = sum_twice_kernel;
  DSA_LAUNCH(kernel, kThreads, plan, nullptr, out.data());
  const double T = kThreads;
  ++checks;
  for (size_t e = 0; e < out.size(); e += 2) {
    if (out[e] != T * (T - 1) / 2 || out[e + 1] != T * T) {
      fail("CudaBlockExec::sum twice: thread " + std::to_string(e / 2) + " got " + std::to_string(out[e]) + ", " +
           std::to_string(out[e + 1]));
      return;
    }
  }
}

// Launches the driver refuses: each must raise LaunchError.
template <typename F>
void expect_refused(const char* what, F&& f) {
  ++checks;
  try {
    f();
  } catch (const dsa_sim::LaunchError&) {
    return;
  }
  fail(std::string("not refused: ") + what);
}

void check_refusals() {
  using acc_t = double;
  const int C = 3, H = 32, W = 32;
  const ImageGeometry<acc_t> g{C, H, W, kAllOps, false};
  std::vector<double> x(C * H * W, 0.0), y(x.size()), row(kOmegaWidth, 0.0);
  const Strides4 s{C * H * W, H * W, W, 1};
  const LaunchPlan plan = plan_launch(1, C, H, W, sizeof(acc_t), kThreads, dsa_sim::limits());
  if (!plan.needs_optin) fail("3x32x32 double: expected a plan above the default shared memory");
  auto launch = [&](const LaunchPlan& p) {
    cuda_impl::launch_augment<double, acc_t, false>(p, nullptr, x.data(), s, y.data(), s, row.data(), 1, 1, g, nullptr);
  };
  expect_refused("dynamic shared memory above 48 KiB without the opt-in", [&] { launch(plan); });
  expect_refused("an opt-in above the device's limit", [&] {
    dsa_sim::set_max_dynamic_smem(cuda_impl::augment_kernel<double, acc_t, false>, dsa_sim::limits().smem_optin_bytes + 1);
  });
  LaunchPlan wide = plan;
  wide.block = 2 * kThreads;
  dsa_sim::set_max_dynamic_smem(cuda_impl::augment_kernel<double, acc_t, false>, plan.smem_bytes);
  expect_refused("a block beyond __launch_bounds__", [&] { launch(wide); });
  LaunchPlan over = plan;
  over.smem_bytes = plan.smem_bytes + 1;
  expect_refused("more dynamic shared memory than the opt-in set", [&] { launch(over); });
  dsa_sim::set_device(dsa_sim::state().device);  // attributes back to the defaults
}

}  // namespace
}  // namespace dsa_fast

int main() {
  using namespace dsa_fast;
  std::mt19937 rng(2024);
  for (const dsa_sim::Device& d : {kH100, kTiny}) {
    dsa_sim::set_device(d);
    check_cases(cases_for(d, rng));
    check_nan_rule();
    check_tables<float>();
    check_tables<double>();
    check_tables<c10::Half>();
    check_tables<c10::BFloat16>();
    check_sum_twice();
  }
  dsa_sim::set_device(kH100);
  check_refusals();
  std::printf("cuda sim: %d checks, %lld launches, %d failures\n", checks,
              static_cast<long long>(dsa_sim::state().launches), failures);
  return failures == 0 ? 0 : 1;
}
