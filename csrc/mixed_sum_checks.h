// Input checks shared by the mixed-sum kernels of every device (cpu/mixed_sum_cpu.cpp,
// cuda/mixed_sum_cuda.cu); the schemas are in mixed_sum.cpp.  The Python op
// (fastdarts/ops/mixed_sum.py) has already checked and laid out the inputs with friendlier
// messages; these guard direct calls of torch.ops.fastdarts_C.*.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/DeviceType.h>

namespace fastdarts {

// Whether a and b step through memory alike.  Size-1 dims never move through memory,
// so their strides do not matter.
inline bool same_layout(const at::Tensor& a, const at::Tensor& b) {
  for (int64_t d = 0; d < a.dim(); ++d) {
    if (a.size(d) != 1 && a.stride(d) != b.stride(d)) return false;
  }
  return true;
}

// M >= 1 outputs of one shape, dtype, device (of device_type, with the weights) and dense
// layout, and M floating weights.
inline void check_mixed_sum_inputs(at::TensorList outputs, const at::Tensor& weights,
                                   const char* op, c10::DeviceType device_type) {
  TORCH_CHECK(!outputs.empty(), op, ": needs at least one output tensor");
  TORCH_CHECK(weights.numel() == static_cast<int64_t>(outputs.size()), op, ": got ",
              outputs.size(), " outputs but ", weights.numel(), " weights");
  TORCH_CHECK(weights.is_floating_point(), op, ": weights must be floating point");
  const at::Tensor& first = outputs[0];
  TORCH_CHECK(first.device().type() == device_type && weights.device() == first.device(), op,
              ": the ", c10::DeviceTypeName(device_type, /*lower_case=*/true), " kernels take ",
              c10::DeviceTypeName(device_type), " tensors on one device");
  TORCH_CHECK(first.is_non_overlapping_and_dense(), op,
              ": outputs must be dense (call fastdarts.functional.mixed_sum, which lays them out)");
  for (size_t m = 1; m < outputs.size(); ++m) {
    const at::Tensor& x = outputs[m];
    TORCH_CHECK(x.sizes() == first.sizes() && x.scalar_type() == first.scalar_type() &&
                    x.device() == first.device() && same_layout(x, first),
                op, ": outputs[", m, "] differs from outputs[0] in shape, dtype, device or strides");
  }
}

// The backward's grad: the outputs' shape, dtype, device and strides.
inline void check_mixed_sum_grad(const at::Tensor& grad, const at::Tensor& first, const char* op) {
  TORCH_CHECK(grad.sizes() == first.sizes() && grad.scalar_type() == first.scalar_type() &&
                  grad.device() == first.device() && same_layout(grad, first),
              op, ": grad must have the outputs' shape, dtype, device and strides");
}

}  // namespace fastdarts
