// CPU kernels: one image per task (at::parallel_for over the batch), each running the row-wise
// per-image program of image_cpu.h with a workspace per task, and the resamplings' taps shared by
// the tasks when the batch has one ω.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <memory>

#include "../common/checks.h"
#include "image_cpu.h"

namespace dsa_fast {
namespace {

template <bool kBackward>
at::Tensor run(const char* op, const at::Tensor& in, const at::Tensor& omega, int64_t flags, bool align_corners) {
  check_augment_args(op, in, omega, flags);
  at::Tensor out = empty_output(in);
  if (in.numel() == 0) return out;
  const at::Tensor om = omega.contiguous();
  DSA_DISPATCH_FLOATING(in.scalar_type(), "dsa_fast.augment", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t N = in.size(0), B = om.size(0);
    const ImageGeometry<acc_t> g{static_cast<int>(in.size(1)), static_cast<int>(in.size(2)),
                                 static_cast<int>(in.size(3)), flags, align_corners};
    const scalar_t* in_p = in.const_data_ptr<scalar_t>();
    scalar_t* out_p = out.mutable_data_ptr<scalar_t>();
    const double* om_p = om.const_data_ptr<double>();
    const int64_t ws_size = cpu::cpu_workspace_size<acc_t>(g.C, g.H, g.W);
    // One ω for the batch: the resamplings' taps once for every image (bounded by TapPlan::wanted).
    std::unique_ptr<acc_t[]> plan_store;
    cpu::TapPlan<acc_t> plan;
    const bool planned = B == 1 && (flags & (kScale | kRotate)) != 0 && cpu::TapPlan<acc_t>::wanted(g.H, g.W);
    cpu::GatherPlan<acc_t> gather;  // backward: the transposed resamplings as gathers
    const bool gathered = planned && kBackward && N >= cpu::kMinGatherBatch;
    if (planned) {
      const Omega<acc_t> o = Omega<acc_t>::load(om_p);
      plan_store.reset(new acc_t[cpu::TapPlan<acc_t>::size(g.H, g.W)]);
      plan = cpu::TapPlan<acc_t>::build(g, o, plan_store.get());
      if (gathered) gather.build(g, o, plan, in.stride(2), in.stride(3));
    }
    const cpu::TapPlan<acc_t>* shared = planned ? &plan : nullptr;
    const cpu::GatherPlan<acc_t>* shared_gather = gathered ? &gather : nullptr;
    at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
      // NB: uninitialised: every value is written before it is read.
      const std::unique_ptr<acc_t[]> ws(new acc_t[ws_size]);
      for (int64_t n = begin; n < end; ++n) {
        const Omega<acc_t> o = Omega<acc_t>::load(om_p + (B == 1 ? 0 : n) * kOmegaWidth);
        const View<const scalar_t, acc_t> src{in_p + n * in.stride(0), in.stride(1), in.stride(2), in.stride(3)};
        const View<scalar_t, acc_t> dst{out_p + n * out.stride(0), out.stride(1), out.stride(2), out.stride(3)};
        if constexpr (kBackward) {
          cpu::backward_image(src, dst, g, o, ws.get(), shared, shared_gather);
        } else {
          cpu::forward_image(src, dst, g, o, ws.get(), shared);
        }
      }
    });
  });
  return out;
}

at::Tensor augment_cpu(const at::Tensor& x, const at::Tensor& omega, int64_t flags, bool align_corners) {
  return run<false>("dsa_fast.augment", x, omega, flags, align_corners);
}

at::Tensor augment_backward_cpu(const at::Tensor& grad, const at::Tensor& omega, int64_t flags, bool align_corners) {
  return run<true>("dsa_fast.augment_backward", grad, omega, flags, align_corners);
}

}  // namespace

// Applies a table drawn by augment_draw or augment_compat (draw_cpu.cpp); `op` names the caller.
at::Tensor augment_cpu_table(const char* op, const at::Tensor& x, const at::Tensor& omega, int64_t flags,
                             bool align_corners) {
  return run<false>(op, x, omega, flags, align_corners);
}

TORCH_LIBRARY_IMPL(dsa_fast, CPU, m) {
  m.impl("augment", &augment_cpu);
  m.impl("augment_backward", &augment_backward_cpu);
}

}  // namespace dsa_fast
