// Scalar float math used by the per-element formulas (activations, softmax, memory ops).
//
// On the GPU these map to CUDA's accurate libdevice functions. On the host they are written
// with plain arithmetic and bit casts (no libm calls) so that GCC can vectorise the loops
// that call them (`#pragma omp simd`): glibc's vector math library is only used under
// -ffast-math, which attnfast does not use. Accuracy on the host: exp_f32 within 2 ulp
// (Cody-Waite range reduction + degree-6 minimax polynomial, the Cephes expf scheme),
// erf_f32 within 1.2e-7 absolute (Numerical Recipes' erfc Chebyshev fit). Both are far below
// the fp32 tolerance of the tests (GEMM rounding alone is ~1e-6 relative).
#pragma once
#include <cstdint>
#include <cstring>
#include <cmath>
#include "macros.h"

namespace attnfast {
namespace math {

ATTNFAST_HD ATTNFAST_INLINE float bits_to_float(uint32_t u) {
#if ATTNFAST_ON_GPU
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

ATTNFAST_HD ATTNFAST_INLINE uint32_t float_to_bits(float f) {
#if ATTNFAST_ON_GPU
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

ATTNFAST_HD ATTNFAST_INLINE float exp_f32(float x) {
#if ATTNFAST_ON_GPU
  return expf(x);
#else
  // exp(x) = 2^n * exp(r), n = round(x / ln2), r = x - n ln2 (ln2 split in two for accuracy).
  // Clamp to the range where the result is a normal float or flushes to 0 / saturates.
  const float hi = 88.3762626647949f, lo = -87.3365447504019f;
  const bool over = x > hi;
  const bool under = x < lo;
  x = x > hi ? hi : (x < lo ? lo : x);
  // n = round(x / ln2) by the 1.5 * 2^23 trick (the sum's low mantissa bits hold n, rounded to
  // nearest even): no float -> int conversion, whose trap GCC will not if-convert, so the
  // `#pragma omp simd` loops that call this vectorise (with the conversion they ran scalar).
  const float magic = 12582912.0f;
  const float t = x * 1.44269504088896341f + magic;
  const float n = t - magic;
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  const float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  const uint32_t scale = (float_to_bits(t) - float_to_bits(magic) + 127u) << 23;  // 2^n
  const float y = p * bits_to_float(scale);
  return over ? INFINITY : (under ? 0.f : y);
#endif
}

// 1 / (1 + exp(-x)), stable for both signs.
ATTNFAST_HD ATTNFAST_INLINE float sigmoid_f32(float x) {
  return 1.0f / (1.0f + exp_f32(-x));
}

ATTNFAST_HD ATTNFAST_INLINE float tanh_f32(float x) {
#if ATTNFAST_ON_GPU
  return tanhf(x);
#else
  // tanh(x) = sign(x) (1 - e) / (1 + e), e = exp(-2|x|): no overflow, abs error ~1 ulp of 1.
  const float ax = x < 0.f ? -x : x;
  const float e = exp_f32(-2.0f * ax);
  const float t = (1.0f - e) / (1.0f + e);
  return x < 0.f ? -t : t;
#endif
}

ATTNFAST_HD ATTNFAST_INLINE float erf_f32(float x) {
#if ATTNFAST_ON_GPU
  return erff(x);
#else
  // erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z/2), z = |x|: fractional error < 1.2e-7.
  const float z = x < 0.f ? -x : x;
  const float t = 1.0f / (1.0f + 0.5f * z);
  float p = 0.17087277f;
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  p = p * t - 1.26551223f;
  const float erfc = t * exp_f32(-z * z + p);
  const float r = 1.0f - erfc;
  return x < 0.f ? -r : r;
#endif
}

}  // namespace math
}  // namespace attnfast
