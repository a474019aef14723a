// CPU kernels of the forward finite-difference gradient and its adjoint, threaded with at::parallel_for over
// image rows. See csrc/imaging.cpp for the schemas.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "cpu_common.h"

namespace imaging {
namespace {

// Strides and extents of the ndim difference directions, outermost first.
struct Directions {
  int64_t extent[3];
  int64_t stride[3];
};

Directions directions_of(const Grid& g) {
  Directions d{};
  if (g.ndim == 3) {
    d = {{g.depth, g.height, g.width}, {g.height * g.width, g.width, 1}};
  } else {
    d = {{g.height, g.width, 0}, {g.width, 1, 0}};
  }
  return d;
}

// Calls body(plane, voxel_of_row_start, z, y) for each row of `width` voxels, in parallel.
template <typename Body>
void for_each_row(const Grid& g, const Body& body) {
  parallel_rows(g, [&](int64_t r) {
    const int64_t y = r % g.height;
    const int64_t z = (r / g.height) % g.depth;
    body(r / (g.height * g.depth), (z * g.height + y) * g.width, z, y);
  });
}

template <typename T>
void finite_diff_kernel(const T* x, T* out, const Grid& g) {
  const Directions dir = directions_of(g);
  const int64_t V = g.voxels();
  for_each_row(g, [&](int64_t plane, int64_t row, int64_t z, int64_t y) {
    const T* xp = x + plane * V;
    T* op = out + plane * g.ndim * V;
    const int64_t outer[2] = {g.ndim == 3 ? z : y, y};  // coordinates along the non-contiguous directions
    for (int k = 0; k + 1 < g.ndim; ++k) {
      T* o = op + k * V + row;
      for (int64_t i = 0; i < g.width; ++i) o[i] = forward_difference(xp, row + i, outer[k], dir.extent[k], dir.stride[k]);
    }
    T* o = op + (g.ndim - 1) * V + row;
    const T* xr = xp + row;
    for (int64_t i = 0; i + 1 < g.width; ++i) o[i] = xr[i + 1] - xr[i];
    o[g.width - 1] = T(0);
  });
}

template <typename T>
void finite_diff_adjoint_kernel(const T* gfield, T* out, const Grid& g) {
  const Directions dir = directions_of(g);
  const int64_t V = g.voxels();
  for_each_row(g, [&](int64_t plane, int64_t row, int64_t z, int64_t y) {
    const T* gp = gfield + plane * g.ndim * V;
    T* o = out + plane * V + row;
    const int64_t outer[2] = {g.ndim == 3 ? z : y, y};
    // Contiguous direction first: o[i] = g[i-1] - g[i] with g[-1] = g[W-1] = 0.
    const T* gl = gp + (g.ndim - 1) * V + row;
    if (g.width == 1) {
      o[0] = T(0);
    } else {
      o[0] = -gl[0];
      for (int64_t i = 1; i + 1 < g.width; ++i) o[i] = gl[i - 1] - gl[i];
      o[g.width - 1] = gl[g.width - 2];
    }
    for (int k = 0; k + 1 < g.ndim; ++k) {
      const T* gk = gp + k * V;
      for (int64_t i = 0; i < g.width; ++i)
        o[i] += forward_difference_adjoint(gk, row + i, outer[k], dir.extent[k], dir.stride[k]);
    }
  });
}

at::Tensor finite_diff_cpu(const at::Tensor& x) {
  check_float_tensor(x, "finite_diff", "x");
  const Grid g = grid_of_image(x, "finite_diff", "x");
  std::vector<int64_t> shape = x.sizes().vec();
  shape.insert(shape.begin() + 2, g.ndim);
  at::Tensor out = at::empty(shape, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "finite_diff_cpu", [&] {
    finite_diff_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), g);
  });
  return out;
}

at::Tensor finite_diff_adjoint_cpu(const at::Tensor& gfield) {
  check_float_tensor(gfield, "finite_diff_adjoint", "g");
  const Grid g = grid_of_field(gfield, "finite_diff_adjoint", "g");
  std::vector<int64_t> shape = gfield.sizes().vec();
  shape.erase(shape.begin() + 2);
  at::Tensor out = at::empty(shape, gfield.options());
  AT_DISPATCH_FLOATING_TYPES(gfield.scalar_type(), "finite_diff_adjoint_cpu", [&] {
    finite_diff_adjoint_kernel<scalar_t>(gfield.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), g);
  });
  return out;
}

}  // namespace
}  // namespace imaging

TORCH_LIBRARY_IMPL(imaging, CPU, m) {
  m.impl("finite_diff", &imaging::finite_diff_cpu);
  m.impl("finite_diff_adjoint", &imaging::finite_diff_adjoint_cpu);
}
