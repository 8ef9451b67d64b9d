// CUDA kernels of the Architect's flat-buffer ops: one launch each over the
// whole weight vector, whatever the number of parameter tensors.
// Grid-stride loops with 4-wide vector loads where the pointers are 16-byte
// aligned (the flat buffers are fresh allocations, so they always are in practice).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

namespace fastdarts {
namespace {

template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

constexpr int kThreads = 256;

// Only c10/cuda headers: ATen/cuda/CUDAContext.h pulls in cuSPARSE/cuBLAS headers,
// which a bare nvcc install (the CI machine's) does not have.
inline int blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, c10::cuda::current_device()));
  const int64_t cap = static_cast<int64_t>(sms) * 32;
  return static_cast<int>(std::max<int64_t>(1, std::min(b, cap)));
}

template <typename T, bool HAS_M, bool HAS_SCALE>
__global__ void virtual_step_kernel(T* __restrict__ w, T* __restrict__ backup, const T* __restrict__ g,
                                    const T* __restrict__ m, const T* __restrict__ eta_p,
                                    const T* __restrict__ scale_p, int64_t n,
                                    typename Acc<T>::type momentum, typename Acc<T>::type wd) {
  using A = typename Acc<T>::type;
  const A eta = static_cast<A>(*eta_p);
  const A s = HAS_SCALE ? static_cast<A>(*scale_p) : A(1);
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    const T wr = w[i];
    backup[i] = wr;
    const A wv = static_cast<A>(wr);
    A d = static_cast<A>(g[i]);
    if (HAS_SCALE) d = d * s;
    if (HAS_M) d = static_cast<A>(m[i]) * momentum + d;
    d = d + wv * wd;
    w[i] = static_cast<T>(wv - eta * d);
  }
}

template <typename T>
__global__ void perturb_kernel(T* __restrict__ w, const T* __restrict__ backup,
                               const T* __restrict__ v, const T* __restrict__ r_p, int64_t n,
                               typename Acc<T>::type sign) {
  using A = typename Acc<T>::type;
  const A r = static_cast<A>(*r_p) * sign;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    w[i] = static_cast<T>(static_cast<A>(backup[i]) + r * static_cast<A>(v[i]));
  }
}

template <typename T, bool HAS_SCALE>
__global__ void sgd_step_kernel(T* __restrict__ w, T* __restrict__ m, const T* __restrict__ g,
                                const T* __restrict__ lr_p, const T* __restrict__ scale_p, int64_t n,
                                typename Acc<T>::type momentum, typename Acc<T>::type wd) {
  using A = typename Acc<T>::type;
  const A lr = static_cast<A>(*lr_p);
  const A s = HAS_SCALE ? static_cast<A>(*scale_p) : A(1);
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    const A wv = static_cast<A>(w[i]);
    A d = static_cast<A>(g[i]);
    if (HAS_SCALE) d = d * s;
    d = d + wv * wd;
    const A mv = static_cast<A>(m[i]) * momentum + d;
    m[i] = static_cast<T>(mv);
    w[i] = static_cast<T>(wv - lr * mv);
  }
}

void check_flat(const at::Tensor& t, const at::Tensor& w, const char* name) {
  TORCH_CHECK(t.is_cuda() && t.device() == w.device(), name, " must be on ", w.device());
  TORCH_CHECK(t.is_contiguous() && t.numel() == w.numel() && t.scalar_type() == w.scalar_type(),
              name, " must be a contiguous ", w.scalar_type(), " tensor of ", w.numel(), " elements");
}

void check_scalar(const at::Tensor& t, const at::Tensor& w, const char* name) {
  TORCH_CHECK(t.numel() == 1 && t.device() == w.device() && t.scalar_type() == w.scalar_type(),
              name, " must be a one-element ", w.scalar_type(), " tensor on ", w.device());
}

void virtual_step_cuda(at::Tensor w, at::Tensor backup, const at::Tensor& g,
                       const c10::optional<at::Tensor>& m, const at::Tensor& eta, double momentum,
                       double wd, const c10::optional<at::Tensor>& g_scale) {
  check_flat(w, w, "w");
  check_flat(backup, w, "backup");
  check_flat(g, w, "g");
  if (m.has_value()) check_flat(*m, w, "m");
  check_scalar(eta, w, "eta");
  if (g_scale.has_value()) check_scalar(*g_scale, w, "g_scale");
  const int64_t n = w.numel();
  if (n == 0) return;
  c10::cuda::CUDAGuard guard(w.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "virtual_step_", [&] {
    using A = typename Acc<scalar_t>::type;
    const scalar_t* mp = m.has_value() ? m->data_ptr<scalar_t>() : nullptr;
    const scalar_t* sp = g_scale.has_value() ? g_scale->data_ptr<scalar_t>() : nullptr;
    auto launch = [&](auto kernel) {
      kernel<<<blocks_for(n), kThreads, 0, stream>>>(w.data_ptr<scalar_t>(), backup.data_ptr<scalar_t>(),
                                                      g.data_ptr<scalar_t>(), mp, eta.data_ptr<scalar_t>(),
                                                      sp, n, static_cast<A>(momentum), static_cast<A>(wd));
    };
    if (mp && sp) launch(virtual_step_kernel<scalar_t, true, true>);
    else if (mp) launch(virtual_step_kernel<scalar_t, true, false>);
    else if (sp) launch(virtual_step_kernel<scalar_t, false, true>);
    else launch(virtual_step_kernel<scalar_t, false, false>);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void perturb_cuda(at::Tensor w, const at::Tensor& backup, const at::Tensor& v, const at::Tensor& R,
                  double sign) {
  check_flat(w, w, "w");
  check_flat(backup, w, "backup");
  check_flat(v, w, "v");
  check_scalar(R, w, "R");
  const int64_t n = w.numel();
  if (n == 0) return;
  c10::cuda::CUDAGuard guard(w.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "perturb_", [&] {
    using A = typename Acc<scalar_t>::type;
    perturb_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream>>>(
        w.data_ptr<scalar_t>(), backup.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
        R.data_ptr<scalar_t>(), n, static_cast<A>(sign));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void sgd_step_cuda(at::Tensor w, at::Tensor m, const at::Tensor& g, const at::Tensor& lr,
                   double momentum, double wd, const c10::optional<at::Tensor>& g_scale) {
  check_flat(w, w, "w");
  check_flat(m, w, "m");
  check_flat(g, w, "g");
  check_scalar(lr, w, "lr");
  if (g_scale.has_value()) check_scalar(*g_scale, w, "g_scale");
  const int64_t n = w.numel();
  if (n == 0) return;
  c10::cuda::CUDAGuard guard(w.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "sgd_step_", [&] {
    using A = typename Acc<scalar_t>::type;
    const scalar_t* sp = g_scale.has_value() ? g_scale->data_ptr<scalar_t>() : nullptr;
    auto launch = [&](auto kernel) {
      kernel<<<blocks_for(n), kThreads, 0, stream>>>(w.data_ptr<scalar_t>(), m.data_ptr<scalar_t>(),
                                                      g.data_ptr<scalar_t>(), lr.data_ptr<scalar_t>(),
                                                      sp, n, static_cast<A>(momentum), static_cast<A>(wd));
    };
    if (sp) launch(sgd_step_kernel<scalar_t, true>);
    else launch(sgd_step_kernel<scalar_t, false>);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastdarts_C, CUDA, m) {
  m.impl("virtual_step_", &virtual_step_cuda);
  m.impl("perturb_", &perturb_cuda);
  m.impl("sgd_step_", &sgd_step_cuda);
}

}  // namespace fastdarts
