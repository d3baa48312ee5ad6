// Per-element formulas of the memory ops (NTM / DNC), by concept, shared by the C++ CPU kernels
// and the CUDA kernels, so that every backend evaluates each formula in the same order
// as the PyTorch reference (attnfast/reference/memory.py) -- which matters where a rounding
// difference could reorder the allocation sort (see squash_usage / usage_after_alloc).
// Templated on the scalar type: float for the kernels, double for gradcheck.
#pragma once
#include <cmath>
#include <cstdint>

#include "macros.h"
#include "math.h"

namespace attnfast {
namespace memory {

// ---- element functions --------------------------------------------------------------------------

// exp that GCC vectorises for float (csrc/common/math.h, no libm call); libm / CUDA for double.
ATTNFAST_HD ATTNFAST_INLINE float exp_t(float x) { return math::exp_f32(x); }
ATTNFAST_HD ATTNFAST_INLINE double exp_t(double x) { return exp(x); }
ATTNFAST_HD ATTNFAST_INLINE float sqrt_t(float x) { return sqrtf(x); }
ATTNFAST_HD ATTNFAST_INLINE double sqrt_t(double x) { return sqrt(x); }

ATTNFAST_HD ATTNFAST_INLINE float log_t(float x) { return logf(x); }
ATTNFAST_HD ATTNFAST_INLINE double log_t(double x) { return log(x); }
ATTNFAST_HD ATTNFAST_INLINE float pow_t(float x, float y) { return powf(x, y); }
ATTNFAST_HD ATTNFAST_INLINE double pow_t(double x, double y) { return pow(x, y); }

// ---- addressing: content, NTM location ----------------------------------------------------------

// |x| = sqrt(sum x^2 + eps): eps keeps |x| > 0, so cosine and its gradient stay finite on a zero
// row of memory (DeepMind's _vector_norms).
template <typename T>
ATTNFAST_HD ATTNFAST_INLINE T norm_eps(T sum_sq, T eps) { return sqrt_t(sum_sq + eps); }

// cos = k.M / (|k| |M| + eps); |cos| <= 1 because |x| >= the true norm.
template <typename T>
ATTNFAST_HD ATTNFAST_INLINE T cosine(T dot, T key_norm, T mem_norm, T eps) {
  return dot / (key_norm * mem_norm + eps);
}

// (o mod n) in [0, n) for either sign of o (a shift offset may exceed n in magnitude).
ATTNFAST_HD ATTNFAST_INLINE int64_t wrap_index(int64_t o, int64_t n) { return ((o % n) + n) % n; }

// NTM interpolation wg = g c + (1 - g) w_prev.
template <typename T>
ATTNFAST_HD ATTNFAST_INLINE T ntm_interpolate(T gate, T content, T prev) {
  return gate * content + (T(1) - gate) * prev;
}

// NTM sharpening term: ws^gamma where ws > 0, else exactly 0 -- a one-hot shift of a one-hot
// weighting leaves exact zeros, 0^gamma must be 0, and the gamma gradient (ws^gamma log ws) is
// taken only where ws > 0 (the reference's torch.where).
template <typename T>
ATTNFAST_HD ATTNFAST_INLINE T ntm_sharpen(T ws, T gamma) {
  return ws > T(0) ? pow_t(ws, gamma) : T(0);
}

// ---- allocation: DNC allocation, usage ----------------------------------------------------------

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

// DNC write weight gw (ga a + (1 - ga) c): the allocation a and the content weight c mixed by
// the allocation gate ga, scaled by the write gate gw, in the reference's operation order.
template <typename T>
ATTNFAST_HD ATTNFAST_INLINE T write_weight(T ga, T gw, T a, T c) {
  const T mixed = ga * a + (T(1) - ga) * c;
  return gw * mixed;
}

// DNC usage u' psi with u' = u + (1 - u) written, written = 1 - prod_h (1 - ww_h) = 1 - keep,
// psi = prod_r (1 - f_r rw_r) (the retention vector).
template <typename T>
ATTNFAST_HD ATTNFAST_INLINE T usage_update(T u, T keep, T psi) {
  const T written = T(1) - keep;
  return (u + (T(1) - u) * written) * psi;
}

// ---- links: DNC temporal link -------------------------------------------------------------------

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

// ---- window: Graves' soft window ----------------------------------------------------------------

// One Gaussian of Graves' window at character u (0-based; the characters are numbered u + 1):
// alpha exp(nbeta (kappa - (u + 1))^2), nbeta = -exp(beta_hat) <= 0, so it never overflows.
template <typename T>
ATTNFAST_HD ATTNFAST_INLINE T graves_term(T alpha, T nbeta, T kappa, int64_t u) {
  const T d = kappa - T(u + 1);
  return alpha * exp_t(nbeta * d * d);
}

}  // namespace memory
}  // namespace attnfast
