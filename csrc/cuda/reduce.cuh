// Device-side reductions shared by the CUDA kernels (mixed_sum_cuda.cu, rnn_node_cuda.cu).
#pragma once

namespace fastdarts {

// Sum of v over the 32 lanes of a warp, in a fixed shuffle order (deterministic); the
// result is valid in lane 0.
template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

}  // namespace fastdarts
