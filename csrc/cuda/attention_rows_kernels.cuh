// Row kernels of the GEMM strategy for wide heads (csrc/cuda/attention_gemm.h). The library
// GEMMs compute, for a chunk of query rows, S = q k^T (and in the backward dP = dO v^T) into fp32
// buffers; these kernels do the softmax work between the GEMMs, one warp per query row:
//  * attn_rows_fwd_kernel: lse_i = logsumexp_j s_ij and P = dropout(exp(s - lse)) in T, the A
//    operand of the P v GEMM;
//  * attn_rows_bwd_kernel: P after dropout and dS = P (dP - Delta) in T, the operands of the
//    dV, dK and dQ GEMMs.
// s, the masks, the dropout mask and the exponentials are those of the flash kernels
// (attention_kernels.cuh: masked_score, keep; common/softmax.h), so both strategies define the
// same function; P and dS are rounded to T as the flash kernels round them before their T-input
// products.
//
// Buffers: S, dP (fp32), P, dS (T) are (B, rows, n) contiguous, row (b, r) holding the first n
// keys of query i0 + r (n is the chunk's visible-key bound; a causal row may see fewer). Same
// harness rules as attention_kernels.cuh: hw.cuh only, ATTNFAST_LAUNCH, 64-bit offsets.
#pragma once
#include <cstdint>

#include "common/softmax.h"
#include "cuda/attention_kernels.cuh"

namespace attnfast {
namespace cuda {
namespace attn_rows {

using attn_detail::Dropout;
using attn_detail::Shape;

constexpr int kWarps = 4, kThreads = kWarps * 32;

// The query rows [i0, i0 + rows) of one GEMM chunk and the key prefix [0, n) it computed.
struct Chunk {
  int64_t i0, rows, n;
};

// Keys of query i a causal mask leaves visible within the chunk's prefix of n keys.
__device__ __forceinline__ int64_t visible_keys(const Shape& s, int64_t i, int64_t n) {
  if (!s.causal) return n;
  const int64_t hi = i + (s.Lk - s.Lq) + 1;
  return hi < 0 ? 0 : (hi < n ? hi : n);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    attn_rows_fwd_kernel(const float* __restrict__ S, const float* __restrict__ bias,
                         T* __restrict__ P, float* __restrict__ lse, Shape s, Chunk c,
                         Dropout drop) {
  // Two passes over the row with the lanes strided over keys: an online max and sum per lane
  // (merged across the warp at the end), then P. The row (n fp32 values) is read from memory
  // by the first pass and mostly from L1/L2 by the second.
  const int lane = threadIdx.x & 31;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  const int64_t b = s.b0 + blockIdx.y;
  if (r >= c.rows) return;  // whole warps leave together: the shuffles below see full warps
  const int64_t i = c.i0 + r;
  const int64_t row = (b * c.rows + r) * c.n;
  const float* sr = S + row;
  const int64_t nv = visible_keys(s, i, c.n);

  // l is rescaled only when a lane meets a new maximum (common/softmax.h keeps -inf safe: a
  // lane that sees no visible key keeps m = -inf and l = 0, and adds 0 to the warp's sum).
  float m = -INFINITY, l = 0.f;
  for (int64_t j = lane; j < nv; j += 32) {
    const float x = attn_detail::masked_score(sr[j], bias, s, b, i, j);
    if (x > m) l *= softmax::update_max(m, x);
    l += softmax::prob(x, m);
  }
  const float row_max = hw::warp_max(m);
  l = hw::warp_sum(l * softmax::prob(m, row_max));
  const float row_lse = softmax::finish_lse(row_max, l);

  T* pr = P + row;
  for (int64_t j = lane; j < c.n; j += 32) {
    float p = 0.f;
    if (j < nv) p = softmax::prob_from_lse(attn_detail::masked_score(sr[j], bias, s, b, i, j), row_lse);
    if (drop.enabled) p = attn_detail::keep(drop, s, b, i, j) ? p * drop.scale : 0.f;
    pr[j] = from_f32<T>(p);
  }
  if (lane == 0) lse[b * s.Lq + i] = row_lse;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    attn_rows_bwd_kernel(const float* __restrict__ S, const float* __restrict__ dP,
                         const float* __restrict__ bias, const float* __restrict__ lse,
                         const float* __restrict__ delta, T* __restrict__ P,
                         T* __restrict__ dS, Shape s, Chunk c, Dropout drop) {
  // Elementwise given lse_i and Delta_i: P = exp(s - lse); with dropout the kept P and dP are
  // scaled by 1/(1-p) and the dropped ones are 0; dS = P (dP - Delta) with the undropped P.
  const int lane = threadIdx.x & 31;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  const int64_t b = s.b0 + blockIdx.y;
  if (r >= c.rows) return;
  const int64_t i = c.i0 + r;
  const int64_t row = (b * c.rows + r) * c.n;
  const float row_lse = lse[b * s.Lq + i], row_delta = delta[b * s.Lq + i];
  const int64_t nv = visible_keys(s, i, c.n);
  for (int64_t j = lane; j < c.n; j += 32) {
    float p = 0.f, pd = 0.f, ds = 0.f;
    if (j < nv) {
      p = softmax::prob_from_lse(attn_detail::masked_score(S[row + j], bias, s, b, i, j), row_lse);
      float dpd = dP[row + j];
      pd = p;
      if (drop.enabled) {
        const bool kept = attn_detail::keep(drop, s, b, i, j);
        pd = kept ? p * drop.scale : 0.f;
        dpd = kept ? dpd * drop.scale : 0.f;
      }
      ds = p * (dpd - row_delta);
    }
    P[row + j] = from_f32<T>(pd);
    dS[row + j] = from_f32<T>(ds);
  }
}

}  // namespace attn_rows

// ---- launchers ----------------------------------------------------------------------------------
// S (and dP) hold the chunk's fp32 products; P, dS (B, c.rows, c.n) are written in T.
// c.rows, c.n > 0. Batches in slices of kMaxGridBatch (attention_kernels.cuh).
template <typename T>
void attention_rows_forward(const float* S, const float* bias, T* P, float* lse, const Shape& s,
                            const attn_rows::Chunk& c, double dropout_p, uint64_t seed,
                            cudaStream_t stream) {
  using namespace attn_detail;
  const Dropout d = make_dropout(dropout_p, seed);
  for_batch_slices(s, [&](const Shape& sb) {
    const dim3 grid(grid_dim(c.rows, attn_rows::kWarps), static_cast<unsigned>(sb.B));
    ATTNFAST_LAUNCH(attn_rows::attn_rows_fwd_kernel<T>, grid, dim3(attn_rows::kThreads), 0,
                    stream)(S, bias, P, lse, sb, c, d);
  });
}

template <typename T>
void attention_rows_backward(const float* S, const float* dP, const float* bias, const float* lse,
                             const float* delta, T* P, T* dS, const Shape& s,
                             const attn_rows::Chunk& c, double dropout_p, uint64_t seed,
                             cudaStream_t stream) {
  using namespace attn_detail;
  const Dropout d = make_dropout(dropout_p, seed);
  for_batch_slices(s, [&](const Shape& sb) {
    const dim3 grid(grid_dim(c.rows, attn_rows::kWarps), static_cast<unsigned>(sb.B));
    ATTNFAST_LAUNCH(attn_rows::attn_rows_bwd_kernel<T>, grid, dim3(attn_rows::kThreads), 0,
                    stream)(S, dP, bias, lse, delta, P, dS, sb, c, d);
  });
}

}  // namespace cuda
}  // namespace attnfast
