// The streaming (online) softmax of flash attention, per row, shared by the CUDA kernels and
// the SIMT harness (and usable by the CPU kernels).
//
// State of a row after a prefix of its keys: m = max of the scores seen (-inf before any
// visible key), l = sum_j exp(s_j - m). A new block with maximum bm moves m to max(m, bm); the
// old sum and the output accumulator are rescaled by alpha = exp(m_old - m_new). At the end
// out = acc / l and lse = m + log(l).
//
// Fully masked rows: all scores are -inf, m stays -inf and exp(-inf - (-inf)) would be NaN.
// The reference point m_use substitutes 0 for m = -inf, so p = exp(-inf - 0) = 0 and
// alpha = exp(-inf - 0) = 0: l stays exactly 0, and l == 0 marks the row as dead (out 0,
// lse -inf). l > 0 otherwise, since the row maximum contributes exp(0) = 1.
#pragma once
#include <cmath>
#include "macros.h"
#include "math.h"

namespace attnfast {
namespace softmax {

// The subtrahend of the exponentials for running max m.
ATTNFAST_HD ATTNFAST_INLINE float reference_max(float m) { return m == -INFINITY ? 0.f : m; }

// Moves the running max to max(m, block_max); returns alpha, the factor that rescales the
// running sum and the output accumulator.
ATTNFAST_HD ATTNFAST_INLINE float update_max(float& m, float block_max) {
  const float m_new = m > block_max ? m : block_max;
  const float alpha = math::exp_f32(m - reference_max(m_new));
  m = m_new;
  return alpha;
}

// exp(s - m) with m the running max (after update_max).
ATTNFAST_HD ATTNFAST_INLINE float prob(float s, float m) {
  return math::exp_f32(s - reference_max(m));
}

// 1 / l, or 0 for a dead row (l == 0).
ATTNFAST_HD ATTNFAST_INLINE float inv_sum(float l) { return l > 0.f ? 1.0f / l : 0.f; }

// Natural-log logsumexp of the row; -inf for a dead row.
ATTNFAST_HD ATTNFAST_INLINE float finish_lse(float m, float l) {
  return l > 0.f ? m + logf(l) : -INFINITY;
}

// Backward: P = exp(s - lse) exactly (lse is final); 0 for a dead row (lse = -inf), whose
// scores are all -inf as well (exp(-inf - (-inf)) would be NaN).
ATTNFAST_HD ATTNFAST_INLINE float prob_from_lse(float s, float lse) {
  return lse == -INFINITY ? 0.f : math::exp_f32(s - lse);
}

}  // namespace softmax
}  // namespace attnfast
