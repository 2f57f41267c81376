// Autograd of every op, for every device, in C++ (one Autograd registration).
//
// Why C++ and not torch.library.register_autograd: the Python wrapper costs about 0.4 ms of host
// time per forward + backward (pytree flattening of the inputs, a Python autograd.Function), more
// than the whole kernel for a small batch. These Functions redispatch below autograd and their
// backward calls the registered augment_backward (whose own backward is augment), so the graph
// stays traceable and double backward works.
//
// NB: C++ autograd Functions do not run under torch.func transforms (grad, vmap); use
// backend='reference' there.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "kernels/omega.h"

namespace dsa_fast {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor augment_op(const at::Tensor& x, const at::Tensor& omega, int64_t flags, bool align_corners) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("dsa_fast::augment", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, bool)>();
  return op.call(x, omega, flags, align_corners);
}

at::Tensor augment_backward_op(const at::Tensor& grad, const at::Tensor& omega, int64_t flags, bool align_corners) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("dsa_fast::augment_backward", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, bool)>();
  return op.call(grad, omega, flags, align_corners);
}

void save_call(AutogradContext* ctx, const at::Tensor& omega, int64_t flags, bool align_corners) {
  ctx->save_for_backward({omega});
  ctx->saved_data["flags"] = flags;
  ctx->saved_data["align_corners"] = align_corners;
}

// The gradient of x for a call whose table and flags `save_call` kept; `transpose_of_backward`:
// the call was augment_backward, whose transpose is augment's linear part (brightness is the only
// affine offset, so it is dropped).
at::Tensor input_grad(AutogradContext* ctx, const at::Tensor& grad, bool transpose_of_backward) {
  if (!grad.defined()) return at::Tensor();
  const at::Tensor omega = ctx->get_saved_variables()[0];
  const int64_t flags = ctx->saved_data["flags"].toInt();
  const bool align_corners = ctx->saved_data["align_corners"].toBool();
  if (transpose_of_backward) return augment_op(grad, omega, flags & ~int64_t(kBrightness), align_corners);
  return augment_backward_op(grad, omega, flags, align_corners);
}

template <bool kBackwardOp>
struct AugmentFunction : torch::autograd::Function<AugmentFunction<kBackwardOp>> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& omega, int64_t flags,
                            bool align_corners) {
    at::AutoDispatchBelowADInplaceOrView below;
    save_call(ctx, omega, flags, align_corners);
    return kBackwardOp ? augment_backward_op(x, omega, flags, align_corners)
                       : augment_op(x, omega, flags, align_corners);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {input_grad(ctx, grads[0], kBackwardOp), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// Entries autograd counts for the second argument: one for the optional key, one per raw draw.
int64_t argument_count(const std::optional<at::Tensor>&) { return 1; }
int64_t argument_count(at::TensorList raw) { return static_cast<int64_t>(raw.size()); }

// augment_draw and augment_compat: (x, key or raw draws, flags, plan, settings, align_corners) ->
// (y, table). The table has no gradient; x's is augment_backward with the table the forward drew.
template <typename Second>
struct DrawFunction : torch::autograd::Function<DrawFunction<Second>> {
  using Op = c10::TypedOperatorHandle<std::tuple<at::Tensor, at::Tensor>(
      const at::Tensor&, Second, int64_t, at::IntArrayRef, at::ArrayRef<double>, bool)>;

  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, Second second, int64_t flags,
                               at::IntArrayRef plan, at::ArrayRef<double> settings, bool align_corners,
                               const Op& op) {
    at::AutoDispatchBelowADInplaceOrView below;
    auto [y, table] = op.call(x, second, flags, plan, settings, align_corners);
    ctx->mark_non_differentiable({table});
    ctx->set_materialize_grads(false);  // the table has no gradient: no zeros for it
    save_call(ctx, table, flags, align_corners);
    ctx->saved_data["second_inputs"] = argument_count(second);
    return {y, table};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    // One gradient per forward argument (x, the second's entries, flags, plan, settings,
    // align_corners, op); only x has one.
    variable_list out{input_grad(ctx, grads[0], false)};
    out.resize(1 + ctx->saved_data["second_inputs"].toInt() + 5);
    return out;
  }
};

at::Tensor augment_autograd(const at::Tensor& x, const at::Tensor& omega, int64_t flags, bool align_corners) {
  return AugmentFunction<false>::apply(x, omega, flags, align_corners);
}

at::Tensor augment_backward_autograd(const at::Tensor& grad, const at::Tensor& omega, int64_t flags,
                                     bool align_corners) {
  return AugmentFunction<true>::apply(grad, omega, flags, align_corners);
}

std::tuple<at::Tensor, at::Tensor> pair(const variable_list& out) { return {out[0], out[1]}; }

std::tuple<at::Tensor, at::Tensor> augment_draw_autograd(const at::Tensor& x, const std::optional<at::Tensor>& key,
                                                         int64_t flags, at::IntArrayRef plan,
                                                         at::ArrayRef<double> settings, bool align_corners) {
  using F = DrawFunction<const std::optional<at::Tensor>&>;
  static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("dsa_fast::augment_draw", "").typed<
      std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const std::optional<at::Tensor>&, int64_t,
                                         at::IntArrayRef, at::ArrayRef<double>, bool)>();
  return pair(F::apply(x, key, flags, plan, settings, align_corners, op));
}

std::tuple<at::Tensor, at::Tensor> augment_compat_autograd(const at::Tensor& x, at::TensorList raw, int64_t flags,
                                                           at::IntArrayRef plan, at::ArrayRef<double> settings,
                                                           bool align_corners) {
  using F = DrawFunction<at::TensorList>;
  static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("dsa_fast::augment_compat", "").typed<
      std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, at::TensorList, int64_t, at::IntArrayRef,
                                         at::ArrayRef<double>, bool)>();
  return pair(F::apply(x, raw, flags, plan, settings, align_corners, op));
}

}  // namespace

TORCH_LIBRARY_IMPL(dsa_fast, Autograd, m) {
  m.impl("augment", &augment_autograd);
  m.impl("augment_backward", &augment_backward_autograd);
  m.impl("augment_draw", &augment_draw_autograd);
  m.impl("augment_compat", &augment_compat_autograd);
}

}  // namespace dsa_fast
