// CUDA kernels of the field-of-experts ops (schemas in csrc/imaging.cpp, checks, padding map and potentials in
// csrc/foe.h, same maths as csrc/cpu/foe.cpp). Images are P = N*C planes of H x W; K filters of kh x kw (odd); the
// padded plane (Hp x Wp = H + kh - 1 x W + kw - 1) is never stored: x is read through padded_source.
// Tiled kernels: a block of 32 x 4 threads owns a 32 x 32 tile, a thread 8 rows of one column (a warp reads 32
// consecutive shared-memory words), `correlate` slides a window of 8 tile values down each tap column in registers.
//  - response_tile_kernel, grid (tiles of the H x W outputs, chunks of 8 filters, planes): loads the padded x tile
//    with halo, (32 + kh - 1) x (32 + kw - 1) values (and v's, hvp), and the chunk's taps once; then per filter
//    z = k_i ⋆ P x and t_i = a_i φ'(z) (grad) or a_i φ''(z) (k_i ⋆ P v) (hvp) into the workspace t (P, K, H, W),
//    or (energy) Σ a_i φ(z) in double: one partial per block, which plane_sum_kernel adds.
//  - gather_tile_kernel, grid (tiles of the Hp x Wp padded grid, C = clamp(ceil(K / 8), 1, 8) filter chunks,
//    planes): per filter, t_i's tile with halo (from row py - kh + 1, zeros outside the image) and k_i's reversed
//    taps go to shared memory and gp += k_i ⋆ᵀ t_i (a correlation with the flipped filter) in registers; writes gp
//    (P, C, Hp, Wp). fold_kernel (a thread per pixel) adds over the chunks the 1 to 9 padded positions it feeds.
// Shared memory: (32 + kh - 1)(32 + kw - 1) values (x2 for hvp) + 8 kh kw (response), 7.2 KiB for 7x7 in float32.
// kh = 3, 5, 7 at compile time, others at run time. Beyond 48 KiB (square filters: float32 grad from 33x33, hvp from
// 27x27, float64 grad from 21x21, hvp from 17x17) the same kernels keep their tiles in a global scratch, on at most
// 256 blocks (and 2^26 scratch values) with C = 1: slower, same results.
// No atomics: every value is written by one thread and every sum has a fixed order set by the shapes. Workspace of
// grad/hvp: t and gp for groups of G = clamp(2^26 / (K*H*W + C*Hp*Wp), 1, P) planes (<= 2^26 values when G > 1).
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
#include <type_traits>

#include "../foe.h"

namespace imaging {
namespace {

constexpr int kThreads = 256;                        // plane_sum_kernel, fold_kernel
constexpr int kTile = 32;                            // tiled kernels: 32 x 32 outputs per block,
constexpr int kRows = 8;                             // 8 rows of one column per thread,
constexpr int kTileThreads = kTile * kTile / kRows;  // 128 threads (32 x 4)
constexpr int kFilterChunk = 8;                      // filters per response block
constexpr int64_t kMaxShared = 48 * 1024 - 256;      // dynamic shared memory (block_sum takes 256 B)
constexpr int64_t kMaxWorkspace = int64_t(1) << 26;  // values of t and gp per group of planes
constexpr int64_t kScratchBlocks = 256;              // most blocks with tiles in global scratch

enum class Mode { Energy, Grad, Hvp };

// Block-wide sum of one double per thread, valid in thread (0, 0) (fixed shuffle/shared-memory order).
__device__ __forceinline__ double block_sum(double value) {
  __shared__ double partial[32];
  const int tid = threadIdx.y * blockDim.x + threadIdx.x, warps = blockDim.x * blockDim.y / 32;
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
  if (tid % 32 == 0) partial[tid / 32] = value;
  __syncthreads();
  if (tid < 32) {
    value = tid < warps ? partial[tid] : 0.0;
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
  }
  __syncthreads();  // partial may be reused by the next call
  return value;
}

// out[b] = Σ_c partials[b * count + c]: a block per plane, fixed strided shares and block_sum order.
template <typename T>
__global__ void plane_sum_kernel(const double* __restrict__ partials, int64_t planes, int64_t count,
                                 T* __restrict__ out) {
  for (int64_t b = blockIdx.x; b < planes; b += gridDim.x) {
    double sum = 0.0;
    for (int64_t c = threadIdx.x; c < count; c += blockDim.x) sum += partials[b * count + c];
    sum = block_sum(sum);
    if (threadIdx.x == 0) out[b] = static_cast<T>(sum);
  }
}

// acc[j] += Σ_{dx < kw, dy < kh} w[dy kw + dx] S[(r0 + j + dy) ld + c + dx], j < kRows (S, w: the block's tiles).
// Per tap column dx, a window of kRows values of the column S[r0 + dy.., c + dx] slides down in registers, so each
// value read serves up to kh taps; with a compile-time kh (KH > 0) the dy loop unrolls and the shifts vanish.
template <typename T, int KH>
__device__ __forceinline__ void correlate(const T* S, int ld, int r0, int c, const T* w, int kh, int kw,
                                          T (&acc)[kRows]) {
  for (int dx = 0; dx < kw; ++dx) {
    const T* col = S + r0 * ld + c + dx;
    T v[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) v[r] = col[r * ld];
#pragma unroll
    for (int dy = 0; dy < (KH > 0 ? KH : kh); ++dy) {
      const T wv = w[dy * kw + dx];
#pragma unroll
      for (int j = 0; j < kRows; ++j) acc[j] += wv * v[j];
      if (dy + 1 == (KH > 0 ? KH : kh)) break;
#pragma unroll
      for (int j = 0; j + 1 < kRows; ++j) v[j] = v[j + 1];
      v[kRows - 1] = col[(kRows + dy) * ld];
    }
  }
}

// The block's tiles: dynamic shared memory or, for KH < 0 (filters too large for it), the block's slice of `scratch`
// in global memory (the same code runs there: __syncthreads orders a block's global accesses too).
template <typename T, int KH>
__device__ __forceinline__ T* tile_memory(T* scratch, int64_t size) {
  extern __shared__ __align__(16) unsigned char smem[];
  if constexpr (KH >= 0) return reinterpret_cast<T*>(smem);
  else return scratch + (blockIdx.x + int64_t(gridDim.x) * (blockIdx.y + int64_t(gridDim.y) * blockIdx.z)) * size;
}

// Responses on tiles blockIdx.x + m gridDim.x of H x W, filter chunks blockIdx.y + m gridDim.y, planes blockIdx.z +
// m gridDim.z: t (grad, hvp) or partials[b, blockIdx.y, blockIdx.x] (energy), see the top.
template <typename T, Mode MODE, int KH>
__global__ void __launch_bounds__(kTileThreads)
    response_tile_kernel(const T* __restrict__ x, const T* __restrict__ v, const T* __restrict__ filters,
                         const T* __restrict__ weights, const T* __restrict__ nu, FoeShape s, int64_t planes,
                         int64_t tiles_x, int64_t tiles, T* __restrict__ t, double* __restrict__ partials,
                         T* scratch) {
  const int kh = KH > 0 ? KH : int(s.kh), kw = int(s.kw), taps = kh * kw, rows = kTile + kh - 1, ld = kTile + kw - 1;
  const int tx = threadIdx.x, ty = threadIdx.y, r0 = ty * kRows;
  T* sx = tile_memory<T, KH>(scratch, rows * ld * (MODE == Mode::Hvp ? 2 : 1) + kFilterChunk * taps);
  T* sv = sx + rows * ld;                            // sx[i ld + j] = xp[y0 + i, x0 + j], hvp: sv the same for v
  T* sk = sv + (MODE == Mode::Hvp ? rows * ld : 0);  // the chunk's taps
  const int64_t H = s.height, W = s.width, HW = H * W, K = s.filters, chunks = (K + kFilterChunk - 1) / kFilterChunk;
  const int64_t Hp = H + 2 * s.pad_h, Wp = W + 2 * s.pad_w;
  for (int64_t b = blockIdx.z; b < planes; b += gridDim.z) {
    double energy = 0.0;
    for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
      const int64_t y0 = tile / tiles_x * kTile, x0 = tile % tiles_x * kTile;
      __syncthreads();  // the previous tile is no longer read
      for (int i = ty; i < rows; i += blockDim.y) {  // zeros beyond the padded plane (they feed no kept output)
        const int64_t sy = y0 + i < Hp ? padded_source(y0 + i, s.pad_h, H, s.reflect) : -1;
        for (int j = tx; j < ld; j += kTile) {
          const int64_t sc = x0 + j < Wp ? padded_source(x0 + j, s.pad_w, W, s.reflect) : -1;
          const bool in = sy >= 0 && sc >= 0;
          sx[i * ld + j] = in ? x[b * HW + sy * W + sc] : T(0);
          if constexpr (MODE == Mode::Hvp) sv[i * ld + j] = in ? v[b * HW + sy * W + sc] : T(0);
        }
      }
      for (int64_t ch = blockIdx.y; ch < chunks; ch += gridDim.y) {
        const int64_t f0 = ch * kFilterChunk;
        const int nf = int(K - f0 < kFilterChunk ? K - f0 : kFilterChunk);
        __syncthreads();  // the previous chunk's taps are no longer read
        for (int e = ty * kTile + tx; e < nf * taps; e += kTileThreads) sk[e] = filters[f0 * taps + e];
        __syncthreads();
        for (int f = 0; f < nf; ++f) {
          T z[kRows] = {}, zv[kRows] = {};
          if (y0 + r0 < H) {  // warp-uniform
            correlate<T, KH>(sx, ld, r0, tx, sk + f * taps, kh, kw, z);
            if constexpr (MODE == Mode::Hvp) correlate<T, KH>(sv, ld, r0, tx, sk + f * taps, kh, kw, zv);
          }
          const T a = weights[f0 + f], n = nu[f0 + f];
#pragma unroll
          for (int j = 0; j < kRows; ++j) {
            const int64_t y = y0 + r0 + j, xx = x0 + tx, e = ((b * K + f0 + f) * H + y) * W + xx;
            if (y >= H || xx >= W) continue;
            if constexpr (MODE == Mode::Energy) {
              energy += static_cast<double>(a) * static_cast<double>(foe_potential(z[j], n * n, s.potential));
            } else if constexpr (MODE == Mode::Grad) {
              t[e] = a * foe_derivative(z[j], n * n, s.potential);
            } else {
              t[e] = a * foe_second_derivative(z[j], n * n, s.potential) * zv[j];
            }
          }
        }
      }
    }
    if constexpr (MODE == Mode::Energy) {
      energy = block_sum(energy);
      if (tx == 0 && ty == 0) partials[(b * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x] = energy;
    }
  }
}

// Adjoint on tiles blockIdx.x + m gridDim.x of the Hp x Wp padded grid, filter chunk blockIdx.y of gridDim.y, planes
// blockIdx.z + m gridDim.z: gp[b, chunk, py, px] = Σ_{i in chunk} Σ_{dy, dx} k_i[dy, dx] t[b, i, py - dy, px - dx].
template <typename T, int KH>
__global__ void __launch_bounds__(kTileThreads)
    gather_tile_kernel(const T* __restrict__ t, const T* __restrict__ filters, FoeShape s, int64_t planes,
                       int64_t tiles_x, int64_t tiles, T* __restrict__ gp, T* scratch) {
  const int kh = KH > 0 ? KH : int(s.kh), kw = int(s.kw), taps = kh * kw, rows = kTile + kh - 1, ld = kTile + kw - 1;
  const int tx = threadIdx.x, ty = threadIdx.y, r0 = ty * kRows;
  T* st = tile_memory<T, KH>(scratch, rows * ld + taps);  // st[i ld + j] = t_i[y0 - kh + 1 + i, x0 - kw + 1 + j]
  T* sk = st + rows * ld;  // k_i reversed: sk[dy kw + dx] = k_i[kh - 1 - dy, kw - 1 - dx]
  const int64_t H = s.height, W = s.width, HW = H * W, K = s.filters, Hp = H + 2 * s.pad_h;
  const int64_t Wp = W + 2 * s.pad_w;
  const int64_t per = (K + gridDim.y - 1) / gridDim.y, first = blockIdx.y * per;
  const int64_t last = first + per < K ? first + per : K;
  for (int64_t b = blockIdx.z; b < planes; b += gridDim.z) {
    for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
      const int64_t y0 = tile / tiles_x * kTile, x0 = tile % tiles_x * kTile;
      T acc[kRows] = {};
      for (int64_t f = first; f < last; ++f) {
        __syncthreads();  // the previous filter's tile is no longer read
        const T* tf = t + (b * K + f) * HW;
        for (int i = ty; i < rows; i += blockDim.y) {
          const int64_t y = y0 - (kh - 1) + i;
          for (int j = tx; j < ld; j += kTile) {
            const int64_t xx = x0 - (kw - 1) + j;
            st[i * ld + j] = (y >= 0 && y < H && xx >= 0 && xx < W) ? tf[y * W + xx] : T(0);
          }
        }
        for (int e = ty * kTile + tx; e < taps; e += kTileThreads) sk[e] = filters[f * taps + taps - 1 - e];
        __syncthreads();
        if (y0 + r0 < Hp) correlate<T, KH>(st, ld, r0, tx, sk, kh, kw, acc);  // warp-uniform
      }
#pragma unroll
      for (int j = 0; j < kRows; ++j) {
        const int64_t py = y0 + r0 + j, px = x0 + tx;
        if (py < Hp && px < Wp) gp[((b * gridDim.y + blockIdx.y) * Hp + py) * Wp + px] = acc[j];
      }
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

// out[b, sy, sx] = Σ_c Σ_{(py, px) -> (sy, sx)} gp[b, c, py, px]: the adjoint of the padding, fixed order.
template <typename T>
__global__ void fold_kernel(const T* __restrict__ gp, FoeShape s, int64_t planes, int64_t chunks,
                            T* __restrict__ out) {
  const int64_t H = s.height, W = s.width, HW = H * W, Wp = W + 2 * s.pad_w, plane = (H + 2 * s.pad_h) * Wp;
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= planes * HW) return;
  const int64_t b = i / HW, sy = (i / W) % H, sx = i % W;
  int64_t rows[3], cols[3];
  const int nr = padded_preimages(sy, s.pad_h, H, s.reflect, rows);
  const int nc = padded_preimages(sx, s.pad_w, W, s.reflect, cols);
  T acc = T(0);
  for (int64_t c = 0; c < chunks; ++c) {
    const T* g = gp + (b * chunks + c) * plane;
    for (int r = 0; r < nr; ++r)
      for (int q = 0; q < nc; ++q) acc += g[rows[r] * Wp + cols[q]];
  }
  out[i] = acc;
}

// Runs launch(std::integral_constant<int, KH>): KH = kh for 3, 5, 7, 0 (run-time kh) otherwise, -1 (run-time kh,
// tiles in global scratch) when they do not fit in shared memory.
template <typename F>
void with_kh(int64_t kh, bool shared, F&& launch) {
  if (!shared) return launch(std::integral_constant<int, -1>{});
  switch (kh) {
    case 3: return launch(std::integral_constant<int, 3>{});
    case 5: return launch(std::integral_constant<int, 5>{});
    case 7: return launch(std::integral_constant<int, 7>{});
    default: return launch(std::integral_constant<int, 0>{});
  }
}

template <typename T>
void foe_launch(Mode mode, const at::Tensor& x, const at::Tensor* v, const at::Tensor& filters,
                const at::Tensor& weights, const at::Tensor& nu, const FoeShape& s, at::Tensor& out,
                cudaStream_t stream) {
  const T *xd = x.const_data_ptr<T>(), *kd = filters.const_data_ptr<T>(), *ad = weights.const_data_ptr<T>();
  const T *nd = nu.const_data_ptr<T>(), *vd = v != nullptr ? v->const_data_ptr<T>() : nullptr;
  const int64_t P = s.planes, HW = s.height * s.width, KHW = s.filters * HW, padded = s.padded_h() * s.padded_w();
  if (out.numel() == 0 || KHW == 0) {  // no planes, or no responses: R = 0
    out.zero_();
    return;
  }
  const int64_t taps = s.kh * s.kw, tile = (kTile + s.kh - 1) * (kTile + s.kw - 1);
  const int64_t response = tile * (mode == Mode::Hvp ? 2 : 1) + kFilterChunk * taps;  // values per block (> gather)
  const bool shared = response * int64_t(sizeof(T)) <= kMaxShared;
  const int64_t scratch_blocks = shared ? 0 : std::clamp<int64_t>(kMaxWorkspace / response, 1, kScratchBlocks);
  at::Tensor scratch = at::empty({scratch_blocks * response}, x.options());
  T* sd = shared ? nullptr : scratch.mutable_data_ptr<T>();
  const size_t response_bytes = shared ? response * sizeof(T) : 0;
  const size_t gather_bytes = shared ? (tile + taps) * sizeof(T) : 0;
  const int64_t tiles_x = (s.width + kTile - 1) / kTile, tiles = tiles_x * ((s.height + kTile - 1) / kTile);
  const int64_t gtiles_x = (s.padded_w() + kTile - 1) / kTile;
  const int64_t gtiles = gtiles_x * ((s.padded_h() + kTile - 1) / kTile);
  const int64_t chunks = (s.filters + kFilterChunk - 1) / kFilterChunk;
  const int64_t gchunks = shared ? std::clamp<int64_t>((s.filters + 7) / 8, 1, 8) : 1;  // gp partials per plane
  auto grid = [&](int64_t nx, int64_t ny, int64_t nz) {  // blocks loop over what the grid does not cover
    const auto u = [](int64_t n) { return static_cast<unsigned int>(std::min<int64_t>(n, 65535)); };
    return shared ? dim3(static_cast<unsigned int>(nx), u(ny), u(nz)) : dim3(u(std::min(nx, scratch_blocks)), 1, 1);
  };
  const dim3 block(kTile, kTileThreads / kTile);
  if (mode == Mode::Energy) {
    const dim3 g = grid(tiles, chunks, P);
    const int64_t count = int64_t(g.x) * g.y;  // partials per plane
    at::Tensor partials = at::empty({P * count}, x.options().dtype(at::kDouble));
    with_kh(s.kh, shared, [&](auto KH) {
      response_tile_kernel<T, Mode::Energy, decltype(KH)::value><<<g, block, response_bytes, stream>>>(
          xd, nullptr, kd, ad, nd, s, P, tiles_x, tiles, nullptr, partials.mutable_data_ptr<double>(), sd);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const auto sum_blocks = static_cast<unsigned int>(std::min<int64_t>(P, 65535));
    plane_sum_kernel<T><<<sum_blocks, kThreads, 0, stream>>>(partials.const_data_ptr<double>(), P, count,
                                                             out.mutable_data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  const int64_t group = std::clamp<int64_t>(kMaxWorkspace / (KHW + gchunks * padded), 1, P);
  at::Tensor work = at::empty({group * (KHW + gchunks * padded)}, x.options());
  T* td = work.mutable_data_ptr<T>();
  T* gpd = td + group * KHW;
  for (int64_t b0 = 0; b0 < P; b0 += group) {
    const int64_t n = std::min(group, P - b0);
    with_kh(s.kh, shared, [&](auto KH) {
      constexpr int kh = decltype(KH)::value;
      const dim3 g = grid(tiles, chunks, n);
      auto response = mode == Mode::Hvp ? response_tile_kernel<T, Mode::Hvp, kh>
                                        : response_tile_kernel<T, Mode::Grad, kh>;
      response<<<g, block, response_bytes, stream>>>(xd + b0 * HW, mode == Mode::Hvp ? vd + b0 * HW : nullptr, kd, ad,
                                                     nd, s, n, tiles_x, tiles, td, nullptr, sd);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      gather_tile_kernel<T, kh><<<grid(gtiles, gchunks, n), block, gather_bytes, stream>>>(td, kd, s, n, gtiles_x,
                                                                                          gtiles, gpd, sd);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    const auto fold_blocks = static_cast<unsigned int>((n * HW + kThreads - 1) / kThreads);
    fold_kernel<T><<<fold_blocks, kThreads, 0, stream>>>(gpd, s, n, gchunks, out.mutable_data_ptr<T>() + b0 * HW);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

at::Tensor foe_cuda(Mode mode, const char* op, const at::Tensor& x, const at::Tensor* v, const at::Tensor& filters,
                    const at::Tensor& weights, const at::Tensor& nu, c10::string_view potential,
                    c10::string_view padding) {
  const FoeShape s = check_foe_arguments(x, filters, weights, nu, std::string(potential), std::string(padding), op);
  TORCH_CHECK(x.is_cuda(), "imaging::", op, ": argument 'x' must be a CUDA tensor, got ", x.device());
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
