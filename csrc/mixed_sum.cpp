// Schemas of the mixed-sum kernels (the autograd-aware op is fastdarts::mixed_sum in
// fastdarts/ops/mixed_sum.py, which checks inputs and lays them out before calling these).
//   mixed_sum_forward(outputs, weights):  sum_m weights[m] * outputs[m]
//   mixed_sum_backward(grad, outputs, weights):
//       (grad_outputs[m] = weights[m] * grad, grad_weights[m] = sum(grad * outputs[m]))
// outputs: M >= 1 tensors of one shape, dtype (half/bfloat16/float/double), device and
// one dense stride order (memory treated as flat); weights: [M] of any floating dtype;
// grad: the outputs' dtype and strides.  Accumulation in float (double for double);
// grad_weights comes back [M] in the weights' dtype, deterministically (fixed-order
// per-block partial sums, no atomics).  Implementations: cpu/mixed_sum_cpu.cpp,
// cuda/mixed_sum_cuda.cu.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastdarts_C, m) {
  m.def("mixed_sum_forward(Tensor[] outputs, Tensor weights) -> Tensor");
  m.def("mixed_sum_backward(Tensor grad, Tensor[] outputs, Tensor weights) -> (Tensor[], Tensor)");
}
