// CPU kernels of fastdarts_C::mixed_sum_forward / mixed_sum_backward (schemas in
// csrc/mixed_sum.cpp).  One pass over memory each way:
//   forward  reads M*N, writes N         (the reference: M passes of read 2N, write N)
//   backward reads N + M*N, writes M*N   (the reference: 2M passes plus temporaries)
// Work is split into fixed kChunk-element chunks (at::parallel_for; note that it only
// runs in parallel when the extension is compiled with -fopenmp); within a chunk a
// kTile-element float accumulator stays in L1 while the M inputs stream through it.
// Auto dispatch on CPU picks this kernel over the reference (measured: fastdarts/backends.py
// POLICY["mixed_sum"], bench/NOTES.md "mixed_sum").
// grad_weights: one partial per (input, chunk) from kLanes independent lane sums (so
// the compiler can vectorise without reassociating), then a fixed-order sum: results
// do not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../mixed_sum_checks.h"

#include <algorithm>
#include <tuple>
#include <vector>

namespace fastdarts {
namespace {

constexpr int64_t kTile = 256;     // accumulator tile: 1 KiB of float, L1-resident
constexpr int64_t kBwdTile = 2048; // grad tile of the backward: 8 KiB of float
constexpr int64_t kChunk = 32768;  // parallel task and grad_weights partial size (fixed)
constexpr int kLanes = 16;         // independent partial sums per input and tile

// Inputs are consumed G at a time: G concurrent read streams per sweep of the tile keep
// more cache misses in flight than one stream at a time.  Measured on this project's
// 2-core AMD EPYC dev box (one thread, 14 x 4 MiB fp32 inputs): one at a time with a
// 1024 tile 7.2 ms (8.7 GB/s); G = 4: 4.0 ms; G = 8 with a 256 tile: 3.3 ms (18.9 GB/s).
template <int G, typename scalar_t, typename acc_t>
inline void fma_group(acc_t* acc, const scalar_t* const* xs, const acc_t* w, int64_t t0,
                      int64_t len) {
  const scalar_t* p[G];
  acc_t q[G];
  for (int k = 0; k < G; ++k) {
    p[k] = xs[k] + t0;
    q[k] = w[k];
  }
  for (int64_t i = 0; i < len; ++i) {
    acc_t s = q[0] * static_cast<acc_t>(p[0][i]);
    for (int k = 1; k < G; ++k) s += q[k] * static_cast<acc_t>(p[k][i]);
    acc[i] += s;
  }
}

template <typename scalar_t>
void forward_kernel(const std::vector<const scalar_t*>& xs, const at::opmath_type<scalar_t>* w,
                    scalar_t* out, int64_t n) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t num_inputs = static_cast<int64_t>(xs.size());
  at::parallel_for(0, n, kChunk, [&](int64_t begin, int64_t end) {
    acc_t acc[kTile];
    for (int64_t t0 = begin; t0 < end; t0 += kTile) {
      const int64_t len = std::min(kTile, end - t0);
      std::fill(acc, acc + len, acc_t(0));
      int64_t m = 0;
      for (; m + 8 <= num_inputs; m += 8) fma_group<8>(acc, xs.data() + m, w + m, t0, len);
      for (; m + 4 <= num_inputs; m += 4) fma_group<4>(acc, xs.data() + m, w + m, t0, len);
      for (; m < num_inputs; ++m) fma_group<1>(acc, xs.data() + m, w + m, t0, len);
      scalar_t* dst = out + t0;
      for (int64_t i = 0; i < len; ++i) dst[i] = static_cast<scalar_t>(acc[i]);
    }
  });
}

// gx = w * g over one tile, and the tile's sum of g * x from kLanes lanes folded pairwise
// (fixed order, vectorisable without reassociation).  Two simple loops over the
// L1-resident tile vectorise; one fused loop storing gx while accumulating did not
// (17.9 ms vs 6.4 ms for 14 separate torch mul + dot calls on 14 x 4 MiB, one thread).
template <typename scalar_t, typename acc_t>
inline acc_t grad_tile(const acc_t* __restrict__ g, const scalar_t* __restrict__ x,
                       scalar_t* __restrict__ gx, acc_t w, int64_t len) {
  for (int64_t i = 0; i < len; ++i) gx[i] = static_cast<scalar_t>(w * g[i]);
  acc_t lane[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= len; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) lane[l] += g[i + l] * static_cast<acc_t>(x[i + l]);
  }
  for (; i < len; ++i) lane[0] += g[i] * static_cast<acc_t>(x[i]);
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int l = 0; l < width; ++l) lane[l] += lane[l + width];
  }
  return lane[0];
}

template <typename scalar_t>
void backward_kernel(const scalar_t* grad, const std::vector<const scalar_t*>& xs,
                     const std::vector<scalar_t*>& gxs, const at::opmath_type<scalar_t>* w,
                     at::opmath_type<scalar_t>* partial, int64_t num_chunks, int64_t n) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t num_inputs = static_cast<int64_t>(xs.size());
  at::parallel_for(0, num_chunks, 1, [&](int64_t c_begin, int64_t c_end) {
    acc_t g[kBwdTile];
    std::vector<acc_t> sums(num_inputs);
    for (int64_t c = c_begin; c < c_end; ++c) {
      std::fill(sums.begin(), sums.end(), acc_t(0));
      const int64_t chunk_end = std::min(n, (c + 1) * kChunk);
      for (int64_t t0 = c * kChunk; t0 < chunk_end; t0 += kBwdTile) {
        const int64_t len = std::min(kBwdTile, chunk_end - t0);
        for (int64_t i = 0; i < len; ++i) g[i] = static_cast<acc_t>(grad[t0 + i]);  // once
        for (int64_t m = 0; m < num_inputs; ++m) {
          sums[m] += grad_tile<scalar_t, acc_t>(g, xs[m] + t0, gxs[m] + t0, w[m], len);
        }
      }
      for (int64_t m = 0; m < num_inputs; ++m) partial[m * num_chunks + c] = sums[m];
    }
  });
}

at::Tensor mixed_sum_forward_cpu(at::TensorList outputs, const at::Tensor& weights) {
  check_mixed_sum_inputs(outputs, weights, "fastdarts_C::mixed_sum_forward", at::kCPU);
  const at::Tensor& first = outputs[0];
  at::Tensor out = at::empty_like(first);  // keeps the dense strides (channels_last stays)
  const int64_t n = first.numel();
  if (n == 0) return out;
  const at::Tensor w =
      weights.reshape({-1}).to(at::toOpMathType(first.scalar_type())).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, first.scalar_type(),
                                  "mixed_sum_forward_cpu", [&] {
    std::vector<const scalar_t*> xs;
    xs.reserve(outputs.size());
    for (const auto& x : outputs) xs.push_back(x.const_data_ptr<scalar_t>());
    forward_kernel<scalar_t>(xs, w.const_data_ptr<at::opmath_type<scalar_t>>(),
                             out.mutable_data_ptr<scalar_t>(), n);
  });
  return out;
}

std::tuple<std::vector<at::Tensor>, at::Tensor> mixed_sum_backward_cpu(
    const at::Tensor& grad, at::TensorList outputs, const at::Tensor& weights) {
  check_mixed_sum_inputs(outputs, weights, "fastdarts_C::mixed_sum_backward", at::kCPU);
  const at::Tensor& first = outputs[0];
  check_mixed_sum_grad(grad, first, "fastdarts_C::mixed_sum_backward");
  const int64_t n = first.numel();
  const int64_t num_inputs = static_cast<int64_t>(outputs.size());
  const auto acc_type = at::toOpMathType(first.scalar_type());
  std::vector<at::Tensor> grad_outputs;
  grad_outputs.reserve(num_inputs);
  for (int64_t m = 0; m < num_inputs; ++m) grad_outputs.push_back(at::empty_like(first));
  if (n == 0) {
    return {grad_outputs, at::zeros({num_inputs}, weights.options())};
  }
  const at::Tensor w = weights.reshape({-1}).to(acc_type).contiguous();
  const int64_t num_chunks = (n + kChunk - 1) / kChunk;
  at::Tensor partial = at::empty({num_inputs, num_chunks}, first.options().dtype(acc_type));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, first.scalar_type(),
                                  "mixed_sum_backward_cpu", [&] {
    std::vector<const scalar_t*> xs;
    std::vector<scalar_t*> gxs;
    for (int64_t m = 0; m < num_inputs; ++m) {
      xs.push_back(outputs[m].const_data_ptr<scalar_t>());
      gxs.push_back(grad_outputs[m].mutable_data_ptr<scalar_t>());
    }
    backward_kernel<scalar_t>(grad.const_data_ptr<scalar_t>(), xs, gxs,
                              w.const_data_ptr<at::opmath_type<scalar_t>>(),
                              partial.mutable_data_ptr<at::opmath_type<scalar_t>>(), num_chunks,
                              n);
  });
  return {grad_outputs, partial.sum(1).to(weights.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastdarts_C, CPU, m) {
  m.impl("mixed_sum_forward", &mixed_sum_forward_cpu);
  m.impl("mixed_sum_backward", &mixed_sum_backward_cpu);
}

}  // namespace fastdarts
