// Every hardware-specific instruction attnfast's CUDA kernels use, each behind one small
// device function. Kernel bodies call only these (and plain CUDA C++), never inline PTX, so
// that the SIMT host harness (csrc/simt/) can swap this header for exact emulations of the
// same instructions and run the kernels thread by thread on the CPU.
//
// Fragment layouts are those of the PTX ISA ("Matrix fragments for mma.m16n8k16 with
// floating point type", "ldmatrix"): the harness implements the same layouts, so a kernel
// that indexes a fragment wrongly fails on the CPU as well.
#pragma once
#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#if defined(ATTNFAST_SIMT_HARNESS)
#include "simt/hw_emulation.h"
#else

namespace attnfast {
namespace hw {

constexpr unsigned kFullMask = 0xffffffffu;

// ---- warp exchange --------------------------------------------------------------------------
__device__ __forceinline__ float shfl_xor(float v, int lane_mask) {
  return __shfl_xor_sync(kFullMask, v, lane_mask);
}
__device__ __forceinline__ float shfl(float v, int src_lane) {
  return __shfl_sync(kFullMask, v, src_lane);
}
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v += shfl_xor(v, m);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v = fmaxf(v, shfl_xor(v, m));
  return v;
}

// ---- fast math ------------------------------------------------------------------------------
// 2^x with the SFU (ex2.approx.ftz.f32, ~2 ulp): for softmax exponents already scaled by log2e.
__device__ __forceinline__ float exp2_approx(float x) { return exp2f(x); }

// ---- shared memory address ------------------------------------------------------------------
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// ---- asynchronous global -> shared copies (sm_80) -------------------------------------------
// 16 bytes; when `valid` is false the destination is zero-filled and the source not read.
__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* gmem_src, bool valid) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem_dst)),
               "l"(gmem_src), "r"(src_bytes));
#else
  *reinterpret_cast<uint4*>(smem_dst) =
      valid ? *reinterpret_cast<const uint4*>(gmem_src) : make_uint4(0, 0, 0, 0);
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
// Wait until at most `N` committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

// ---- ldmatrix (sm_75+) ----------------------------------------------------------------------
// Lanes 8i..8i+7 give the row addresses of 8x8 matrix i (16-byte rows of 8 b16 values).
// Lane l receives, for each matrix i, the 32-bit word holding row l/4, columns 2(l%4), +1
// (with .trans: the transposed matrix).
__device__ __forceinline__ void ldmatrix_x1(uint32_t& r0, const void* row_ptr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n"
               : "=r"(r0) : "r"(smem_u32(row_ptr)));
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t& r0, uint32_t& r1, const void* row_ptr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r0), "=r"(r1) : "r"(smem_u32(row_ptr)));
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3,
                                            const void* row_ptr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(smem_u32(row_ptr)));
}
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t& r0, uint32_t& r1, const void* row_ptr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r0), "=r"(r1) : "r"(smem_u32(row_ptr)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t& r0, uint32_t& r1, uint32_t& r2,
                                                  uint32_t& r3, const void* row_ptr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(smem_u32(row_ptr)));
}

// ---- tensor-core MMA (sm_80) ----------------------------------------------------------------
// D = A B + C for one warp, m16n8k16, A row-major 16x16, B column-major 16x8, fp32 C/D.
// With g = lane / 4, t = lane % 4 (PTX ISA fragment layout):
//   a[0] = A[g][2t..2t+1]     a[1] = A[g+8][2t..2t+1]
//   a[2] = A[g][2t+8..2t+9]   a[3] = A[g+8][2t+8..2t+9]
//   b[0] = B[2t..2t+1][g]     b[1] = B[2t+8..2t+9][g]
//   c/d[0..1] = C[g][2t..2t+1]   c/d[2..3] = C[g+8][2t..2t+1]
__device__ __forceinline__ void mma_m16n8k16_bf16(float d[4], const uint32_t a[4],
                                                  const uint32_t b[2], const float c[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
        "f"(c[2]), "f"(c[3]));
}
__device__ __forceinline__ void mma_m16n8k16_f16(float d[4], const uint32_t a[4],
                                                 const uint32_t b[2], const float c[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
        "f"(c[2]), "f"(c[3]));
}

// Overloads picked by element type, so templated kernels call `mma_m16n8k16<T>`.
template <typename T>
__device__ __forceinline__ void mma_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2],
                                             const float c[4]);
template <>
__device__ __forceinline__ void mma_m16n8k16<__nv_bfloat16>(float d[4], const uint32_t a[4],
                                                            const uint32_t b[2], const float c[4]) {
  mma_m16n8k16_bf16(d, a, b, c);
}
template <>
__device__ __forceinline__ void mma_m16n8k16<__half>(float d[4], const uint32_t a[4],
                                                     const uint32_t b[2], const float c[4]) {
  mma_m16n8k16_f16(d, a, b, c);
}

}  // namespace hw
}  // namespace attnfast

#endif  // ATTNFAST_SIMT_HARNESS
