// Element load/store for the CPU kernels: every kernel reads bf16/fp16/fp32 storage and does
// its math in fp32. Written with integer bit operations (bf16) and _Float16 casts (fp16) so
// that GCC vectorises them (vpslld / vcvtph2ps / vcvtps2ph under the AVX2 and AVX-512 ISAs).
#pragma once
#include <cstdint>

#include "common/macros.h"
#include "common/math.h"

namespace attnfast {
namespace cpu {

enum class DType : int { f32 = 0, bf16 = 1, f16 = 2 };

struct bf16_t { uint16_t bits; };
#if defined(__FLT16_MAX__)
using f16_t = _Float16;
#else
#error "attnfast's CPU kernels need a compiler with _Float16 (GCC >= 12 or clang >= 15)"
#endif

ATTNFAST_INLINE float to_f32(float v) { return v; }
ATTNFAST_INLINE float to_f32(bf16_t v) { return math::bits_to_float(uint32_t(v.bits) << 16); }
ATTNFAST_INLINE float to_f32(f16_t v) { return static_cast<float>(v); }

template <typename T> ATTNFAST_INLINE T from_f32(float v);
template <> ATTNFAST_INLINE float from_f32<float>(float v) { return v; }
// Round to nearest even, NaN kept quiet: the rounding torch and the hardware use.
template <> ATTNFAST_INLINE bf16_t from_f32<bf16_t>(float v) {
  const uint32_t u = math::float_to_bits(v);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return bf16_t{static_cast<uint16_t>(v != v ? 0x7fc0u : rounded)};
}
template <> ATTNFAST_INLINE f16_t from_f32<f16_t>(float v) { return static_cast<f16_t>(v); }

}  // namespace cpu
}  // namespace attnfast
