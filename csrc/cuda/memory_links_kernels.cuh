// CUDA kernels of the DNC temporal link update fused with the directional reads through the new
// link (contract in csrc/schemas.h; shared pieces and conventions in memory_common.cuh).
//
// Design: new_link is never read back: two kernels recompute it from link, w and p where they
// need it. "rows": a warp per row i (lanes over j) for the row reductions (forward[r, i];
// backward: d w_i and the read-weight gradient at i); "cols": a thread per column j walking all
// rows i (coalesced across the warp) for the column reductions (backward[r, j] = sum_i
// new_link[i, j] rw[r, i], new_link itself and new_precedence; backward: d w_j, d p_j, the
// read-weight gradient at j). Reads run in chunks of kReadChunk read heads (accumulators in
// registers). The backward's read-weight gradient is summed over the write heads by a last small
// kernel.
#pragma once
#include <cstdint>

#include "cuda/memory_common.cuh"

namespace attnfast {
namespace cuda {
namespace mem_detail {

// ---- temporal link + directional reads ---------------------------------------------------------------

// new_link[i, j] (0 on the diagonal; the input's diagonal is never read).
template <typename T>
__device__ __forceinline__ T new_link_at(const T* L, const T* w, const T* p, int64_t i, int64_t j,
                                         int64_t N, T wi) {
  return i == j ? T(0) : mm::link_update(L[i * N + j], wi, w[j], p[j]);
}

// forward[b, r, h, i] = sum_j new_link[i, j] rw[b, r, j]: a warp per row i of one (b, h).
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    link_rows_forward_kernel(const T* __restrict__ link, const T* __restrict__ prec,
                             const T* __restrict__ ww, const T* __restrict__ rw,
                             T* __restrict__ fwd, int64_t Hw, int64_t N, int64_t R) {
  __shared__ T red[kThreads];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t bh = blockIdx.y, b = bh / Hw, h = bh % Hw;
  const int64_t i = int64_t(blockIdx.x) * kWarps + warp;
  if (i >= N) return;  // warp-uniform
  const T* L = link + bh * N * N;
  const T* w = ww + bh * N;
  const T* p = prec + bh * N;
  const T wi = w[i];
  for (int64_t r0 = 0; r0 < R; r0 += kReadChunk) {
    T acc[kReadChunk];
    ATTNFAST_UNROLL
    for (int q = 0; q < kReadChunk; ++q) acc[q] = 0;
    for (int64_t j = lane; j < N; j += 32) {
      const T nl = new_link_at(L, w, p, i, j, N, wi);
      ATTNFAST_UNROLL
      for (int q = 0; q < kReadChunk; ++q)
        if (r0 + q < R) acc[q] += nl * rw[(b * R + r0 + q) * N + j];
    }
    ATTNFAST_UNROLL
    for (int q = 0; q < kReadChunk; ++q) {
      if (r0 + q < R) {  // warp-uniform
        const T s = warp_sum_t(acc[q], red + warp * 32);
        if (lane == 0) fwd[((b * R + r0 + q) * Hw + h) * N + i] = s;
      }
    }
  }
}

// A thread per column j of one (b, h), walking all rows i (coalesced across the warp):
// new_link[:, j], new_precedence[j], backward[b, r, h, j] = sum_i new_link[i, j] rw[b, r, i].
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    link_cols_forward_kernel(const T* __restrict__ link, const T* __restrict__ prec,
                             const T* __restrict__ ww, const T* __restrict__ rw,
                             T* __restrict__ new_link, T* __restrict__ new_prec,
                             T* __restrict__ bwd, int64_t Hw, int64_t N, int64_t R) {
  __shared__ T red[kThreads];
  const int64_t bh = blockIdx.y, b = bh / Hw, h = bh % Hw;
  const int64_t j = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  const T* L = link + bh * N * N;
  T* NL = new_link + bh * N * N;
  const T* w = ww + bh * N;
  const T* p = prec + bh * N;
  T ws = 0;
  for (int64_t k = threadIdx.x; k < N; k += kThreads) ws += w[k];
  const T wsum = block_sum(ws, red);
  if (j >= N) return;  // no barrier below
  new_prec[bh * N + j] = mm::precedence_update(p[j], wsum, w[j]);
  const T wj = w[j], pj = p[j];
  for (int64_t r0 = 0; r0 == 0 || r0 < R; r0 += kReadChunk) {  // one pass even when R = 0
    T acc[kReadChunk];
    ATTNFAST_UNROLL
    for (int q = 0; q < kReadChunk; ++q) acc[q] = 0;
    for (int64_t i = 0; i < N; ++i) {
      const T nl = i == j ? T(0) : mm::link_update(L[i * N + j], w[i], wj, pj);
      if (r0 == 0) NL[i * N + j] = nl;
      ATTNFAST_UNROLL
      for (int q = 0; q < kReadChunk; ++q)
        if (r0 + q < R) acc[q] += rw[(b * R + r0 + q) * N + i] * nl;
    }
    ATTNFAST_UNROLL
    for (int q = 0; q < kReadChunk; ++q)
      if (r0 + q < R) bwd[((b * R + r0 + q) * Hw + h) * N + j] = acc[q];
  }
}

// Total gradient on new_link[i, j] (i != j): g_link + sum_r g_fwd[r, i] rw_r[j] + rw_r[i] g_bwd_r[j].
template <typename T>
__device__ __forceinline__ T link_total_grad(const T* gL, const T* g_fwd, const T* g_bwd,
                                             const T* rw, int64_t b, int64_t h, int64_t i,
                                             int64_t j, int64_t Hw, int64_t N, int64_t R) {
  T G = gL[i * N + j];
  for (int64_t r = 0; r < R; ++r) {
    const int64_t o = ((b * R + r) * Hw + h) * N;
    const T* rwr = rw + (b * R + r) * N;
    G += g_fwd[o + i] * rwr[j] + rwr[i] * g_bwd[o + j];
  }
  return G;
}

// Per (b, h), the link backward's global workspace: T: dw_row (N) = sum_j G_ij (p_j - L_ij), then
// drw (R, N): row part sum_j new_link[i, j] g_bwd_r[j] (at i), then + the column part (at j).
ATTNFAST_HD inline int64_t link_backward_ws(int64_t N, int64_t R) { return (1 + R) * N; }

// A warp per row i: d link[i, :] = G (1 - w_i - w_j), the row reductions d w_i (row part) and
// sum_j new_link[i, j] g_bwd_r[j] (the read weights' gradient at i, per write head).
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    link_rows_backward_kernel(const T* __restrict__ g_link, const T* __restrict__ g_fwd,
                              const T* __restrict__ g_bwd, const T* __restrict__ link,
                              const T* __restrict__ prec, const T* __restrict__ ww,
                              const T* __restrict__ rw, T* __restrict__ d_link,
                              T* __restrict__ ws, int64_t Hw, int64_t N, int64_t R) {
  __shared__ T red[kThreads];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t bh = blockIdx.y, b = bh / Hw, h = bh % Hw;
  const int64_t i = int64_t(blockIdx.x) * kWarps + warp;
  if (i >= N) return;  // warp-uniform
  const T* L = link + bh * N * N;
  const T* gL = g_link + bh * N * N;
  T* dL = d_link + bh * N * N;
  const T* w = ww + bh * N;
  const T* p = prec + bh * N;
  T* wsb = ws + bh * link_backward_ws(N, R);
  const T wi = w[i];
  T dwi = 0;
  for (int64_t j = lane; j < N; j += 32) {
    const T G = i == j ? T(0) : link_total_grad(gL, g_fwd, g_bwd, rw, b, h, i, j, Hw, N, R);
    dL[i * N + j] = G * (T(1) - wi - w[j]);
    dwi += G * (p[j] - L[i * N + j]);
  }
  dwi = warp_sum_t(dwi, red + warp * 32);
  if (lane == 0) wsb[i] = dwi;
  for (int64_t r0 = 0; r0 < R; r0 += kReadChunk) {
    T acc[kReadChunk];
    ATTNFAST_UNROLL
    for (int q = 0; q < kReadChunk; ++q) acc[q] = 0;
    for (int64_t j = lane; j < N; j += 32) {
      const T nl = new_link_at(L, w, p, i, j, N, wi);
      ATTNFAST_UNROLL
      for (int q = 0; q < kReadChunk; ++q)
        if (r0 + q < R) acc[q] += nl * g_bwd[((b * R + r0 + q) * Hw + h) * N + j];
    }
    ATTNFAST_UNROLL
    for (int q = 0; q < kReadChunk; ++q) {
      if (r0 + q < R) {  // warp-uniform
        const T s = warp_sum_t(acc[q], red + warp * 32);
        if (lane == 0) wsb[(1 + r0 + q) * N + i] = s;
      }
    }
  }
}

// A thread per column j walking all rows i: the column reductions d w_j -= sum_i G_ij L_ij,
// d p_j += sum_i G_ij w_i, drw_r[j] += sum_i g_fwd[r, i] new_link[i, j]; plus the precedence
// update's terms (d p = g_p (1 - sum w), d w = g_p - g_p . p) and the row part of d w_j.
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    link_cols_backward_kernel(const T* __restrict__ g_link, const T* __restrict__ g_prec,
                              const T* __restrict__ g_fwd, const T* __restrict__ g_bwd,
                              const T* __restrict__ link, const T* __restrict__ prec,
                              const T* __restrict__ ww, const T* __restrict__ rw,
                              T* __restrict__ d_prec, T* __restrict__ d_ww, T* __restrict__ ws,
                              int64_t Hw, int64_t N, int64_t R) {
  __shared__ T red[kThreads];
  const int64_t bh = blockIdx.y, b = bh / Hw, h = bh % Hw;
  const int64_t j = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  const T* L = link + bh * N * N;
  const T* gL = g_link + bh * N * N;
  const T* w = ww + bh * N;
  const T* p = prec + bh * N;
  const T* gp = g_prec + bh * N;
  T* wsb = ws + bh * link_backward_ws(N, R);
  T s_w = 0, s_gp = 0;
  for (int64_t k = threadIdx.x; k < N; k += kThreads) {
    s_w += w[k];
    s_gp += gp[k] * p[k];
  }
  const T wsum = block_sum(s_w, red);
  const T gp_p = block_sum(s_gp, red);
  if (j >= N) return;  // no barrier below
  const T wj = w[j], pj = p[j];
  T dp = gp[j] * (T(1) - wsum);
  T dw = gp[j] - gp_p;
  for (int64_t r0 = 0; r0 == 0 || r0 < R; r0 += kReadChunk) {
    T acc[kReadChunk];
    ATTNFAST_UNROLL
    for (int q = 0; q < kReadChunk; ++q) acc[q] = 0;
    for (int64_t i = 0; i < N; ++i) {
      if (i == j) continue;  // new_link[j, j] = 0 and carries no gradient
      const T Lij = L[i * N + j];
      const T wi = w[i];
      if (r0 == 0) {
        const T G = link_total_grad(gL, g_fwd, g_bwd, rw, b, h, i, j, Hw, N, R);
        dw -= G * Lij;
        dp += G * wi;
      }
      const T nl = mm::link_update(Lij, wi, wj, pj);
      ATTNFAST_UNROLL
      for (int q = 0; q < kReadChunk; ++q)
        if (r0 + q < R) acc[q] += g_fwd[((b * R + r0 + q) * Hw + h) * N + i] * nl;
    }
    ATTNFAST_UNROLL
    for (int q = 0; q < kReadChunk; ++q)
      if (r0 + q < R) wsb[(1 + r0 + q) * N + j] += acc[q];
  }
  d_prec[bh * N + j] = dp;
  d_ww[bh * N + j] = dw + wsb[j];
}

// d read_weights[b, r, j] = sum over write heads of the workspace's (row + column) parts.
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    link_sum_heads_kernel(const T* __restrict__ ws, T* __restrict__ d_rw, int64_t B, int64_t Hw,
                          int64_t N, int64_t R) {
  const int64_t total = B * R * N;
  for (int64_t k = int64_t(blockIdx.x) * kThreads + threadIdx.x; k < total;
       k += int64_t(gridDim.x) * kThreads) {
    const int64_t j = k % N, br = k / N, r = br % R, b = br / R;
    T s = 0;
    for (int64_t h = 0; h < Hw; ++h) s += ws[(b * Hw + h) * link_backward_ws(N, R) + (1 + r) * N + j];
    d_rw[k] = s;
  }
}

}  // namespace mem_detail

// ---- host launchers (raw pointers, contiguous row-major tensors, stream-ordered) ----------------

// Workspace sizes (elements of T / int32) the glue allocates for the backward launchers.
inline int64_t dnc_link_backward_ws(int64_t B, int64_t Hw, int64_t N, int64_t R) {
  return B * Hw * mem_detail::link_backward_ws(N, R);
}

template <typename T>
void dnc_link_read_forward(const T* link, const T* prec, const T* ww, const T* rw, T* new_link,
                           T* new_prec, T* fwd, T* bwd, int64_t B, int64_t Hw, int64_t N,
                           int64_t R, cudaStream_t stream) {
  using namespace mem_detail;
  if (B * Hw == 0 || N == 0) return;
  ATTNFAST_LAUNCH(link_cols_forward_kernel<T>, dim3(unsigned(ceil_div(N, kThreads)), unsigned(B * Hw)),
                  dim3(kThreads), 0, stream)(link, prec, ww, rw, new_link, new_prec, bwd, Hw, N, R);
  if (R > 0)
    ATTNFAST_LAUNCH(link_rows_forward_kernel<T>, dim3(unsigned(ceil_div(N, kWarps)), unsigned(B * Hw)),
                    dim3(kThreads), 0, stream)(link, prec, ww, rw, fwd, Hw, N, R);
}

// d_rw must not be read before this returns; ws: dnc_link_backward_ws(B, Hw, N, R) elements.
template <typename T>
void dnc_link_read_backward(const T* g_link, const T* g_prec, const T* g_fwd, const T* g_bwd,
                            const T* link, const T* prec, const T* ww, const T* rw, T* d_link,
                            T* d_prec, T* d_ww, T* d_rw, T* ws, int64_t B, int64_t Hw, int64_t N,
                            int64_t R, cudaStream_t stream) {
  using namespace mem_detail;
  if (N == 0 || B == 0) return;
  if (Hw > 0) {
    // rows first: they write the workspace's row parts that the column kernel adds to.
    ATTNFAST_LAUNCH(link_rows_backward_kernel<T>, dim3(unsigned(ceil_div(N, kWarps)), unsigned(B * Hw)),
                    dim3(kThreads), 0, stream)(g_link, g_fwd, g_bwd, link, prec, ww, rw, d_link,
                                               ws, Hw, N, R);
    ATTNFAST_LAUNCH(link_cols_backward_kernel<T>, dim3(unsigned(ceil_div(N, kThreads)), unsigned(B * Hw)),
                    dim3(kThreads), 0, stream)(g_link, g_prec, g_fwd, g_bwd, link, prec, ww, rw,
                                               d_prec, d_ww, ws, Hw, N, R);
  }
  if (R > 0)
    ATTNFAST_LAUNCH(link_sum_heads_kernel<T>, dim3(elementwise_blocks(B * R * N)), dim3(kThreads),
                    0, stream)(ws, d_rw, B, Hw, N, R);
}

}  // namespace cuda
}  // namespace attnfast
