// Shared helpers for imaging's compiled ops: argument checks (TORCH_CHECK, never a crash) and the small inline
// maths used by both the CPU and the CUDA kernels.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <math.h>  // float and double overloads of sqrt in the global namespace (host and device)

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

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

// Checked arguments of imaging::tv_prox, shared by the CPU and CUDA kernels.
struct ProxArguments {
  Grid grid;
  double lower, upper;                 // box, ±inf when absent
  std::vector<int64_t> field_shape;    // shape of the dual field p: (N, C, ndim, *S)
};

inline ProxArguments check_tv_prox_arguments(const at::Tensor& y, const at::Tensor& lam, double tol, int64_t max_iter,
                                             std::optional<double> lower, std::optional<double> upper,
                                             const std::optional<at::Tensor>& p0) {
  check_float_tensor(y, "tv_prox", "y");
  ProxArguments args{grid_of_image(y, "tv_prox", "y"), lower.value_or(-std::numeric_limits<double>::infinity()),
                     upper.value_or(std::numeric_limits<double>::infinity()), y.sizes().vec()};
  check_float_tensor(lam, "tv_prox", "lam");
  TORCH_CHECK(lam.dim() == 2 && lam.size(0) == y.size(0) && lam.size(1) == y.size(1),
              "imaging::tv_prox: argument 'lam' must have shape (N, C) = (", y.size(0), ", ", y.size(1), "), got ",
              lam.sizes());
  TORCH_CHECK(lam.scalar_type() == y.scalar_type() && lam.device() == y.device(), "imaging::tv_prox: argument ",
              "'lam' must have the dtype and device of 'y' (", y.scalar_type(), ", ", y.device(), "), got ",
              lam.scalar_type(), ", ", lam.device());
  const at::Tensor lam_values = lam.to(at::kDouble).cpu();  // N·C values: a negligible copy on CUDA
  // the dual steps scale with λ: beyond the dtype's max / 1e6 they overflow (float32: about 3e32)
  const double lam_limit = (y.scalar_type() == at::kFloat ? std::numeric_limits<float>::max()
                                                          : std::numeric_limits<double>::max()) / 1e6;
  for (int64_t b = 0; b < args.grid.planes; ++b) {
    const double l = lam_values.const_data_ptr<double>()[b];
    TORCH_CHECK(std::isfinite(l) && l >= 0, "imaging::tv_prox: argument 'lam' must be finite and >= 0, got ", l);
    TORCH_CHECK(l <= lam_limit, "imaging::tv_prox: argument 'lam' (", l, ") is too large for ", y.scalar_type(),
                "; rescale the problem or use float64");
  }
  TORCH_CHECK(!(lower.has_value() && std::isinf(*lower)) && !(upper.has_value() && std::isinf(*upper)),
              "imaging::tv_prox: arguments 'lower' and 'upper' must be finite or None (no bound), got ",
              lower.value_or(0.0), " and ", upper.value_or(0.0));
  TORCH_CHECK(tol >= 0, "imaging::tv_prox: argument 'tol' must be >= 0, got ", tol);
  TORCH_CHECK(max_iter >= 0, "imaging::tv_prox: argument 'max_iter' must be >= 0, got ", max_iter);
  TORCH_CHECK(args.lower <= args.upper, "imaging::tv_prox: arguments 'lower' <= 'upper' required, got ", args.lower,
              " > ", args.upper);
  args.field_shape.insert(args.field_shape.begin() + 2, args.grid.ndim);
  if (p0.has_value()) {
    check_float_tensor(*p0, "tv_prox", "p0");
    TORCH_CHECK(p0->sizes() == at::IntArrayRef(args.field_shape) && p0->scalar_type() == y.scalar_type() &&
                    p0->device() == y.device(),
                "imaging::tv_prox: argument 'p0' must have shape ", at::IntArrayRef(args.field_shape),
                " and the dtype and device of 'y', got ", p0->sizes(), ", ", p0->scalar_type(), ", ", p0->device());
  }
  return args;
}

// Relative duality gaps per plane from the primal and dual sums (plane b at primal[b·stride], dual[b·stride]);
// true when gap <= tol·P on every plane. A rounding floor (single or double precision) keeps degenerate planes
// (P ≈ 0) from never converging.
inline bool relative_duality_gaps(const double* primal, const double* dual, int64_t stride, int64_t planes,
                                  double tol, bool single_precision, double* relative) {
  // Relative to the plane's own scale only: an absolute floor would let a tiny image "converge" far from its
  // solution. A NaN gap (non-finite input or iterate) never counts as converged.
  bool converged = true;
  for (int64_t b = 0; b < planes; ++b) {
    const double p = primal[b * stride], d = dual[b * stride];
    const double gap = p - d < 0.0 ? 0.0 : p - d;  // NaN stays NaN
    const double floor = (single_precision ? 1e-7 : 1e-14) * (std::abs(p) + std::abs(d));
    const double scale = std::max(p, floor);
    relative[b] = scale > 0.0 ? gap / scale : (gap == 0.0 ? 0.0 : gap);
    if (!(gap <= tol * p + floor)) converged = false;
  }
  return converged;
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

namespace imaging {

// --- total variation maths shared by the CPU and CUDA kernels --------------------------------------------------
// Extents and strides of the difference directions of a plane, outermost first: 2-D (H, W), 3-D (D, H, W).
template <int NDIM>
struct Geometry {
  int64_t extent[NDIM];
  int64_t stride[NDIM];
  int64_t voxels;
};

template <int NDIM>
inline Geometry<NDIM> geometry_of(const Grid& g) {
  Geometry<NDIM> geo{};
  const int64_t sizes[3] = {g.depth, g.height, g.width};
  int64_t stride = 1;
  for (int k = NDIM - 1; k >= 0; --k) {
    geo.extent[k] = sizes[3 - NDIM + k];
    geo.stride[k] = stride;
    stride *= geo.extent[k];
  }
  geo.voxels = stride;
  return geo;
}

// Forward differences of x at voxel v (zero across the last slice of each direction), and the coordinates of v.
template <typename T, int NDIM>
IMAGING_HD void gradient_at(const T* x, int64_t v, const Geometry<NDIM>& geo, T* g, int64_t* c) {
  for (int k = 0; k < NDIM; ++k) {
    c[k] = (v / geo.stride[k]) % geo.extent[k];
    g[k] = forward_difference(x, v, c[k], geo.extent[k], geo.stride[k]);
  }
}

// Smoothed TV potential: isotropic sqrt(|g|² + ε²) or anisotropic Σ_k sqrt(g_k² + ε²) (ε = 0: plain TV).
template <typename T, int NDIM, bool ISO>
IMAGING_HD T tv_potential(const T* g, T eps) {
  if (ISO) {
    T s = eps * eps;
    for (int k = 0; k < NDIM; ++k) s += g[k] * g[k];
    return sqrt(s);
  }
  T s = 0;
  for (int k = 0; k < NDIM; ++k) s += sqrt(g[k] * g[k] + eps * eps);
  return s;
}

// Derivative of the potential w.r.t. g (0 where the potential is not differentiable, i.e. ε = 0 and g = 0).
template <typename T, int NDIM, bool ISO>
IMAGING_HD void tv_potential_derivative(const T* g, T eps, T* w) {
  if (ISO) {
    const T n = tv_potential<T, NDIM, true>(g, eps);
    for (int k = 0; k < NDIM; ++k) w[k] = n > T(0) ? g[k] / n : T(0);
  } else {
    for (int k = 0; k < NDIM; ++k) {
      const T n = sqrt(g[k] * g[k] + eps * eps);
      w[k] = n > T(0) ? g[k] / n : T(0);
    }
  }
}

// Hessian of the potential at g applied to d: isotropic (I − g gᵀ/n²) d / n with n = sqrt(|g|² + ε²);
// anisotropic ε² d_k / n_k³.
template <typename T, int NDIM, bool ISO>
IMAGING_HD void tv_potential_hessian(const T* g, const T* d, T eps, T* out) {
  if (ISO) {
    const T n = tv_potential<T, NDIM, true>(g, eps);
    T gd = 0;
    for (int k = 0; k < NDIM; ++k) gd += g[k] * d[k];
    for (int k = 0; k < NDIM; ++k) out[k] = n > T(0) ? (d[k] - g[k] * gd / (n * n)) / n : T(0);
  } else {
    for (int k = 0; k < NDIM; ++k) {
      const T n = sqrt(g[k] * g[k] + eps * eps);
      out[k] = n > T(0) ? eps * eps * d[k] / (n * n * n) : T(0);
    }
  }
}

// The field w = φ'(D x) at voxel u (HVP: w = ∇²φ(D x) D v when v is given), zero across each last slice.
template <typename T, int NDIM, bool ISO>
IMAGING_HD void tv_field_at(const T* x, const T* v, int64_t u, const Geometry<NDIM>& geo, T eps, T* w) {
  T g[NDIM];
  int64_t c[NDIM];
  gradient_at<T, NDIM>(x, u, geo, g, c);
  if (v == nullptr) {
    tv_potential_derivative<T, NDIM, ISO>(g, eps, w);
  } else {
    T d[NDIM];
    int64_t cv[NDIM];
    gradient_at<T, NDIM>(v, u, geo, d, cv);
    tv_potential_hessian<T, NDIM, ISO>(g, d, eps, w);
  }
  for (int k = 0; k < NDIM; ++k)
    if (c[k] + 1 >= geo.extent[k]) w[k] = T(0);
}

// Projection of a dual vector onto {|q| ≤ λ}: the 2-norm ball (isotropic) or the box [−λ, λ]^NDIM (anisotropic).
template <typename T, int NDIM, bool ISO>
IMAGING_HD void project_dual(T* q, T lam) {
  if (ISO) {
    T s = 0;
    for (int k = 0; k < NDIM; ++k) s += q[k] * q[k];
    if (s > lam * lam) {
      const T scale = lam / sqrt(s);
      for (int k = 0; k < NDIM; ++k) q[k] *= scale;
    }
  } else {
    for (int k = 0; k < NDIM; ++k) q[k] = q[k] > lam ? lam : (q[k] < -lam ? -lam : q[k]);
  }
}

// Clamp to [lo, hi] (infinite bounds allowed), written as max-then-min so that it compiles to maxps/minps.
template <typename T>
IMAGING_HD T clamp_box(T v, T lo, T hi) {
  const T above = v < lo ? lo : v;
  return above > hi ? hi : above;
}

}  // namespace imaging
