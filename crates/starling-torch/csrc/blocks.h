// How the fused ops (loss.cpp, swiglu.cpp, rope.cpp, attention.cpp) walk their rows on the CPU: in blocks small
// enough to stay in a core's cache, the blocks in parallel; elsewhere (CUDA) in one piece.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <algorithm>
#include <cstdint>

namespace starling {

/// Rows per block: a block of rows `width` elements of `elem` bytes wide is about 512 KiB (a
/// core's L2 on the EPYC here), at least one row.
inline int64_t block_rows(int64_t width, int64_t elem) {
  return std::max<int64_t>(1, (int64_t{1} << 19) / std::max<int64_t>(1, width * elem));
}

/// `at::parallel_for` whose workers see the caller's thread-local state (grad mode, dispatch
/// keys, the profiler): the ATen ops the blocks call must not record autograd on other threads.
template <typename F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, F&& f) {
  const at::ThreadLocalState state;
  at::parallel_for(begin, end, grain, [&](int64_t b, int64_t e) {
    at::ThreadLocalStateGuard guard(state);
    f(b, e);
  });
}

/// Runs `f(first_row, rows)` over `n` rows in blocks of `rows`, in parallel on the CPU; elsewhere
/// once over all of them.
template <typename F>
void by_blocks(bool cpu, int64_t n, int64_t rows, F&& f) {
  if (!cpu) {
    f(0, n);
    return;
  }
  parallel_for(0, n, rows, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; r += rows) f(r, std::min(rows, end - r));
  });
}

/// Runs `f(i, j)` for every pair of [0, outer) × [0, inner) (a sequence and one of its heads), in
/// parallel, one pair a task.
template <typename F>
void by_pairs(int64_t outer, int64_t inner, F&& f) {
  parallel_for(0, outer * inner, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) f(i / inner, i % inner);
  });
}

/// Whether `t` goes through the fused ops' own row loops (CPU fp32 or fp64) rather than ATen ops.
inline bool row_loops(const at::Tensor& t) {
  return t.is_cpu() && (t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble);
}

}  // namespace starling
