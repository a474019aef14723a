// CUDA kernels of the gain-sensing ops (schemas in csrc/imaging.cpp, checks in csrc/gain_sensing.h, same maths as
// csrc/cpu/gain_sensing.cpp). A is R = p*m rows of n pixels per problem; row = l*m + i has sensor i = row % m.
//  - row_kernel (forward, v = A s): one warp per (row, problem), 16-byte loads where aligned, shuffle reduction.
//  - column_kernel (adjoint, Σ_rows A_row * coef(row)): one thread per column (or 16-byte column group), split-K
//    over K row chunks; each chunk writes its own partial image (K, B, n) and reduce_kernel sums the K partials in a
//    fixed order, so results are deterministic (no atomics). Up to two outputs share one read of A.
//  - snapshot_sum_kernel: out[b, i] = Σ_l a[b, l, i] * b_[b, l, i] (energies, gain gradients).
// Problems are the fastest grid index, so blocks reading a shared A's same rows run together (L2 reuse).
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <climits>
#include <cstdint>

#include "../gain_sensing.h"

namespace imaging {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;
constexpr int64_t kMinRowsPerChunk = 16;  // split-K never makes chunks shorter than this

void check_cuda(const at::Tensor& t, const char* op, const char* arg) {
  TORCH_CHECK(t.is_cuda(), "imaging::", op, ": argument '", arg, "' must be a CUDA tensor, got ", t.device());
}

unsigned int blocks_for(int64_t total) {
  return static_cast<unsigned int>(std::min<int64_t>((total + kThreads - 1) / kThreads, 65535LL * 16));
}

#define GRID_STRIDE(i, total) \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (total); i += int64_t(blockDim.x) * gridDim.x)

// 16-byte vector of T: W elements loaded by one instruction.
template <typename T> struct Vec16;
template <> struct Vec16<float> { using type = float4; static constexpr int width = 4; };
template <> struct Vec16<double> { using type = double2; static constexpr int width = 2; };

template <typename T, int W>
__device__ __forceinline__ void load(const T* __restrict__ p, T (&out)[W]) {
  if constexpr (W == 1) {
    out[0] = p[0];
  } else {
    static_assert(W == Vec16<T>::width, "vector loads are 16 bytes");
    const typename Vec16<T>::type q = *reinterpret_cast<const typename Vec16<T>::type*>(p);
    const T* e = reinterpret_cast<const T*>(&q);
#pragma unroll
    for (int k = 0; k < W; ++k) out[k] = e[k];
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// ---- forward: y[b, row] = (g[b, i] or 1) * <A_b[row, :], x[b, :]> ------------------------------------------------
template <typename T, int W>
__global__ void row_kernel(const T* __restrict__ A, int64_t a_stride, const T* __restrict__ x,
                           const T* __restrict__ g, int64_t R, int64_t m, int64_t n, int64_t B, T* __restrict__ y) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / kWarp);
  for (int64_t w = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / kWarp; w < R * B; w += warps) {
    const int64_t row = w / B, b = w % B;  // the problems of one row in neighbouring warps
    const T* a = A + b * a_stride + row * n;
    const T* xb = x + b * n;
    T acc = T(0);
#pragma unroll 4
    for (int64_t j = int64_t(lane) * W; j < n; j += kWarp * W) {
      T av[W], xv[W];
      load<T, W>(a + j, av);
      load<T, W>(xb + j, xv);
#pragma unroll
      for (int k = 0; k < W; ++k) acc += av[k] * xv[k];
    }
    for (int offset = kWarp / 2; offset > 0; offset /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, offset);
    if (lane == 0) y[b * R + row] = g != nullptr ? g[b * m + row % m] * acc : acc;
  }
}

// ---- adjoint: dst[k, b, j] = Σ_{row in chunk k} A_b[row, j] * values[b, row] * (scale[b, i] or 1) ---------------
template <typename T>
struct Coef {
  const T* values = nullptr;  // (B, R)
  const T* scale = nullptr;   // (B, m) or null
  T* dst = nullptr;           // partials (K, B, n), or the output itself when K = 1
};

template <typename T, int W, int NOUT>
__global__ void column_kernel(const T* __restrict__ A, int64_t a_stride, int64_t R, int64_t m, int64_t n, int64_t B,
                              int64_t rows_per_chunk, Coef<T> c0, Coef<T> c1) {
  const int64_t tiles = (n + int64_t(kThreads) * W - 1) / (int64_t(kThreads) * W);
  const int64_t k = blockIdx.y;
  const int64_t begin = k * rows_per_chunk, end = begin + rows_per_chunk < R ? begin + rows_per_chunk : R;
  for (int64_t blk = blockIdx.x; blk < tiles * B; blk += gridDim.x) {
    const int64_t b = blk % B, j = ((blk / B) * kThreads + threadIdx.x) * W;
    if (j >= n) continue;  // W divides n on the vector path, so a group is all in or all out
    const T* a = A + b * a_stride + begin * n + j;
    const T* v0 = c0.values + b * R;
    const T* s0 = c0.scale != nullptr ? c0.scale + b * m : nullptr;
    const T* v1 = NOUT == 2 ? c1.values + b * R : nullptr;
    const T* s1 = NOUT == 2 && c1.scale != nullptr ? c1.scale + b * m : nullptr;
    T acc0[W], acc1[W];
#pragma unroll
    for (int q = 0; q < W; ++q) acc0[q] = acc1[q] = T(0);
    int64_t i = begin % m;  // sensor of the current row, advanced without a division per row
#pragma unroll 4
    for (int64_t row = begin; row < end; ++row, a += n) {
      T av[W];
      load<T, W>(a, av);
      const T w0 = s0 != nullptr ? __ldg(v0 + row) * __ldg(s0 + i) : __ldg(v0 + row);  // CPU's product order
#pragma unroll
      for (int q = 0; q < W; ++q) acc0[q] += w0 * av[q];
      if constexpr (NOUT == 2) {
        const T w1 = s1 != nullptr ? __ldg(v1 + row) * __ldg(s1 + i) : __ldg(v1 + row);
#pragma unroll
        for (int q = 0; q < W; ++q) acc1[q] += w1 * av[q];
      }
      if (++i == m) i = 0;
    }
    T* d0 = c0.dst + (k * B + b) * n + j;
#pragma unroll
    for (int q = 0; q < W; ++q) d0[q] = acc0[q];
    if constexpr (NOUT == 2) {
      T* d1 = c1.dst + (k * B + b) * n + j;
#pragma unroll
      for (int q = 0; q < W; ++q) d1[q] = acc1[q];
    }
  }
}

// out_o[t] = Σ_k partials[o, k, t] for k = 0..K-1 in order (t indexes the B*n entries of output o).
template <typename T>
__global__ void reduce_kernel(const T* __restrict__ partials, int64_t K, int64_t total, T* __restrict__ out0,
                              T* __restrict__ out1) {
  GRID_STRIDE(t, total) {
    T s0 = T(0), s1 = T(0);
    for (int64_t k = 0; k < K; ++k) s0 += partials[k * total + t];
    out0[t] = s0;
    if (out1 != nullptr) {
      for (int64_t k = 0; k < K; ++k) s1 += partials[(K + k) * total + t];
      out1[t] = s1;
    }
  }
}

// out[b, i] = Σ_l a[b, l, i] * b_[b, l, i] (b_ = a when null), l in order.
template <typename T>
__global__ void snapshot_sum_kernel(const T* __restrict__ a, const T* __restrict__ b_, int64_t B, int64_t p,
                                    int64_t m, T* __restrict__ out) {
  GRID_STRIDE(t, B * m) {
    const int64_t b = t / m, i = t % m;
    T acc = T(0);
    for (int64_t l = 0; l < p; ++l) {
      const int64_t e = (b * p + l) * m + i;
      acc += a[e] * (b_ != nullptr ? b_[e] : a[e]);
    }
    out[t] = acc;
  }
}

// ---- launchers ----------------------------------------------------------------------------------------------------
template <typename T>
void forward_rows(const at::Tensor& A, const GainShape& s, const T* x, const T* g, T* y, cudaStream_t stream) {
  const T* a = A.const_data_ptr<T>();
  auto launch = [&](auto kernel) {  // one warp per (row, problem)
    kernel<<<blocks_for(s.rows() * s.batch * kWarp), kThreads, 0, stream>>>(a, s.a_stride(), x, g, s.rows(),
                                                                            s.sensors, s.pixels, s.batch, y);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  constexpr int W = Vec16<T>::width;
  if (s.pixels % W == 0 && aligned16(a) && aligned16(x)) {
    launch(row_kernel<T, W>);
  } else {
    launch(row_kernel<T, 1>);
  }
}

// out0 = Σ_rows A_row * coef0(row) and, when NOUT = 2, out1 = Σ_rows A_row * coef1(row), both (B, n).
template <typename T, int W, int NOUT>
void adjoint_columns(const at::Tensor& A, const GainShape& s, Coef<T> c0, Coef<T> c1, T* out0, T* out1,
                     cudaStream_t stream) {
  const auto kernel = column_kernel<T, W, NOUT>;
  int sms = 0, per_sm = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, A.device().index()));
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, 0));
  const int64_t R = s.rows(), n = s.pixels, B = s.batch;
  const int64_t col_blocks = (n + int64_t(kThreads) * W - 1) / (int64_t(kThreads) * W) * B;
  // K row chunks: enough blocks for one full wave of the GPU, chunks of >= kMinRowsPerChunk rows. The partials
  // then hold at most about (one wave of blocks) * kThreads * W * NOUT elements (~8 MB fp32 on an H100).
  const int64_t wave = int64_t(std::max(per_sm, 1)) * std::max(sms, 1);
  const int64_t max_k = std::min<int64_t>(65535, (R + kMinRowsPerChunk - 1) / kMinRowsPerChunk);
  int64_t K = std::clamp<int64_t>((wave + col_blocks - 1) / col_blocks, 1, max_k);
  const int64_t rows_per_chunk = (R + K - 1) / K;
  K = (R + rows_per_chunk - 1) / rows_per_chunk;  // no empty chunks
  at::Tensor partials;
  if (K > 1) {
    partials = at::empty({NOUT * K * B * n}, A.options());
    c0.dst = partials.mutable_data_ptr<T>();
    c1.dst = c0.dst + K * B * n;
  } else {
    c0.dst = out0;
    c1.dst = out1;
  }
  const dim3 grid(static_cast<unsigned int>(std::min<int64_t>(col_blocks, INT_MAX)), static_cast<unsigned int>(K));
  kernel<<<grid, kThreads, 0, stream>>>(A.const_data_ptr<T>(), s.a_stride(), R, s.sensors, n, B, rows_per_chunk,
                                        c0, c1);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (K > 1) {
    reduce_kernel<T><<<blocks_for(B * n), kThreads, 0, stream>>>(partials.const_data_ptr<T>(), K, B * n, out0,
                                                                 NOUT == 2 ? out1 : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

template <typename T, int NOUT>
void adjoint_pass(const at::Tensor& A, const GainShape& s, Coef<T> c0, Coef<T> c1, T* out0, T* out1,
                  cudaStream_t stream) {
  constexpr int W = Vec16<T>::width;
  if (s.pixels % W == 0 && aligned16(A.const_data_ptr<T>())) {
    adjoint_columns<T, W, NOUT>(A, s, c0, c1, out0, out1, stream);
  } else {
    adjoint_columns<T, 1, NOUT>(A, s, c0, c1, out0, out1, stream);
  }
}

template <typename T>
void snapshot_sums(const T* a, const T* b_, const GainShape& s, T* out, cudaStream_t stream) {
  snapshot_sum_kernel<T><<<blocks_for(s.batch * s.sensors), kThreads, 0, stream>>>(a, b_, s.batch, s.snapshots,
                                                                                   s.sensors, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T>
const T* data_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->const_data_ptr<T>() : nullptr;
}

// ---- op entry points ----------------------------------------------------------------------------------------------
at::Tensor gain_forward_cuda(const at::Tensor& A, const at::Tensor& x, const std::optional<at::Tensor>& gains) {
  const GainShape s = check_gain_forward_arguments(A, x, gains);
  check_cuda(A, "gain_forward", "A");
  c10::cuda::CUDAGuard guard(A.device());
  at::Tensor y = at::empty({s.batch, s.snapshots, s.sensors}, A.options());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "gain_forward_cuda", [&] {
    forward_rows<scalar_t>(A, s, x.const_data_ptr<scalar_t>(), data_or_null<scalar_t>(gains),
                           y.mutable_data_ptr<scalar_t>(), stream);
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> gain_adjoint_cuda(const at::Tensor& A, const at::Tensor& r,
                                                     const std::optional<at::Tensor>& gains,
                                                     const std::optional<at::Tensor>& u) {
  const GainShape s = check_gain_adjoint_arguments(A, r, gains, u);
  check_cuda(A, "gain_adjoint", "A");
  c10::cuda::CUDAGuard guard(A.device());
  at::Tensor grad_x = at::empty({s.batch, s.pixels}, A.options());
  at::Tensor grad_gains = at::empty({s.batch, u.has_value() ? s.sensors : 0}, A.options());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "gain_adjoint_cuda", [&] {
    // grad_x[b] = Σ_rows A_row * (r[b, row] * g[b, i])
    Coef<scalar_t> c0;
    c0.values = r.const_data_ptr<scalar_t>();
    c0.scale = data_or_null<scalar_t>(gains);
    adjoint_pass<scalar_t, 1>(A, s, c0, Coef<scalar_t>{}, grad_x.mutable_data_ptr<scalar_t>(), nullptr, stream);
    // grad_gains[b, i] = Σ_l u[b, l, i] * r[b, l, i]
    if (u.has_value())
      snapshot_sums<scalar_t>(u->const_data_ptr<scalar_t>(), r.const_data_ptr<scalar_t>(), s,
                              grad_gains.mutable_data_ptr<scalar_t>(), stream);
  });
  return {grad_x, grad_gains};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gain_normal_pass_cuda(const at::Tensor& A,
                                                                                 const at::Tensor& sv,
                                                                                 const at::Tensor& weights,
                                                                                 const std::optional<at::Tensor>& c) {
  const GainShape s = check_gain_normal_pass_arguments(A, sv, weights, c);
  check_cuda(A, "gain_normal_pass", "A");
  c10::cuda::CUDAGuard guard(A.device());
  at::Tensor v = at::empty({s.batch, s.snapshots, s.sensors}, A.options());
  at::Tensor Q = at::empty({s.batch, s.pixels}, A.options());
  at::Tensor P = c.has_value() ? at::empty({s.batch, s.pixels}, A.options()) : at::zeros({s.batch, s.pixels},
                                                                                          A.options());
  at::Tensor energy = at::empty({s.batch, s.sensors}, A.options());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "gain_normal_pass_cuda", [&] {
    // v[b, row] = <A_row, s[b]>
    forward_rows<scalar_t>(A, s, sv.const_data_ptr<scalar_t>(), nullptr, v.mutable_data_ptr<scalar_t>(), stream);
    // Q[b] = Σ_rows A_row * (v[b, row] * w[b, i]) and P[b] = Σ_rows A_row * c[b, row], one read of A for both
    Coef<scalar_t> cq, cp;
    cq.values = v.const_data_ptr<scalar_t>();
    cq.scale = weights.const_data_ptr<scalar_t>();
    scalar_t* q = Q.mutable_data_ptr<scalar_t>();
    if (c.has_value()) {
      cp.values = c->const_data_ptr<scalar_t>();
      adjoint_pass<scalar_t, 2>(A, s, cq, cp, q, P.mutable_data_ptr<scalar_t>(), stream);
    } else {
      adjoint_pass<scalar_t, 1>(A, s, cq, cp, q, nullptr, stream);
    }
    // energy[b, i] = Σ_l v[b, l, i]²
    snapshot_sums<scalar_t>(v.const_data_ptr<scalar_t>(), nullptr, s, energy.mutable_data_ptr<scalar_t>(), stream);
  });
  return {v, Q, P, energy};
}

}  // namespace
}  // namespace imaging

TORCH_LIBRARY_IMPL(imaging, CUDA, m) {
  m.impl("gain_forward", &imaging::gain_forward_cuda);
  m.impl("gain_adjoint", &imaging::gain_adjoint_cuda);
  m.impl("gain_normal_pass", &imaging::gain_normal_pass_cuda);
}
