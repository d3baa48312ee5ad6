// Test kernels for the SIMT harness itself (tests/test_simt_harness.py). They are plain CUDA,
// written like the library's kernels (hw.cuh, ATTNFAST_LAUNCH), and must keep compiling with
// nvcc (see README.md); they are only built into the test extension attnfast._simt.
#pragma once
#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda/hw.cuh"
#include "cuda/launch.cuh"

namespace attnfast {
namespace simt_selftest {

// ---- block reduction: static __shared__, dynamic shared memory, shuffles, __syncthreads ----------
// Block b sums x over its grid-stride elements twice: out[2b] by a tree over dynamic shared
// memory down to 32 values, then a warp xor-butterfly (hw::warp_sum); out[2b + 1] by per-warp
// shuffle-down sums collected in a static __shared__ array. blockDim.x: a power of two >= 32.
__global__ void reduce_kernel(const float* __restrict__ x, float* __restrict__ out, int64_t n) {
  extern __shared__ __align__(16) unsigned char selftest_smem[];
  float* partial = reinterpret_cast<float*>(selftest_smem);
  __shared__ float warp_sums[32];
  const int tid = static_cast<int>(threadIdx.x);
  const int nthreads = static_cast<int>(blockDim.x);
  const int lane = tid & 31, warp = tid >> 5;
  float s = 0.f;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * nthreads + tid; i < n;
       i += static_cast<int64_t>(gridDim.x) * nthreads)
    s += x[i];
  partial[tid] = s;
  __syncthreads();
  for (int stride = nthreads / 2; stride >= 32; stride >>= 1) {
    if (tid < stride) partial[tid] += partial[tid + stride];
    __syncthreads();
  }
  if (warp == 0) {
    const float v = hw::warp_sum(partial[lane]);
    if (lane == 0) out[2 * blockIdx.x] = v;
  }
  float w = s;
  for (int d = 16; d > 0; d >>= 1) w += __shfl_down_sync(0xffffffffu, w, d);
  if (lane == 0) warp_sums[warp] = w;
  __syncthreads();
  if (warp == 0) {
    float u = lane < nthreads / 32 ? warp_sums[lane] : 0.f;
    for (int d = 16; d > 0; d >>= 1) u += __shfl_down_sync(0xffffffffu, u, d);
    if (lane == 0) out[2 * blockIdx.x + 1] = u;
  }
}

// ---- votes and shuffles of every kind ------------------------------------------------------------
// Per warp w (32 threads): out[w*8 + 0] ballot(x > 0), 1 any(x > 0), 2 all(x > 0),
// 3 __syncthreads_count(x > 0), 4 lane 0's value of __shfl_sync(x, 31 - lane) as int bits,
// 5 __shfl_up_sync(lane, 1) at lane 0 (= 0, own value), 6 __shfl_xor_sync(lane, 1, width 4) at
// lane 3, 7 __shfl_down_sync(lane, 2, width 8) at lane 7 (= 7, own value).
__global__ void vote_kernel(const float* __restrict__ x, int32_t* __restrict__ out) {
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & 31, warp = tid >> 5;
  const int pred = x[tid] > 0.f;
  const unsigned b = __ballot_sync(0xffffffffu, pred);
  const int any = __any_sync(0xffffffffu, pred);
  const int all = __all_sync(0xffffffffu, pred);
  const int count = __syncthreads_count(pred);
  const float r = __shfl_sync(0xffffffffu, x[tid], 31 - lane);
  const int up = __shfl_up_sync(0xffffffffu, lane, 1);
  const int bx = __shfl_xor_sync(0xffffffffu, lane, 1, 4);
  const int dn = __shfl_down_sync(0xffffffffu, lane, 2, 8);
  __syncwarp();
  if (lane == 0) {
    out[warp * 8 + 0] = static_cast<int32_t>(b);
    out[warp * 8 + 1] = any;
    out[warp * 8 + 2] = all;
    out[warp * 8 + 3] = count;
    out[warp * 8 + 4] = static_cast<int32_t>(__float_as_uint(r));
    out[warp * 8 + 5] = up;
  }
  if (lane == 3) out[warp * 8 + 6] = bx;
  if (lane == 7) out[warp * 8 + 7] = dn;
}

// ---- misuse the harness must report (never hang) ------------------------------------------------
// mode 0: thread 5 returns before a __syncthreads the others wait at.
// mode 1: lane 7 returns while its warp shuffles with a full mask.
// mode 2: lanes 0..15 shuffle (full mask) while lanes 16..31 wait at __syncthreads: deadlock.
// mode 3: every thread but thread 0 waits at __syncthreads while thread 0 waits at __syncwarp.
__global__ void misuse_kernel(float* __restrict__ out, int mode) {
  const int tid = static_cast<int>(threadIdx.x);
  float v = static_cast<float>(tid);
  if (mode == 0) {
    if (tid == 5) return;
    __syncthreads();
  } else if (mode == 1) {
    if (tid == 7) return;
    v = hw::warp_sum(v);
  } else if (mode == 2) {
    if ((tid & 31) < 16) v = hw::shfl_xor(v, 1);
    else __syncthreads();
  } else {
    if (tid == 0) __syncwarp();
    else __syncthreads();
  }
  out[tid] = v;
}

// ---- out-of-bounds shared memory ---------------------------------------------------------------
// The launch has `smem_bytes` (a multiple of 8, not of 16) of dynamic shared memory. mode 0: a
// plain store one float past its end; mode 1: a 16-byte-aligned cp.async whose 16 bytes straddle
// the end; mode 2: an ldmatrix row past the end; mode 3: everything in bounds (no error).
__global__ void bounds_kernel(const float* __restrict__ src, float* __restrict__ out,
                              int smem_bytes, int mode) {
  extern __shared__ __align__(16) unsigned char selftest_smem[];
  float* s = reinterpret_cast<float*>(selftest_smem);
  const int tid = static_cast<int>(threadIdx.x);
  const int nfloats = smem_bytes / 4;
  if (tid == 0) {
    if (mode == 0) s[nfloats] = 1.f;
    if (mode == 3) s[nfloats - 1] = 1.f;
  }
  if (mode == 1 && tid == 0) hw::cp_async_16(selftest_smem + smem_bytes - 8, src, true);  // 16-aligned
  hw::cp_async_commit();
  hw::cp_async_wait<0>();
  __syncthreads();
  if (mode == 2) {
    uint32_t r0;
    const int row = tid & 7;
    hw::ldmatrix_x1(r0, selftest_smem + smem_bytes - 72 + row * 16);  // rows 5..7 out of range
    out[tid] = static_cast<float>(r0 & 1u);
  } else {
    out[tid] = s[0];
  }
}

// ---- a missing __syncthreads ------------------------------------------------------------------
// Thread i writes s[i] = i and reads s[(i + 1) % n]; without the barrier the value read depends
// on the order threads run in (the harness poisons dynamic shared memory with NaN per block).
__global__ void race_kernel(float* __restrict__ out, int with_barrier) {
  extern __shared__ __align__(16) unsigned char selftest_smem[];
  float* s = reinterpret_cast<float*>(selftest_smem);
  const int tid = static_cast<int>(threadIdx.x), n = static_cast<int>(blockDim.x);
  s[tid] = static_cast<float>(tid);
  if (with_barrier) __syncthreads();
  out[tid] = s[(tid + 1) % n];
}

// ---- ldmatrix layout ---------------------------------------------------------------------------
// m: X 8x8 matrices of 16-bit values (row-major, 16-byte rows), staged in shared memory; lanes
// 8i..8i+7 give the rows of matrix i; out[lane * X + i] = register i of lane `lane`.
// (The variants hw.cuh has: x1, x2, x4, x2.trans, x4.trans.)
template <int X, bool Trans>
__global__ void ldmatrix_kernel(const uint16_t* __restrict__ m, uint32_t* __restrict__ out) {
  __shared__ __align__(16) uint16_t tile[X * 64];
  const int lane = static_cast<int>(threadIdx.x);
  for (int i = lane; i < X * 64; i += 32) tile[i] = m[i];
  __syncwarp();
  const uint16_t* row = tile + (lane % (8 * X)) * 8;
  uint32_t r[4] = {0, 0, 0, 0};
  if constexpr (X == 1) {
    static_assert(!Trans, "hw.cuh has no ldmatrix_x1_trans");
    hw::ldmatrix_x1(r[0], row);
  } else if constexpr (X == 2) {
    if constexpr (Trans) hw::ldmatrix_x2_trans(r[0], r[1], row);
    else hw::ldmatrix_x2(r[0], r[1], row);
  } else {
    if constexpr (Trans) hw::ldmatrix_x4_trans(r[0], r[1], r[2], r[3], row);
    else hw::ldmatrix_x4(r[0], r[1], r[2], r[3], row);
  }
  for (int i = 0; i < X; ++i) out[lane * X + i] = r[i];
}

// ---- tensor-core GEMM: cp.async -> shared -> ldmatrix -> mma ------------------------------------
// D (M, N) fp32 = A (M, K) @ B, with B given as Bt (N, K) row-major (b_kmajor = 0: ldmatrix.x2)
// or as Bk (K, N) row-major (b_kmajor = 1: ldmatrix.x2.trans). M % 16 == 0, N % 8 == 0,
// K % 16 == 0; one warp per block computes one 16 x 8 tile of D.
template <typename T>
__global__ void mma_kernel(const T* __restrict__ a, const T* __restrict__ b,
                           float* __restrict__ d, int M, int N, int K, int b_kmajor) {
  __shared__ __align__(16) T sA[16 * 16];
  __shared__ __align__(16) T sB[16 * 8];
  const int lane = static_cast<int>(threadIdx.x);
  const int m0 = static_cast<int>(blockIdx.x) * 16, n0 = static_cast<int>(blockIdx.y) * 8;
  const int g = lane >> 2, t = lane & 3;
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  for (int k0 = 0; k0 < K; k0 += 16) {
    // A tile: 16 rows x 2 chunks of 8 elements: one 16-byte chunk per lane.
    {
      const int r = lane >> 1, c = (lane & 1) * 8;
      hw::cp_async_16(sA + r * 16 + c, a + static_cast<int64_t>(m0 + r) * K + k0 + c, true);
    }
    if (!b_kmajor) {  // sB[n][k]: 8 rows x 2 chunks
      if (lane < 16) {
        const int r = lane >> 1, c = (lane & 1) * 8;
        hw::cp_async_16(sB + r * 16 + c, b + static_cast<int64_t>(n0 + r) * K + k0 + c, true);
      }
    } else {  // sB[k][n]: 16 rows x 1 chunk
      if (lane < 16)
        hw::cp_async_16(sB + lane * 8, b + static_cast<int64_t>(k0 + lane) * N + n0, true);
    }
    hw::cp_async_commit();
    hw::cp_async_wait<0>();
    __syncthreads();
    uint32_t af[4], bf[2];
    // A: matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15)
    hw::ldmatrix_x4(af[0], af[1], af[2], af[3],
                    sA + ((lane & 7) + ((lane >> 3) & 1) * 8) * 16 + (lane >> 4) * 8);
    if (!b_kmajor) {
      // B^T rows are n: matrices (n 0-7, k 0-7), (n 0-7, k 8-15)
      hw::ldmatrix_x2(bf[0], bf[1], sB + (lane & 7) * 16 + ((lane >> 3) & 1) * 8);
    } else {
      // B rows are k: matrices (k 0-7), (k 8-15), transposed
      hw::ldmatrix_x2_trans(bf[0], bf[1], sB + (lane & 15) * 8);
    }
    hw::mma_m16n8k16<T>(acc, af, bf, acc);
    __syncthreads();
  }
  d[static_cast<int64_t>(m0 + g) * N + n0 + 2 * t] = acc[0];
  d[static_cast<int64_t>(m0 + g) * N + n0 + 2 * t + 1] = acc[1];
  d[static_cast<int64_t>(m0 + g + 8) * N + n0 + 2 * t] = acc[2];
  d[static_cast<int64_t>(m0 + g + 8) * N + n0 + 2 * t + 1] = acc[3];
}

// ---- raw-pointer launchers ----------------------------------------------------------------------
inline void reduce(const float* x, float* out, int64_t n, int blocks, int threads,
                   cudaStream_t stream) {
  ATTNFAST_LAUNCH(reduce_kernel, dim3(blocks), dim3(threads), threads * sizeof(float),
                  stream)(x, out, n);
}
inline void vote(const float* x, int32_t* out, int threads, cudaStream_t stream) {
  ATTNFAST_LAUNCH(vote_kernel, dim3(1), dim3(threads), 0, stream)(x, out);
}
inline void misuse(float* out, int threads, int mode, cudaStream_t stream) {
  ATTNFAST_LAUNCH(misuse_kernel, dim3(1), dim3(threads), 0, stream)(out, mode);
}
inline void bounds(const float* src, float* out, int smem_bytes, int mode, cudaStream_t stream) {
  ATTNFAST_LAUNCH(bounds_kernel, dim3(1), dim3(32), smem_bytes, stream)(src, out, smem_bytes, mode);
}
inline void race(float* out, int threads, int with_barrier, cudaStream_t stream) {
  ATTNFAST_LAUNCH(race_kernel, dim3(1), dim3(threads), threads * sizeof(float),
                  stream)(out, with_barrier);
}
template <int X, bool Trans>
inline void ldmatrix(const uint16_t* m, uint32_t* out, cudaStream_t stream) {
  ATTNFAST_LAUNCH((ldmatrix_kernel<X, Trans>), dim3(1), dim3(32), 0, stream)(m, out);
}
template <typename T>
inline void mma(const T* a, const T* b, float* d, int M, int N, int K, bool b_kmajor,
                cudaStream_t stream) {
  ATTNFAST_LAUNCH(mma_kernel<T>, dim3(M / 16, N / 8), dim3(32), 0, stream)(a, b, d, M, N, K,
                                                                          b_kmajor ? 1 : 0);
}

}  // namespace simt_selftest
}  // namespace attnfast
