// imaging's compiled-op library: every schema lives here, in one place. Kernels register per backend in
// csrc/cpu/<op>.cpp and csrc/cuda/<op>.cu; autograd and fake (shape) kernels are registered from Python
// (imaging/ops/<op>.py).
#include <Python.h>
#include <torch/library.h>

#ifdef IMAGING_WITH_CUDA
#include <cuda.h>
#endif

namespace imaging {

// CUDA toolkit version the library was built with (e.g. 13000), or -1 for a CPU-only build.
int64_t cuda_version() {
#ifdef IMAGING_WITH_CUDA
  return CUDA_VERSION;
#else
  return -1;
#endif
}

}  // namespace imaging

TORCH_LIBRARY(imaging, m) {
  m.def("cuda_version() -> int", &imaging::cuda_version);

  // Forward finite differences with Neumann boundary: (N, C, [D,] H, W) -> (N, C, ndim, [D,] H, W),
  // g[:, :, k] = x shifted by one along spatial axis k minus x, zero on the last slice along that axis.
  m.def("finite_diff(Tensor x) -> Tensor");
  // Its exact adjoint (minus the divergence): (N, C, ndim, [D,] H, W) -> (N, C, [D,] H, W).
  m.def("finite_diff_adjoint(Tensor g) -> Tensor");
}

// A Python module so that `import imaging._C` loads the library and runs the registrations above.
extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "imaging's compiled operators", -1, nullptr};
  return PyModule_Create(&module);
}
