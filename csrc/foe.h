// Field-of-experts ops: argument checks and the potentials, shared by the CPU and CUDA kernels.
#pragma once

#include <string>

#include "common.h"

namespace imaging {

enum class Potential : int { Abs = 0, Student = 1 };

struct FoeShape {
  int64_t planes = 0, height = 0, width = 0;  // planes = N * C
  int64_t filters = 0, kh = 0, kw = 0;
  int64_t pad_h = 0, pad_w = 0;              // kh / 2, kw / 2
  bool reflect = true;
  Potential potential = Potential::Abs;
  int64_t padded_h() const { return height + 2 * pad_h; }
  int64_t padded_w() const { return width + 2 * pad_w; }
};

inline void check_like(const at::Tensor& t, const at::Tensor& x, const char* op, const char* arg) {
  check_float_tensor(t, op, arg);
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), "imaging::", op, ": argument '", arg, "' must have x's dtype ",
              x.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK(t.device() == x.device(), "imaging::", op, ": argument '", arg, "' must be on x's device ", x.device(),
              ", got ", t.device());
}

inline FoeShape check_foe_arguments(const at::Tensor& x, const at::Tensor& filters, const at::Tensor& weights,
                                    const at::Tensor& nu, const std::string& potential, const std::string& padding,
                                    const char* op) {
  check_float_tensor(x, op, "x");
  TORCH_CHECK(x.dim() == 4, "imaging::", op, ": argument 'x' must have shape (N, C, H, W), got ", x.sizes());
  check_like(filters, x, op, "filters");
  check_like(weights, x, op, "weights");
  check_like(nu, x, op, "nu");
  TORCH_CHECK(filters.dim() == 3 && filters.size(1) % 2 == 1 && filters.size(2) % 2 == 1, "imaging::", op,
              ": argument 'filters' must have shape (K, kh, kw) with odd kh and kw, got ", filters.sizes());
  FoeShape s;
  s.planes = x.size(0) * x.size(1);
  s.height = x.size(2);
  s.width = x.size(3);
  s.filters = filters.size(0);
  s.kh = filters.size(1);
  s.kw = filters.size(2);
  s.pad_h = s.kh / 2;
  s.pad_w = s.kw / 2;
  TORCH_CHECK(weights.dim() == 1 && weights.size(0) == s.filters, "imaging::", op,
              ": argument 'weights' must have shape (K,) = (", s.filters, "), got ", weights.sizes());
  TORCH_CHECK(nu.dim() == 1 && nu.size(0) == s.filters, "imaging::", op, ": argument 'nu' must have shape (K,) = (",
              s.filters, "), got ", nu.sizes());
  TORCH_CHECK(potential == "abs" || potential == "student", "imaging::", op,
              ": argument 'potential' must be 'abs' or 'student', got '", potential, "'");
  TORCH_CHECK(padding == "reflect" || padding == "zero", "imaging::", op,
              ": argument 'padding' must be 'reflect' or 'zero', got '", padding, "'");
  s.potential = potential == "abs" ? Potential::Abs : Potential::Student;
  s.reflect = padding == "reflect";
  TORCH_CHECK(!s.reflect || (s.pad_h < s.height && s.pad_w < s.width), "imaging::", op,
              ": reflect padding by (", s.pad_h, ", ", s.pad_w, ") needs an image larger than that, got ",
              x.sizes());
  return s;
}

// Index of the image row/column that padded coordinate i (0 <= i < n + 2 pad) reads, or -1 for a zero.
IMAGING_HD int64_t padded_source(int64_t i, int64_t pad, int64_t n, bool reflect) {
  int64_t j = i - pad;
  if (j >= 0 && j < n) return j;
  if (!reflect) return -1;
  return j < 0 ? -j : 2 * (n - 1) - j;  // mirror without repeating the edge (torch's "reflect")
}

// φ, φ' and φ'' of the potentials at z with shape parameter ν (ν² passed as nu2).
template <typename T>
IMAGING_HD T foe_potential(T z, T nu2, Potential p) {
  return p == Potential::Abs ? sqrt(z * z + nu2) : log1p(z * z / nu2);
}

template <typename T>
IMAGING_HD T foe_derivative(T z, T nu2, Potential p) {
  return p == Potential::Abs ? z / sqrt(z * z + nu2) : T(2) * z / (nu2 + z * z);
}

template <typename T>
IMAGING_HD T foe_second_derivative(T z, T nu2, Potential p) {
  if (p == Potential::Abs) {
    const T s = z * z + nu2;
    return nu2 / (s * sqrt(s));
  }
  const T s = nu2 + z * z;
  return T(2) * (nu2 - z * z) / (s * s);
}

}  // namespace imaging
