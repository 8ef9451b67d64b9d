// CUDA kernels of fastdarts_C::rnn_node_forward / rnn_node_backward (schemas in
// csrc/rnn_node.cpp): one node of the DARTS recurrent search cell, one pass each way.
//   forward   reads ch [n, B, 2H] and states [n, B, H] once, writes s [B, H]
//             (the original: ~25 kernels over [n, B, H] for the gate, 4 activations,
//             4 blends, 4 weighted sums and their adds)
//   backward  reads grad, ch and states once, writes d ch and d states once, and one
//             partial sum per (block, state, op) for d probs, summed afterwards in a
//             fixed order (deterministic for a given size and device; no float atomics).
// The activations are re-computed from ch in the backward (nothing else is saved).
// Elements of the [B, H] plane are walked as one flat index e = b * H + k, so
// neighbouring threads read neighbouring addresses along H whatever the strides of
// the other dims are.  Accumulation in float (double for double inputs).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include "reduce.cuh"

#include <algorithm>
#include <cstdint>
#include <tuple>

namespace fastdarts {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kOps = 4;           // tanh, relu, sigmoid, identity: probs columns 1..4
constexpr int kMaxBwdBlocks = 2048;  // grid of the backward: fixed for a given size

struct NodeStrides {  // element strides of ch and states, [j, b, k]
  int64_t ch_j, ch_b, ch_k, st_j, st_b, st_k;
};

template <typename acc_t>
__device__ __forceinline__ acc_t sigmoid_fn(acc_t x) {
  return acc_t(1) / (acc_t(1) + exp(-x));
}

__device__ __forceinline__ float tanh_fn(float x) { return tanhf(x); }
__device__ __forceinline__ double tanh_fn(double x) { return tanh(x); }

template <typename scalar_t, typename acc_t>
struct NodeInputs {
  acc_t c, h, st;
};

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ NodeInputs<scalar_t, acc_t> load_inputs(
    const scalar_t* __restrict__ ch, const scalar_t* __restrict__ states, const NodeStrides& s,
    int64_t j, int64_t b, int64_t k, int64_t H) {
  const int64_t off = j * s.ch_j + b * s.ch_b + k * s.ch_k;
  NodeInputs<scalar_t, acc_t> in;
  in.c = sigmoid_fn(static_cast<acc_t>(ch[off]));
  in.h = static_cast<acc_t>(ch[off + H * s.ch_k]);
  in.st = static_cast<acc_t>(states[j * s.st_j + b * s.st_b + k * s.st_k]);
  return in;
}

// out[e] = sum_j sum_f p[j, f] * (st + c * (f(h) - st)); p is [n, 5] contiguous acc_t.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
rnn_node_fwd_kernel(const scalar_t* __restrict__ ch, const scalar_t* __restrict__ states,
                    const at::opmath_type<scalar_t>* __restrict__ p, scalar_t* __restrict__ out,
                    NodeStrides s, int64_t n, int64_t H, int64_t N) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < N;
       e += stride) {
    const int64_t b = e / H;
    const int64_t k = e - b * H;
    acc_t acc = acc_t(0);
    for (int64_t j = 0; j < n; ++j) {
      const auto in = load_inputs<scalar_t, acc_t>(ch, states, s, j, b, k, H);
      const acc_t* pj = p + j * (kOps + 1);
      // The reference's blend, st + c * (f(h) - st), once per op: same rounding behaviour.
      acc += pj[1] * (in.st + in.c * (tanh_fn(in.h) - in.st));
      acc += pj[2] * (in.st + in.c * (max(in.h, acc_t(0)) - in.st));
      acc += pj[3] * (in.st + in.c * (sigmoid_fn(in.h) - in.st));
      acc += pj[4] * (in.st + in.c * (in.h - in.st));
    }
    out[e] = static_cast<scalar_t>(acc);
  }
}

// d ch [n, B, 2H] and d states [n, B, H] contiguous; partial[block, j, 1 + f] = this
// block's sum for op f, partial[block, j, 0] = 0 ('none').
// States outer, elements inner: grad is re-read n times, from L2 (B * H * 4 bytes = 300 KB
// at the paper's shapes), so DRAM traffic stays one pass.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
rnn_node_bwd_kernel(const scalar_t* __restrict__ grad, int64_t g_b, int64_t g_k,
                    const scalar_t* __restrict__ ch, const scalar_t* __restrict__ states,
                    const at::opmath_type<scalar_t>* __restrict__ p,
                    scalar_t* __restrict__ d_ch, scalar_t* __restrict__ d_states,
                    at::opmath_type<scalar_t>* __restrict__ partial, NodeStrides s, int64_t n,
                    int64_t H, int64_t N) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t warp_sums[kOps][kWarps];
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  for (int64_t j = 0; j < n; ++j) {
    const acc_t* pj = p + j * (kOps + 1);
    const acc_t p_tanh = pj[1], p_relu = pj[2], p_sigm = pj[3], p_iden = pj[4];
    const acc_t p_sum = p_tanh + p_relu + p_sigm + p_iden;
    acc_t sums[kOps] = {acc_t(0), acc_t(0), acc_t(0), acc_t(0)};
    for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < N;
         e += stride) {
      const int64_t b = e / H;
      const int64_t k = e - b * H;
      const acc_t g = static_cast<acc_t>(grad[b * g_b + k * g_k]);
      const auto in = load_inputs<scalar_t, acc_t>(ch, states, s, j, b, k, H);
      const acc_t f_tanh = tanh_fn(in.h);
      const acc_t f_relu = max(in.h, acc_t(0));
      const acc_t f_sigm = sigmoid_fn(in.h);
      const acc_t act = p_tanh * f_tanh + p_relu * f_relu + p_sigm * f_sigm + p_iden * in.h;
      // relu'(0) = 0, as torch's threshold_backward.
      const acc_t dact = p_tanh * (acc_t(1) - f_tanh * f_tanh) +
                         (in.h > acc_t(0) ? p_relu : acc_t(0)) +
                         p_sigm * f_sigm * (acc_t(1) - f_sigm) + p_iden;
      const int64_t dch_off = (j * N + e) * 2 - k;  // j * B * 2H + b * 2H + k
      d_ch[dch_off] = static_cast<scalar_t>(g * (act - p_sum * in.st) * in.c * (acc_t(1) - in.c));
      d_ch[dch_off + H] = static_cast<scalar_t>(g * in.c * dact);
      d_states[j * N + e] = static_cast<scalar_t>(g * p_sum * (acc_t(1) - in.c));
      sums[0] += g * (in.st + in.c * (f_tanh - in.st));
      sums[1] += g * (in.st + in.c * (f_relu - in.st));
      sums[2] += g * (in.st + in.c * (f_sigm - in.st));
      sums[3] += g * (in.st + in.c * (in.h - in.st));
    }
    // Block reduction in a fixed order: warp shuffles, then one warp over the warp sums.
#pragma unroll
    for (int f = 0; f < kOps; ++f) {
      const acc_t v = warp_sum(sums[f]);
      if (lane == 0) warp_sums[f][warp] = v;
    }
    __syncthreads();
    if (warp == 0) {
      acc_t* row = partial + (static_cast<int64_t>(blockIdx.x) * n + j) * (kOps + 1);
#pragma unroll
      for (int f = 0; f < kOps; ++f) {
        const acc_t v = warp_sum(lane < kWarps ? warp_sums[f][lane] : acc_t(0));
        if (lane == 0) row[1 + f] = v;
      }
      if (lane == 0) row[0] = acc_t(0);  // 'none': d probs is then one sum over blocks
    }
    __syncthreads();  // warp_sums is reused by the next state
  }
}

void check_inputs(const at::Tensor& ch, const at::Tensor& states, const at::Tensor& probs,
                  const char* op) {
  TORCH_CHECK(states.dim() == 3 && states.size(0) >= 1, op, ": states must be [n >= 1, B, H]");
  const int64_t n = states.size(0), B = states.size(1), H = states.size(2);
  TORCH_CHECK(ch.dim() == 3 && ch.size(0) == n && ch.size(1) == B && ch.size(2) == 2 * H, op,
              ": ch must be [n, B, 2H] for states [n, B, H]");
  TORCH_CHECK(probs.dim() == 2 && probs.size(0) == n && probs.size(1) == kOps + 1, op,
              ": probs must be [n, 5]");
  TORCH_CHECK(ch.scalar_type() == states.scalar_type(), op,
              ": ch and states must share one dtype");
  TORCH_CHECK(probs.is_floating_point(), op, ": probs must be floating point");
  TORCH_CHECK(ch.is_cuda() && states.device() == ch.device() && probs.device() == ch.device(),
              op, ": the cuda kernels take CUDA tensors on one device");
}

NodeStrides strides_of(const at::Tensor& ch, const at::Tensor& states) {
  return {ch.stride(0), ch.stride(1), ch.stride(2),
          states.stride(0), states.stride(1), states.stride(2)};
}

int blocks_for(int64_t N, int64_t cap) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((N + kThreads - 1) / kThreads,
                                                                 cap)));
}

at::Tensor rnn_node_forward_cuda(const at::Tensor& ch, const at::Tensor& states,
                                 const at::Tensor& probs) {
  check_inputs(ch, states, probs, "rnn_node_forward");
  const c10::cuda::CUDAGuard guard(ch.device());
  const int64_t n = states.size(0), B = states.size(1), H = states.size(2), N = B * H;
  at::Tensor out = at::empty({B, H}, ch.options());
  if (N == 0) return out;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ch.scalar_type(), "rnn_node_fwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const at::Tensor p = probs.to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
    // Enough blocks to fill the GPU several times over; a grid-stride loop covers the rest.
    rnn_node_fwd_kernel<scalar_t><<<blocks_for(N, 65535), kThreads, 0, stream>>>(
        ch.const_data_ptr<scalar_t>(), states.const_data_ptr<scalar_t>(),
        p.const_data_ptr<acc_t>(), out.mutable_data_ptr<scalar_t>(), strides_of(ch, states), n,
        H, N);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> rnn_node_backward_cuda(
    const at::Tensor& grad, const at::Tensor& ch, const at::Tensor& states,
    const at::Tensor& probs) {
  check_inputs(ch, states, probs, "rnn_node_backward");
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == states.size(1) && grad.size(1) == states.size(2),
              "rnn_node_backward: grad must be [B, H]");
  TORCH_CHECK(grad.device() == ch.device(), "rnn_node_backward: grad must be on ch's device");
  const c10::cuda::CUDAGuard guard(ch.device());
  const int64_t n = states.size(0), B = states.size(1), H = states.size(2), N = B * H;
  const at::Tensor g = grad.to(ch.scalar_type());
  at::Tensor d_ch = at::empty({n, B, 2 * H}, ch.options());
  at::Tensor d_states = at::empty({n, B, H}, ch.options());
  at::Tensor d_probs;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ch.scalar_type(), "rnn_node_bwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto acc_type = c10::CppTypeToScalarType<acc_t>::value;
    const at::Tensor p = probs.to(acc_type).contiguous();
    const int blocks = blocks_for(N, kMaxBwdBlocks);
    at::Tensor partial = at::empty({blocks, n, kOps + 1}, ch.options().dtype(acc_type));
    if (N > 0) {
      rnn_node_bwd_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
          g.const_data_ptr<scalar_t>(), g.stride(0), g.stride(1), ch.const_data_ptr<scalar_t>(),
          states.const_data_ptr<scalar_t>(), p.const_data_ptr<acc_t>(),
          d_ch.mutable_data_ptr<scalar_t>(), d_states.mutable_data_ptr<scalar_t>(),
          partial.mutable_data_ptr<acc_t>(), strides_of(ch, states), n, H, N);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    } else {
      partial.zero_();
    }
    d_probs = partial.sum(0).to(probs.scalar_type());  // fixed-order sum over blocks
  });
  return {d_ch, d_states, d_probs};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastdarts_C, CUDA, m) {
  m.impl("rnn_node_forward", &rnn_node_forward_cuda);
  m.impl("rnn_node_backward", &rnn_node_backward_cuda);
}

}  // namespace fastdarts
