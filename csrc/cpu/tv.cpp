// CPU kernels of total variation: value, gradient and Hessian-vector product of the (ε-smoothed) TV, and the TV
// proximal operator (ROF denoising) solved to a duality gap inside the op. See csrc/imaging.cpp for the schemas.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu_common.h"

namespace imaging {
namespace {

// Dispatches a functor templated on <scalar_t, NDIM, ISO> for the runtime (ndim, isotropic).
template <template <typename, int, bool> class Kernel, typename T, typename... Args>
void dispatch_tv(int ndim, bool isotropic, Args&&... args) {
  if (ndim == 2) {
    isotropic ? Kernel<T, 2, true>::run(args...) : Kernel<T, 2, false>::run(args...);
  } else {
    isotropic ? Kernel<T, 3, true>::run(args...) : Kernel<T, 3, false>::run(args...);
  }
}

// ---- TV value, gradient, Hessian-vector product (per voxel, coordinates recomputed) ----------------------------
template <typename T, int NDIM, bool ISO>
struct TVValue {
  static void run(const T* x, const Grid& g, T eps, T* out) {
    const Geometry<NDIM> geo = geometry_of<NDIM>(g);
    std::vector<double> per_row(g.planes * g.depth * g.height, 0.0);
    parallel_rows(g, [&](int64_t r) {
      const int64_t plane = r / (g.depth * g.height), start = (r % (g.depth * g.height)) * g.width;
      const T* xp = x + plane * geo.voxels;
      double acc = 0;
      T grad[NDIM];
      int64_t c[NDIM];
      for (int64_t v = start; v < start + g.width; ++v) {
        gradient_at<T, NDIM>(xp, v, geo, grad, c);
        acc += tv_potential<T, NDIM, ISO>(grad, eps);
      }
      per_row[r] = acc;
    });
    const std::vector<double> sums = sum_rows_per_plane(per_row, g);
    for (int64_t b = 0; b < g.planes; ++b) out[b] = static_cast<T>(sums[b]);
  }
};

// out = D^T w(D x) where w is the potential's derivative (gradient) or its Hessian applied to D v (HVP).
template <typename T, int NDIM, bool ISO>
struct TVGradient {
  static void run(const T* x, const T* v, const Grid& g, T eps, T* out) {
    const Geometry<NDIM> geo = geometry_of<NDIM>(g);
    parallel_rows(g, [&](int64_t r) {
      const int64_t plane = r / (g.depth * g.height), start = (r % (g.depth * g.height)) * g.width;
      const T* xp = x + plane * geo.voxels;
      const T* vp = v != nullptr ? v + plane * geo.voxels : nullptr;
      T* op = out + plane * geo.voxels;
      auto field = [&](int64_t u, T* w) { tv_field_at<T, NDIM, ISO>(xp, vp, u, geo, eps, w); };
      T here[NDIM], before[NDIM];
      for (int64_t u = start; u < start + g.width; ++u) {
        field(u, here);
        T acc = 0;
        for (int k = 0; k < NDIM; ++k) {
          acc -= here[k];
          if ((u / geo.stride[k]) % geo.extent[k] > 0) {
            field(u - geo.stride[k], before);
            acc += before[k];
          }
        }
        op[u] = acc;
      }
    });
  }
};

// ---- TV proximal operator: accelerated primal-dual (Chambolle–Pock 2011, Alg. 2), whole loop in the op ---------
// Rows of `width` voxels are the unit of work. For each row, pointers to the neighbouring rows along the
// non-contiguous directions are resolved once; a missing neighbour (boundary) points at the row itself (zero forward
// difference) or at a zero row (no backward term), so the inner loops have no branches and vectorise.
template <typename T, int NDIM>
struct RowLinks {
  int64_t index;              // row number over all planes (for per-row partial sums)
  int64_t plane;
  int64_t start;              // first voxel of the row within its plane
  int64_t next[NDIM - 1];     // offset to the next row along each non-contiguous direction, 0 at the boundary
  bool prev[NDIM - 1];        // a previous row exists along each non-contiguous direction
};

template <typename T, int NDIM>
RowLinks<T, NDIM> row_links(int64_t r, const Grid& g) {
  RowLinks<T, NDIM> row{};
  const int64_t rows_per_plane = g.depth * g.height;
  row.index = r;
  row.plane = r / rows_per_plane;
  const int64_t in_plane = r % rows_per_plane;
  row.start = in_plane * g.width;
  const int64_t y = in_plane % g.height, z = in_plane / g.height;
  const int64_t coord[2] = {NDIM == 3 ? z : y, y};
  const int64_t extent[2] = {NDIM == 3 ? g.depth : g.height, g.height};
  const int64_t stride[2] = {NDIM == 3 ? g.height * g.width : g.width, g.width};
  for (int k = 0; k < NDIM - 1; ++k) {
    row.next[k] = coord[k] + 1 < extent[k] ? stride[k] : 0;
    row.prev[k] = coord[k] > 0;
  }
  return row;
}

// Branch-free projection onto the ball {|q| ≤ λ} (isotropic) or the box [−λ, λ]^NDIM (anisotropic).
template <typename T, int NDIM, bool ISO>
inline void project_dual_fast(T* q, T lam) {
  if (ISO) {
    T s = 0;
    for (int k = 0; k < NDIM; ++k) s += q[k] * q[k];
    const T n = std::sqrt(s);
    const T scale = lam / std::max(std::max(n, lam), std::numeric_limits<T>::min());
    for (int k = 0; k < NDIM; ++k) q[k] *= (n > lam ? scale : T(1));
  } else {
    for (int k = 0; k < NDIM; ++k) q[k] = std::min(std::max(q[k], -lam), lam);
  }
}

// One row of the dual step p ← proj(p + σ D xbar): fields pa, (pb in 3-D), pc (contiguous direction last); xa, xb
// are the next rows of xbar along the non-contiguous directions (the row itself at the boundary). Free function
// with restrict parameters so that the loop vectorises.
template <typename T, int NDIM, bool ISO>
inline void dual_voxel(T* __restrict__ pa, T* __restrict__ pb, T* __restrict__ pc, const T* __restrict__ xr,
                       const T* __restrict__ xa, const T* __restrict__ xb, int64_t i, T contiguous, T sigma, T lam) {
  const T qa = pa[i] + sigma * (xa[i] - xr[i]);
  const T qb = NDIM == 3 ? pb[i] + sigma * (xb[i] - xr[i]) : T(0);
  const T qc = pc[i] + sigma * contiguous;
  if (ISO) {
    const T scale = lam / std::max(lam, std::sqrt(qa * qa + qb * qb + qc * qc));
    pa[i] = qa * scale;
    if (NDIM == 3) pb[i] = qb * scale;
    pc[i] = qc * scale;
  } else {
    pa[i] = std::min(std::max(qa, -lam), lam);
    if (NDIM == 3) pb[i] = std::min(std::max(qb, -lam), lam);
    pc[i] = std::min(std::max(qc, -lam), lam);
  }
}

template <typename T, int NDIM, bool ISO>
IMAGING_CPU_CLONES void dual_row(T* __restrict__ pa, T* __restrict__ pb, T* __restrict__ pc, const T* __restrict__ xr,
              const T* __restrict__ xa, const T* __restrict__ xb, int64_t W, T sigma, T lam) {
  for (int64_t i = 0; i + 1 < W; ++i)
    dual_voxel<T, NDIM, ISO>(pa, pb, pc, xr, xa, xb, i, xr[i + 1] - xr[i], sigma, lam);
  dual_voxel<T, NDIM, ISO>(pa, pb, pc, xr, xa, xb, W - 1, T(0), sigma, lam);  // last voxel: no contiguous difference
}

// One row of the primal step x' = clamp((x + τ (y − D^T p)) / (1 + τ)), xbar = x' + θ (x' − x); *_prev are the
// previous rows of the dual fields (a zero row at the boundary). i = 0 (no backward neighbour along the contiguous
// direction) is peeled off so the loop has no conditional load and vectorises.
template <typename T, int NDIM>
IMAGING_CPU_CLONES void primal_row(T* __restrict__ xr, T* __restrict__ br, const T* __restrict__ yr, const T* __restrict__ pa,
                const T* __restrict__ pa_prev, const T* __restrict__ pb, const T* __restrict__ pb_prev,
                const T* __restrict__ pc, int64_t W, T tau, T theta, T lo, T hi) {
  const T inv = T(1) / (T(1) + tau);
  {
    T u = pa_prev[0] - pa[0] - pc[0];
    if (NDIM == 3) u += pb_prev[0] - pb[0];
    const T xn = clamp_box((xr[0] + tau * (yr[0] - u)) * inv, lo, hi);
    br[0] = xn + theta * (xn - xr[0]);
    xr[0] = xn;
  }
  for (int64_t i = 1; i < W; ++i) {
    T u = pa_prev[i] - pa[i] + pc[i - 1] - pc[i];
    if (NDIM == 3) u += pb_prev[i] - pb[i];
    const T xn = clamp_box((xr[i] + tau * (yr[i] - u)) * inv, lo, hi);
    br[i] = xn + theta * (xn - xr[i]);
    xr[i] = xn;
  }
}

// Objective terms of one voxel: primal ½(x − y)² + λ φ(D x) and dual ½(x' − y)² + u x' with u = (D^T p) and
// x' = clamp(y − u); gc is the contiguous-direction difference, pc_prev the contiguous dual at the previous voxel.
template <typename T, int NDIM, bool ISO>
inline void objective_voxel(T x, T xa, T xb, T y, T pa, T pa_prev, T pb, T pb_prev, T pc, T gc, T pc_prev, T lam,
                            T lo, T hi, T& primal, T& dual) {
  const T ga = xa - x;
  const T gb = NDIM == 3 ? xb - x : T(0);
  const T tv = ISO ? std::sqrt(ga * ga + gb * gb + gc * gc) : std::abs(ga) + std::abs(gb) + std::abs(gc);
  const T d = x - y;
  T u = pa_prev - pa + pc_prev - pc;
  if (NDIM == 3) u += pb_prev - pb;
  const T xs = clamp_box(y - u, lo, hi);
  primal = T(0.5) * d * d + lam * tv;
  dual = T(0.5) * (xs - y) * (xs - y) + u * xs;
}

// Objective sums of one row (see objective_voxel). The interior voxels are computed in blocks by a loop without
// boundary tests (so it vectorises), then summed in double; the two row ends are done separately.
template <typename T, int NDIM, bool ISO>
IMAGING_CPU_CLONES void objective_row(const T* __restrict__ xr, const T* __restrict__ xa, const T* __restrict__ xb,
                                      const T* __restrict__ yr, const T* __restrict__ pa,
                                      const T* __restrict__ pa_prev, const T* __restrict__ pb,
                                      const T* __restrict__ pb_prev, const T* __restrict__ pc, int64_t W, T lam,
                                      T lo, T hi, double* primal_out, double* dual_out) {
  constexpr int64_t kBlock = 256;
  T primal_terms[kBlock], dual_terms[kBlock];
  double primal = 0, dual = 0;
  auto voxel = [&](int64_t i, T gc, T pc_prev) {
    T pt, dt;
    objective_voxel<T, NDIM, ISO>(xr[i], xa[i], NDIM == 3 ? xb[i] : T(0), yr[i], pa[i], pa_prev[i],
                                  NDIM == 3 ? pb[i] : T(0), NDIM == 3 ? pb_prev[i] : T(0), pc[i], gc, pc_prev, lam,
                                  lo, hi, pt, dt);
    primal += pt;
    dual += dt;
  };
  voxel(0, W > 1 ? xr[1] - xr[0] : T(0), T(0));
  if (W > 1) voxel(W - 1, T(0), pc[W - 2]);
  for (int64_t begin = 1; begin < W - 1; begin += kBlock) {
    const int64_t n = std::min(kBlock, W - 1 - begin);
    const T* x0 = xr + begin;
    for (int64_t j = 0; j < n; ++j) {
      const int64_t i = begin + j;
      objective_voxel<T, NDIM, ISO>(x0[j], xa[i], NDIM == 3 ? xb[i] : T(0), yr[i], pa[i], pa_prev[i],
                                    NDIM == 3 ? pb[i] : T(0), NDIM == 3 ? pb_prev[i] : T(0), pc[i],
                                    x0[j + 1] - x0[j], pc[i - 1], lam, lo, hi, primal_terms[j], dual_terms[j]);
    }
    for (int64_t j = 0; j < n; ++j) {
      primal += primal_terms[j];
      dual += dual_terms[j];
    }
  }
  *primal_out = primal;
  *dual_out = dual;
}

template <typename T, int NDIM, bool ISO>
struct TVProx {
  const Grid& g;
  const int64_t V, W;
  const T* y;
  const T* lam;
  T lo, hi;
  T* x;
  T* xbar;
  T* p;
  std::vector<T> zeros;  // a zero row: the backward neighbour of the first row along a direction

  // Pointers to the NDIM dual fields of a row, and to their previous rows (zeros at the boundary).
  void dual_rows(const RowLinks<T, NDIM>& row, T** pk, const T** pprev) const {
    for (int k = 0; k < NDIM; ++k) pk[k] = p + (row.plane * NDIM + k) * V + row.start;
    const int64_t stride[2] = {NDIM == 3 ? g.height * g.width : g.width, g.width};
    for (int k = 0; k < NDIM - 1; ++k) pprev[k] = row.prev[k] ? pk[k] - stride[k] : zeros.data();
  }

  // Calls body(row, pk, pprev) for every row, in parallel, with the row's dual-field pointers resolved.
  template <typename Body>
  void rows(const Body& body) {
    parallel_rows(g, [&](int64_t r) {
      const RowLinks<T, NDIM> row = row_links<T, NDIM>(r, g);
      T* pk[NDIM];
      const T* pprev[NDIM];
      dual_rows(row, pk, pprev);
      body(row, pk, pprev);
    });
  }

  // u = (D^T p) on the row (p vanishes on the last slice of each direction, so no forward boundary test).
  static inline T adjoint_at(T* const* pk, const T* const* pprev, int64_t i) {
    T u = -pk[NDIM - 1][i];
    if (i > 0) u += pk[NDIM - 1][i - 1];
    for (int k = 0; k < NDIM - 1; ++k) u += pprev[k][i] - pk[k][i];
    return u;
  }

  void initialise(const T* p0) {
    rows([&](const RowLinks<T, NDIM>& row, T* const* pk, const T* const* pprev) {
      for (int64_t i = 0; i < W; ++i) {
        T q[NDIM];
        for (int k = 0; k < NDIM; ++k) {
          const bool inside = k < NDIM - 1 ? row.next[k] != 0 : i + 1 < W;
          q[k] = (p0 != nullptr && inside) ? p0[(row.plane * NDIM + k) * V + row.start + i] : T(0);
        }
        project_dual<T, NDIM, ISO>(q, lam[row.plane]);
        for (int k = 0; k < NDIM; ++k) pk[k][i] = q[k];
      }
    });
    rows([&](const RowLinks<T, NDIM>& row, T* const* pk, const T* const* pprev) {
      const int64_t off = row.plane * V + row.start;
      for (int64_t i = 0; i < W; ++i) {
        const T u = p0 != nullptr ? adjoint_at(pk, pprev, i) : T(0);
        x[off + i] = xbar[off + i] = clamp_box(y[off + i] - u, lo, hi);
      }
    });
  }

  // p ← proj(p + σ D xbar)
  void dual_step(T sigma) {
    rows([&](const RowLinks<T, NDIM>& row, T* const* pk, const T* const* pprev) {
      const T l = lam[row.plane];
      if (l == T(0)) {  // λ = 0: p = 0 (and x = clamp(y))
        for (int k = 0; k < NDIM; ++k) std::fill(pk[k], pk[k] + W, T(0));
        return;
      }
      const T* xr = xbar + row.plane * V + row.start;
      dual_row<T, NDIM, ISO>(pk[0], NDIM == 3 ? pk[1] : nullptr, pk[NDIM - 1], xr, xr + row.next[0],
                             xr + row.next[NDIM - 2], W, sigma, l);
    });
  }

  // x' = clamp((x + τ (y − D^T p)) / (1 + τ)); xbar = x' + θ (x' − x)
  void primal_step(T tau, T theta) {
    rows([&](const RowLinks<T, NDIM>& row, T* const* pk, const T* const* pprev) {
      const int64_t off = row.plane * V + row.start;
      primal_row<T, NDIM>(x + off, xbar + off, y + off, pk[0], pprev[0], pk[NDIM - 2], pprev[NDIM - 2],
                          pk[NDIM - 1], W, tau, theta, lo, hi);
    });
  }

  // Per-plane primal objective P(x) and dual value 𝒟(p) = ½‖x'−y‖² + <D^T p, x'>, x' = clamp(y − D^T p).
  void objectives(std::vector<double>& primal_rows, std::vector<double>& dual_rows_out) {
    rows([&](const RowLinks<T, NDIM>& row, T* const* pk, const T* const* pprev) {
      const int64_t off = row.plane * V + row.start;
      const T* xr = x + off;
      objective_row<T, NDIM, ISO>(xr, xr + row.next[0], xr + row.next[NDIM - 2], y + off, pk[0], pprev[0],
                                  pk[NDIM - 2], pprev[NDIM - 2], pk[NDIM - 1], W, lam[row.plane], lo, hi,
                                  &primal_rows[row.index], &dual_rows_out[row.index]);
    });
  }

  static void run(const T* y, const T* lam, const Grid& g, double tol, int64_t max_iter, T lo, T hi, const T* p0,
                  T* x, T* xbar, T* p, double* gap_out, int64_t* iterations) {
    TVProx self{g, geometry_of<NDIM>(g).voxels, g.width, y, lam, lo, hi, x, xbar, p, std::vector<T>(g.width, T(0))};
    self.initialise(p0);
    const int64_t n_rows = g.planes * g.depth * g.height;
    std::vector<double> primal_rows(n_rows), dual_rows_sums(n_rows), rel_gap(g.planes, 0.0);
    // Relative duality gap per plane; converged when gap <= tol·P(x) (plus a rounding floor) on every plane.
    auto measure = [&]() -> bool {
      self.objectives(primal_rows, dual_rows_sums);
      const std::vector<double> primal = sum_rows_per_plane(primal_rows, g);
      const std::vector<double> dual = sum_rows_per_plane(dual_rows_sums, g);
      return relative_duality_gaps(primal.data(), dual.data(), 1, g.planes, tol, sizeof(T) == 4, rel_gap.data());
    };

    const double L2 = 4.0 * NDIM;  // ‖D‖² ≤ 4·ndim
    double tau = 1.0, sigma = 1.0 / (tau * L2);
    const int64_t check_every = 5;
    int64_t it = 0;
    bool converged = tol > 0 && measure(), measured = tol > 0;
    while (!converged && it < max_iter) {
      ++it;
      self.dual_step(static_cast<T>(sigma));
      const double theta = 1.0 / std::sqrt(1.0 + 2.0 * tau);
      self.primal_step(static_cast<T>(tau), static_cast<T>(theta));
      tau *= theta;
      sigma /= theta;
      measured = tol > 0 && it % check_every == 0;  // tol = 0: a fixed number of iterations, gap once at the end
      if (measured) converged = measure();
    }
    if (!measured) measure();
    for (int64_t b = 0; b < g.planes; ++b) gap_out[b] = rel_gap[b];
    *iterations = it;
  }
};

// ---- op entry points --------------------------------------------------------------------------------------------
at::Tensor tv_cpu(const at::Tensor& x, double eps, bool isotropic) {
  check_float_tensor(x, "tv", "x");
  const Grid g = grid_of_image(x, "tv", "x");
  TORCH_CHECK(eps >= 0, "imaging::tv: argument 'eps' must be >= 0, got ", eps);
  at::Tensor out = at::empty({x.size(0), x.size(1)}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "tv_cpu", [&] {
    dispatch_tv<TVValue, scalar_t>(g.ndim, isotropic, x.const_data_ptr<scalar_t>(), g, static_cast<scalar_t>(eps),
                                   out.mutable_data_ptr<scalar_t>());
  });
  return out;
}

at::Tensor tv_grad_cpu(const at::Tensor& x, double eps, bool isotropic) {
  check_float_tensor(x, "tv_grad", "x");
  const Grid g = grid_of_image(x, "tv_grad", "x");
  TORCH_CHECK(eps >= 0, "imaging::tv_grad: argument 'eps' must be >= 0, got ", eps);
  at::Tensor out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "tv_grad_cpu", [&] {
    const scalar_t* none = nullptr;
    dispatch_tv<TVGradient, scalar_t>(g.ndim, isotropic, x.const_data_ptr<scalar_t>(), none, g,
                                      static_cast<scalar_t>(eps), out.mutable_data_ptr<scalar_t>());
  });
  return out;
}

at::Tensor tv_hvp_cpu(const at::Tensor& x, const at::Tensor& v, double eps, bool isotropic) {
  check_float_tensor(x, "tv_hvp", "x");
  check_float_tensor(v, "tv_hvp", "v");
  const Grid g = grid_of_image(x, "tv_hvp", "x");
  TORCH_CHECK(v.sizes() == x.sizes() && v.scalar_type() == x.scalar_type(), "imaging::tv_hvp: argument 'v' must ",
              "have the shape and dtype of 'x' (", x.sizes(), ", ", x.scalar_type(), "), got ", v.sizes(), ", ",
              v.scalar_type());
  TORCH_CHECK(eps > 0, "imaging::tv_hvp: argument 'eps' must be > 0 (TV is not twice differentiable), got ", eps);
  at::Tensor out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "tv_hvp_cpu", [&] {
    dispatch_tv<TVGradient, scalar_t>(g.ndim, isotropic, x.const_data_ptr<scalar_t>(), v.const_data_ptr<scalar_t>(),
                                      g, static_cast<scalar_t>(eps), out.mutable_data_ptr<scalar_t>());
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> tv_prox_cpu(
    const at::Tensor& y, const at::Tensor& lam, bool isotropic, double tol, int64_t max_iter,
    std::optional<double> lower, std::optional<double> upper, const std::optional<at::Tensor>& p0) {
  const ProxArguments args = check_tv_prox_arguments(y, lam, tol, max_iter, lower, upper, p0);
  const Grid& g = args.grid;
  const double lo = args.lower, hi = args.upper;
  const std::vector<int64_t>& field_shape = args.field_shape;
  at::Tensor x = at::empty_like(y);
  at::Tensor xbar = at::empty_like(y);
  at::Tensor p = at::empty(field_shape, y.options());
  at::Tensor gap = at::empty({y.size(0), y.size(1)}, y.options().dtype(at::kDouble));
  at::Tensor iterations = at::empty({}, y.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "tv_prox_cpu", [&] {
    const scalar_t* lam_data = lam.const_data_ptr<scalar_t>();
    const scalar_t* p0_data = p0.has_value() ? p0->const_data_ptr<scalar_t>() : nullptr;
    dispatch_tv<TVProx, scalar_t>(g.ndim, isotropic, y.const_data_ptr<scalar_t>(), lam_data, g, tol, max_iter,
                                  static_cast<scalar_t>(lo), static_cast<scalar_t>(hi), p0_data,
                                  x.mutable_data_ptr<scalar_t>(), xbar.mutable_data_ptr<scalar_t>(),
                                  p.mutable_data_ptr<scalar_t>(), gap.mutable_data_ptr<double>(),
                                  iterations.mutable_data_ptr<int64_t>());
  });
  return {x, p, gap, iterations};
}

}  // namespace
}  // namespace imaging

TORCH_LIBRARY_IMPL(imaging, CPU, m) {
  m.impl("tv", &imaging::tv_cpu);
  m.impl("tv_grad", &imaging::tv_grad_cpu);
  m.impl("tv_hvp", &imaging::tv_hvp_cpu);
  m.impl("tv_prox", &imaging::tv_prox_cpu);
}
