// CUDA kernels of fastdarts_C::mixed_sum_forward / mixed_sum_backward (schemas in
// csrc/mixed_sum.cpp).  Memory-bound, so the goal is one pass over memory each way:
//   forward  reads M*N, writes N         (the original: M multiplies + M-1 adds, ~3M*N)
//   backward reads N + M*N, writes M*N   (the original: ~5M*N through autograd)
// The M input pointers travel in a by-value struct kernel argument, as PyTorch's
// multi_tensor_apply does (kFwdInputs per launch; more are chunked, accumulating in a
// float scratch buffer so each element is rounded to the output dtype once).
// 16-byte vector loads/stores when every pointer is 16-byte aligned; float accumulate
// (double for double).  grad_weights: per-block partial sums (a fixed grid for a given
// size and device) summed afterwards: deterministic, no float atomics.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include "../mixed_sum_checks.h"
#include "reduce.cuh"

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <vector>

namespace fastdarts {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kFwdInputs = 32;  // 256-byte argument, far below the 4 KiB limit
constexpr int kBwdInputs = 16;  // x and gx pointers, plus one register accumulator each

struct FwdPointers {
  const void* x[kFwdInputs];
};
struct BwdPointers {
  const void* x[kBwdInputs];
  void* gx[kBwdInputs];
};

template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

// dst = (acc_in ? acc_in : 0) + sum_{m < count} w[m] * x_m, over n elements.
template <typename scalar_t, typename dst_t, int VEC>
__global__ void __launch_bounds__(kThreads)
mixed_sum_fwd_kernel(FwdPointers ptrs, int count, const at::opmath_type<scalar_t>* __restrict__ w,
                     const at::opmath_type<scalar_t>* acc_in, dst_t* dst, int64_t n) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n_vec = n / VEC;
  for (int64_t v = tid; v < n_vec; v += stride) {
    acc_t acc[VEC];
#pragma unroll
    for (int k = 0; k < VEC; ++k) acc[k] = acc_in ? acc_in[v * VEC + k] : acc_t(0);
#pragma unroll 4
    for (int m = 0; m < count; ++m) {
      const acc_t wm = w[m];
      const Pack<scalar_t, VEC> p = reinterpret_cast<const Pack<scalar_t, VEC>*>(ptrs.x[m])[v];
#pragma unroll
      for (int k = 0; k < VEC; ++k) acc[k] += wm * static_cast<acc_t>(p.v[k]);
    }
    if constexpr (std::is_same_v<dst_t, scalar_t>) {
      Pack<scalar_t, VEC> o;
#pragma unroll
      for (int k = 0; k < VEC; ++k) o.v[k] = static_cast<scalar_t>(acc[k]);
      reinterpret_cast<Pack<scalar_t, VEC>*>(dst)[v] = o;
    } else {
#pragma unroll
      for (int k = 0; k < VEC; ++k) dst[v * VEC + k] = static_cast<dst_t>(acc[k]);
    }
  }
  for (int64_t i = n_vec * VEC + tid; i < n; i += stride) {  // the < VEC leftover elements
    acc_t acc = acc_in ? acc_in[i] : acc_t(0);
    for (int m = 0; m < count; ++m) {
      acc += w[m] * static_cast<acc_t>(static_cast<const scalar_t*>(ptrs.x[m])[i]);
    }
    dst[i] = static_cast<dst_t>(acc);
  }
}

// gx_m = w[m] * g;  partial[m * partial_stride + blockIdx.x] = this block's sum of g * x_m.
template <typename scalar_t, int VEC>
__global__ void __launch_bounds__(kThreads)
mixed_sum_bwd_kernel(BwdPointers ptrs, int count, const scalar_t* __restrict__ grad,
                     const at::opmath_type<scalar_t>* __restrict__ w,
                     at::opmath_type<scalar_t>* __restrict__ partial, int64_t partial_stride,
                     int64_t n) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n_vec = n / VEC;
  acc_t sums[kBwdInputs];
#pragma unroll
  for (int m = 0; m < kBwdInputs; ++m) sums[m] = acc_t(0);

  for (int64_t v = tid; v < n_vec; v += stride) {
    const Pack<scalar_t, VEC> gp = reinterpret_cast<const Pack<scalar_t, VEC>*>(grad)[v];
    acc_t g[VEC];
#pragma unroll
    for (int k = 0; k < VEC; ++k) g[k] = static_cast<acc_t>(gp.v[k]);  // read once for all m
#pragma unroll
    for (int m = 0; m < kBwdInputs; ++m) {  // unrolled so sums[] stays in registers
      if (m < count) {
        const acc_t wm = w[m];
        const Pack<scalar_t, VEC> xp = reinterpret_cast<const Pack<scalar_t, VEC>*>(ptrs.x[m])[v];
        Pack<scalar_t, VEC> o;
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          o.v[k] = static_cast<scalar_t>(wm * g[k]);
          sums[m] += g[k] * static_cast<acc_t>(xp.v[k]);
        }
        reinterpret_cast<Pack<scalar_t, VEC>*>(ptrs.gx[m])[v] = o;
      }
    }
  }
  for (int64_t i = n_vec * VEC + tid; i < n; i += stride) {
    const acc_t g = static_cast<acc_t>(grad[i]);
#pragma unroll
    for (int m = 0; m < kBwdInputs; ++m) {
      if (m < count) {
        static_cast<scalar_t*>(ptrs.gx[m])[i] = static_cast<scalar_t>(w[m] * g);
        sums[m] += g * static_cast<acc_t>(static_cast<const scalar_t*>(ptrs.x[m])[i]);
      }
    }
  }

  // Block reduction in a fixed order: warp shuffles, then one warp over the warp sums.
  __shared__ acc_t warp_sums[kBwdInputs][kWarps];
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
#pragma unroll
  for (int m = 0; m < kBwdInputs; ++m) {
    if (m < count) {
      const acc_t s = warp_sum(sums[m]);
      if (lane == 0) warp_sums[m][warp] = s;
    }
  }
  __syncthreads();
  if (warp == 0) {
    for (int m = 0; m < count; ++m) {
      const acc_t s = warp_sum(lane < kWarps ? warp_sums[m][lane] : acc_t(0));
      if (lane == 0) partial[m * partial_stride + blockIdx.x] = s;
    }
  }
}

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

int grid_for(int64_t work_items) {
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount,
                                        c10::cuda::current_device()));
  const int64_t blocks = (work_items + kThreads - 1) / kThreads;
  // Enough resident blocks to hide latency; grid-stride beyond that.  Fixed per (n, device),
  // which is what makes the backward's partial sums reproducible.
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(blocks, int64_t(sms) * 8)));
}

template <typename scalar_t, typename dst_t, int VEC>
void launch_fwd(const FwdPointers& ptrs, int count, const at::opmath_type<scalar_t>* w,
                const at::opmath_type<scalar_t>* acc_in, dst_t* dst, int64_t n,
                cudaStream_t stream) {
  mixed_sum_fwd_kernel<scalar_t, dst_t, VEC>
      <<<grid_for(n / VEC + 1), kThreads, 0, stream>>>(ptrs, count, w, acc_in, dst, n);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor mixed_sum_forward_cuda(at::TensorList outputs, const at::Tensor& weights) {
  check_mixed_sum_inputs(outputs, weights, "fastdarts_C::mixed_sum_forward", at::kCUDA);
  const at::Tensor& first = outputs[0];
  const c10::cuda::CUDAGuard guard(first.device());
  at::Tensor out = at::empty_like(first);  // keeps the dense strides (channels_last stays)
  const int64_t n = first.numel();
  if (n == 0) return out;
  const auto acc_type = at::toOpMathType(first.scalar_type());
  const at::Tensor w = weights.reshape({-1}).to(acc_type).contiguous();
  const int64_t total = static_cast<int64_t>(outputs.size());
  const bool chunked = total > kFwdInputs;
  at::Tensor scratch;
  if (chunked) scratch = at::empty_like(first, first.options().dtype(acc_type));
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, first.scalar_type(),
                                  "mixed_sum_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr int kVec = 16 / sizeof(scalar_t);
    bool vec_ok = aligned16(out.data_ptr());
    for (const auto& x : outputs) vec_ok = vec_ok && aligned16(x.data_ptr());
    const acc_t* wp = w.const_data_ptr<acc_t>();
    acc_t* sp = chunked ? scratch.mutable_data_ptr<acc_t>() : nullptr;
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    for (int64_t start = 0; start < total; start += kFwdInputs) {
      const int count = static_cast<int>(std::min<int64_t>(kFwdInputs, total - start));
      FwdPointers ptrs{};
      for (int m = 0; m < count; ++m) ptrs.x[m] = outputs[start + m].const_data_ptr();
      const acc_t* acc_in = start > 0 ? sp : nullptr;
      const bool last = start + kFwdInputs >= total;
      if (last) {
        if (vec_ok) launch_fwd<scalar_t, scalar_t, kVec>(ptrs, count, wp + start, acc_in, op, n, stream);
        else launch_fwd<scalar_t, scalar_t, 1>(ptrs, count, wp + start, acc_in, op, n, stream);
      } else {
        if (vec_ok) launch_fwd<scalar_t, acc_t, kVec>(ptrs, count, wp + start, acc_in, sp, n, stream);
        else launch_fwd<scalar_t, acc_t, 1>(ptrs, count, wp + start, acc_in, sp, n, stream);
      }
    }
  });
  return out;
}

std::tuple<std::vector<at::Tensor>, at::Tensor> mixed_sum_backward_cuda(
    const at::Tensor& grad, at::TensorList outputs, const at::Tensor& weights) {
  check_mixed_sum_inputs(outputs, weights, "fastdarts_C::mixed_sum_backward", at::kCUDA);
  const at::Tensor& first = outputs[0];
  check_mixed_sum_grad(grad, first, "fastdarts_C::mixed_sum_backward");
  const c10::cuda::CUDAGuard guard(first.device());
  const int64_t n = first.numel();
  const int64_t total = static_cast<int64_t>(outputs.size());
  const auto acc_type = at::toOpMathType(first.scalar_type());
  std::vector<at::Tensor> grad_outputs;
  grad_outputs.reserve(total);
  for (int64_t m = 0; m < total; ++m) grad_outputs.push_back(at::empty_like(first));
  if (n == 0) return {grad_outputs, at::zeros({total}, weights.options())};
  const at::Tensor w = weights.reshape({-1}).to(acc_type).contiguous();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor partial;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, first.scalar_type(),
                                  "mixed_sum_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr int kVec = 16 / sizeof(scalar_t);
    bool vec_ok = aligned16(grad.data_ptr());
    for (int64_t m = 0; m < total; ++m) {
      vec_ok = vec_ok && aligned16(outputs[m].data_ptr()) && aligned16(grad_outputs[m].data_ptr());
    }
    const int vec = vec_ok ? kVec : 1;
    const int blocks = grid_for(n / vec + 1);
    partial = at::empty({total, blocks}, first.options().dtype(acc_type));
    for (int64_t start = 0; start < total; start += kBwdInputs) {
      const int count = static_cast<int>(std::min<int64_t>(kBwdInputs, total - start));
      BwdPointers ptrs{};
      for (int m = 0; m < count; ++m) {
        ptrs.x[m] = outputs[start + m].const_data_ptr();
        ptrs.gx[m] = grad_outputs[start + m].mutable_data_ptr();
      }
      const acc_t* wp = w.const_data_ptr<acc_t>() + start;
      acc_t* pp = partial.mutable_data_ptr<acc_t>() + start * blocks;
      if (vec_ok) {
        mixed_sum_bwd_kernel<scalar_t, kVec><<<blocks, kThreads, 0, stream>>>(
            ptrs, count, grad.const_data_ptr<scalar_t>(), wp, pp, blocks, n);
      } else {
        mixed_sum_bwd_kernel<scalar_t, 1><<<blocks, kThreads, 0, stream>>>(
            ptrs, count, grad.const_data_ptr<scalar_t>(), wp, pp, blocks, n);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {grad_outputs, partial.sum(1).to(weights.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastdarts_C, CUDA, m) {
  m.impl("mixed_sum_forward", &mixed_sum_forward_cuda);
  m.impl("mixed_sum_backward", &mixed_sum_backward_cuda);
}

}  // namespace fastdarts
