// CUDA kernels of the field-of-experts ops (schemas in csrc/imaging.cpp, checks, padding map and potentials in
// csrc/foe.h, same maths as csrc/cpu/foe.cpp). Images are P = N*C planes of H x W; K filters of kh x kw (odd);
// the padded plane is never stored: every read of P x goes through padded_source.
//  - energy_kernel: grid (chunks, planes); each block sums a_i φ(z_i) in double over a fixed strided share of its
//    plane's K*H*W responses and writes one partial (P * chunks doubles); plane_sum_kernel adds a plane's partials
//    in a fixed order. No atomics: the result depends only on the shapes.
//  - field_kernel: one thread per (plane, filter, y, x): z = k_i ⋆ P x there and t = a_i φ'(z) (grad) or
//    t = a_i φ''(z) (k_i ⋆ P v) (hvp), written to a workspace t (planes, K, H, W).
//  - gather_kernel: one thread per output pixel (plane, sy, sx): g = Σ over the padded positions (py, px) whose
//    source is (sy, sx) (one for zero padding, up to 2 per axis for reflect) of Σ_i Σ_{dy,dx} k_i[dy,dx]
//    t_i[py-dy, px-dx], i.e. the adjoint filter followed by the adjoint padding, without atomics (deterministic).
// Workspace of grad/hvp: planes are processed in groups of G = clamp(2^26 / (K*H*W), 1, P) planes, so at most
// G*K*H*W values of x's dtype (P*K*H*W when that is below 2^26 values, e.g. 256 MiB in float32).
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "../foe.h"

namespace imaging {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxWorkspace = int64_t(1) << 26;  // values of t per group of planes
constexpr int64_t kMaxChunks = 512;                  // energy partials per plane

void check_cuda(const at::Tensor& t, const char* op, const char* arg) {
  TORCH_CHECK(t.is_cuda(), "imaging::", op, ": argument '", arg, "' must be a CUDA tensor, got ", t.device());
}

unsigned int blocks_for(int64_t total) {
  return static_cast<unsigned int>(std::min<int64_t>((total + kThreads - 1) / kThreads, 65535LL * 16));
}

#define GRID_STRIDE(i, total) \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (total); i += int64_t(blockDim.x) * gridDim.x)

// z = (k ⋆ P x)[y, x] and, when HVP, zv = (k ⋆ P v)[y, x] (xb, vb: one plane; zero padding skips the taps).
template <typename T, bool HVP>
__device__ __forceinline__ void responses_at(const T* __restrict__ xb, const T* __restrict__ vb,
                                             const T* __restrict__ k, int64_t y, int64_t x, const FoeShape& s, T& z,
                                             T& zv) {
  z = T(0);
  zv = T(0);
  for (int64_t dy = 0; dy < s.kh; ++dy) {
    const int64_t sy = padded_source(y + dy, s.pad_h, s.height, s.reflect);
    if (sy < 0) continue;
    const T* xr = xb + sy * s.width;
    const T* vr = HVP ? vb + sy * s.width : nullptr;
    for (int64_t dx = 0; dx < s.kw; ++dx) {
      const int64_t sx = padded_source(x + dx, s.pad_w, s.width, s.reflect);
      if (sx < 0) continue;
      const T w = __ldg(k + dy * s.kw + dx);
      z += w * __ldg(xr + sx);
      if constexpr (HVP) zv += w * __ldg(vr + sx);
    }
  }
}

// Padded coordinates (0 <= i < n + 2 pad) whose padded_source is s, into c; returns how many (1 to 3).
__device__ __forceinline__ int padded_preimages(int64_t s, int64_t pad, int64_t n, bool reflect, int64_t* c) {
  int m = 0;
  c[m++] = s + pad;                                    // the interior copy
  if (reflect) {
    if (s >= 1 && s <= pad) c[m++] = pad - s;          // leading mirror: j = -s < 0
    const int64_t j = 2 * (n - 1) - s;                 // trailing mirror: n <= j < n + pad
    if (j >= n && j < n + pad) c[m++] = j + pad;
  }
  return m;
}

// Block-wide sum of one double per thread, valid in thread 0 (fixed shuffle/shared-memory order).
__device__ __forceinline__ double block_sum(double value) {
  __shared__ double partial[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = value;
  __syncthreads();
  if (threadIdx.x < 32) {
    value = threadIdx.x < kThreads / 32 ? partial[threadIdx.x] : 0.0;
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
  }
  __syncthreads();  // partial may be reused by the next call
  return value;
}

// partials[b * gridDim.x + blockIdx.x] = Σ over this block's share of plane b of a_i φ(z_i[y, x]).
template <typename T>
__global__ void energy_kernel(const T* __restrict__ x, const T* __restrict__ filters, const T* __restrict__ weights,
                              const T* __restrict__ nu, FoeShape s, double* __restrict__ partials) {
  const int64_t HW = s.height * s.width, KHW = s.filters * HW, taps = s.kh * s.kw;
  for (int64_t b = blockIdx.y; b < s.planes; b += gridDim.y) {
    double acc = 0.0;
    for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < KHW; e += int64_t(blockDim.x) * gridDim.x) {
      const int64_t f = e / HW, y = (e / s.width) % s.height, xx = e % s.width;
      T z, unused;
      responses_at<T, false>(x + b * HW, nullptr, filters + f * taps, y, xx, s, z, unused);
      const T n = __ldg(nu + f);
      acc += static_cast<double>(__ldg(weights + f)) * static_cast<double>(foe_potential(z, n * n, s.potential));
    }
    acc = block_sum(acc);
    if (threadIdx.x == 0) partials[b * gridDim.x + blockIdx.x] = acc;
  }
}

template <typename T>
__global__ void plane_sum_kernel(const double* __restrict__ partials, int64_t planes, int64_t chunks,
                                 T* __restrict__ out) {
  GRID_STRIDE(b, planes) {
    double sum = 0.0;
    for (int64_t c = 0; c < chunks; ++c) sum += partials[b * chunks + c];
    out[b] = static_cast<T>(sum);
  }
}

// t[b, i, y, x] = a_i φ'(z) (grad) or a_i φ''(z) (k_i ⋆ P v) (hvp) for the `planes` planes at x (and v).
template <typename T, bool HVP>
__global__ void field_kernel(const T* __restrict__ x, const T* __restrict__ v, const T* __restrict__ filters,
                             const T* __restrict__ weights, const T* __restrict__ nu, FoeShape s, int64_t planes,
                             T* __restrict__ t) {
  const int64_t HW = s.height * s.width, KHW = s.filters * HW, taps = s.kh * s.kw;
  GRID_STRIDE(e, planes * KHW) {
    const int64_t b = e / KHW, f = (e / HW) % s.filters, y = (e / s.width) % s.height, xx = e % s.width;
    T z, zv;
    responses_at<T, HVP>(x + b * HW, HVP ? v + b * HW : nullptr, filters + f * taps, y, xx, s, z, zv);
    const T a = __ldg(weights + f), n = __ldg(nu + f);
    if constexpr (HVP) {
      t[e] = a * foe_second_derivative(z, n * n, s.potential) * zv;
    } else {
      t[e] = a * foe_derivative(z, n * n, s.potential);
    }
  }
}

// out[b, sy, sx] = Σ_{(py, px) -> (sy, sx)} Σ_i Σ_{dy, dx} k_i[dy, dx] t[b, i, py - dy, px - dx] (valid indices).
template <typename T>
__global__ void gather_kernel(const T* __restrict__ t, const T* __restrict__ filters, FoeShape s, int64_t planes,
                              T* __restrict__ out) {
  const int64_t H = s.height, W = s.width, HW = H * W, taps = s.kh * s.kw;
  GRID_STRIDE(i, planes * HW) {
    const int64_t b = i / HW, sy = (i / W) % H, sx = i % W;
    int64_t rows[3], cols[3];
    const int nr = padded_preimages(sy, s.pad_h, H, s.reflect, rows);
    const int nc = padded_preimages(sx, s.pad_w, W, s.reflect, cols);
    T acc = T(0);
    for (int64_t f = 0; f < s.filters; ++f) {
      const T* k = filters + f * taps;
      const T* tf = t + (b * s.filters + f) * HW;
      for (int r = 0; r < nr; ++r) {
        const int64_t py = rows[r];
        const int64_t dy_end = py < s.kh - 1 ? py : s.kh - 1, dy_begin = py - H + 1 > 0 ? py - H + 1 : 0;
        for (int64_t dy = dy_begin; dy <= dy_end; ++dy) {
          const T* tr = tf + (py - dy) * W;
          const T* kr = k + dy * s.kw;
          for (int c = 0; c < nc; ++c) {
            const int64_t px = cols[c];
            const int64_t dx_end = px < s.kw - 1 ? px : s.kw - 1, dx_begin = px - W + 1 > 0 ? px - W + 1 : 0;
            for (int64_t dx = dx_begin; dx <= dx_end; ++dx)
              acc += __ldg(kr + dx) * tr[px - dx];
          }
        }
      }
    }
    out[i] = acc;
  }
}

enum class Mode { Energy, Grad, Hvp };

template <typename T>
void foe_launch(Mode mode, const at::Tensor& x, const at::Tensor* v, const at::Tensor& filters,
                const at::Tensor& weights, const at::Tensor& nu, const FoeShape& s, at::Tensor& out,
                cudaStream_t stream) {
  const T* xd = x.const_data_ptr<T>();
  const T* kd = filters.const_data_ptr<T>();
  const T* ad = weights.const_data_ptr<T>();
  const T* nd = nu.const_data_ptr<T>();
  const int64_t HW = s.height * s.width, KHW = s.filters * HW;
  if (mode == Mode::Energy) {
    const int64_t chunks = std::clamp<int64_t>((KHW + 4 * kThreads - 1) / (4 * kThreads), 1, kMaxChunks);
    at::Tensor partials = at::empty({s.planes * chunks}, x.options().dtype(at::kDouble));
    const dim3 grid(static_cast<unsigned int>(chunks), static_cast<unsigned int>(std::min<int64_t>(s.planes, 65535)));
    energy_kernel<T><<<grid, kThreads, 0, stream>>>(xd, kd, ad, nd, s, partials.mutable_data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    plane_sum_kernel<T><<<blocks_for(s.planes), kThreads, 0, stream>>>(partials.const_data_ptr<double>(), s.planes,
                                                                       chunks, out.mutable_data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  const int64_t group = std::clamp<int64_t>(kMaxWorkspace / KHW, 1, s.planes);
  at::Tensor work = at::empty({group * KHW}, x.options());
  T* td = work.mutable_data_ptr<T>();
  T* od = out.mutable_data_ptr<T>();
  const T* vd = v != nullptr ? v->const_data_ptr<T>() : nullptr;
  for (int64_t b0 = 0; b0 < s.planes; b0 += group) {
    const int64_t n = std::min(group, s.planes - b0);
    if (mode == Mode::Hvp) {
      field_kernel<T, true><<<blocks_for(n * KHW), kThreads, 0, stream>>>(xd + b0 * HW, vd + b0 * HW, kd, ad, nd, s,
                                                                          n, td);
    } else {
      field_kernel<T, false><<<blocks_for(n * KHW), kThreads, 0, stream>>>(xd + b0 * HW, nullptr, kd, ad, nd, s, n,
                                                                           td);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    gather_kernel<T><<<blocks_for(n * HW), kThreads, 0, stream>>>(td, kd, s, n, od + b0 * HW);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

at::Tensor foe_cuda(Mode mode, const char* op, const at::Tensor& x, const at::Tensor* v, const at::Tensor& filters,
                    const at::Tensor& weights, const at::Tensor& nu, c10::string_view potential,
                    c10::string_view padding) {
  const FoeShape s = check_foe_arguments(x, filters, weights, nu, std::string(potential), std::string(padding), op);
  check_cuda(x, op, "x");
  if (v != nullptr) {
    check_like(*v, x, op, "v");
    TORCH_CHECK(v->sizes() == x.sizes(), "imaging::", op, ": argument 'v' must have x's shape ", x.sizes(), ", got ",
                v->sizes());
  }
  c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = mode == Mode::Energy ? at::empty({x.size(0), x.size(1)}, x.options()) : at::empty_like(x);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "foe_cuda", [&] {
    foe_launch<scalar_t>(mode, x, v, filters, weights, nu, s, out, stream);
  });
  return out;
}

at::Tensor foe_energy_cuda(const at::Tensor& x, const at::Tensor& filters, const at::Tensor& weights,
                           const at::Tensor& nu, c10::string_view potential, c10::string_view padding) {
  return foe_cuda(Mode::Energy, "foe_energy", x, nullptr, filters, weights, nu, potential, padding);
}

at::Tensor foe_grad_cuda(const at::Tensor& x, const at::Tensor& filters, const at::Tensor& weights,
                         const at::Tensor& nu, c10::string_view potential, c10::string_view padding) {
  return foe_cuda(Mode::Grad, "foe_grad", x, nullptr, filters, weights, nu, potential, padding);
}

at::Tensor foe_hvp_cuda(const at::Tensor& x, const at::Tensor& v, const at::Tensor& filters,
                        const at::Tensor& weights, const at::Tensor& nu, c10::string_view potential,
                        c10::string_view padding) {
  return foe_cuda(Mode::Hvp, "foe_hvp", x, &v, filters, weights, nu, potential, padding);
}

}  // namespace
}  // namespace imaging

TORCH_LIBRARY_IMPL(imaging, CUDA, m) {
  m.impl("foe_energy", &imaging::foe_energy_cuda);
  m.impl("foe_grad", &imaging::foe_grad_cuda);
  m.impl("foe_hvp", &imaging::foe_hvp_cuda);
}
