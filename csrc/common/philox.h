// Counter-based dropout RNG shared by every backend: Philox4x32-10 (Salmon et al., "Parallel
// random numbers: as easy as 1, 2, 3", SC'11), the generator cuRAND, torch's CUDA generator
// and Triton's tl.rand use.
//
// attnfast's dropout contract (identical in reference, CPU, CUDA, Triton and the harness):
//   key     = (seed & 0xffffffff, seed >> 32)           seed: a 64-bit integer
//   counter = (i & 0xffffffff, i >> 32, 0, 0)           i: the element's flat row-major index
//                                                       in the tensor the mask applies to
//   r       = first 32-bit word of Philox4x32-10(counter, key)
//   keep    = (r >> 8) >= threshold, threshold = floor(p * 2^24)   (integer compare: no
//             float rounding can differ between backends)
//   kept values are scaled by 1 / (1 - p), computed in double and rounded to float once.
// So the same seed gives the same mask everywhere, whatever the tiling.
#pragma once
#include <cstdint>
#include "macros.h"

namespace attnfast {
namespace philox {

constexpr uint32_t kMulA = 0xD2511F53u;
constexpr uint32_t kMulB = 0xCD9E8D57u;
constexpr uint32_t kKeyA = 0x9E3779B9u;
constexpr uint32_t kKeyB = 0xBB67AE85u;
constexpr int kRounds = 10;

ATTNFAST_HD ATTNFAST_INLINE uint32_t mulhi(uint32_t a, uint32_t b) {
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
}

// First output word of Philox4x32-10 for counter (c0, c1, 0, 0) and key (k0, k1).
ATTNFAST_HD ATTNFAST_INLINE uint32_t first_word(uint32_t c0, uint32_t c1, uint32_t k0,
                                                uint32_t k1) {
  uint32_t c2 = 0, c3 = 0;
ATTNFAST_UNROLL
  for (int round = 0; round < kRounds; ++round) {
    const uint32_t p0 = c0, p2 = c2;
    c0 = mulhi(kMulB, p2) ^ c1 ^ k0;
    c2 = mulhi(kMulA, p0) ^ c3 ^ k1;
    c1 = kMulB * p2;
    c3 = kMulA * p0;
    k0 += kKeyA;
    k1 += kKeyB;
  }
  return c0;
}

// The 24-bit threshold for drop probability p in [0, 1).
ATTNFAST_HD ATTNFAST_INLINE uint32_t keep_threshold(double p) {
  return static_cast<uint32_t>(p * 16777216.0);
}

ATTNFAST_HD ATTNFAST_INLINE bool keep(uint64_t seed, uint64_t index, uint32_t threshold) {
  const uint32_t r = first_word(static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32),
                                static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return (r >> 8) >= threshold;
}

}  // namespace philox
}  // namespace attnfast
