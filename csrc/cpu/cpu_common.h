// Helpers shared by the CPU kernels: parallel loops over image rows and per-plane reductions.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "../common.h"

// Hot row loops are compiled twice, for AVX2 and for baseline x86-64, and the loader picks one per machine
// (GCC function multiversioning), so the wheel-style build stays portable.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define IMAGING_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define IMAGING_CPU_CLONES
#endif

namespace imaging {

// Calls body(row) for every row of `width` voxels of every plane (rows = planes * depth * height), in parallel.
// Row r belongs to plane r / (depth * height) and starts at voxel (r % (depth * height)) * width of that plane.
template <typename Body>
void parallel_rows(const Grid& g, const Body& body) {
  const int64_t rows = g.planes * g.depth * g.height;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, g.width));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) body(r);
  });
}

// Sums per-row partial sums into one value per plane.
inline std::vector<double> sum_rows_per_plane(const std::vector<double>& per_row, const Grid& g) {
  const int64_t rows_per_plane = g.depth * g.height;
  std::vector<double> out(g.planes, 0.0);
  for (int64_t r = 0; r < static_cast<int64_t>(per_row.size()); ++r) out[r / rows_per_plane] += per_row[r];
  return out;
}

// Scratch memory for one call, released when the call returns: kernels keep nothing between calls (a per-thread
// buffer kept for reuse would hold the largest call's workspace for the life of the process). Not zeroed.
template <typename T>
class Workspace {
 public:
  explicit Workspace(int64_t elements) : data_(new T[static_cast<size_t>(std::max<int64_t>(elements, 1))]) {}
  T* data() const { return data_.get(); }

 private:
  std::unique_ptr<T[]> data_;
};

}  // namespace imaging
