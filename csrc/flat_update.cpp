// Schemas of the Architect's flat-buffer ops (see fastdarts/ops/flat_update.py).
//   virtual_step_(w, backup, g, m?, eta, momentum, wd, g_scale?):
//       backup <- w; w <- w - eta * (momentum * m + g_scale * g + wd * w)
//   perturb_(w, backup, v, R, sign):  w <- backup + sign * R * v
//   sgd_step_(w, m, g, lr, momentum, wd, g_scale?):
//       d = g_scale * g + wd * w; m <- momentum * m + d; w <- w - lr * m
// eta, R and g_scale are 0-d device tensors: no host sync, graph-capturable.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastdarts_C, m) {
  m.def("virtual_step_(Tensor(a!) w, Tensor(b!) backup, Tensor g, Tensor? m, Tensor eta, "
        "float momentum, float wd, Tensor? g_scale) -> ()");
  m.def("perturb_(Tensor(a!) w, Tensor backup, Tensor v, Tensor R, float sign) -> ()");
  m.def("sgd_step_(Tensor(a!) w, Tensor(b!) m, Tensor g, Tensor lr, float momentum, float wd, "
        "Tensor? g_scale) -> ()");
}
