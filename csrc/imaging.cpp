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

  // Total variation of each plane, (N, C, [D,] H, W) -> (N, C): Σ_voxels φ(D x) with the isotropic
  // φ(g) = sqrt(|g|² + ε²) or the anisotropic φ(g) = Σ_k sqrt(g_k² + ε²); ε = 0 is the plain TV.
  m.def("tv(Tensor x, float eps=0., bool isotropic=True) -> Tensor");
  // Gradient of the summed (smoothed) TV: D^T φ'(D x) (ε = 0: the subgradient with φ'(0) = 0).
  m.def("tv_grad(Tensor x, float eps=0., bool isotropic=True) -> Tensor");
  // Hessian-vector product of the ε-smoothed TV (ε > 0): D^T ∇²φ(D x) D v.
  m.def("tv_hvp(Tensor x, Tensor v, float eps, bool isotropic=True) -> Tensor");
  // TV proximal operator (ROF): per plane argmin_x ½‖x − y‖² + λ TV(x) (+ box lower <= x <= upper), by the
  // accelerated primal-dual method until the relative duality gap <= tol or max_iter iterations; warm start from
  // a dual field p0. Returns (x, p, relative gap per plane (N, C) float64, iterations done (0-d int64)).
  m.def("tv_prox(Tensor y, Tensor lam, bool isotropic=True, float tol=1e-4, int max_iter=1000, "
        "float? lower=None, float? upper=None, Tensor? p0=None) -> (Tensor, Tensor, Tensor, Tensor)");
}

// A Python module so that `import imaging._C` loads the library and runs the registrations above.
extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "imaging's compiled operators", -1, nullptr};
  return PyModule_Create(&module);
}
