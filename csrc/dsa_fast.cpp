// The one registration file: the empty Python module `dsa_fast._C` (importing it loads the
// library and runs the registrations) and every op schema. Kernels register per device in
// cpu/*.cpp and cuda/*.cu, their autograd in autograd.cpp; fake kernels are registered from
// Python (dsa_fast/_ops.py).
#include <Python.h>
#include <torch/library.h>

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(dsa_fast, m) {
  // y = fused DSA transform of x for the ops in `flags` (omega.h), applied in canonical order with
  // the packed per-sample parameters `omega` ([B, 15] float64, B = 1 or N).
  m.def("augment(Tensor x, Tensor omega, int flags, bool align_corners) -> Tensor");
  // grad_x = the transposed linear map of `augment` applied to grad (independent of x).
  m.def("augment_backward(Tensor grad, Tensor omega, int flags, bool align_corners) -> Tensor");
  // rng='device' in one call: draws the per-sample parameter table (kernels/rng.h: the plan's
  // draw indices and settings, keyed by the int seed in `plan` or by `key`, a one-element int64
  // tensor on x's device read on the device) and applies it as `augment` does. Returns
  // (y, omega): the drawn [B, 15] float64 table, B = 1 (Siamese) or N (per sample).
  m.def(
      "augment_draw(Tensor x, Tensor? key, int flags, int[] plan, float[] settings, bool align_corners) "
      "-> (Tensor, Tensor)");
  // rng='compat' in one call after the draws: turns the raw numbers the official generators drew
  // (`raw`, in canonical op order, on the CPU or x's device) into the table with the official
  // formulas (kernels/compat.h) and applies it. Returns (y, omega) as augment_draw.
  m.def(
      "augment_compat(Tensor x, Tensor[] raw, int flags, int[] plan, float[] settings, bool align_corners) "
      "-> (Tensor, Tensor)");
}
