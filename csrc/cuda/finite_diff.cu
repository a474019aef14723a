// CUDA kernels of the forward finite-difference gradient and its adjoint: one thread per voxel, all directions
// fused, launched on the current stream. See csrc/imaging.cpp for the schemas.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../common.h"

namespace imaging {
namespace {

struct DeviceGrid {
  int64_t extent[3];  // extents of the difference directions, outermost first
  int64_t stride[3];
  int ndim;
  int64_t voxels;
  int64_t total;  // planes * voxels
};

DeviceGrid device_grid(const Grid& g) {
  DeviceGrid d{};
  d.ndim = g.ndim;
  d.voxels = g.voxels();
  d.total = g.planes * d.voxels;
  if (g.ndim == 3) {
    d.extent[0] = g.depth;  d.extent[1] = g.height; d.extent[2] = g.width;
    d.stride[0] = g.height * g.width; d.stride[1] = g.width; d.stride[2] = 1;
  } else {
    d.extent[0] = g.height; d.extent[1] = g.width; d.extent[2] = 1;
    d.stride[0] = g.width; d.stride[1] = 1; d.stride[2] = 1;
  }
  return d;
}

template <typename T>
__global__ void finite_diff_cuda_kernel(const T* __restrict__ x, T* __restrict__ out, DeviceGrid g) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < g.total; i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t plane = i / g.voxels, v = i % g.voxels;
    const T* xp = x + plane * g.voxels;
    T* op = out + plane * g.ndim * g.voxels + v;
    for (int k = 0; k < g.ndim; ++k) {
      const int64_t c = (v / g.stride[k]) % g.extent[k];
      op[k * g.voxels] = forward_difference(xp, v, c, g.extent[k], g.stride[k]);
    }
  }
}

template <typename T>
__global__ void finite_diff_adjoint_cuda_kernel(const T* __restrict__ gfield, T* __restrict__ out, DeviceGrid g) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < g.total; i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t plane = i / g.voxels, v = i % g.voxels;
    const T* gp = gfield + plane * g.ndim * g.voxels;
    T acc = T(0);
    for (int k = 0; k < g.ndim; ++k) {
      const int64_t c = (v / g.stride[k]) % g.extent[k];
      acc += forward_difference_adjoint(gp + k * g.voxels, v, c, g.extent[k], g.stride[k]);
    }
    out[i] = acc;
  }
}

void check_cuda(const at::Tensor& t, const char* op, const char* arg) {
  TORCH_CHECK(t.is_cuda(), "imaging::", op, ": argument '", arg, "' must be a CUDA tensor, got ", t.device());
}

unsigned int blocks_for(int64_t total, int threads) {
  const int64_t wanted = (total + threads - 1) / threads;
  return static_cast<unsigned int>(std::min<int64_t>(wanted, 65535LL * 16));
}

at::Tensor finite_diff_cuda(const at::Tensor& x) {
  check_float_tensor(x, "finite_diff", "x");
  check_cuda(x, "finite_diff", "x");
  const Grid grid = grid_of_image(x, "finite_diff", "x");
  c10::cuda::CUDAGuard guard(x.device());
  std::vector<int64_t> shape = x.sizes().vec();
  shape.insert(shape.begin() + 2, grid.ndim);
  at::Tensor out = at::empty(shape, x.options());
  const DeviceGrid g = device_grid(grid);
  const int threads = 256;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "finite_diff_cuda", [&] {
    finite_diff_cuda_kernel<scalar_t><<<blocks_for(g.total, threads), threads, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), g);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor finite_diff_adjoint_cuda(const at::Tensor& gfield) {
  check_float_tensor(gfield, "finite_diff_adjoint", "g");
  check_cuda(gfield, "finite_diff_adjoint", "g");
  const Grid grid = grid_of_field(gfield, "finite_diff_adjoint", "g");
  c10::cuda::CUDAGuard guard(gfield.device());
  std::vector<int64_t> shape = gfield.sizes().vec();
  shape.erase(shape.begin() + 2);
  at::Tensor out = at::empty(shape, gfield.options());
  const DeviceGrid g = device_grid(grid);
  const int threads = 256;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(gfield.scalar_type(), "finite_diff_adjoint_cuda", [&] {
    finite_diff_adjoint_cuda_kernel<scalar_t><<<blocks_for(g.total, threads), threads, 0, stream>>>(
        gfield.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), g);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace
}  // namespace imaging

TORCH_LIBRARY_IMPL(imaging, CUDA, m) {
  m.impl("finite_diff", &imaging::finite_diff_cuda);
  m.impl("finite_diff_adjoint", &imaging::finite_diff_adjoint_cuda);
}
