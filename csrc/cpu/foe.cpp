// CPU kernels of the field-of-experts ops (schemas in csrc/imaging.cpp, checks and potentials in csrc/foe.h).
//
// Each plane is padded once; then, filter by filter and row by row, the response z = k ⋆ x of one image row is
// built from kh·kw vectorised row updates, mapped through the potential, and (for the gradient and the Hessian-
// vector product) scattered back with the same taps into a padded gradient, which is finally folded back through
// the adjoint of the padding. Nothing of size K·H·W is ever stored. Work is split over (plane, filter chunk) tasks
// whose partial results are summed in a fixed order, so results do not depend on the number of threads.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "../foe.h"
#include "cpu_common.h"

namespace imaging {
namespace {

template <typename T>
IMAGING_CPU_CLONES void axpy_line(T* __restrict__ y, const T* __restrict__ x, T a, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] += a * x[j];
}

// Padded copy of one plane, (H, W) -> (H + 2 pad_h, W + 2 pad_w).
template <typename T>
void pad_plane(const T* x, T* xp, const FoeShape& s) {
  const int64_t Wp = s.padded_w();
  for (int64_t i = 0; i < s.padded_h(); ++i) {
    T* row = xp + i * Wp;
    const int64_t si = padded_source(i, s.pad_h, s.height, s.reflect);
    for (int64_t j = 0; j < Wp; ++j) {
      const int64_t sj = padded_source(j, s.pad_w, s.width, s.reflect);
      row[j] = (si < 0 || sj < 0) ? T(0) : x[si * s.width + sj];
    }
  }
}

// Adjoint of the padding: g[source(i, j)] += gp[i, j].
template <typename T>
void fold_plane(const T* gp, T* g, const FoeShape& s) {
  const int64_t Wp = s.padded_w();
  std::fill(g, g + s.height * s.width, T(0));
  for (int64_t i = 0; i < s.padded_h(); ++i) {
    const int64_t si = padded_source(i, s.pad_h, s.height, s.reflect);
    if (si < 0) continue;
    for (int64_t j = 0; j < Wp; ++j) {
      const int64_t sj = padded_source(j, s.pad_w, s.width, s.reflect);
      if (sj >= 0) g[si * s.width + sj] += gp[i * Wp + j];
    }
  }
}

// z[0..W) = Σ_{dy, dx} k[dy, dx] xp[y + dy, dx .. dx + W): the response of image row y.
template <typename T>
void response_row(const T* xp, const T* k, int64_t y, const FoeShape& s, T* z) {
  std::fill(z, z + s.width, T(0));
  for (int64_t dy = 0; dy < s.kh; ++dy)
    for (int64_t dx = 0; dx < s.kw; ++dx) axpy_line(z, xp + (y + dy) * s.padded_w() + dx, k[dy * s.kw + dx], s.width);
}

// The adjoint of response_row: gp[y + dy, dx .. dx + W) += k[dy, dx] t[0..W).
template <typename T>
void scatter_row(T* gp, const T* k, int64_t y, const FoeShape& s, const T* t) {
  for (int64_t dy = 0; dy < s.kh; ++dy)
    for (int64_t dx = 0; dx < s.kw; ++dx) axpy_line(gp + (y + dy) * s.padded_w() + dx, t, k[dy * s.kw + dx], s.width);
}

enum class Mode { Energy, Grad, Hvp };

// Filter chunks per plane: enough tasks for a few threads even on one plane; depends only on the shapes.
int64_t filter_chunks(const FoeShape& s) {
  return std::clamp<int64_t>(8 / std::max<int64_t>(1, s.planes), 1, s.filters);
}

// MODE = Energy: out (planes) = Σ_i a_i Σ_p φ(z_i); Grad: out (planes, H, W) = ∇_x R; Hvp: ∇²_x R v.
template <typename T, Mode MODE>
void foe_kernel(const T* x, const T* v, const T* filters, const T* weights, const T* nu, const FoeShape& s, T* out) {
  const int64_t P = s.planes, H = s.height, W = s.width, plane = s.padded_h() * s.padded_w();
  const int64_t chunks = filter_chunks(s), tasks = P * chunks, taps = s.kh * s.kw;
  const bool field = MODE != Mode::Energy;
  const Workspace<T> scratch(P * plane * (MODE == Mode::Hvp ? 2 : 1) + (field ? tasks * plane : 0));
  T* xp = scratch.data();
  T* vp = xp + P * plane;                                       // Hvp only
  T* gp = xp + P * plane * (MODE == Mode::Hvp ? 2 : 1);         // partial padded gradients, one per task
  std::vector<double> energy(tasks, 0.0);
  at::parallel_for(0, P, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      pad_plane(x + b * H * W, xp + b * plane, s);
      if (MODE == Mode::Hvp) pad_plane(v + b * H * W, vp + b * plane, s);
    }
  });
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> rows(3 * W);  // per parallel chunk, released with it
    T* z = rows.data();
    T* t = z + W;
    T* sv = t + W;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / chunks, c = task % chunks;
      const int64_t first = c * s.filters / chunks, last = (c + 1) * s.filters / chunks;
      T* g = gp + task * plane;
      if (field) std::fill(g, g + plane, T(0));
      double acc = 0.0;
      for (int64_t i = first; i < last; ++i) {
        const T* k = filters + i * taps;
        const T a = weights[i], nu2 = nu[i] * nu[i];
        for (int64_t y = 0; y < H; ++y) {
          response_row(xp + b * plane, k, y, s, z);
          if constexpr (MODE == Mode::Energy) {
            T row_sum = T(0);
            for (int64_t j = 0; j < W; ++j) row_sum += foe_potential(z[j], nu2, s.potential);
            acc += static_cast<double>(a) * row_sum;
          } else if constexpr (MODE == Mode::Grad) {
            for (int64_t j = 0; j < W; ++j) t[j] = a * foe_derivative(z[j], nu2, s.potential);
            scatter_row(g, k, y, s, t);
          } else {
            response_row(vp + b * plane, k, y, s, sv);
            for (int64_t j = 0; j < W; ++j) t[j] = a * foe_second_derivative(z[j], nu2, s.potential) * sv[j];
            scatter_row(g, k, y, s, t);
          }
        }
      }
      energy[task] = acc;
    }
  });
  at::parallel_for(0, P, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      if constexpr (MODE == Mode::Energy) {
        double sum = 0.0;
        for (int64_t c = 0; c < chunks; ++c) sum += energy[b * chunks + c];
        out[b] = static_cast<T>(sum);
      } else {
        T* g0 = gp + b * chunks * plane;
        for (int64_t c = 1; c < chunks; ++c) {
          const T* gc = gp + (b * chunks + c) * plane;
          for (int64_t j = 0; j < plane; ++j) g0[j] += gc[j];
        }
        fold_plane(g0, out + b * H * W, s);
      }
    }
  });
}

template <Mode MODE>
at::Tensor foe_cpu(const at::Tensor& x, const at::Tensor* v, const at::Tensor& filters, const at::Tensor& weights,
                   const at::Tensor& nu, const std::string& potential, const std::string& padding, const char* op) {
  const FoeShape s = check_foe_arguments(x, filters, weights, nu, potential, padding, op);
  if (v) {
    check_like(*v, x, op, "v");
    TORCH_CHECK(v->sizes() == x.sizes(), "imaging::", op, ": argument 'v' must have x's shape ", x.sizes(), ", got ",
                v->sizes());
  }
  at::Tensor out = MODE == Mode::Energy ? at::empty({x.size(0), x.size(1)}, x.options()) : at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "foe_cpu", [&] {
    foe_kernel<scalar_t, MODE>(x.data_ptr<scalar_t>(), v ? v->data_ptr<scalar_t>() : nullptr,
                               filters.data_ptr<scalar_t>(), weights.data_ptr<scalar_t>(), nu.data_ptr<scalar_t>(), s,
                               out.data_ptr<scalar_t>());
  });
  return out;
}

at::Tensor foe_energy_cpu(const at::Tensor& x, const at::Tensor& filters, const at::Tensor& weights,
                          const at::Tensor& nu, c10::string_view potential, c10::string_view padding) {
  return foe_cpu<Mode::Energy>(x, nullptr, filters, weights, nu, std::string(potential), std::string(padding),
                               "foe_energy");
}

at::Tensor foe_grad_cpu(const at::Tensor& x, const at::Tensor& filters, const at::Tensor& weights,
                        const at::Tensor& nu, c10::string_view potential, c10::string_view padding) {
  return foe_cpu<Mode::Grad>(x, nullptr, filters, weights, nu, std::string(potential), std::string(padding),
                             "foe_grad");
}

at::Tensor foe_hvp_cpu(const at::Tensor& x, const at::Tensor& v, const at::Tensor& filters, const at::Tensor& weights,
                       const at::Tensor& nu, c10::string_view potential, c10::string_view padding) {
  return foe_cpu<Mode::Hvp>(x, &v, filters, weights, nu, std::string(potential), std::string(padding), "foe_hvp");
}

}  // namespace
}  // namespace imaging

TORCH_LIBRARY_IMPL(imaging, CPU, m) {
  m.impl("foe_energy", &imaging::foe_energy_cpu);
  m.impl("foe_grad", &imaging::foe_grad_cpu);
  m.impl("foe_hvp", &imaging::foe_hvp_cpu);
}
