// CUDA kernels of fused single-head attention and their raw-pointer host launchers. No torch
// headers: csrc/cuda/attention.cu is the ATen glue, and the SIMT host harness (csrc/simt/)
// compiles this header with g++ and runs the kernels thread by thread on the CPU.
//
// Contract (csrc/schemas.cpp): s = scale q k^T + bias (fp32 (B, Lq, Lk) view, any strides,
// -inf = masked), causal bottom-right (key j visible to query i iff j <= i + Lk - Lq),
// out = dropout(softmax(s)) v, lse = logsumexp_j s (fp32, -inf for a dead row whose out and
// gradients are 0); dropout: Philox (common/philox.h) at (b Lq + i) Lk + j, scale 1/(1-p).
//
// Forward, two kernels, both streaming keys with the online softmax (common/softmax.h) and
// both with one block per (query block, Dv slice, batch):
//  * attn_fwd_tc_kernel (bf16/fp16 when D, Dv, the row strides are multiples of 8 elements and
//    the bases 16-byte aligned): 4 warps, 64 queries x 64 keys per step, mma.sync m16n8k16
//    with fp32 accumulators. S contracts D in 64-wide chunks staged through shared memory with
//    cp.async (so any D: a 1024-wide head is 16 chunks); the output is a 128-wide Dv slice held
//    in registers (16 x 128 fp32 per warp), and wider Dv runs more slices, each recomputing S
//    (Dv = 1024: 8 slices; the D split costs nothing, the Dv split costs the q.k GEMM once per
//    slice -- see the report in triton_kernels/attention.py for the trade-off). P is rounded to
//    T and fed to the second mma straight from the S accumulators (the m16n8 C layout of two
//    adjacent n8 tiles is the A layout of one k16 step), V fragments come from ldmatrix.trans.
//  * attn_fwd_simt_kernel (fp32, exact fp32 FMAs, and any shape/alignment for bf16/fp16):
//    4 warps x 4 query rows, 32 keys per step (lane = key), D chunks of 32 and V tiles in
//    shared memory as fp32, P broadcast over the warp by shuffles; a 128-wide Dv slice.
// Causal key blocks past the diagonal are not visited; only the straddling ones are masked.
//
// Backward, always deterministic (no atomics, fixed summation orders); Delta_i = rowsum(dO O)
// first (attn_bwd_delta_kernel), then either
//  * tensor cores (bf16/fp16 under the forward's tensor-core conditions, grad_out rows aligned
//    too): attn_bwd_dkdv_tc_kernel (64-key block x 64-wide dK/dV slice, S^T and dP^T recomputed
//    with mma so P^T / dS^T feed the dV / dK mma from registers) and attn_bwd_dq_tc_kernel
//    (64-query block x 128-wide dQ slice) -- see the section's comment; or
//  * SIMT (fp32 exact, and any shape/alignment): attn_bwd_dkdv_kernel (one block per 32-key
//    block and 64-wide slice of dK/dV columns, looping over the query blocks that see the keys)
//    and attn_bwd_dq_kernel (one block per 32-query block and 64-wide slice of dQ, looping over
//    key blocks).
// Both paths recompute P = exp(s - lse) and dP = dO v^T (dropout applied to both
// with the same mask) and dS = P (dP - Delta).
//
// Rules kept for the harness: hardware instructions only through hw.cuh, launches only through
// ATTNFAST_LAUNCH, per-element math from csrc/common, 64-bit global offsets.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common/philox.h"
#include "common/softmax.h"
#include "cuda/convert.cuh"
#include "cuda/hw.cuh"
#include "cuda/launch.cuh"
#include "cuda/limits.h"

namespace attnfast {
namespace cuda {
namespace attn_detail {

// Element conversions (csrc/cuda/convert.cuh).
using ::attnfast::cuda::from_f32;
using ::attnfast::cuda::to_f32;

// Rounds v to T and back (P and dS as a T-input GEMM sees them); identity for fp32.
template <typename T>
__device__ __forceinline__ float round_to(float v) {
  return to_f32<T>(from_f32<T>(v));
}

// (lo, hi) rounded to T and packed into one 32-bit register (lo in the low half), the layout of
// an mma operand pair.
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  T pair[2] = {from_f32<T>(lo), from_f32<T>(hi)};
  uint32_t u;
  memcpy(&u, pair, sizeof u);
  return u;
}

// ---- parameters ---------------------------------------------------------------------------------
struct Dropout {
  uint64_t seed;
  uint32_t threshold;  // philox::keep_threshold(p)
  float scale;         // (float)(1.0 / (1.0 - p))
  int enabled;         // p > 0
};

// Shapes, element strides (the last dim of q/k/v/out/grad_out is contiguous) and scalars.
struct Shape {
  int64_t B, Lq, Lk, D, Dv;
  int64_t sqb, sql, skb, skl, svb, svl;  // q, k, v
  int64_t sbb, sbi, sbj;                 // bias (fp32), 0 strides allowed
  int64_t sob, sol;                      // out (forward), grad_out (backward)
  int64_t b0;                            // first batch of this launch (see kMaxGridBatch)
  float scale;
  int causal;
};

// scale * qk + bias, or -inf where key j is out of range, causally hidden, or masked.
__device__ __forceinline__ float masked_score(float qk, const float* __restrict__ bias,
                                              const Shape& s, int64_t b, int64_t i, int64_t j) {
  if (j >= s.Lk || i >= s.Lq) return -INFINITY;
  if (s.causal && j > i + (s.Lk - s.Lq)) return -INFINITY;
  float v = qk * s.scale;
  if (bias != nullptr) v += bias[b * s.sbb + i * s.sbi + j * s.sbj];
  return v;
}

__device__ __forceinline__ bool keep(const Dropout& d, const Shape& s, int64_t b, int64_t i,
                                     int64_t j) {
  return philox::keep(d.seed, static_cast<uint64_t>((b * s.Lq + i) * s.Lk + j), d.threshold);
}

// One past the last key a query block [m0, m0 + rows) can see.
__device__ __forceinline__ int64_t key_end(const Shape& s, int64_t m0, int64_t rows) {
  if (!s.causal) return s.Lk;
  const int64_t hi = m0 + rows + (s.Lk - s.Lq);
  return hi < 0 ? 0 : (hi < s.Lk ? hi : s.Lk);
}

// The first query block start (a multiple of rows) that can see key n0.
__device__ __forceinline__ int64_t query_begin(const Shape& s, int64_t n0, int64_t rows) {
  if (!s.causal) return 0;
  const int64_t lo = n0 - (s.Lk - s.Lq);
  return lo <= 0 ? 0 : (lo / rows) * rows;
}

// =============================================================================================
// Forward, tensor cores (bf16 / fp16)
// =============================================================================================
namespace tc {
constexpr int kWarps = 4, kThreads = kWarps * 32;
constexpr int kBM = 16 * kWarps;  // 64 queries, 16 per warp
constexpr int kBN = 64;           // keys per step
constexpr int kDC = 64;           // D chunk
constexpr int kDVS = 128;         // Dv slice per block
constexpr int kLdK = kDC + 8;     // padded pitch (elements): rows 16-byte aligned, ldmatrix
constexpr int kLdV = kDVS + 8;    //   rows of 8 lanes hit distinct bank groups
constexpr int kNT = kBN / 8;      // n8 tiles of S per warp
constexpr int kOT = kDVS / 8;     // n8 tiles of O per warp
constexpr int kSmemElems = kBM * kLdK + kBN * kLdK + kBN * kLdV;
}  // namespace tc

template <typename T>
__device__ __forceinline__ void tc_load_rows(T* dst, int ld, const T* __restrict__ base,
                                             int64_t row_stride, int64_t r0, int64_t rows_total,
                                             int64_t c0, int64_t cols_total, int rows, int cols,
                                             int tid) {
  // rows x cols tile (cols a multiple of 8) of 16-byte chunks; out-of-range chunks zero-filled
  // (cols_total is a multiple of 8, so a chunk is entirely in or out).
  const int chunks_per_row = cols / 8;
  for (int id = tid; id < rows * chunks_per_row; id += tc::kThreads) {
    const int r = id / chunks_per_row;
    const int c = (id % chunks_per_row) * 8;
    const int64_t gr = r0 + r, gc = c0 + c;
    const bool ok = gr < rows_total && gc < cols_total;
    hw::cp_async_16(dst + r * ld + c, ok ? base + gr * row_stride + gc : base, ok);
  }
}

template <typename T>
__global__ void __launch_bounds__(tc::kThreads)
    attn_fwd_tc_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                       const float* __restrict__ bias, T* __restrict__ out,
                       float* __restrict__ lse, Shape s, Dropout drop) {
  using namespace tc;
  extern __shared__ __align__(16) unsigned char attn_smem_raw[];
  T* sQ = reinterpret_cast<T*>(attn_smem_raw);  // [kBM][kLdK]
  T* sK = sQ + kBM * kLdK;                      // [kBN][kLdK]
  T* sV = sK + kBN * kLdK;                      // [kBN][kLdV]

  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kBM;
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * kDVS;
  const int64_t b = s.b0 + blockIdx.z;
  const T* qb = q + b * s.sqb;
  const T* kb = k + b * s.skb;
  const T* vb = v + b * s.svb;
  const int64_t n_end = key_end(s, m0, kBM);
  const int64_t n_dchunks = (s.D + kDC - 1) / kDC;
  const int64_t row[2] = {m0 + warp * 16 + g, m0 + warp * 16 + g + 8};

  float o[kOT][4];
#pragma unroll
  for (int nt = 0; nt < kOT; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[nt][e] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};

  // ldmatrix row addresses (see hw.cuh): A (Q) matrices (rows +0/+8) x (k +0/+8); B (K, stored
  // [key][d] = column-major B) matrices (keys +0, k +0), (keys +0, k +8), (keys +8, k +0),
  // (keys +8, k +8); V (stored [key][c], .trans) matrices (keys +0/+8) x (c +0/+8).
  const int a_row = warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, a_col = (lane >> 4) * 8;
  const int b_row = (lane & 7) + (lane >> 4) * 8, b_col = ((lane >> 3) & 1) * 8;
  const int v_row = (lane & 7) + ((lane >> 3) & 1) * 8, v_col = (lane >> 4) * 8;

  for (int64_t n0 = 0; n0 < n_end; n0 += kBN) {
    float acc[kNT][4];
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[nt][e] = 0.f;

    // ---- S = Q K^T over D chunks (q chunk staged once when D fits one chunk) -------------
    for (int64_t dc = 0; dc < n_dchunks; ++dc) {
      __syncthreads();  // the previous readers of sQ/sK/sV are done
      if (n_dchunks > 1 || n0 == 0)
        tc_load_rows<T>(sQ, kLdK, qb, s.sql, m0, s.Lq, dc * kDC, s.D, kBM, kDC, tid);
      tc_load_rows<T>(sK, kLdK, kb, s.skl, n0, s.Lk, dc * kDC, s.D, kBN, kDC, tid);
      if (dc == 0)  // V of this key block: lands with the first chunk
        tc_load_rows<T>(sV, kLdV, vb, s.svl, n0, s.Lk, c0, s.Dv, kBN, kDVS, tid);
      hw::cp_async_commit();
      hw::cp_async_wait<0>();
      __syncthreads();
      const int64_t d_left = s.D - dc * kDC;
#pragma unroll
      for (int kk = 0; kk < kDC; kk += 16) {
        if (kk >= d_left) break;  // zero-filled tail of the last chunk (uniform branch)
        uint32_t af[4];
        hw::ldmatrix_x4(af[0], af[1], af[2], af[3], sQ + a_row * kLdK + kk + a_col);
#pragma unroll
        for (int p = 0; p < kNT / 2; ++p) {
          uint32_t b0[2], b1[2];
          hw::ldmatrix_x4(b0[0], b0[1], b1[0], b1[1], sK + (p * 16 + b_row) * kLdK + kk + b_col);
          hw::mma_m16n8k16<T>(acc[2 * p], af, b0, acc[2 * p]);
          hw::mma_m16n8k16<T>(acc[2 * p + 1], af, b1, acc[2 * p + 1]);
        }
      }
    }

    // ---- online softmax on the fragments: lane holds rows g, g + 8, columns 2t, 2t + 1 ------
    // acc[nt][2 h + e] is S[row[h]][n0 + 8 nt + 2 t + e].
    float alpha[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float sc = masked_score(acc[nt][2 * h + e], bias, s, b, row[h],
                                        n0 + nt * 8 + 2 * t + e);
          acc[nt][2 * h + e] = sc;
          mx = fmaxf(mx, sc);
        }
      mx = fmaxf(mx, hw::shfl_xor(mx, 1));  // the 4 lanes of a row: t = 0..3
      mx = fmaxf(mx, hw::shfl_xor(mx, 2));
      alpha[h] = softmax::update_max(m_run[h], mx);
      float rs = 0.f;
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float p = softmax::prob(acc[nt][2 * h + e], m_run[h]);
          rs += p;  // the normaliser sums P before dropout
          if (drop.enabled && !keep(drop, s, b, row[h], n0 + nt * 8 + 2 * t + e))
            p = 0.f;
          else if (drop.enabled)
            p *= drop.scale;
          acc[nt][2 * h + e] = p;
        }
      rs += hw::shfl_xor(rs, 1);
      rs += hw::shfl_xor(rs, 2);
      l_run[h] = l_run[h] * alpha[h] + rs;
    }
#pragma unroll
    for (int nt = 0; nt < kOT; ++nt) {
      o[nt][0] *= alpha[0];
      o[nt][1] *= alpha[0];
      o[nt][2] *= alpha[1];
      o[nt][3] *= alpha[1];
    }

    // ---- O += P V: the C fragments of n8 tiles 2j, 2j + 1 are the A fragment of k16 step j --
    const int64_t v_left = s.Dv - c0;
#pragma unroll
    for (int j = 0; j < kBN / 16; ++j) {
      uint32_t pa[4];
      pa[0] = pack2<T>(acc[2 * j][0], acc[2 * j][1]);
      pa[1] = pack2<T>(acc[2 * j][2], acc[2 * j][3]);
      pa[2] = pack2<T>(acc[2 * j + 1][0], acc[2 * j + 1][1]);
      pa[3] = pack2<T>(acc[2 * j + 1][2], acc[2 * j + 1][3]);
#pragma unroll
      for (int p = 0; p < kOT / 2; ++p) {
        if (p * 16 >= v_left) break;  // columns past Dv (uniform branch)
        uint32_t b0[2], b1[2];
        hw::ldmatrix_x4_trans(b0[0], b0[1], b1[0], b1[1],
                              sV + (j * 16 + v_row) * kLdV + p * 16 + v_col);
        hw::mma_m16n8k16<T>(o[2 * p], pa, b0, o[2 * p]);
        hw::mma_m16n8k16<T>(o[2 * p + 1], pa, b1, o[2 * p + 1]);
      }
    }
  }
  hw::cp_async_wait<0>();

  // ---- epilogue: out = O / l (0 for a dead row), lse by the t == 0 lanes of slice 0 -------
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (row[h] >= s.Lq) continue;
    const float inv = softmax::inv_sum(l_run[h]);
    T* orow = out + b * s.sob + row[h] * s.sol;
#pragma unroll
    for (int nt = 0; nt < kOT; ++nt) {
      const int64_t c = c0 + nt * 8 + 2 * t;
      if (c < s.Dv) {  // Dv is a multiple of 8 on this path: c + 1 < Dv too
        orow[c] = from_f32<T>(o[nt][2 * h] * inv);
        orow[c + 1] = from_f32<T>(o[nt][2 * h + 1] * inv);
      }
    }
    if (t == 0 && blockIdx.y == 0) lse[b * s.Lq + row[h]] = softmax::finish_lse(m_run[h], l_run[h]);
  }
}

// =============================================================================================
// Forward, SIMT (exact fp32; any shape for bf16/fp16)
// =============================================================================================
namespace sfwd {
constexpr int kWarps = 4, kThreads = kWarps * 32;
constexpr int kRows = 4;               // query rows per warp
constexpr int kBM = kWarps * kRows;    // 16
constexpr int kBN = 32;                // keys per step: lane = key
constexpr int kDC = 32;                // D chunk
constexpr int kCols = 4;               // output columns per lane
constexpr int kDVS = 32 * kCols;       // 128-wide Dv slice
constexpr int kSmemFloats = kBM * kDC + kBN * (kDC + 1) + kBN * kDVS;
// At least 4 blocks per SM, i.e. at most 128 registers: with the thread count alone ptxas
// (CUDA 13) settled on 72 registers for sm_90a and spilled 48 bytes.
constexpr int kMinBlocks = 4;
}  // namespace sfwd

template <typename T>
__global__ void __launch_bounds__(sfwd::kThreads, sfwd::kMinBlocks)
    attn_fwd_simt_kernel(const T* __restrict__ q, const T* __restrict__ k,
                         const T* __restrict__ v, const float* __restrict__ bias,
                         T* __restrict__ out, float* __restrict__ lse, Shape s, Dropout drop) {
  using namespace sfwd;
  extern __shared__ __align__(16) unsigned char attn_smem_raw[];
  float* sQ = reinterpret_cast<float*>(attn_smem_raw);  // [kBM][kDC]
  float* sK = sQ + kBM * kDC;                           // [kBN][kDC + 1]: lane-strided, no conflicts
  float* sV = sK + kBN * (kDC + 1);                     // [kBN][kDVS]

  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & 31, warp = tid >> 5;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kBM;
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * kDVS;
  const int64_t b = s.b0 + blockIdx.z;
  const int64_t n_end = key_end(s, m0, kBM);

  float o[kRows][kCols], m_run[kRows], l_run[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    m_run[r] = -INFINITY;
    l_run[r] = 0.f;
#pragma unroll
    for (int c = 0; c < kCols; ++c) o[r][c] = 0.f;
  }

  for (int64_t n0 = 0; n0 < n_end; n0 += kBN) {
    float sc[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) sc[r] = 0.f;
    for (int64_t d0 = 0; d0 < s.D; d0 += kDC) {
      __syncthreads();
      for (int id = tid; id < kBM * kDC; id += kThreads) {
        const int r = id / kDC, d = id % kDC;
        const int64_t gi = m0 + r, gd = d0 + d;
        sQ[id] = gi < s.Lq && gd < s.D ? to_f32<T>(q[b * s.sqb + gi * s.sql + gd]) : 0.f;
      }
      for (int id = tid; id < kBN * kDC; id += kThreads) {
        const int r = id / kDC, d = id % kDC;
        const int64_t gj = n0 + r, gd = d0 + d;
        sK[r * (kDC + 1) + d] = gj < s.Lk && gd < s.D ? to_f32<T>(k[b * s.skb + gj * s.skl + gd]) : 0.f;
      }
      __syncthreads();
      for (int d = 0; d < kDC; ++d) {
        const float kv = sK[lane * (kDC + 1) + d];
#pragma unroll
        for (int r = 0; r < kRows; ++r) sc[r] = fmaf(sQ[(warp * kRows + r) * kDC + d], kv, sc[r]);
      }
    }
    __syncthreads();  // sV's previous readers are done
    for (int id = tid; id < kBN * kDVS; id += kThreads) {
      const int r = id / kDVS, c = id % kDVS;
      const int64_t gj = n0 + r, gc = c0 + c;
      sV[id] = gj < s.Lk && gc < s.Dv ? to_f32<T>(v[b * s.svb + gj * s.svl + gc]) : 0.f;
    }
    __syncthreads();

    const int64_t j = n0 + lane;
    float p[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int64_t i = m0 + warp * kRows + r;
      const float x = masked_score(sc[r], bias, s, b, i, j);
      const float alpha = softmax::update_max(m_run[r], hw::warp_max(x));
      float pr = softmax::prob(x, m_run[r]);
      l_run[r] = l_run[r] * alpha + hw::warp_sum(pr);
      if (drop.enabled) pr = (j < s.Lk && i < s.Lq && keep(drop, s, b, i, j)) ? pr * drop.scale : 0.f;
      p[r] = round_to<T>(pr);  // what a T-input P V product sees (the reference's p.to(v.dtype))
#pragma unroll
      for (int c = 0; c < kCols; ++c) o[r][c] *= alpha;
    }
    // O += P V: key jj's probability of each row broadcast from lane jj; fixed order over jj.
    for (int jj = 0; jj < kBN; ++jj) {
      float vv[kCols];
#pragma unroll
      for (int c = 0; c < kCols; ++c) vv[c] = sV[jj * kDVS + c * 32 + lane];
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const float pj = hw::shfl(p[r], jj);
#pragma unroll
        for (int c = 0; c < kCols; ++c) o[r][c] = fmaf(pj, vv[c], o[r][c]);
      }
    }
  }

#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int64_t i = m0 + warp * kRows + r;
    if (i >= s.Lq) continue;
    const float inv = softmax::inv_sum(l_run[r]);
#pragma unroll
    for (int c = 0; c < kCols; ++c) {
      const int64_t gc = c0 + c * 32 + lane;
      if (gc < s.Dv) out[b * s.sob + i * s.sol + gc] = from_f32<T>(o[r][c] * inv);
    }
    if (lane == 0 && blockIdx.y == 0) lse[b * s.Lq + i] = softmax::finish_lse(m_run[r], l_run[r]);
  }
}

// =============================================================================================
// Backward (SIMT, deterministic)
// =============================================================================================
namespace bwd {
constexpr int kWarps = 4, kThreads = kWarps * 32;
constexpr int kT = 32;                   // query and key block (lane = key of the score tiles)
constexpr int kRows = kT / kWarps;       // 8 rows of a 32 x 32 tile per warp
constexpr int kSW = 64;                  // output slice width (two columns per lane)
constexpr int kLd = kT + 1;              // padded pitch of the 32-wide fp32 tiles
constexpr int kLdS = kSW + 1;
// sA, sB: contraction chunks; sP, sDS: the probability and dS tiles; sX, sY: slices.
constexpr int kSmemFloats = 4 * kT * kLd + 2 * kT * kLdS;
}  // namespace bwd

template <typename T>
__global__ void __launch_bounds__(bwd::kThreads)
    attn_bwd_delta_kernel(const T* __restrict__ grad_out, const T* __restrict__ out,
                          float* __restrict__ delta, Shape s, int64_t sob, int64_t sol) {
  // One warp per row: Delta_i = sum_c dO_ic O_ic in fp32, lane-strided then a butterfly sum.
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * bwd::kWarps + (threadIdx.x >> 5);
  const int64_t b = s.b0 + blockIdx.y;
  float acc = 0.f;
  if (row < s.Lq) {
    const T* go = grad_out + b * s.sob + row * s.sol;
    const T* o = out + b * sob + row * sol;
    for (int64_t c = lane; c < s.Dv; c += 32) acc = fmaf(to_f32<T>(go[c]), to_f32<T>(o[c]), acc);
  }
  acc = hw::warp_sum(acc);
  if (row < s.Lq && lane == 0) delta[b * s.Lq + row] = acc;
}

// Stages rows [r0, r0 + 32) x columns [c0, c0 + width) of x (fp32, zero outside) into dst[32][ld].
template <typename T>
__device__ __forceinline__ void stage(float* dst, int ld, const T* __restrict__ x,
                                      int64_t row_stride, int64_t r0, int64_t rows_total,
                                      int64_t c0, int64_t cols_total, int width, int tid) {
  for (int id = tid; id < bwd::kT * width; id += bwd::kThreads) {
    const int r = id / width, c = id % width;
    const int64_t gr = r0 + r, gc = c0 + c;
    dst[r * ld + c] = gr < rows_total && gc < cols_total ? to_f32<T>(x[gr * row_stride + gc]) : 0.f;
  }
}

// acc[r] = sum_c x[m0 + 8w + r][c] y[n0 + lane][c] over c < width, in 32-wide chunks staged
// through sA (rows: x) and sB (rows: y); fixed order, exact fp32 FMAs.
template <typename T>
__device__ __forceinline__ void bwd_contract(float (&acc)[bwd::kRows], const T* __restrict__ x,
                                             int64_t x_stride, const T* __restrict__ y,
                                             int64_t y_stride, int64_t m0, int64_t x_rows,
                                             int64_t n0, int64_t y_rows, int64_t width, float* sA,
                                             float* sB, int tid) {
  using namespace bwd;
  const int lane = tid & 31, warp = tid >> 5;
#pragma unroll
  for (int r = 0; r < kRows; ++r) acc[r] = 0.f;
  for (int64_t c0 = 0; c0 < width; c0 += kT) {
    __syncthreads();  // the previous readers of sA/sB are done
    stage<T>(sA, kLd, x, x_stride, m0, x_rows, c0, width, kT, tid);
    stage<T>(sB, kLd, y, y_stride, n0, y_rows, c0, width, kT, tid);
    __syncthreads();
    for (int d = 0; d < kT; ++d) {
      const float yv = sB[lane * kLd + d];
#pragma unroll
      for (int r = 0; r < kRows; ++r) acc[r] = fmaf(sA[(warp * kRows + r) * kLd + d], yv, acc[r]);
    }
  }
}

// For query block [m0, m0+32) and key block [n0, n0+32): sP[i][j] = P after dropout and
// sDS[i][j] = dS, fp32 (rounded to T, what the T-input GEMMs of the reference see). Thread
// (warp w, lane j) computes rows 8w..8w+7 of column j. Ends with a __syncthreads.
template <typename T>
__device__ __forceinline__ void bwd_tiles(const T* __restrict__ qb, const T* __restrict__ kb,
                                          const T* __restrict__ vb, const T* __restrict__ gob,
                                          const float* __restrict__ bias,
                                          const float* __restrict__ lse_b,
                                          const float* __restrict__ delta_b, const Shape& s,
                                          const Dropout& drop, int64_t b, int64_t m0, int64_t n0,
                                          float* sA, float* sB, float* sP, float* sDS, int tid) {
  using namespace bwd;
  const int lane = tid & 31, warp = tid >> 5;
  float sc[kRows], dp[kRows];
  // s = q k^T over D, then dp = dO v^T over Dv.
  bwd_contract<T>(sc, qb, s.sql, kb, s.skl, m0, s.Lq, n0, s.Lk, s.D, sA, sB, tid);
  bwd_contract<T>(dp, gob, s.sol, vb, s.svl, m0, s.Lq, n0, s.Lk, s.Dv, sA, sB, tid);
  const int64_t j = n0 + lane;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int ri = warp * kRows + r;
    const int64_t i = m0 + ri;
    float p = 0.f, ds = 0.f, pd = 0.f;
    if (i < s.Lq && j < s.Lk) {
      p = softmax::prob_from_lse(masked_score(sc[r], bias, s, b, i, j), lse_b[i]);
      float dpd = dp[r];
      pd = p;
      if (drop.enabled) {
        const bool kept = keep(drop, s, b, i, j);
        pd = kept ? p * drop.scale : 0.f;
        dpd = kept ? dpd * drop.scale : 0.f;
      }
      ds = p * (dpd - delta_b[i]);
    }
    sP[ri * kLd + lane] = round_to<T>(pd);
    sDS[ri * kLd + lane] = round_to<T>(ds);
  }
  __syncthreads();
}

// dK[:, slice] and dV[:, slice] of one 32-key block: dV += P^T dO, dK += scale dS^T q.
template <typename T>
__global__ void __launch_bounds__(bwd::kThreads)
    attn_bwd_dkdv_kernel(const T* __restrict__ q, const T* __restrict__ k,
                         const T* __restrict__ v, const float* __restrict__ bias,
                         const T* __restrict__ grad_out, const float* __restrict__ lse,
                         const float* __restrict__ delta, T* __restrict__ dk,
                         T* __restrict__ dv, Shape s, Dropout drop) {
  using namespace bwd;
  extern __shared__ __align__(16) unsigned char attn_smem_raw[];
  float* sA = reinterpret_cast<float*>(attn_smem_raw);
  float* sB = sA + kT * kLd;
  float* sP = sB + kT * kLd;
  float* sDS = sP + kT * kLd;
  float* sX = sDS + kT * kLd;  // q[:, slice]   [32][kLdS]
  float* sY = sX + kT * kLdS;  // dO[:, slice]  [32][kLdS]

  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & 31, warp = tid >> 5;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kT;
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * kSW;
  const int64_t b = s.b0 + blockIdx.z;
  const T* qb = q + b * s.sqb;
  const T* gob = grad_out + b * s.sob;

  // Thread owns keys 8w + r (r < 8) x columns c0 + lane, c0 + lane + 32 of dK and dV.
  float ak[kRows][2], av[kRows][2];
#pragma unroll
  for (int r = 0; r < kRows; ++r) ak[r][0] = ak[r][1] = av[r][0] = av[r][1] = 0.f;

  for (int64_t m0 = query_begin(s, n0, kT); m0 < s.Lq; m0 += kT) {
    bwd_tiles<T>(qb, k + b * s.skb, v + b * s.svb, gob, bias, lse + b * s.Lq, delta + b * s.Lq,
                 s, drop, b, m0, n0, sA, sB, sP, sDS, tid);
    stage<T>(sX, kLdS, qb, s.sql, m0, s.Lq, c0, s.D, kSW, tid);
    stage<T>(sY, kLdS, gob, s.sol, m0, s.Lq, c0, s.Dv, kSW, tid);
    __syncthreads();
    for (int i = 0; i < kT; ++i) {  // fixed order over the queries: deterministic
      const float x0 = sX[i * kLdS + lane], x1 = sX[i * kLdS + lane + 32];
      const float y0 = sY[i * kLdS + lane], y1 = sY[i * kLdS + lane + 32];
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const float pd = sP[i * kLd + warp * kRows + r];
        const float ds = sDS[i * kLd + warp * kRows + r];
        av[r][0] = fmaf(pd, y0, av[r][0]);
        av[r][1] = fmaf(pd, y1, av[r][1]);
        ak[r][0] = fmaf(ds, x0, ak[r][0]);
        ak[r][1] = fmaf(ds, x1, ak[r][1]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int64_t j = n0 + warp * kRows + r;
    if (j >= s.Lk) continue;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t c = c0 + lane + 32 * h;
      if (c < s.D) dk[(b * s.Lk + j) * s.D + c] = from_f32<T>(ak[r][h] * s.scale);
      if (c < s.Dv) dv[(b * s.Lk + j) * s.Dv + c] = from_f32<T>(av[r][h]);
    }
  }
}

// dQ[:, slice] of one 32-query block: dQ = scale dS k.
template <typename T>
__global__ void __launch_bounds__(bwd::kThreads)
    attn_bwd_dq_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                       const float* __restrict__ bias, const T* __restrict__ grad_out,
                       const float* __restrict__ lse, const float* __restrict__ delta,
                       T* __restrict__ dq, Shape s, Dropout drop) {
  using namespace bwd;
  extern __shared__ __align__(16) unsigned char attn_smem_raw[];
  float* sA = reinterpret_cast<float*>(attn_smem_raw);
  float* sB = sA + kT * kLd;
  float* sP = sB + kT * kLd;
  float* sDS = sP + kT * kLd;
  float* sX = sDS + kT * kLd;  // k[:, slice]  [32][kLdS]

  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & 31, warp = tid >> 5;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kT;
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * kSW;
  const int64_t b = s.b0 + blockIdx.z;
  const T* kb = k + b * s.skb;

  float aq[kRows][2];
#pragma unroll
  for (int r = 0; r < kRows; ++r) aq[r][0] = aq[r][1] = 0.f;

  const int64_t n_end = key_end(s, m0, kT);
  for (int64_t n0 = 0; n0 < n_end; n0 += kT) {
    bwd_tiles<T>(q + b * s.sqb, kb, v + b * s.svb, grad_out + b * s.sob, bias, lse + b * s.Lq,
                 delta + b * s.Lq, s, drop, b, m0, n0, sA, sB, sP, sDS, tid);
    stage<T>(sX, kLdS, kb, s.skl, n0, s.Lk, c0, s.D, kSW, tid);
    __syncthreads();
    for (int jj = 0; jj < kT; ++jj) {
      const float x0 = sX[jj * kLdS + lane], x1 = sX[jj * kLdS + lane + 32];
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const float ds = sDS[(warp * kRows + r) * kLd + jj];
        aq[r][0] = fmaf(ds, x0, aq[r][0]);
        aq[r][1] = fmaf(ds, x1, aq[r][1]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int64_t i = m0 + warp * kRows + r;
    if (i >= s.Lq) continue;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t c = c0 + lane + 32 * h;
      if (c < s.D) dq[(b * s.Lq + i) * s.D + c] = from_f32<T>(aq[r][h] * s.scale);
    }
  }
}

// =============================================================================================
// Backward, tensor cores (bf16 / fp16; the forward's tensor-core conditions plus grad_out's)
// =============================================================================================
// Flash-attention-2 style, deterministic (no atomics, fixed summation orders), the tiles of the
// tensor-core forward (64 x 64 score tiles, 4 warps x 16 rows, D / Dv contracted in 64-wide
// chunks through shared memory with cp.async, tc_load_rows zero-fills rows/columns past the
// ends). Numerics: every GEMM accumulates in fp32 (mma.sync); P and dS are rounded to T once,
// where they become mma operands -- the same rounding the reference's T-input matmuls see.
//  * attn_bwd_dkdv_tc_kernel: one block per (64-key block, 64-wide column slice of dK and dV,
//    batch); the warp owns 16 keys. Per visited 64-query block it recomputes the transposed
//    tiles S^T = K Q^T and dP^T = V dO^T (keys = mma rows), so P^T and dS^T come out in the
//    C layout that is the A layout of the next mma: dV += P^T dO[:, slice] and
//    dK += dS^T Q[:, slice] (B operands by ldmatrix.trans) without a shared-memory round trip.
//    Causal: query blocks before the first that sees the key block are not visited.
//  * attn_bwd_dq_tc_kernel: one block per (64-query block, 128-wide slice of dQ, batch); the
//    warp owns 16 queries, loops over the visible 64-key blocks: S = Q K^T, dP = dO V^T,
//    dQ += dS K[:, slice]. Causal key blocks past the diagonal are not visited.
// Wider heads run more slices, each recomputing S and dP (the forward's Dv-slice trade-off).
namespace tcb {
constexpr int kKVS = 64;           // dK / dV slice per block of the dK/dV kernel
constexpr int kLdKV = kKVS + 8;    // padded pitch of the q / dO slices
constexpr int kKVT = kKVS / 8;     // n8 tiles of dK (and of dV) per warp
constexpr int kQS = 128;           // dQ slice per block of the dQ kernel
constexpr int kLdQS = kQS + 8;     // padded pitch of the k slice
constexpr int kQT = kQS / 8;       // n8 tiles of dQ per warp
constexpr int kKSteps = tc::kBN / 16;  // k16 steps of a 64-wide P / dS tile
// dK/dV: lse + Delta of the query block (fp32), then chunk buffers sQ, sK and slices sQs, sGs.
constexpr int kDkdvStatBytes = 2 * tc::kBM * 4;
constexpr int kDkdvElems = tc::kBM * tc::kLdK + tc::kBN * tc::kLdK + 2 * tc::kBM * kLdKV;
// dQ: chunk buffers sQ, sK and the k slice sKs.
constexpr int kDqElems = tc::kBM * tc::kLdK + tc::kBN * tc::kLdK + tc::kBN * kLdQS;
}  // namespace tcb

// acc (this warp's 16 rows x 64 columns, 8 n8 tiles) += A B^T over the k < k_left columns of
// one 64-wide chunk; sA holds the block's 64 A rows, sB 64 B rows, both [row][k] with pitch
// tc::kLdK (B stored [n][k] is the column-major B operand: plain ldmatrix).
template <typename T>
__device__ __forceinline__ void tc_mma_nt_chunk(float (&acc)[tc::kNT][4], const T* sA,
                                                const T* sB, int64_t k_left, int lane, int warp) {
  using namespace tc;
  const int a_row = warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, a_col = (lane >> 4) * 8;
  const int b_row = (lane & 7) + (lane >> 4) * 8, b_col = ((lane >> 3) & 1) * 8;
#pragma unroll
  for (int kk = 0; kk < kDC; kk += 16) {
    if (kk >= k_left) break;  // zero-filled tail of the last chunk (uniform branch)
    uint32_t af[4];
    hw::ldmatrix_x4(af[0], af[1], af[2], af[3], sA + a_row * kLdK + kk + a_col);
#pragma unroll
    for (int p = 0; p < kNT / 2; ++p) {
      uint32_t b0[2], b1[2];
      hw::ldmatrix_x4(b0[0], b0[1], b1[0], b1[1], sB + (p * 16 + b_row) * kLdK + kk + b_col);
      hw::mma_m16n8k16<T>(acc[2 * p], af, b0, acc[2 * p]);
      hw::mma_m16n8k16<T>(acc[2 * p + 1], af, b1, acc[2 * p + 1]);
    }
  }
}

// The C fragments of a 16 x 64 fp32 tile (8 n8 tiles) as the A fragments of 4 k16 steps, rounded
// to T: the n8 tiles 2j, 2j + 1 are k16 step j.
template <typename T>
__device__ __forceinline__ void tc_pack_a(uint32_t (&pa)[tcb::kKSteps][4],
                                          const float (&x)[tc::kNT][4]) {
#pragma unroll
  for (int j = 0; j < tcb::kKSteps; ++j) {
    pa[j][0] = pack2<T>(x[2 * j][0], x[2 * j][1]);
    pa[j][1] = pack2<T>(x[2 * j][2], x[2 * j][3]);
    pa[j][2] = pack2<T>(x[2 * j + 1][0], x[2 * j + 1][1]);
    pa[j][3] = pack2<T>(x[2 * j + 1][2], x[2 * j + 1][3]);
  }
}

// o (this warp's 16 rows x 8 NO columns) += A X, A the packed 16 x 64 fragments, X 64 rows of
// sX stored [k][n] with pitch ld (ldmatrix.trans gives the column-major B operand); n16 tiles at
// or past n_left are skipped (uniform branch). Fixed k order: deterministic.
template <typename T, int NO>
__device__ __forceinline__ void tc_mma_pn(float (&o)[NO][4], const uint32_t (&pa)[tcb::kKSteps][4],
                                          const T* sX, int ld, int64_t n_left, int lane) {
  const int v_row = (lane & 7) + ((lane >> 3) & 1) * 8, v_col = (lane >> 4) * 8;
#pragma unroll
  for (int j = 0; j < tcb::kKSteps; ++j) {
#pragma unroll
    for (int p = 0; p < NO / 2; ++p) {
      if (p * 16 >= n_left) break;
      uint32_t b0[2], b1[2];
      hw::ldmatrix_x4_trans(b0[0], b0[1], b1[0], b1[1], sX + (j * 16 + v_row) * ld + p * 16 + v_col);
      hw::mma_m16n8k16<T>(o[2 * p], pa[j], b0, o[2 * p]);
      hw::mma_m16n8k16<T>(o[2 * p + 1], pa[j], b1, o[2 * p + 1]);
    }
  }
}

template <int N>
__device__ __forceinline__ void tc_zero(float (&x)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) x[i][e] = 0.f;
}

// In place: p <- P after dropout, dp <- dS = P (dP after dropout - Delta), for query i, key j
// (P = exp(s - lse) from the raw q.k in p). Both the P and the dP of a dropped element are 0,
// kept ones are scaled by 1/(1-p): the forward's mask. A masked or out-of-range element has
// P = 0, hence dS = 0, and skips the Philox draw.
__device__ __forceinline__ void tc_prob_and_ds(float& p, float& dp, const float* __restrict__ bias,
                                               const Shape& s, const Dropout& drop, int64_t b,
                                               int64_t i, int64_t j, float lse_i, float delta_i) {
  const float pr = softmax::prob_from_lse(masked_score(p, bias, s, b, i, j), lse_i);
  float pd = pr, dpd = dp;
  if (drop.enabled) {
    const bool kept = pr != 0.f && keep(drop, s, b, i, j);
    pd = kept ? pr * drop.scale : 0.f;
    dpd = kept ? dpd * drop.scale : 0.f;
  }
  p = pd;
  dp = pr * (dpd - delta_i);
}

template <typename T>
__global__ void __launch_bounds__(tc::kThreads)
    attn_bwd_dkdv_tc_kernel(const T* __restrict__ q, const T* __restrict__ k,
                            const T* __restrict__ v, const float* __restrict__ bias,
                            const T* __restrict__ grad_out, const float* __restrict__ lse,
                            const float* __restrict__ delta, T* __restrict__ dk,
                            T* __restrict__ dv, Shape s, Dropout drop) {
  using namespace tc;
  using namespace tcb;
  extern __shared__ __align__(16) unsigned char attn_smem_raw[];
  float* sLse = reinterpret_cast<float*>(attn_smem_raw);    // [kBM]
  float* sDelta = sLse + kBM;                               // [kBM]
  T* sQ = reinterpret_cast<T*>(attn_smem_raw + kDkdvStatBytes);  // [kBM][kLdK] q / dO chunk
  T* sK = sQ + kBM * kLdK;                                  // [kBN][kLdK] k / v chunk
  T* sQs = sK + kBN * kLdK;                                 // [kBM][kLdKV] q[:, slice]
  T* sGs = sQs + kBM * kLdKV;                               // [kBM][kLdKV] dO[:, slice]

  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kBN;
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * kKVS;
  const int64_t b = s.b0 + blockIdx.z;
  const T* qb = q + b * s.sqb;
  const T* kb = k + b * s.skb;
  const T* vb = v + b * s.svb;
  const T* gob = grad_out + b * s.sob;
  const int64_t n_dchunks = (s.D + kDC - 1) / kDC, n_vchunks = (s.Dv + kDC - 1) / kDC;
  const int64_t key[2] = {n0 + warp * 16 + g, n0 + warp * 16 + g + 8};

  float ak[kKVT][4], av[kKVT][4];
  tc_zero(ak);
  tc_zero(av);

  for (int64_t m0 = query_begin(s, n0, kBM); m0 < s.Lq; m0 += kBM) {
    // ---- S^T = K Q^T over D chunks; lse / Delta of the query block land with chunk 0 -------
    float sc[kNT][4];
    tc_zero(sc);
    for (int64_t dc = 0; dc < n_dchunks; ++dc) {
      __syncthreads();  // the previous readers of the buffers are done
      if (dc == 0 && tid < kBM) {
        const int64_t i = m0 + tid;
        sLse[tid] = i < s.Lq ? lse[b * s.Lq + i] : -INFINITY;  // -inf: P = 0 past Lq
        sDelta[tid] = i < s.Lq ? delta[b * s.Lq + i] : 0.f;
      }
      tc_load_rows<T>(sQ, kLdK, qb, s.sql, m0, s.Lq, dc * kDC, s.D, kBM, kDC, tid);
      tc_load_rows<T>(sK, kLdK, kb, s.skl, n0, s.Lk, dc * kDC, s.D, kBN, kDC, tid);
      hw::cp_async_commit();
      hw::cp_async_wait<0>();
      __syncthreads();
      tc_mma_nt_chunk<T>(sc, sK, sQ, s.D - dc * kDC, lane, warp);
    }
    // ---- dP^T = V dO^T over Dv chunks; the q / dO slices land with chunk 0 ------------------
    float dp[kNT][4];
    tc_zero(dp);
    for (int64_t vc = 0; vc < n_vchunks; ++vc) {
      __syncthreads();
      tc_load_rows<T>(sQ, kLdK, gob, s.sol, m0, s.Lq, vc * kDC, s.Dv, kBM, kDC, tid);
      tc_load_rows<T>(sK, kLdK, vb, s.svl, n0, s.Lk, vc * kDC, s.Dv, kBN, kDC, tid);
      if (vc == 0) {
        tc_load_rows<T>(sQs, kLdKV, qb, s.sql, m0, s.Lq, c0, s.D, kBM, kKVS, tid);
        tc_load_rows<T>(sGs, kLdKV, gob, s.sol, m0, s.Lq, c0, s.Dv, kBM, kKVS, tid);
      }
      hw::cp_async_commit();
      hw::cp_async_wait<0>();
      __syncthreads();
      tc_mma_nt_chunk<T>(dp, sK, sQ, s.Dv - vc * kDC, lane, warp);
    }
    // ---- P^T and dS^T on the fragments: sc[nt][2h + e] is (key[h], query m0 + 8nt + 2t + e) --
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int qi = nt * 8 + 2 * t + e;
          tc_prob_and_ds(sc[nt][2 * h + e], dp[nt][2 * h + e], bias, s, drop, b, m0 + qi, key[h],
                         sLse[qi], sDelta[qi]);
        }
    // ---- dV += P^T dO[:, slice], dK += dS^T q[:, slice] -----------------------------------
    uint32_t pa[kKSteps][4];
    tc_pack_a<T>(pa, sc);
    if (c0 < s.Dv) tc_mma_pn<T, kKVT>(av, pa, sGs, kLdKV, s.Dv - c0, lane);
    tc_pack_a<T>(pa, dp);
    if (c0 < s.D) tc_mma_pn<T, kKVT>(ak, pa, sQs, kLdKV, s.D - c0, lane);
  }
  hw::cp_async_wait<0>();

  // ---- epilogue: dK = scale dS^T q, dV (D and Dv are multiples of 8: c < D implies c + 1 < D) --
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t j = key[h];
    if (j >= s.Lk) continue;
#pragma unroll
    for (int nt = 0; nt < kKVT; ++nt) {
      const int64_t c = c0 + nt * 8 + 2 * t;
      if (c < s.D) {
        T* row = dk + (b * s.Lk + j) * s.D;
        row[c] = from_f32<T>(ak[nt][2 * h] * s.scale);
        row[c + 1] = from_f32<T>(ak[nt][2 * h + 1] * s.scale);
      }
      if (c < s.Dv) {
        T* row = dv + (b * s.Lk + j) * s.Dv;
        row[c] = from_f32<T>(av[nt][2 * h]);
        row[c + 1] = from_f32<T>(av[nt][2 * h + 1]);
      }
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(tc::kThreads)
    attn_bwd_dq_tc_kernel(const T* __restrict__ q, const T* __restrict__ k,
                          const T* __restrict__ v, const float* __restrict__ bias,
                          const T* __restrict__ grad_out, const float* __restrict__ lse,
                          const float* __restrict__ delta, T* __restrict__ dq, Shape s,
                          Dropout drop) {
  using namespace tc;
  using namespace tcb;
  extern __shared__ __align__(16) unsigned char attn_smem_raw[];
  T* sQ = reinterpret_cast<T*>(attn_smem_raw);  // [kBM][kLdK] q / dO chunk
  T* sK = sQ + kBM * kLdK;                      // [kBN][kLdK] k / v chunk
  T* sKs = sK + kBN * kLdK;                     // [kBN][kLdQS] k[:, slice]

  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kBM;
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * kQS;
  const int64_t b = s.b0 + blockIdx.z;
  const T* qb = q + b * s.sqb;
  const T* kb = k + b * s.skb;
  const T* vb = v + b * s.svb;
  const T* gob = grad_out + b * s.sob;
  const int64_t n_end = key_end(s, m0, kBM);
  const int64_t n_dchunks = (s.D + kDC - 1) / kDC, n_vchunks = (s.Dv + kDC - 1) / kDC;
  const int64_t row[2] = {m0 + warp * 16 + g, m0 + warp * 16 + g + 8};
  float lse_r[2], delta_r[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    lse_r[h] = row[h] < s.Lq ? lse[b * s.Lq + row[h]] : -INFINITY;  // -inf: P = 0 past Lq
    delta_r[h] = row[h] < s.Lq ? delta[b * s.Lq + row[h]] : 0.f;
  }

  float aq[kQT][4];
  tc_zero(aq);

  for (int64_t n0 = 0; n0 < n_end; n0 += kBN) {
    // ---- S = Q K^T over D chunks --------------------------------------------------------------
    float sc[kNT][4];
    tc_zero(sc);
    for (int64_t dc = 0; dc < n_dchunks; ++dc) {
      __syncthreads();  // the previous readers of the buffers are done
      tc_load_rows<T>(sQ, kLdK, qb, s.sql, m0, s.Lq, dc * kDC, s.D, kBM, kDC, tid);
      tc_load_rows<T>(sK, kLdK, kb, s.skl, n0, s.Lk, dc * kDC, s.D, kBN, kDC, tid);
      hw::cp_async_commit();
      hw::cp_async_wait<0>();
      __syncthreads();
      tc_mma_nt_chunk<T>(sc, sQ, sK, s.D - dc * kDC, lane, warp);
    }
    // ---- dP = dO V^T over Dv chunks; the k slice lands with chunk 0 --------------------------
    float dp[kNT][4];
    tc_zero(dp);
    for (int64_t vc = 0; vc < n_vchunks; ++vc) {
      __syncthreads();
      tc_load_rows<T>(sQ, kLdK, gob, s.sol, m0, s.Lq, vc * kDC, s.Dv, kBM, kDC, tid);
      tc_load_rows<T>(sK, kLdK, vb, s.svl, n0, s.Lk, vc * kDC, s.Dv, kBN, kDC, tid);
      if (vc == 0) tc_load_rows<T>(sKs, kLdQS, kb, s.skl, n0, s.Lk, c0, s.D, kBN, kQS, tid);
      hw::cp_async_commit();
      hw::cp_async_wait<0>();
      __syncthreads();
      tc_mma_nt_chunk<T>(dp, sQ, sK, s.Dv - vc * kDC, lane, warp);
    }
    // ---- P and dS on the fragments: sc[nt][2h + e] is (row[h], key n0 + 8nt + 2t + e) --------
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int e = 0; e < 2; ++e)
          tc_prob_and_ds(sc[nt][2 * h + e], dp[nt][2 * h + e], bias, s, drop, b, row[h],
                         n0 + nt * 8 + 2 * t + e, lse_r[h], delta_r[h]);
    // ---- dQ += dS k[:, slice] ---------------------------------------------------------------
    uint32_t pa[kKSteps][4];
    tc_pack_a<T>(pa, dp);
    tc_mma_pn<T, kQT>(aq, pa, sKs, kLdQS, s.D - c0, lane);
  }
  hw::cp_async_wait<0>();

  // ---- epilogue: dQ = scale dS k (D is a multiple of 8: c < D implies c + 1 < D) ---------------
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (row[h] >= s.Lq) continue;
    T* out_row = dq + (b * s.Lq + row[h]) * s.D;
#pragma unroll
    for (int nt = 0; nt < kQT; ++nt) {
      const int64_t c = c0 + nt * 8 + 2 * t;
      if (c < s.D) {
        out_row[c] = from_f32<T>(aq[nt][2 * h] * s.scale);
        out_row[c + 1] = from_f32<T>(aq[nt][2 * h + 1] * s.scale);
      }
    }
  }
}

// ---- host helpers -------------------------------------------------------------------------------
inline Dropout make_dropout(double p, uint64_t seed) {
  Dropout d;
  d.seed = seed;
  d.threshold = philox::keep_threshold(p);
  d.scale = static_cast<float>(1.0 / (1.0 - p));
  d.enabled = p > 0.0 ? 1 : 0;
  return d;
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// CUDA caps gridDim.y and gridDim.z at 65535, and the attention grids put the batch there: the
// launchers run the batch in slices of at most kMaxGridBatch (for_batch_slices), and a kernel's
// batch is s.b0 + its grid index, so pointers, masks and the dropout counters stay indexed by
// the absolute batch. The SIMT harness build takes slices of 3, so that every harness test
// with B > 3 covers the slicing a GPU needs only past 65535 batches.
#if defined(ATTNFAST_SIMT_HARNESS)
constexpr int64_t kMaxGridBatch = 3;
#else
constexpr int64_t kMaxGridBatch = kMaxGridYZ;  // csrc/cuda/limits.h
#endif

// Calls f(slice) for the batch slices [slice.b0, slice.b0 + slice.B) of s (at least one call,
// even when B = 0); s.b0 is 0.
template <typename F>
inline void for_batch_slices(const Shape& s, F&& f) {
  Shape slice = s;
  slice.b0 = 0;
  do {
    slice.B = s.B - slice.b0 < kMaxGridBatch ? s.B - slice.b0 : kMaxGridBatch;
    f(slice);
    slice.b0 += kMaxGridBatch;
  } while (slice.b0 < s.B);
}

// Blocks for n items, per per block; at least 1 (a 0-wide Dv still needs lse).
inline unsigned grid_dim(int64_t n, int64_t per) {
  return n <= 0 ? 1u : static_cast<unsigned>((n + per - 1) / per);
}

}  // namespace attn_detail

// ---- launchers ----------------------------------------------------------------------------------
using attn_detail::Shape;

// True when the tensor-core forward takes these inputs (T bf16/fp16, 16-byte aligned rows).
template <typename T>
inline bool attention_forward_uses_tc(const T* q, const T* k, const T* v, const Shape& s) {
  if constexpr (std::is_same_v<T, float>) {
    return false;
  } else {
    using attn_detail::aligned16;
    return s.D > 0 && s.D % 8 == 0 && s.Dv % 8 == 0 && s.sql % 8 == 0 && s.sqb % 8 == 0 &&
           s.skl % 8 == 0 && s.skb % 8 == 0 && s.svl % 8 == 0 && s.svb % 8 == 0 &&
           aligned16(q) && aligned16(k) && aligned16(v);
  }
}

// out (B, Lq, Dv) with strides (s.sob, s.sol, 1); lse (B, Lq) contiguous. B, Lq, Dv > 0.
template <typename T>
void attention_forward(const T* q, const T* k, const T* v, const float* bias, T* out, float* lse,
                       const Shape& s, double dropout_p, uint64_t seed, cudaStream_t stream) {
  using namespace attn_detail;
  const bool use_tc = attention_forward_uses_tc<T>(q, k, v, s);
  const Dropout d = make_dropout(dropout_p, seed);
  for_batch_slices(s, [&](const Shape& sb) {
    const unsigned nb = static_cast<unsigned>(sb.B);
    if (use_tc) {
      if constexpr (!std::is_same_v<T, float>) {
        const dim3 grid(grid_dim(s.Lq, tc::kBM), grid_dim(s.Dv, tc::kDVS), nb);
        const int smem = tc::kSmemElems * static_cast<int>(sizeof(T));
        ATTNFAST_LAUNCH(attn_fwd_tc_kernel<T>, grid, dim3(tc::kThreads), smem, stream)(
            q, k, v, bias, out, lse, sb, d);
      }
    } else {
      const dim3 grid(grid_dim(s.Lq, sfwd::kBM), grid_dim(s.Dv, sfwd::kDVS), nb);
      const int smem = sfwd::kSmemFloats * static_cast<int>(sizeof(float));
      ATTNFAST_LAUNCH(attn_fwd_simt_kernel<T>, grid, dim3(sfwd::kThreads), smem, stream)(
          q, k, v, bias, out, lse, sb, d);
    }
  });
}

// True when the tensor-core backward takes these inputs: the forward's tensor-core conditions
// (T bf16/fp16, D and Dv multiples of 8, 16-byte aligned rows of q, k, v), Dv > 0, and grad_out
// (strides s.sob, s.sol) with 16-byte aligned rows too.
template <typename T>
inline bool attention_backward_uses_tc(const T* grad_out, const T* q, const T* k, const T* v,
                                       const Shape& s) {
  return attention_forward_uses_tc<T>(q, k, v, s) && s.Dv > 0 && s.sob % 8 == 0 &&
         s.sol % 8 == 0 && attn_detail::aligned16(grad_out);
}

// Delta_i = rowsum(dO O) (fp32), the first step of every backward. (sob, sol) in s are
// grad_out's strides, (out_sb, out_sl) out's; delta (B, Lq) contiguous. B, Lq > 0.
template <typename T>
void attention_backward_delta(const T* grad_out, const T* out, int64_t out_sb, int64_t out_sl,
                              float* delta, const Shape& s, cudaStream_t stream) {
  using namespace attn_detail;
  for_batch_slices(s, [&](const Shape& sb) {
    ATTNFAST_LAUNCH(attn_bwd_delta_kernel<T>,
                    dim3(grid_dim(s.Lq, bwd::kWarps), static_cast<unsigned>(sb.B)),
                    dim3(bwd::kThreads), 0, stream)(grad_out, out, delta, sb, out_sb, out_sl);
  });
}

// delta: (B, Lq) fp32 workspace. dq (B, Lq, D), dk (B, Lk, D), dv (B, Lk, Dv) contiguous.
// In s, (sob, sol) are grad_out's strides; (out_sb, out_sl) are out's. B, Lq, Lk > 0.
// attention_backward_tc needs attention_backward_uses_tc(...) (the glue checks it);
// attention_backward_simt takes anything (exact fp32 FMAs).
template <typename T>
void attention_backward_simt(const T* grad_out, const T* q, const T* k, const T* v, const T* out,
                             int64_t out_sb, int64_t out_sl, const float* lse, const float* bias,
                             float* delta, T* dq, T* dk, T* dv, const Shape& s, double dropout_p,
                             uint64_t seed, cudaStream_t stream) {
  using namespace attn_detail;
  attention_backward_delta<T>(grad_out, out, out_sb, out_sl, delta, s, stream);
  const int smem = bwd::kSmemFloats * static_cast<int>(sizeof(float));
  const int64_t widest = s.D > s.Dv ? s.D : s.Dv;
  const Dropout d = make_dropout(dropout_p, seed);
  for_batch_slices(s, [&](const Shape& sb) {
    const unsigned nb = static_cast<unsigned>(sb.B);
    if (widest > 0) {
      const dim3 grid(grid_dim(s.Lk, bwd::kT), grid_dim(widest, bwd::kSW), nb);
      ATTNFAST_LAUNCH(attn_bwd_dkdv_kernel<T>, grid, dim3(bwd::kThreads), smem, stream)(
          q, k, v, bias, grad_out, lse, delta, dk, dv, sb, d);
    }
    if (s.D > 0) {
      const dim3 grid(grid_dim(s.Lq, bwd::kT), grid_dim(s.D, bwd::kSW), nb);
      ATTNFAST_LAUNCH(attn_bwd_dq_kernel<T>, grid, dim3(bwd::kThreads), smem, stream)(
          q, k, v, bias, grad_out, lse, delta, dq, sb, d);
    }
  });
}

template <typename T>
void attention_backward_tc(const T* grad_out, const T* q, const T* k, const T* v, const T* out,
                           int64_t out_sb, int64_t out_sl, const float* lse, const float* bias,
                           float* delta, T* dq, T* dk, T* dv, const Shape& s, double dropout_p,
                           uint64_t seed, cudaStream_t stream) {
  using namespace attn_detail;
  if constexpr (!std::is_same_v<T, float>) {
    attention_backward_delta<T>(grad_out, out, out_sb, out_sl, delta, s, stream);
    const int64_t widest = s.D > s.Dv ? s.D : s.Dv;
    const int smem_kv = tcb::kDkdvStatBytes + tcb::kDkdvElems * static_cast<int>(sizeof(T));
    const int smem_q = tcb::kDqElems * static_cast<int>(sizeof(T));
    const Dropout d = make_dropout(dropout_p, seed);
    for_batch_slices(s, [&](const Shape& sb) {
      const unsigned nb = static_cast<unsigned>(sb.B);
      const dim3 grid_kv(grid_dim(s.Lk, tc::kBN), grid_dim(widest, tcb::kKVS), nb);
      ATTNFAST_LAUNCH(attn_bwd_dkdv_tc_kernel<T>, grid_kv, dim3(tc::kThreads), smem_kv, stream)(
          q, k, v, bias, grad_out, lse, delta, dk, dv, sb, d);
      const dim3 grid_q(grid_dim(s.Lq, tc::kBM), grid_dim(s.D, tcb::kQS), nb);
      ATTNFAST_LAUNCH(attn_bwd_dq_tc_kernel<T>, grid_q, dim3(tc::kThreads), smem_q, stream)(
          q, k, v, bias, grad_out, lse, delta, dq, sb, d);
    });
  }
}

}  // namespace cuda
}  // namespace attnfast
