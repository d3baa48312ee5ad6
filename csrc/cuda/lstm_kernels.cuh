// CUDA kernels of the LSTM recurrence (contract: csrc/schemas.h, table kLstm; glue: lstm_glue.h).
//
// The recurrence is sequential in t: step t needs all of h_{t-1} (forward) or all of dA_{t+1}
// (backward). Both directions run ONE LAUNCH PER TIME STEP on the caller's stream, so the launch
// boundary is the grid-wide barrier between steps (T launches; ~3-5 us each on a GPU, which
// dominates at small B * H). The next step would be a persistent kernel (cooperative launch,
// grid-wide sync between steps, w_hh slices kept in shared memory / registers across steps).
//
// Forward step (lstm_forward_step_kernel): a warp per hidden unit j, 8 units per 256-thread
// block. Lanes stride k over H, reading the four w_hh rows i_j, f_j, g_j, o_j (rows j, H + j,
// 2H + j, 3H + j) coalesced along k, each w value used for kFwdBatch batch rows at once; the
// 4 x kFwdBatch dot products are warp-reduced, then lane q does the gate math of batch row
// b0 + q: adds gates_x[t], the activations, c_t = f c_{t-1} + i g (fp32), h_t = o tanh(c_t),
// and writes h_t (T), c_t (fp32) and, when saved, the activated gates (T). No separate
// elementwise launch.
//
// Backward step (lstm_backward_step_kernel, t = T-1 .. 0): a block per 32 hidden units (lanes
// = columns j, w_hh read coalesced along j), the 8 warps splitting the 4H rows r of the column
// reduction dh_t[b, j] = grad_h[t, b, j] + sum_r dA_{t+1}[b, r] w_hh[r, j]; the 8 partials are
// added in warp order through shared memory (deterministic). Then the gate derivatives of the
// block's units give dA_t (fp32 workspace for step t-1, and grad_gates_x[t] in T) and the
// carried dc. A final launch of the same kernel (`grad_h0` given) turns dA_0 into grad_h0 and
// writes grad_c0.
//
// Numerics: every sum and the carried dc / dA are fp32 whatever T is; stored T values (h, the
// gates) are rounded once. The backward's dA_{t+1} is read from an fp32 workspace, never from
// the rounded grad_gates_x. Offsets that multiply sizes (T*B*4H can pass 2^31) are int64.
#pragma once
#include <cstdint>

#include "common/math.h"
#include "cuda/convert.cuh"
#include "cuda/hw.cuh"
#include "cuda/launch.cuh"

namespace attnfast {
namespace cuda {
namespace lstm_detail {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// Batch rows per pass: each pass re-reads the block's slice of w_hh (from L2 once B is large),
// so the passes are as wide as registers allow: 8 x 4 forward accumulators per lane, 16 backward
// accumulators per thread (+ 16 KiB of shared partials). ptxas (bench/cuda_resources.py): forward
// 64-67 registers, backward 80-122 (sm_90a / sm_80), no spills.
constexpr int kFwdBatch = 8;   // batch rows per pass of the forward warp
constexpr int kBwdCols = 32;   // hidden units per backward block (one per lane)
constexpr int kBwdBatch = 16;  // batch rows per pass of the backward block

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// One forward step. gx_t, gates_t: (B, 4H) slices of step t; h_prev (B, H) in T (h0 or
// h[t-1]); c_prev (B, H) fp32 (c0 converted, or c[t-1]); h_t (B, H) T; c_t (B, H) fp32;
// gates_t null unless the gates are saved. No block barrier: a warp past H returns whole.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    lstm_forward_step_kernel(const T* __restrict__ gx_t, const T* __restrict__ h_prev,
                             const float* __restrict__ c_prev, const T* __restrict__ w_hh,
                             T* __restrict__ h_t, float* __restrict__ c_t,
                             T* __restrict__ gates_t, int64_t B, int64_t H) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t j = int64_t(blockIdx.x) * kWarps + warp;
  if (j >= H) return;
  const int64_t R = 4 * H;
  for (int64_t b0 = 0; b0 < B; b0 += kFwdBatch) {
    float acc[kFwdBatch][4];
    ATTNFAST_UNROLL
    for (int q = 0; q < kFwdBatch; ++q)
      ATTNFAST_UNROLL
      for (int g = 0; g < 4; ++g) acc[q][g] = 0.f;
    for (int64_t k = lane; k < H; k += 32) {
      float w[4];
      ATTNFAST_UNROLL
      for (int g = 0; g < 4; ++g) w[g] = to_f32(w_hh[(g * H + j) * H + k]);
      ATTNFAST_UNROLL
      for (int q = 0; q < kFwdBatch; ++q) {
        if (b0 + q < B) {
          const float hv = to_f32(h_prev[(b0 + q) * H + k]);
          ATTNFAST_UNROLL
          for (int g = 0; g < 4; ++g) acc[q][g] += w[g] * hv;
        }
      }
    }
    // Every lane ends with every sum (xor butterfly); lane q keeps batch row b0 + q's four.
    float a[4] = {0.f, 0.f, 0.f, 0.f};
    ATTNFAST_UNROLL
    for (int q = 0; q < kFwdBatch; ++q) {
      ATTNFAST_UNROLL
      for (int g = 0; g < 4; ++g) {
        const float s = hw::warp_sum(acc[q][g]);
        if (lane == q) a[g] = s;
      }
    }
    const int64_t b = b0 + lane;
    if (lane < kFwdBatch && b < B) {
      const int64_t row = b * R;
      const float i = math::sigmoid_f32(a[0] + to_f32(gx_t[row + j]));
      const float f = math::sigmoid_f32(a[1] + to_f32(gx_t[row + H + j]));
      const float g = math::tanh_f32(a[2] + to_f32(gx_t[row + 2 * H + j]));
      const float o = math::sigmoid_f32(a[3] + to_f32(gx_t[row + 3 * H + j]));
      const float c = f * c_prev[b * H + j] + i * g;
      c_t[b * H + j] = c;
      h_t[b * H + j] = from_f32<T>(o * math::tanh_f32(c));
      if (gates_t != nullptr) {
        gates_t[row + j] = from_f32<T>(i);
        gates_t[row + H + j] = from_f32<T>(f);
        gates_t[row + 2 * H + j] = from_f32<T>(g);
        gates_t[row + 3 * H + j] = from_f32<T>(o);
      }
    }
  }
}

// One backward step (grad_h0 == nullptr) or the final launch (grad_h0 != nullptr).
// Step t: grad_h_t (B, H) T; dA_next (B, 4H) fp32 = dA_{t+1}, null at t = T-1; gates_t (B, 4H)
// T activated; c_t, c_prev (B, H) fp32; grad_c_t (B, H) fp32, the gradient of the output c_t,
// or null (zero); dc (B, H) fp32 in/out: on entry the gradient reaching c_t from step t+1 (0 at
// t = T-1), on exit the one reaching c_{t-1}; dA_t (B, 4H) fp32
// and grad_gx_t (B, 4H) T written. Final: dA_next = dA_0; grad_h0 = dA_0 w_hh, grad_c0 = dc.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    lstm_backward_step_kernel(const T* __restrict__ grad_h_t, const T* __restrict__ w_hh,
                              const float* __restrict__ dA_next, const T* __restrict__ gates_t,
                              const float* __restrict__ c_t, const float* __restrict__ c_prev,
                              const float* __restrict__ grad_c_t, float* __restrict__ dc,
                              float* __restrict__ dA_t,
                              T* __restrict__ grad_gx_t, T* __restrict__ grad_h0,
                              T* __restrict__ grad_c0, int64_t B, int64_t H) {
  __shared__ float red[kWarps][kBwdBatch][kBwdCols];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t j = int64_t(blockIdx.x) * kBwdCols + lane;
  const bool col_ok = j < H;
  const int64_t R = 4 * H;
  for (int64_t b0 = 0; b0 < B; b0 += kBwdBatch) {
    float acc[kBwdBatch];
    ATTNFAST_UNROLL
    for (int q = 0; q < kBwdBatch; ++q) acc[q] = 0.f;
    if (dA_next != nullptr && col_ok) {
      for (int64_t r = warp; r < R; r += kWarps) {
        const float w = to_f32(w_hh[r * H + j]);
        ATTNFAST_UNROLL
        for (int q = 0; q < kBwdBatch; ++q)
          if (b0 + q < B) acc[q] += dA_next[(b0 + q) * R + r] * w;
      }
    }
    ATTNFAST_UNROLL
    for (int q = 0; q < kBwdBatch; ++q) red[warp][q][lane] = acc[q];
    __syncthreads();
    // Warp w finishes batch rows b0 + q, q = w, w + 8, ...; lane = column.
    for (int q = warp; q < kBwdBatch; q += kWarps) {
      const int64_t b = b0 + q;
      if (b >= B || !col_ok) continue;
      float s = 0.f;
      ATTNFAST_UNROLL
      for (int w = 0; w < kWarps; ++w) s += red[w][q][lane];  // fixed order
      const int64_t hj = b * H + j, row = b * R;
      if (grad_h0 != nullptr) {
        grad_h0[hj] = from_f32<T>(s);
        grad_c0[hj] = from_f32<T>(dc[hj]);
      } else {
        const float dh = to_f32(grad_h_t[hj]) + s;
        const float i = to_f32(gates_t[row + j]);
        const float f = to_f32(gates_t[row + H + j]);
        const float g = to_f32(gates_t[row + 2 * H + j]);
        const float o = to_f32(gates_t[row + 3 * H + j]);
        const float tc = math::tanh_f32(c_t[hj]);
        // c_t = f c_{t-1} + i g, h_t = o tanh(c_t); sigmoid' = s (1 - s), tanh' = 1 - tanh^2.
        const float dc_out = grad_c_t == nullptr ? dc[hj] : dc[hj] + grad_c_t[hj];
        const float dcv = dc_out + dh * o * (1.f - tc * tc);
        const float da[4] = {dcv * g * i * (1.f - i), dcv * c_prev[hj] * f * (1.f - f),
                             dcv * i * (1.f - g * g), dh * tc * o * (1.f - o)};
        dc[hj] = dcv * f;
        ATTNFAST_UNROLL
        for (int g4 = 0; g4 < 4; ++g4) {
          dA_t[row + g4 * H + j] = da[g4];
          grad_gx_t[row + g4 * H + j] = from_f32<T>(da[g4]);
        }
      }
    }
    __syncthreads();  // red is rewritten by the next batch pass
  }
}

}  // namespace lstm_detail

template <typename T>
void lstm_forward_step(const T* gx_t, const T* h_prev, const float* c_prev, const T* w_hh,
                       T* h_t, float* c_t, T* gates_t, int64_t B, int64_t H,
                       cudaStream_t stream) {
  using namespace lstm_detail;
  const dim3 grid(static_cast<unsigned>(ceil_div(H, kWarps)));
  ATTNFAST_LAUNCH(lstm_forward_step_kernel<T>, grid, dim3(kThreads), 0, stream)(
      gx_t, h_prev, c_prev, w_hh, h_t, c_t, gates_t, B, H);
}

template <typename T>
void lstm_backward_step(const T* grad_h_t, const T* w_hh, const float* dA_next,
                        const T* gates_t, const float* c_t, const float* c_prev,
                        const float* grad_c_t, float* dc, float* dA_t, T* grad_gx_t,
                        T* grad_h0, T* grad_c0, int64_t B, int64_t H, cudaStream_t stream) {
  using namespace lstm_detail;
  const dim3 grid(static_cast<unsigned>(ceil_div(H, kBwdCols)));
  ATTNFAST_LAUNCH(lstm_backward_step_kernel<T>, grid, dim3(kThreads), 0, stream)(
      grad_h_t, w_hh, dA_next, gates_t, c_t, c_prev, grad_c_t, dc, dA_t, grad_gx_t, grad_h0,
      grad_c0, B, H);
}

}  // namespace cuda
}  // namespace attnfast
