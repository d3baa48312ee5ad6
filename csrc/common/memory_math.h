// Per-element formulas of the memory addressing ops (NTM / DNC), shared by the C++ CPU kernels
// and (later) the CUDA kernels, so that every backend evaluates each formula in the same order
// as the PyTorch reference (attnfast/reference/memory.py) -- which matters where a rounding
// difference could reorder the allocation sort (see squash_usage / usage_after_alloc).
// Templated on the scalar type: float for the kernels, double for gradcheck.
#pragma once
#include <cmath>

#include "macros.h"
#include "math.h"

namespace attnfast {
namespace memory {

// exp that GCC vectorises for float (csrc/common/math.h, no libm call); libm / CUDA for double.
ATTNFAST_HD ATTNFAST_INLINE float exp_t(float x) { return math::exp_f32(x); }
ATTNFAST_HD ATTNFAST_INLINE double exp_t(double x) { return exp(x); }
ATTNFAST_HD ATTNFAST_INLINE float sqrt_t(float x) { return sqrtf(x); }
ATTNFAST_HD ATTNFAST_INLINE double sqrt_t(double x) { return sqrt(x); }

// |x| = sqrt(sum x^2 + eps): eps keeps |x| > 0, so cosine and its gradient stay finite on a zero
// row of memory (DeepMind's _vector_norms).
template <typename T>
ATTNFAST_HD ATTNFAST_INLINE T norm_eps(T sum_sq, T eps) { return sqrt_t(sum_sq + eps); }

// cos = k.M / (|k| |M| + eps); |cos| <= 1 because |x| >= the true norm.
template <typename T>
ATTNFAST_HD ATTNFAST_INLINE T cosine(T dot, T key_norm, T mem_norm, T eps) {
  return dot / (key_norm * mem_norm + eps);
}

// DeepMind's _allocation squashes usage into [eps, 1]: every slot keeps a free share >= eps in
// the cumulative product, and 1 - s stays < 1. Written as in the reference (scale, then shift).
template <typename T>
ATTNFAST_HD ATTNFAST_INLINE T squash_usage(T u, T eps) {
  const T scaled = (T(1) - eps) * u;
  return eps + scaled;
}

// Usage seen by the next write head: u + (1 - u) g a, in the reference's operation order
// ((1 - u) * g) * a, then + u.
template <typename T>
ATTNFAST_HD ATTNFAST_INLINE T usage_after_alloc(T u, T gate, T alloc) {
  const T t = ((T(1) - u) * gate) * alloc;
  return u + t;
}

// Temporal link L[i, j] <- (1 - w_i - w_j) L[i, j] + w_i p[j] (off the diagonal).
template <typename T>
ATTNFAST_HD ATTNFAST_INLINE T link_update(T link_ij, T w_i, T w_j, T p_j) {
  return (T(1) - w_i - w_j) * link_ij + w_i * p_j;
}

// Precedence p <- (1 - sum_i w_i) p + w.
template <typename T>
ATTNFAST_HD ATTNFAST_INLINE T precedence_update(T p, T w_sum, T w) {
  return (T(1) - w_sum) * p + w;
}

}  // namespace memory
}  // namespace attnfast
