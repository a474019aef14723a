// Argument checks of the gain-sensing ops (blind gain calibration), shared by the CPU and CUDA kernels.
//
// Model, batched over B independent problems: y[b, l] = diag(g[b]) A_l x[b], l = 0..p-1, with the sensing
// matrices A of shape (p, m, n), shared by every problem, or (B, p, m, n), one set per problem. Every tensor must
// be float32/float64 of A's dtype, contiguous and on A's device.
#pragma once

#include "common.h"

namespace imaging {

struct GainShape {
  int64_t batch = 0, snapshots = 0, sensors = 0, pixels = 0;
  bool shared = true;  // A is (p, m, n), shared by the B problems
  int64_t rows() const { return snapshots * sensors; }
  int64_t a_stride() const { return shared ? 0 : rows() * pixels; }  // between the problems' matrices
};

// Checks A and takes the number of problems B from dimension 0 of `lead`, whose full shape the caller checks.
inline GainShape check_gain_sensing(const at::Tensor& A, const at::Tensor& lead, const char* op, const char* arg) {
  check_float_tensor(A, op, "A");
  TORCH_CHECK(A.dim() == 3 || A.dim() == 4, "imaging::", op, ": argument 'A' must have shape (p, m, n) or ",
              "(B, p, m, n), got ", A.sizes());
  check_float_tensor(lead, op, arg);
  TORCH_CHECK(lead.dim() >= 2, "imaging::", op, ": argument '", arg, "' must be batched (leading dimension B), got ",
              lead.sizes());
  GainShape s;
  s.shared = A.dim() == 3;
  s.snapshots = A.size(-3);
  s.sensors = A.size(-2);
  s.pixels = A.size(-1);
  s.batch = lead.size(0);
  TORCH_CHECK(s.shared || A.size(0) == s.batch, "imaging::", op, ": A of shape ", A.sizes(), " holds ", A.size(0),
              " problems but argument '", arg, "' holds ", s.batch);
  return s;
}

// Checks a tensor of shape (B, trailing...) with A's dtype and device.
inline void check_gain_tensor(const at::Tensor& t, const at::Tensor& A, const GainShape& s, const char* op,
                              const char* arg, std::initializer_list<int64_t> trailing, const char* layout) {
  check_float_tensor(t, op, arg);
  TORCH_CHECK(t.scalar_type() == A.scalar_type(), "imaging::", op, ": argument '", arg, "' must have A's dtype ",
              A.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK(t.device() == A.device(), "imaging::", op, ": argument '", arg, "' must be on A's device ", A.device(),
              ", got ", t.device());
  std::vector<int64_t> expected{s.batch};
  expected.insert(expected.end(), trailing.begin(), trailing.end());
  TORCH_CHECK(t.sizes().vec() == expected, "imaging::", op, ": argument '", arg, "' must have shape ", layout, " = ",
              at::IntArrayRef(expected), ", got ", t.sizes());
}

inline void check_gains(const std::optional<at::Tensor>& gains, const at::Tensor& A, const GainShape& s,
                        const char* op, const char* arg = "gains") {
  if (gains.has_value()) check_gain_tensor(*gains, A, s, op, arg, {s.sensors}, "(B, m)");
}

inline void check_image(const at::Tensor& t, const at::Tensor& A, const GainShape& s, const char* op, const char* arg) {
  check_gain_tensor(t, A, s, op, arg, {s.pixels}, "(B, n)");
}

inline void check_snapshots(const at::Tensor& t, const at::Tensor& A, const GainShape& s, const char* op,
                            const char* arg) {
  check_gain_tensor(t, A, s, op, arg, {s.snapshots, s.sensors}, "(B, p, m)");
}

// The checks of each op, in one place for the CPU and CUDA kernels; each returns the problem sizes.
inline GainShape check_gain_forward_arguments(const at::Tensor& A, const at::Tensor& x,
                                              const std::optional<at::Tensor>& gains) {
  const GainShape s = check_gain_sensing(A, x, "gain_forward", "x");
  check_image(x, A, s, "gain_forward", "x");
  check_gains(gains, A, s, "gain_forward");
  return s;
}

inline GainShape check_gain_adjoint_arguments(const at::Tensor& A, const at::Tensor& r,
                                              const std::optional<at::Tensor>& gains,
                                              const std::optional<at::Tensor>& u) {
  const GainShape s = check_gain_sensing(A, r, "gain_adjoint", "r");
  check_snapshots(r, A, s, "gain_adjoint", "r");
  check_gains(gains, A, s, "gain_adjoint");
  if (u.has_value()) check_snapshots(*u, A, s, "gain_adjoint", "u");
  return s;
}

inline GainShape check_gain_normal_pass_arguments(const at::Tensor& A, const at::Tensor& sv, const at::Tensor& weights,
                                                  const std::optional<at::Tensor>& c) {
  const GainShape s = check_gain_sensing(A, sv, "gain_normal_pass", "s");
  check_image(sv, A, s, "gain_normal_pass", "s");
  check_gain_tensor(weights, A, s, "gain_normal_pass", "weights", {s.sensors}, "(B, m)");
  if (c.has_value()) check_snapshots(*c, A, s, "gain_normal_pass", "c");
  return s;
}

}  // namespace imaging
