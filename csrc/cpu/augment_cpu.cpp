// CPU kernels: one image per task (at::parallel_for over the batch), each running the shared
// per-image program of kernels/augment.h with a thread-local workspace.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../common/checks.h"
#include "../kernels/augment.h"

namespace dsa_fast {
namespace {

// One worker per image: loops run sequentially, sums are the worker's own.
struct CpuExec {
  int begin() const { return 0; }
  int stride() const { return 1; }
  void sync() const {}
  template <typename T>
  T sum(T v, T*) const {
    return v;
  }
};

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
    const bool geometric = g.has(kScale) || g.has(kRotate);
    at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> ws(geometric || kBackward ? workspace_size(g.C, g.H, g.W) : 0);
      CpuExec ex;
      for (int64_t n = begin; n < end; ++n) {
        const Omega<acc_t> o = Omega<acc_t>::load(om_p + (B == 1 ? 0 : n) * kOmegaWidth);
        const View<const scalar_t, acc_t> src{in_p + n * in.stride(0), in.stride(1), in.stride(2), in.stride(3)};
        const View<scalar_t, acc_t> dst{out_p + n * out.stride(0), out.stride(1), out.stride(2), out.stride(3)};
        if constexpr (kBackward) {
          augment_backward_image(ex, src, dst, g, o, ws.data(), static_cast<acc_t*>(nullptr));
        } else {
          augment_image(ex, src, dst, g, o, ws.data(), static_cast<acc_t*>(nullptr));
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
