// SIMT host harness: exact emulations of csrc/cuda/hw.cuh, included by hw.cuh instead of its
// device code when ATTNFAST_SIMT_HARNESS is defined. Same names and signatures, same semantics as
// the PTX ISA specifies them, with every lane's operands gathered across the warp (a warp
// collective of the runtime), so a kernel that builds a fragment wrongly computes a wrong result
// on the CPU too. Hardware requirements are checked: all 32 lanes present for ldmatrix/mma,
// 16-byte alignment of ldmatrix rows and cp.async addresses, shared addresses inside the launch's
// dynamic shared memory.
#pragma once
#include "simt/prelude.h"

namespace attnfast {
namespace hw {

constexpr unsigned kFullMask = 0xffffffffu;

// ---- warp exchange --------------------------------------------------------------------------
inline float shfl_xor(float v, int lane_mask) { return __shfl_xor_sync(kFullMask, v, lane_mask); }
inline float shfl(float v, int src_lane) { return __shfl_sync(kFullMask, v, src_lane); }
inline float warp_sum(float v) {
  for (int m = 16; m > 0; m >>= 1) v += shfl_xor(v, m);
  return v;
}
inline float warp_max(float v) {
  for (int m = 16; m > 0; m >>= 1) v = fmaxf(v, shfl_xor(v, m));
  return v;
}

// ---- fast math ------------------------------------------------------------------------------
// ex2.approx is within 2 ulp of 2^x; the host computes it exactly rounded.
inline float exp2_approx(float x) { return std::exp2(x); }

// ---- shared memory address ------------------------------------------------------------------
// The offset into the block's dynamic shared memory (for addresses inside it); only meaningful
// when passed back to these functions.
inline uint32_t smem_u32(const void* p) { return ::attnfast::simt::smem_address(p); }

// ---- asynchronous global -> shared copies ---------------------------------------------------
inline void cp_async_16(void* smem_dst, const void* gmem_src, bool valid) {
  if (reinterpret_cast<uintptr_t>(smem_dst) % 16 != 0)
    ::attnfast::simt::fail("cp.async: shared destination not 16-byte aligned");
  if (valid && reinterpret_cast<uintptr_t>(gmem_src) % 16 != 0)
    ::attnfast::simt::fail("cp.async: global source not 16-byte aligned");
  ::attnfast::simt::check_smem_access(smem_dst, 16, "cp.async destination");
  ::attnfast::simt::cp_async_issue(smem_dst, valid ? gmem_src : nullptr, 16);
}
inline void cp_async_commit() { ::attnfast::simt::cp_async_commit_group(); }
template <int N>
inline void cp_async_wait() {
  ::attnfast::simt::cp_async_wait_groups(N);
}

// ---- ldmatrix -------------------------------------------------------------------------------
namespace emu {

struct LdmatrixSlot {
  const unsigned char* row;
  int variant;  // matrices * 2 + trans: every lane must execute the same instruction
  uint32_t r[4];
};

inline uint16_t load_u16(const unsigned char* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline uint32_t load_u32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Lanes 8i..8i+7 give the row addresses of matrix i (8 rows of 8 b16 = 16 bytes). Lane l gets,
// for matrix i, the 32-bit word holding row l/4, columns 2(l%4) (low half) and 2(l%4)+1 (high
// half); with .trans, the same of the transposed matrix: (row 2(l%4), col l/4) and
// (row 2(l%4)+1, col l/4).
template <int X, bool Trans>
inline void ldmatrix(uint32_t* out, const void* row_ptr) {
  using ::attnfast::simt::fail;
  const unsigned lane = ::attnfast::simt::lane_id();
  LdmatrixSlot me{static_cast<const unsigned char*>(row_ptr), X * 2 + (Trans ? 1 : 0), {}};
  if (lane < 8u * X) {
    if (reinterpret_cast<uintptr_t>(row_ptr) % 16 != 0)
      fail("ldmatrix: row address of lane " + std::to_string(lane) + " is not 16-byte aligned");
    ::attnfast::simt::check_smem_access(row_ptr, 16, "ldmatrix row");
  }
  ::attnfast::simt::warp_collective(
      kFullMask, ::attnfast::simt::WarpOp::ldmatrix, &me,
      [](void* const* slots, unsigned participants) {
        if (participants != kFullMask)
          fail("ldmatrix needs all 32 lanes of the warp (.sync.aligned)");
        auto slot = [&](int l) { return static_cast<LdmatrixSlot*>(slots[l]); };
        for (int l = 0; l < 32; ++l)
          if (slot(l)->variant != slot(0)->variant)
            fail("ldmatrix: lanes of one warp execute different ldmatrix variants");
        for (int l = 0; l < 32; ++l) {
          const int g = l / 4, t = l % 4;
          for (int i = 0; i < X; ++i) {
            uint32_t w;
            if (!Trans) {
              w = load_u32(slot(8 * i + g)->row + 4 * t);
            } else {
              const uint32_t lo = load_u16(slot(8 * i + 2 * t)->row + 2 * g);
              const uint32_t hi = load_u16(slot(8 * i + 2 * t + 1)->row + 2 * g);
              w = lo | (hi << 16);
            }
            slot(l)->r[i] = w;
          }
        }
      });
  for (int i = 0; i < X; ++i) out[i] = me.r[i];
}

// ---- mma ----------------------------------------------------------------------------------------
inline float b16_to_float(uint16_t bits, bool bf16) {
  if (bf16) return __uint_as_float(static_cast<uint32_t>(bits) << 16);
  __half_raw raw;
  raw.x = bits;
  return __half2float(__half(raw));
}

struct MmaSlot {
  uint32_t a[4], b[2];
  float c[4], d[4];
  int type;  // 0 bf16, 1 fp16
};

// D = A B + C, m16n8k16, A 16x16 row-major, B 16x8 column-major, fp32 C/D, with g = lane / 4,
// t = lane % 4 (PTX ISA fragment layout; the low half of each 32-bit register holds the lower
// column/row index):
//   a[0] = A[g][2t..2t+1]     a[1] = A[g+8][2t..2t+1]
//   a[2] = A[g][2t+8..2t+9]   a[3] = A[g+8][2t+8..2t+9]
//   b[0] = B[2t..2t+1][g]     b[1] = B[2t+8..2t+9][g]
//   c/d[0..1] = C[g][2t..2t+1]   c/d[2..3] = C[g+8][2t..2t+1]
// Products of bf16/fp16 values are exact in fp32; the 16 products of a dot product and C are
// summed in double in k order and rounded to fp32 once: deterministic, at least as accurate as
// the tensor core (whose internal accumulation order and rounding are unspecified).
inline void mma_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4],
                         int type) {
  using ::attnfast::simt::fail;
  MmaSlot me;
  for (int i = 0; i < 4; ++i) me.a[i] = a[i], me.c[i] = c[i];
  me.b[0] = b[0], me.b[1] = b[1];
  me.type = type;
  ::attnfast::simt::warp_collective(
      kFullMask, ::attnfast::simt::WarpOp::mma, &me, [](void* const* slots, unsigned participants) {
        if (participants != kFullMask) fail("mma.sync needs all 32 lanes of the warp");
        auto slot = [&](int l) { return static_cast<MmaSlot*>(slots[l]); };
        const bool bf16 = slot(0)->type == 0;
        for (int l = 1; l < 32; ++l)
          if (slot(l)->type != slot(0)->type)
            fail("mma: lanes of one warp execute different mma variants");
        float A[16][16], B[16][8], C[16][8];
        auto lo = [&](uint32_t r) { return b16_to_float(static_cast<uint16_t>(r & 0xffffu), bf16); };
        auto hi = [&](uint32_t r) { return b16_to_float(static_cast<uint16_t>(r >> 16), bf16); };
        for (int l = 0; l < 32; ++l) {
          const MmaSlot& s = *slot(l);
          const int g = l / 4, t = l % 4;
          A[g][2 * t] = lo(s.a[0]), A[g][2 * t + 1] = hi(s.a[0]);
          A[g + 8][2 * t] = lo(s.a[1]), A[g + 8][2 * t + 1] = hi(s.a[1]);
          A[g][2 * t + 8] = lo(s.a[2]), A[g][2 * t + 9] = hi(s.a[2]);
          A[g + 8][2 * t + 8] = lo(s.a[3]), A[g + 8][2 * t + 9] = hi(s.a[3]);
          B[2 * t][g] = lo(s.b[0]), B[2 * t + 1][g] = hi(s.b[0]);
          B[2 * t + 8][g] = lo(s.b[1]), B[2 * t + 9][g] = hi(s.b[1]);
          C[g][2 * t] = s.c[0], C[g][2 * t + 1] = s.c[1];
          C[g + 8][2 * t] = s.c[2], C[g + 8][2 * t + 1] = s.c[3];
        }
        float D[16][8];
        for (int m = 0; m < 16; ++m)
          for (int n = 0; n < 8; ++n) {
            double acc = 0.0;
            for (int k = 0; k < 16; ++k) acc += static_cast<double>(A[m][k] * B[k][n]);
            D[m][n] = static_cast<float>(acc + static_cast<double>(C[m][n]));
          }
        for (int l = 0; l < 32; ++l) {
          MmaSlot& s = *slot(l);
          const int g = l / 4, t = l % 4;
          s.d[0] = D[g][2 * t], s.d[1] = D[g][2 * t + 1];
          s.d[2] = D[g + 8][2 * t], s.d[3] = D[g + 8][2 * t + 1];
        }
      });
  for (int i = 0; i < 4; ++i) d[i] = me.d[i];
}

}  // namespace emu

inline void ldmatrix_x1(uint32_t& r0, const void* row_ptr) {
  uint32_t r[1];
  emu::ldmatrix<1, false>(r, row_ptr);
  r0 = r[0];
}
inline void ldmatrix_x2(uint32_t& r0, uint32_t& r1, const void* row_ptr) {
  uint32_t r[2];
  emu::ldmatrix<2, false>(r, row_ptr);
  r0 = r[0], r1 = r[1];
}
inline void ldmatrix_x4(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3,
                        const void* row_ptr) {
  uint32_t r[4];
  emu::ldmatrix<4, false>(r, row_ptr);
  r0 = r[0], r1 = r[1], r2 = r[2], r3 = r[3];
}
inline void ldmatrix_x1_trans(uint32_t& r0, const void* row_ptr) {
  uint32_t r[1];
  emu::ldmatrix<1, true>(r, row_ptr);
  r0 = r[0];
}
inline void ldmatrix_x2_trans(uint32_t& r0, uint32_t& r1, const void* row_ptr) {
  uint32_t r[2];
  emu::ldmatrix<2, true>(r, row_ptr);
  r0 = r[0], r1 = r[1];
}
inline void ldmatrix_x4_trans(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3,
                              const void* row_ptr) {
  uint32_t r[4];
  emu::ldmatrix<4, true>(r, row_ptr);
  r0 = r[0], r1 = r[1], r2 = r[2], r3 = r[3];
}

// ---- tensor-core MMA ----------------------------------------------------------------------------
inline void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2],
                              const float c[4]) {
  emu::mma_m16n8k16(d, a, b, c, 0);
}
inline void mma_m16n8k16_f16(float d[4], const uint32_t a[4], const uint32_t b[2],
                             const float c[4]) {
  emu::mma_m16n8k16(d, a, b, c, 1);
}
template <typename T>
inline void mma_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]);
template <>
inline void mma_m16n8k16<__nv_bfloat16>(float d[4], const uint32_t a[4], const uint32_t b[2],
                                        const float c[4]) {
  mma_m16n8k16_bf16(d, a, b, c);
}
template <>
inline void mma_m16n8k16<__half>(float d[4], const uint32_t a[4], const uint32_t b[2],
                                 const float c[4]) {
  mma_m16n8k16_f16(d, a, b, c);
}

}  // namespace hw
}  // namespace attnfast
