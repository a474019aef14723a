// Shared helpers for imaging's compiled ops: argument checks (TORCH_CHECK, never a crash) and the small inline
// maths used by both the CPU and the CUDA kernels.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <string>

namespace imaging {

// Checks shared by every op: defined, floating (float32/float64), contiguous, non-empty.
inline void check_float_tensor(const at::Tensor& t, const char* op, const char* arg) {
  TORCH_CHECK(t.defined(), "imaging::", op, ": argument '", arg, "' is undefined");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, "imaging::", op, ": argument '", arg,
              "' must be float32 or float64, got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), "imaging::", op, ": argument '", arg,
              "' must be contiguous (call .contiguous() first), got strides ", t.strides());
  TORCH_CHECK(t.numel() > 0, "imaging::", op, ": argument '", arg, "' must be non-empty, got shape ", t.sizes());
}

// Geometry of a batched image/volume (N, C, [D,] H, W), flattened to B = N*C planes of D*H*W voxels.
// For 2-D images D = 1 and there are two difference directions (H, W); for volumes three (D, H, W).
struct Grid {
  int64_t planes = 0;  // N * C
  int64_t depth = 1, height = 1, width = 1;
  int ndim = 2;        // number of spatial dimensions (2 or 3)
  int64_t voxels() const { return depth * height * width; }
};

inline Grid grid_of_image(const at::Tensor& x, const char* op, const char* arg) {
  TORCH_CHECK(x.dim() == 4 || x.dim() == 5, "imaging::", op, ": argument '", arg,
              "' must have shape (N, C, H, W) or (N, C, D, H, W), got ", x.sizes());
  Grid g;
  g.ndim = static_cast<int>(x.dim()) - 2;
  g.planes = x.size(0) * x.size(1);
  if (g.ndim == 3) g.depth = x.size(2);
  g.height = x.size(-2);
  g.width = x.size(-1);
  return g;
}

// A gradient field (N, C, ndim, [D,] H, W) with ndim == number of spatial dims.
inline Grid grid_of_field(const at::Tensor& g, const char* op, const char* arg) {
  TORCH_CHECK(g.dim() == 5 || g.dim() == 6, "imaging::", op, ": argument '", arg,
              "' must have shape (N, C, 2, H, W) or (N, C, 3, D, H, W), got ", g.sizes());
  Grid grid;
  grid.ndim = static_cast<int>(g.dim()) - 3;
  TORCH_CHECK(g.size(2) == grid.ndim, "imaging::", op, ": argument '", arg, "' must have ", grid.ndim,
              " difference directions in dim 2 for ", grid.ndim, "-D data, got shape ", g.sizes());
  grid.planes = g.size(0) * g.size(1);
  if (grid.ndim == 3) grid.depth = g.size(3);
  grid.height = g.size(-2);
  grid.width = g.size(-1);
  return grid;
}

#if defined(__CUDACC__)
#define IMAGING_HD __host__ __device__ __forceinline__
#else
#define IMAGING_HD inline
#endif

// Forward difference of voxel v along a direction of extent n, coordinate c and stride s (Neumann: 0 at the end).
template <typename T>
IMAGING_HD T forward_difference(const T* x, int64_t v, int64_t c, int64_t n, int64_t s) {
  return c + 1 < n ? x[v + s] - x[v] : T(0);
}

// Exact adjoint of forward_difference (minus the backward-difference divergence) for one direction.
template <typename T>
IMAGING_HD T forward_difference_adjoint(const T* g, int64_t v, int64_t c, int64_t n, int64_t s) {
  T out = c + 1 < n ? -g[v] : T(0);
  if (c > 0) out += g[v - s];
  return out;
}

}  // namespace imaging
