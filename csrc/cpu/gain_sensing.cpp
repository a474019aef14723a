// CPU kernels of the gain-sensing ops (see csrc/imaging.cpp for the schemas and csrc/gain_sensing.h for shapes).
//
// A is read row by row, a row being one (snapshot, sensor) pair: the forward pass is one dot product per row and
// problem, the adjoint passes accumulate rows into per-chunk partial images that are summed in a fixed order, so a
// result does not depend on the number of threads. The partial images live in a per-thread workspace reused from
// call to call: an iteration allocates only its outputs.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "../gain_sensing.h"
#include "cpu_common.h"

namespace imaging {
namespace {

// The row loops are cloned for Haswell-class x86 (AVX2 + FMA) and baseline x86-64; the loader picks one.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define IMAGING_GAIN_CLONES __attribute__((target_clones("arch=haswell", "default")))
#else
#define IMAGING_GAIN_CLONES
#endif

// Rows are handled in blocks of ROWS so that each pass over the image-length vectors (x, P, Q, which stay in
// cache) serves several rows of A (which stream from memory).
constexpr int ROWS = 4;

template <typename T>
IMAGING_GAIN_CLONES T dot_row(const T* __restrict__ a, const T* __restrict__ x, int64_t n) {
  T acc = T(0);
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < n; ++j) acc += a[j] * x[j];
  return acc;
}

template <typename T>
IMAGING_GAIN_CLONES void dot_rows(const T* __restrict__ a, const T* __restrict__ x, int64_t n, T* __restrict__ out) {
  const T* __restrict__ a0 = a;
  const T* __restrict__ a1 = a + n;
  const T* __restrict__ a2 = a + 2 * n;
  const T* __restrict__ a3 = a + 3 * n;
  T s0 = T(0), s1 = T(0), s2 = T(0), s3 = T(0);
#pragma omp simd reduction(+ : s0, s1, s2, s3)
  for (int64_t j = 0; j < n; ++j) {
    const T xj = x[j];
    s0 += a0[j] * xj;
    s1 += a1[j] * xj;
    s2 += a2[j] * xj;
    s3 += a3[j] * xj;
  }
  out[0] = s0; out[1] = s1; out[2] = s2; out[3] = s3;
}

// The dot products of ROWS consecutive rows with x, fused with p += Σ_k alpha[k] a_k (the rows are read once).
template <typename T>
IMAGING_GAIN_CLONES void dot_axpy_rows(const T* __restrict__ a, const T* __restrict__ x, T* __restrict__ p,
                                       const T* __restrict__ alpha, int64_t n, T* __restrict__ out) {
  const T* __restrict__ a0 = a;
  const T* __restrict__ a1 = a + n;
  const T* __restrict__ a2 = a + 2 * n;
  const T* __restrict__ a3 = a + 3 * n;
  const T c0 = alpha[0], c1 = alpha[1], c2 = alpha[2], c3 = alpha[3];
  T s0 = T(0), s1 = T(0), s2 = T(0), s3 = T(0);
#pragma omp simd reduction(+ : s0, s1, s2, s3)
  for (int64_t j = 0; j < n; ++j) {
    const T v0 = a0[j], v1 = a1[j], v2 = a2[j], v3 = a3[j], xj = x[j];
    s0 += v0 * xj;
    s1 += v1 * xj;
    s2 += v2 * xj;
    s3 += v3 * xj;
    p[j] += c0 * v0 + c1 * v1 + c2 * v2 + c3 * v3;
  }
  out[0] = s0; out[1] = s1; out[2] = s2; out[3] = s3;
}

// y += Σ_k alpha[k] a_k over ROWS consecutive rows a_k = a + k n (ROWS = 1 when `single`).
template <typename T>
IMAGING_GAIN_CLONES void axpy_rows(T* __restrict__ y, const T* __restrict__ a, const T* __restrict__ alpha, int64_t n,
                                   bool single) {
  if (single) {
    const T c0 = alpha[0];
    for (int64_t j = 0; j < n; ++j) y[j] += c0 * a[j];
    return;
  }
  const T* __restrict__ a0 = a;
  const T* __restrict__ a1 = a + n;
  const T* __restrict__ a2 = a + 2 * n;
  const T* __restrict__ a3 = a + 3 * n;
  const T c0 = alpha[0], c1 = alpha[1], c2 = alpha[2], c3 = alpha[3];
  for (int64_t j = 0; j < n; ++j) y[j] += c0 * a0[j] + c1 * a1[j] + c2 * a2[j] + c3 * a3[j];
}

// Number of row chunks with their own partial images: about 16k multiply-adds at least per chunk, at most 64
// chunks, and at most 256 MB of partials.
int64_t chunk_count(const GainShape& s, int outputs, size_t element) {
  const int64_t work = s.rows() * s.batch * s.pixels;
  int64_t chunks = std::clamp<int64_t>(work / 16384, 1, std::min<int64_t>(64, s.rows()));
  const int64_t per_chunk = s.batch * s.pixels * outputs * static_cast<int64_t>(element);
  while (chunks > 1 && chunks * per_chunk > (int64_t(256) << 20)) chunks /= 2;
  return chunks;
}

// The adjoint pass over A, optionally fused with a forward pass:
//   P[b] = Σ_rows A_row · (c[b, row] · scale[b, sensor])          (c may be null: P stays zero)
//   FORWARD:  v[b, row] = A_row · s[b],  Q[b] = Σ_rows A_row · (w[b, sensor] · v[b, row])
// with A_row the row of problem b's matrix. P and Q are (B, n) outputs, zeroed here.
template <typename T, bool FORWARD>
void accumulate_rows(const T* A, const GainShape& s, const T* c, const T* scale, const T* sv, const T* w, T* v, T* P,
                     T* Q) {
  const int64_t R = s.rows(), m = s.sensors, n = s.pixels, B = s.batch;
  const int outputs = FORWARD ? 2 : 1;
  const int64_t chunks = chunk_count(s, outputs, sizeof(T));
  const int64_t image_block = B * n;  // one output for all problems
  const Workspace<T> scratch(chunks > 1 ? (chunks - 1) * outputs * image_block : 0);  // released on return
  T* extra = chunks > 1 ? scratch.data() : nullptr;
  auto partial = [&](int64_t chunk, int which) -> T* {  // which: 0 = P, 1 = Q
    if (chunk == 0) return which == 0 ? P : Q;
    return extra + ((chunk - 1) * outputs + which) * image_block;
  };
  const int64_t rows_per_chunk = (R + chunks - 1) / chunks;
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, rows_per_chunk * B * n));
  at::parallel_for(0, chunks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      T* pk = partial(k, 0);
      T* qk = FORWARD ? partial(k, 1) : nullptr;
      std::fill(pk, pk + image_block, T(0));
      if (FORWARD) std::fill(qk, qk + image_block, T(0));
      const int64_t row_end = std::min(R, (k + 1) * rows_per_chunk);
      for (int64_t row = k * rows_per_chunk; row < row_end;) {
        const bool single = row + ROWS > row_end;
        const int count = single ? 1 : ROWS;
        for (int64_t b = 0; b < B; ++b) {
          const T* a = A + b * s.a_stride() + row * n;
          T alpha[ROWS], beta[ROWS], value[ROWS];
          for (int q = 0; q < count; ++q) {
            const int64_t sensor = (row + q) % m;
            alpha[q] = c ? c[b * R + row + q] * (scale ? scale[b * m + sensor] : T(1)) : T(0);
          }
          if constexpr (FORWARD) {
            // Sweep 1 streams the rows from memory for the dots (and P when c is given); sweep 2 re-reads them from
            // cache for Q, whose coefficients need the dots.
            if (single) {
              value[0] = dot_row(a, sv + b * n, n);
              if (c) axpy_rows(pk + b * n, a, alpha, n, true);
            } else if (c) {
              dot_axpy_rows(a, sv + b * n, pk + b * n, alpha, n, value);
            } else {
              dot_rows(a, sv + b * n, n, value);
            }
            for (int q = 0; q < count; ++q) {
              v[b * R + row + q] = value[q];
              beta[q] = w[b * m + (row + q) % m] * value[q];
            }
            axpy_rows(qk + b * n, a, beta, n, single);
          } else {
            axpy_rows(pk + b * n, a, alpha, n, single);
          }
        }
        row += count;
      }
    }
  });
  if (chunks == 1) return;
  for (int which = 0; which < outputs; ++which) {
    T* out = which == 0 ? P : Q;
    at::parallel_for(0, image_block, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t k = 1; k < chunks; ++k) {
        const T* pk = partial(k, which);
        for (int64_t j = begin; j < end; ++j) out[j] += pk[j];
      }
    });
  }
}

// out[b, i] = Σ_l a[b, l, i] · b_[b, l, i] (b_ = a when null): per-sensor sums over the snapshots.
template <typename T>
void sum_over_snapshots(const T* a, const T* b_, T* out, const GainShape& s) {
  const int64_t m = s.sensors, p = s.snapshots;
  at::parallel_for(0, s.batch, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, p * m)), [&](int64_t begin,
                                                                                               int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      T* o = out + b * m;
      std::fill(o, o + m, T(0));
      for (int64_t l = 0; l < p; ++l) {
        const T* al = a + (b * p + l) * m;
        const T* bl = (b_ ? b_ : a) + (b * p + l) * m;
        for (int64_t i = 0; i < m; ++i) o[i] += al[i] * bl[i];
      }
    }
  });
}

template <typename T>
const T* data_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

at::Tensor gain_forward_cpu(const at::Tensor& A, const at::Tensor& x, const std::optional<at::Tensor>& gains) {
  const GainShape s = check_gain_forward_arguments(A, x, gains);
  at::Tensor y = at::empty({s.batch, s.snapshots, s.sensors}, A.options());
  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "gain_forward_cpu", [&] {
    const scalar_t* a = A.data_ptr<scalar_t>();
    const scalar_t* xs = x.data_ptr<scalar_t>();
    const scalar_t* g = data_or_null<scalar_t>(gains);
    scalar_t* out = y.data_ptr<scalar_t>();
    const int64_t R = s.rows(), n = s.pixels;
    const int64_t blocks = (R + ROWS - 1) / ROWS;
    at::parallel_for(0, blocks, std::max<int64_t>(1, 16384 / (ROWS * n * s.batch)), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin * ROWS; row < std::min(R, end * ROWS);) {
        const int count = row + ROWS > R ? 1 : ROWS;
        for (int64_t b = 0; b < s.batch; ++b) {
          scalar_t value[ROWS];
          const scalar_t* rows = a + b * s.a_stride() + row * n;
          if (count == 1) {
            value[0] = dot_row(rows, xs + b * n, n);
          } else {
            dot_rows(rows, xs + b * n, n, value);
          }
          for (int q = 0; q < count; ++q)
            out[b * R + row + q] = g ? g[b * s.sensors + (row + q) % s.sensors] * value[q] : value[q];
        }
        row += count;
      }
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> gain_adjoint_cpu(const at::Tensor& A, const at::Tensor& r,
                                                    const std::optional<at::Tensor>& gains,
                                                    const std::optional<at::Tensor>& u) {
  const GainShape s = check_gain_adjoint_arguments(A, r, gains, u);
  at::Tensor grad_x = at::empty({s.batch, s.pixels}, A.options());
  at::Tensor grad_gains = at::empty({s.batch, u.has_value() ? s.sensors : 0}, A.options());
  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "gain_adjoint_cpu", [&] {
    accumulate_rows<scalar_t, false>(A.data_ptr<scalar_t>(), s, r.data_ptr<scalar_t>(), data_or_null<scalar_t>(gains),
                                     nullptr, nullptr, nullptr, grad_x.data_ptr<scalar_t>(), nullptr);
    if (u.has_value())
      sum_over_snapshots(u->data_ptr<scalar_t>(), r.data_ptr<scalar_t>(), grad_gains.data_ptr<scalar_t>(), s);
  });
  return {grad_x, grad_gains};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gain_normal_pass_cpu(const at::Tensor& A,
                                                                                const at::Tensor& sv,
                                                                                const at::Tensor& weights,
                                                                                const std::optional<at::Tensor>& c) {
  const GainShape s = check_gain_normal_pass_arguments(A, sv, weights, c);
  at::Tensor v = at::empty({s.batch, s.snapshots, s.sensors}, A.options());
  at::Tensor Q = at::empty({s.batch, s.pixels}, A.options());
  at::Tensor P = at::empty({s.batch, s.pixels}, A.options());
  at::Tensor energy = at::empty({s.batch, s.sensors}, A.options());
  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "gain_normal_pass_cpu", [&] {
    accumulate_rows<scalar_t, true>(A.data_ptr<scalar_t>(), s, data_or_null<scalar_t>(c), nullptr,
                                    sv.data_ptr<scalar_t>(), weights.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
                                    P.data_ptr<scalar_t>(), Q.data_ptr<scalar_t>());
    sum_over_snapshots<scalar_t>(v.data_ptr<scalar_t>(), nullptr, energy.data_ptr<scalar_t>(), s);
  });
  return {v, Q, P, energy};
}

}  // namespace
}  // namespace imaging

TORCH_LIBRARY_IMPL(imaging, CPU, m) {
  m.impl("gain_forward", &imaging::gain_forward_cpu);
  m.impl("gain_adjoint", &imaging::gain_adjoint_cpu);
  m.impl("gain_normal_pass", &imaging::gain_normal_pass_cpu);
}
