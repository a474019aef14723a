// CUDA kernels of total variation: value, gradient, Hessian-vector product, and the TV proximal operator whose
// iteration loop runs in C++ (kernels on the current stream; the duality gap is read back every 5 iterations).
// Same maths as csrc/cpu/tv.cpp (shared helpers in csrc/common.h); schemas in csrc/imaging.cpp.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <vector>

#include "../common.h"

namespace imaging {
namespace {

constexpr int kThreads = 256;

unsigned int blocks_for(int64_t total) {
  return static_cast<unsigned int>(std::min<int64_t>((total + kThreads - 1) / kThreads, 65535LL * 8));
}

void check_cuda(const at::Tensor& t, const char* op, const char* arg) {
  TORCH_CHECK(t.is_cuda(), "imaging::", op, ": argument '", arg, "' must be a CUDA tensor, got ", t.device());
}

#define GRID_STRIDE(i, total) \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (total); i += int64_t(blockDim.x) * gridDim.x)

// Block-wide sum of one double per thread, added atomically to *out by thread 0.
__device__ __forceinline__ void block_sum_atomic(double value, double* out) {
  __shared__ double partial[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = value;
  __syncthreads();
  if (threadIdx.x < 32) {
    value = threadIdx.x < kThreads / 32 ? partial[threadIdx.x] : 0.0;
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
    if (threadIdx.x == 0) atomicAdd(out, value);
  }
}

// ---- value, gradient, HVP ------------------------------------------------------------------------------------
// Value: block rows stride over the planes (blockIdx.y + m gridDim.y: any number of planes, gridDim.y <= 65535),
// so each block adds into one plane sum at a time.
template <typename T, int NDIM, bool ISO>
__global__ void tv_value_kernel(const T* __restrict__ x, Geometry<NDIM> geo, int64_t planes, T eps,
                                double* __restrict__ sums) {
  for (int64_t plane = blockIdx.y; plane < planes; plane += gridDim.y) {
    const T* xp = x + plane * geo.voxels;
    double acc = 0;
    for (int64_t v = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; v < geo.voxels;
         v += int64_t(blockDim.x) * gridDim.x) {
      T g[NDIM];
      int64_t c[NDIM];
      gradient_at<T, NDIM>(xp, v, geo, g, c);
      acc += tv_potential<T, NDIM, ISO>(g, eps);
    }
    block_sum_atomic(acc, sums + plane);
    __syncthreads();  // the shared partials are reused by the next plane
  }
}

// out = D^T w, w = φ'(D x) (HVP: w = ∇²φ(D x) D v), recomputing w at the voxel and its backward neighbours.
template <typename T, int NDIM, bool ISO>
__global__ void tv_gradient_kernel(const T* __restrict__ x, const T* __restrict__ v, Geometry<NDIM> geo, int64_t planes,
                                   T eps, T* __restrict__ out) {
  GRID_STRIDE(i, planes * geo.voxels) {
    const int64_t plane = i / geo.voxels, u = i % geo.voxels;
    const T* xp = x + plane * geo.voxels;
    const T* vp = v != nullptr ? v + plane * geo.voxels : nullptr;
    T here[NDIM], before[NDIM];
    tv_field_at<T, NDIM, ISO>(xp, vp, u, geo, eps, here);
    T acc = 0;
    for (int k = 0; k < NDIM; ++k) {
      acc -= here[k];
      if ((u / geo.stride[k]) % geo.extent[k] > 0) {
        tv_field_at<T, NDIM, ISO>(xp, vp, u - geo.stride[k], geo, eps, before);
        acc += before[k];
      }
    }
    out[i] = acc;
  }
}

// ---- prox: accelerated primal-dual (Chambolle–Pock Alg. 2) --------------------------------------------------------
// (D^T p) at voxel u of a plane: backward neighbours where they exist; p vanishes on each direction's last slice.
template <typename T, int NDIM>
__device__ __forceinline__ T dual_adjoint_at(const T* pp, int64_t u, const Geometry<NDIM>& geo) {
  T acc = 0;
  for (int k = 0; k < NDIM; ++k) {
    const T* pk = pp + k * geo.voxels;
    acc -= pk[u];
    if ((u / geo.stride[k]) % geo.extent[k] > 0) acc += pk[u - geo.stride[k]];
  }
  return acc;
}

template <typename T, int NDIM, bool ISO>
__global__ void prox_init_dual_kernel(const T* __restrict__ p0, const T* __restrict__ lam, Geometry<NDIM> geo,
                                      int64_t planes, T* __restrict__ p) {
  GRID_STRIDE(i, planes * geo.voxels) {
    const int64_t plane = i / geo.voxels, u = i % geo.voxels;
    T q[NDIM];
    for (int k = 0; k < NDIM; ++k) {
      const bool inside = (u / geo.stride[k]) % geo.extent[k] + 1 < geo.extent[k];
      q[k] = (p0 != nullptr && inside) ? p0[(plane * NDIM + k) * geo.voxels + u] : T(0);
    }
    project_dual<T, NDIM, ISO>(q, lam[plane]);
    for (int k = 0; k < NDIM; ++k) p[(plane * NDIM + k) * geo.voxels + u] = q[k];
  }
}

template <typename T, int NDIM>
__global__ void prox_init_primal_kernel(const T* __restrict__ y, const T* __restrict__ p, Geometry<NDIM> geo,
                                        int64_t planes, T lo, T hi, T* __restrict__ x, T* __restrict__ xbar) {
  GRID_STRIDE(i, planes * geo.voxels) {
    const int64_t plane = i / geo.voxels, u = i % geo.voxels;
    const T value = clamp_box(y[i] - dual_adjoint_at<T, NDIM>(p + plane * NDIM * geo.voxels, u, geo), lo, hi);
    x[i] = value;
    xbar[i] = value;
  }
}

template <typename T, int NDIM, bool ISO>
__global__ void prox_dual_kernel(const T* __restrict__ xbar, const T* __restrict__ lam, Geometry<NDIM> geo,
                                 int64_t planes, T sigma, T* __restrict__ p) {
  GRID_STRIDE(i, planes * geo.voxels) {
    const int64_t plane = i / geo.voxels, u = i % geo.voxels;
    T g[NDIM];
    int64_t c[NDIM];
    gradient_at<T, NDIM>(xbar + plane * geo.voxels, u, geo, g, c);
    T* pp = p + plane * NDIM * geo.voxels + u;
    T q[NDIM];
    for (int k = 0; k < NDIM; ++k) q[k] = pp[k * geo.voxels] + sigma * g[k];
    project_dual<T, NDIM, ISO>(q, lam[plane]);
    for (int k = 0; k < NDIM; ++k) pp[k * geo.voxels] = q[k];
  }
}

template <typename T, int NDIM>
__global__ void prox_primal_kernel(const T* __restrict__ y, const T* __restrict__ p, Geometry<NDIM> geo,
                                   int64_t planes, T tau, T theta, T lo, T hi, T* __restrict__ x,
                                   T* __restrict__ xbar) {
  GRID_STRIDE(i, planes * geo.voxels) {
    const int64_t plane = i / geo.voxels, u = i % geo.voxels;
    const T adj = dual_adjoint_at<T, NDIM>(p + plane * NDIM * geo.voxels, u, geo);
    const T xn = clamp_box((x[i] + tau * (y[i] - adj)) / (T(1) + tau), lo, hi);
    xbar[i] = xn + theta * (xn - x[i]);
    x[i] = xn;
  }
}

// Per-plane primal P(x) and dual 𝒟(p) = ½‖x'−y‖² + <D^T p, x'>, x' = clamp(y − D^T p), into sums[2·plane + {0,1}].
template <typename T, int NDIM, bool ISO>
__global__ void prox_objective_kernel(const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ p,
                                      const T* __restrict__ lam, Geometry<NDIM> geo, int64_t planes, T lo, T hi,
                                      double* __restrict__ sums) {
  for (int64_t plane = blockIdx.y; plane < planes; plane += gridDim.y) {  // grid-stride over the planes
    const T* xp = x + plane * geo.voxels;
    const T* yp = y + plane * geo.voxels;
    const T* pp = p + plane * NDIM * geo.voxels;
    double primal = 0, dual = 0;
    for (int64_t u = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; u < geo.voxels;
         u += int64_t(blockDim.x) * gridDim.x) {
      T g[NDIM];
      int64_t c[NDIM];
      gradient_at<T, NDIM>(xp, u, geo, g, c);
      const double d = double(xp[u]) - double(yp[u]);
      primal += 0.5 * d * d + double(lam[plane]) * double(tv_potential<T, NDIM, ISO>(g, T(0)));
      const T adj = dual_adjoint_at<T, NDIM>(pp, u, geo);
      const double xs = clamp_box(yp[u] - adj, lo, hi);
      dual += 0.5 * (xs - yp[u]) * (xs - yp[u]) + double(adj) * xs;
    }
    block_sum_atomic(primal, sums + 2 * plane);
    __syncthreads();
    block_sum_atomic(dual, sums + 2 * plane + 1);
    __syncthreads();
  }
}

dim3 plane_grid(const Grid& g) {
  const int64_t per_plane = std::min<int64_t>((g.voxels() + kThreads - 1) / kThreads, 1024);
  return dim3(static_cast<unsigned int>(per_plane), static_cast<unsigned int>(std::min<int64_t>(g.planes, 65535)));
}

template <typename T, int NDIM, bool ISO>
struct CudaTV {
  static void value(const T* x, const Grid& g, T eps, double* sums, cudaStream_t stream) {
    tv_value_kernel<T, NDIM, ISO><<<plane_grid(g), kThreads, 0, stream>>>(x, geometry_of<NDIM>(g), g.planes, eps,
                                                                        sums);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  static void gradient(const T* x, const T* v, const Grid& g, T eps, T* out, cudaStream_t stream) {
    tv_gradient_kernel<T, NDIM, ISO><<<blocks_for(g.planes * g.voxels()), kThreads, 0, stream>>>(
        x, v, geometry_of<NDIM>(g), g.planes, eps, out);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  static void prox(const T* y, const T* lam, const Grid& g, double tol, int64_t max_iter, T lo, T hi, const T* p0,
                   T* x, T* xbar, T* p, double* sums_device, double* gap_out, int64_t* iterations,
                   cudaStream_t stream) {
    const Geometry<NDIM> geo = geometry_of<NDIM>(g);
    const int64_t total = g.planes * geo.voxels;
    const unsigned int blocks = blocks_for(total);
    prox_init_dual_kernel<T, NDIM, ISO><<<blocks, kThreads, 0, stream>>>(p0, lam, geo, g.planes, p);
    prox_init_primal_kernel<T, NDIM><<<blocks, kThreads, 0, stream>>>(y, p, geo, g.planes, lo, hi, x, xbar);
    C10_CUDA_KERNEL_LAUNCH_CHECK();

    std::vector<double> sums(2 * g.planes), rel_gap(g.planes, 0.0);
    auto measure = [&]() -> bool {
      C10_CUDA_CHECK(cudaMemsetAsync(sums_device, 0, sizeof(double) * 2 * g.planes, stream));
      prox_objective_kernel<T, NDIM, ISO><<<plane_grid(g), kThreads, 0, stream>>>(x, y, p, lam, geo, g.planes, lo, hi,
                                                                                  sums_device);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      C10_CUDA_CHECK(cudaMemcpyAsync(sums.data(), sums_device, sizeof(double) * 2 * g.planes,
                                     cudaMemcpyDeviceToHost, stream));
      C10_CUDA_CHECK(cudaStreamSynchronize(stream));
      return relative_duality_gaps(sums.data(), sums.data() + 1, 2, g.planes, tol, sizeof(T) == 4, rel_gap.data());
    };

    const double L2 = 4.0 * NDIM;
    double tau = 1.0, sigma = 1.0 / (tau * L2);
    int64_t it = 0;
    bool converged = tol > 0 && measure(), measured = tol > 0;
    while (!converged && it < max_iter) {
      ++it;
      prox_dual_kernel<T, NDIM, ISO><<<blocks, kThreads, 0, stream>>>(xbar, lam, geo, g.planes,
                                                                      static_cast<T>(sigma), p);
      const double theta = 1.0 / std::sqrt(1.0 + 2.0 * tau);
      prox_primal_kernel<T, NDIM><<<blocks, kThreads, 0, stream>>>(y, p, geo, g.planes, static_cast<T>(tau),
                                                                  static_cast<T>(theta), lo, hi, x, xbar);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      tau *= theta;
      sigma /= theta;
      measured = tol > 0 && it % 5 == 0;  // tol = 0: a fixed number of iterations, gap once at the end
      if (measured) converged = measure();
    }
    if (!measured) measure();
    for (int64_t b = 0; b < g.planes; ++b) gap_out[b] = rel_gap[b];
    *iterations = it;
  }
};

template <typename T, typename F>
void dispatch_cuda_tv(int ndim, bool isotropic, F&& f) {
  if (ndim == 2) {
    isotropic ? f(CudaTV<T, 2, true>{}) : f(CudaTV<T, 2, false>{});
  } else {
    isotropic ? f(CudaTV<T, 3, true>{}) : f(CudaTV<T, 3, false>{});
  }
}

// ---- op entry points ----------------------------------------------------------------------------------------------
at::Tensor tv_cuda(const at::Tensor& x, double eps, bool isotropic) {
  check_float_tensor(x, "tv", "x");
  check_cuda(x, "tv", "x");
  const Grid g = grid_of_image(x, "tv", "x");
  TORCH_CHECK(eps >= 0, "imaging::tv: argument 'eps' must be >= 0, got ", eps);
  c10::cuda::CUDAGuard guard(x.device());
  at::Tensor sums = at::zeros({x.size(0), x.size(1)}, x.options().dtype(at::kDouble));
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "tv_cuda", [&] {
    dispatch_cuda_tv<scalar_t>(g.ndim, isotropic, [&](auto kernels) {
      kernels.value(x.const_data_ptr<scalar_t>(), g, static_cast<scalar_t>(eps), sums.mutable_data_ptr<double>(),
                    stream);
    });
  });
  return sums.to(x.scalar_type());
}

at::Tensor tv_gradient_cuda(const char* op, const at::Tensor& x, const at::Tensor* v, double eps, bool isotropic) {
  check_float_tensor(x, op, "x");
  check_cuda(x, op, "x");
  const Grid g = grid_of_image(x, op, "x");
  if (v != nullptr) {
    check_float_tensor(*v, op, "v");
    TORCH_CHECK(v->sizes() == x.sizes() && v->scalar_type() == x.scalar_type() && v->device() == x.device(),
                "imaging::", op, ": argument 'v' must have the shape, dtype and device of 'x'");
    TORCH_CHECK(eps > 0, "imaging::", op, ": argument 'eps' must be > 0, got ", eps);
  }
  TORCH_CHECK(eps >= 0, "imaging::", op, ": argument 'eps' must be >= 0, got ", eps);
  c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty_like(x);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "tv_gradient_cuda", [&] {
    const scalar_t* vp = v != nullptr ? v->const_data_ptr<scalar_t>() : nullptr;
    dispatch_cuda_tv<scalar_t>(g.ndim, isotropic, [&](auto kernels) {
      kernels.gradient(x.const_data_ptr<scalar_t>(), vp, g, static_cast<scalar_t>(eps),
                       out.mutable_data_ptr<scalar_t>(), stream);
    });
  });
  return out;
}

at::Tensor tv_grad_cuda(const at::Tensor& x, double eps, bool isotropic) {
  return tv_gradient_cuda("tv_grad", x, nullptr, eps, isotropic);
}

at::Tensor tv_hvp_cuda(const at::Tensor& x, const at::Tensor& v, double eps, bool isotropic) {
  return tv_gradient_cuda("tv_hvp", x, &v, eps, isotropic);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> tv_prox_cuda(
    const at::Tensor& y, const at::Tensor& lam, bool isotropic, double tol, int64_t max_iter,
    std::optional<double> lower, std::optional<double> upper, const std::optional<at::Tensor>& p0) {
  check_cuda(y, "tv_prox", "y");
  const ProxArguments args = check_tv_prox_arguments(y, lam, tol, max_iter, lower, upper, p0);
  const Grid& g = args.grid;
  const double lo = args.lower, hi = args.upper;
  const std::vector<int64_t>& field_shape = args.field_shape;
  c10::cuda::CUDAGuard guard(y.device());
  at::Tensor x = at::empty_like(y);
  at::Tensor xbar = at::empty_like(y);
  at::Tensor p = at::empty(field_shape, y.options());
  at::Tensor sums = at::empty({2 * g.planes}, y.options().dtype(at::kDouble));
  at::Tensor gap = at::empty({y.size(0), y.size(1)}, y.options().dtype(at::kDouble).device(at::kCPU));
  at::Tensor iterations = at::empty({}, y.options().dtype(at::kLong).device(at::kCPU));
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "tv_prox_cuda", [&] {
    const scalar_t* p0_data = p0.has_value() ? p0->const_data_ptr<scalar_t>() : nullptr;
    dispatch_cuda_tv<scalar_t>(g.ndim, isotropic, [&](auto kernels) {
      kernels.prox(y.const_data_ptr<scalar_t>(), lam.const_data_ptr<scalar_t>(), g, tol, max_iter,
                   static_cast<scalar_t>(lo), static_cast<scalar_t>(hi), p0_data, x.mutable_data_ptr<scalar_t>(),
                   xbar.mutable_data_ptr<scalar_t>(), p.mutable_data_ptr<scalar_t>(), sums.mutable_data_ptr<double>(),
                   gap.mutable_data_ptr<double>(), iterations.mutable_data_ptr<int64_t>(), stream);
    });
  });
  return {x, p, gap.to(y.device()), iterations.to(y.device())};
}

}  // namespace
}  // namespace imaging

TORCH_LIBRARY_IMPL(imaging, CUDA, m) {
  m.impl("tv", &imaging::tv_cuda);
  m.impl("tv_grad", &imaging::tv_grad_cuda);
  m.impl("tv_hvp", &imaging::tv_hvp_cuda);
  m.impl("tv_prox", &imaging::tv_prox_cuda);
}
