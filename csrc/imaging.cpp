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

  // Gain sensing for blind gain calibration, batched over B problems: y[b, l] = diag(g[b]) A_l x[b], l < p, with A
  // of shape (p, m, n) shared by the problems or (B, p, m, n); x (B, n), gains g (B, m) (None: unit gains).
  // Forward: (B, p, m).
  m.def("gain_forward(Tensor A, Tensor x, Tensor? gains=None) -> Tensor");
  // Adjoint pass, the vector-Jacobian product of gain_forward for a cotangent r (B, p, m):
  // grad_x[b] = Σ_l A_lᵀ (g ⊙ r_l) (B, n) and, when u = A x (B, p, m) is given, grad_gains[b] = Σ_l u_l ⊙ r_l
  // (B, m); without u, grad_gains has shape (B, 0).
  m.def("gain_adjoint(Tensor A, Tensor r, Tensor? gains=None, Tensor? u=None) -> (Tensor, Tensor)");
  // One pass over A that applies the forward and two adjoints: v = A s (B, p, m), Q = Σ_l A_lᵀ (w ⊙ v_l) (B, n)
  // with per-sensor weights w (B, m), P = Σ_l A_lᵀ c_l (B, n) for c (B, p, m) (zeros without c), and the
  // per-sensor energies e[b, i] = Σ_l v[b, l, i]² (B, m) that the exact line searches need. With w = g² this is
  // the normal operator Aᵀ diag(g²) A s; projected gradient descent uses it to fuse an iteration into one pass.
  m.def("gain_normal_pass(Tensor A, Tensor s, Tensor weights, Tensor? c=None) -> (Tensor, Tensor, Tensor, Tensor)");

  // Field of experts R(x) = Σ_i a_i Σ_p φ((k_i ⋆ P x)_p; ν_i) per plane of x (N, C, H, W): K filters k_i (K, kh, kw)
  // (odd sizes, correlation as conv2d), weights a (K,), shapes ν (K,) > 0, potential φ "abs" = sqrt(z² + ν²) or
  // "student" = log(1 + z²/ν²), P the "reflect" or "zero" padding by (kh/2, kw/2) ("same" output size).
  m.def("foe_energy(Tensor x, Tensor filters, Tensor weights, Tensor nu, str potential='abs', "
        "str padding='reflect') -> Tensor");  // (N, C)
  // ∇_x R = Σ_i a_i Pᵀ k_i ⋆ᵀ φ'(k_i ⋆ P x): filter, potential derivative and adjoint filter fused, (N, C, H, W).
  m.def("foe_grad(Tensor x, Tensor filters, Tensor weights, Tensor nu, str potential='abs', "
        "str padding='reflect') -> Tensor");
  // Hessian-vector product ∇²_x R v = Σ_i a_i Pᵀ k_i ⋆ᵀ (φ''(k_i ⋆ P x) ⊙ k_i ⋆ P v), (N, C, H, W).
  m.def("foe_hvp(Tensor x, Tensor v, Tensor filters, Tensor weights, Tensor nu, str potential='abs', "
        "str padding='reflect') -> Tensor");
}

// A Python module so that `import imaging._C` loads the library and runs the registrations above.
extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "imaging's compiled operators", -1, nullptr};
  return PyModule_Create(&module);
}
