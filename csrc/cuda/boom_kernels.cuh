// CUDA kernels of the Boom layer (Merity's SHA-RNN feed-forward) and their raw-pointer host
// launchers. No torch headers: csrc/cuda/boom.cu is the ATen glue, and the SIMT host harness
// (csrc/simt/) compiles this header with g++ and runs the kernels thread by thread on the CPU.
//
// Forward:  z = x W^T + b (fp32 accumulation), h = dropout(act(z)),
//           out[n, c] = sum_{j < F/C} h[n, j C + c]   (fp32 sum, rounded to T once).
// A block owns a tile of `out` (rows n, columns c of one chunk) and loops over the chunks j:
// the chunk's GEMM tile is accumulated in fp32 registers, the epilogue (bias, activation,
// dropout, optional pre-activation store) is applied in registers and added into a second
// register accumulator, so the N x F activation never reaches global memory and the chunk sum
// is deterministic (no atomics).
//
// Backward: dz = grad_out[:, f % C] * dropout_mask * act'(preact), written in T for the two
// cuBLAS GEMMs done by the ATen glue, plus the bias gradient (column sums of dz in fp32),
// computed deterministically: per-(row block) partial sums into a workspace, then a second
// kernel adds the partials of each column in a fixed order. No float atomics anywhere.
//
// Rules kept for the harness: hardware instructions only through hw.cuh, launches only through
// ATTNFAST_LAUNCH, per-element math only from csrc/common, 64-bit global offsets.
#pragma once
#include <cstdint>
#include <type_traits>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common/activations.h"
#include "common/philox.h"
#include "cuda/convert.cuh"
#include "cuda/hw.cuh"
#include "cuda/launch.cuh"
#include "cuda/limits.h"

namespace attnfast {
namespace cuda {
namespace boom_detail {

// Element conversions (csrc/cuda/convert.cuh).
using ::attnfast::cuda::from_f32;
using ::attnfast::cuda::to_f32;

// Two adjacent elements, stored with one aligned access.
template <typename T>
struct alignas(2 * sizeof(T)) Pair {
  T v[2];
};

// Stores (v0, v1) to p[0], p[1] for the columns that are < limit; `paired` promises that p is
// 2-element aligned and both columns are valid together.
template <typename T>
__device__ __forceinline__ void store2(T* p, float v0, float v1, bool ok0, bool ok1, bool paired) {
  if (paired) {
    if (ok0) {
      Pair<T> pr;
      pr.v[0] = from_f32<T>(v0);
      pr.v[1] = from_f32<T>(v1);
      *reinterpret_cast<Pair<T>*>(p) = pr;
    }
  } else {
    if (ok0) p[0] = from_f32<T>(v0);
    if (ok1) p[1] = from_f32<T>(v1);
  }
}

// The dropout parameters, computed once on the host.
struct Dropout {
  uint64_t seed;
  uint32_t threshold;  // philox::keep_threshold(p)
  float scale;         // (float)(1.0 / (1.0 - p))
  int enabled;         // p > 0
};

// One element of the forward epilogue: z (bias already added) -> dropout(act(z)).
template <Activation A>
__device__ __forceinline__ float boom_act_dropout(float z, const Dropout& d, int64_t row,
                                                  int64_t f, int64_t F) {
  float h = act::forward<A>(z);
  if (d.enabled) {
    const bool keep =
        philox::keep(d.seed, static_cast<uint64_t>(row * F + f), d.threshold);
    h = keep ? h * d.scale : 0.f;
  }
  return h;
}

// The activation is a run-time argument of every kernel; each kernel switches on it once per
// epilogue (outside the K loop) into an epilogue templated on the activation, so the per-element
// math is branch-free while only one kernel per dtype and variant is instantiated (3 x 2 GEMM
// kernels instead of 3 x 2 x 4): the epilogue runs once per K-loop of 2 K flops per element.
#define ATTNFAST_BOOM_ACT_SWITCH(act_value, ...)                                    \
  switch (act_value) {                                                              \
    case static_cast<int>(Activation::gelu_sigmoid): {                              \
      constexpr Activation kAct = Activation::gelu_sigmoid;                         \
      __VA_ARGS__;                                                                  \
    } break;                                                                        \
    case static_cast<int>(Activation::gelu): {                                      \
      constexpr Activation kAct = Activation::gelu;                                 \
      __VA_ARGS__;                                                                  \
    } break;                                                                        \
    case static_cast<int>(Activation::gelu_tanh): {                                 \
      constexpr Activation kAct = Activation::gelu_tanh;                            \
      __VA_ARGS__;                                                                  \
    } break;                                                                        \
    default: {                                                                      \
      constexpr Activation kAct = Activation::relu;                                 \
      __VA_ARGS__;                                                                  \
    } break;                                                                        \
  }

// =============================================================================================
// Generic SIMT kernel: fp32 (exact fp32 FMA, no TF32) and any shape/alignment for bf16/fp16.
// 16 x 16 threads, each computes an 8 x 8 micro-tile with stride 16 (rows ty + 16 i, columns
// tx + 16 j): block tile 128 x 128, K step 16, tiles staged in shared memory as fp32, k-major
// with one float of padding (conflict-free transposing stores and broadcast/consecutive loads).
// =============================================================================================
namespace simt {
constexpr int kTM = 8, kTN = 8;
constexpr int kThreadsX = 16, kThreadsY = 16, kThreads = kThreadsX * kThreadsY;
constexpr int kBM = kThreadsY * kTM;  // 128
constexpr int kBN = kThreadsX * kTN;  // 128
constexpr int kBK = 16;
constexpr int kLdA = kBM + 1;
constexpr int kLdB = kBN + 1;
constexpr int kSmemBytes = kBK * (kLdA + kLdB) * static_cast<int>(sizeof(float));
}  // namespace simt

template <Activation A>
__device__ __forceinline__ void simt_epilogue(float (&acc)[simt::kTM][simt::kTN],
                                              float (&sum)[simt::kTM][simt::kTN],
                                              const float (&bias_v)[simt::kTN], int64_t row0,
                                              int64_t col0, int64_t j, int64_t N, int64_t F,
                                              int64_t C, const Dropout& d) {
#pragma unroll
  for (int i = 0; i < simt::kTM; ++i) {
    const int64_t r = row0 + i * simt::kThreadsY;
#pragma unroll
    for (int jj = 0; jj < simt::kTN; ++jj) {
      const int64_t c = col0 + jj * simt::kThreadsX;
      if (r < N && c < C) {
        sum[i][jj] += boom_act_dropout<A>(acc[i][jj] + bias_v[jj], d, r, j * C + c, F);
      }
      acc[i][jj] = 0.f;
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(simt::kThreads)
    boom_forward_simt_kernel(const T* __restrict__ x, const T* __restrict__ w,
                             const T* __restrict__ bias, T* __restrict__ out,
                             T* __restrict__ preact, int64_t N, int64_t K, int64_t F, int64_t C,
                             int act_id, Dropout d) {
  using namespace simt;
  extern __shared__ __align__(16) unsigned char boom_smem_raw[];
  float* sA = reinterpret_cast<float*>(boom_smem_raw);  // [kBK][kLdA]
  float* sB = sA + kBK * kLdA;                          // [kBK][kLdB]

  const int tid = static_cast<int>(threadIdx.x);
  const int tx = tid % kThreadsX, ty = tid / kThreadsX;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kBM;
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * kBN;
  const int64_t nchunks = F / C;
  const int64_t f_used = nchunks * C;
  const int64_t row0 = n0 + ty;
  const int64_t col0 = c0 + tx;

  float acc[kTM][kTN];
  float sum[kTM][kTN];
#pragma unroll
  for (int i = 0; i < kTM; ++i)
#pragma unroll
    for (int jj = 0; jj < kTN; ++jj) acc[i][jj] = sum[i][jj] = 0.f;

  // Loader mapping: element (row lr + 16 i, k lk) of each 128 x 16 tile.
  const int lk = tid % kBK, lr = tid / kBK;

  for (int64_t j = 0; j < nchunks; ++j) {
    // K == 0 still runs one (all-zero) step so that the epilogue sees z = bias.
    for (int64_t k0 = 0; k0 < K || k0 == 0; k0 += kBK) {
      const int64_t gk = k0 + lk;
#pragma unroll
      for (int i = 0; i < kBM / (kThreads / kBK); ++i) {
        const int r = lr + i * (kThreads / kBK);
        const int64_t gn = n0 + r;
        sA[lk * kLdA + r] = (gn < N && gk < K) ? to_f32<T>(x[gn * K + gk]) : 0.f;
        const int64_t gc = c0 + r;
        sB[lk * kLdB + r] = (gc < C && gk < K) ? to_f32<T>(w[(j * C + gc) * K + gk]) : 0.f;
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kBK; ++kk) {
        float a[kTM], b[kTN];
#pragma unroll
        for (int i = 0; i < kTM; ++i) a[i] = sA[kk * kLdA + ty + i * kThreadsY];
#pragma unroll
        for (int jj = 0; jj < kTN; ++jj) b[jj] = sB[kk * kLdB + tx + jj * kThreadsX];
#pragma unroll
        for (int i = 0; i < kTM; ++i)
#pragma unroll
          for (int jj = 0; jj < kTN; ++jj) acc[i][jj] = fmaf(a[i], b[jj], acc[i][jj]);
      }
      __syncthreads();
    }

    // Epilogue of chunk j.
    float bias_v[kTN];
#pragma unroll
    for (int jj = 0; jj < kTN; ++jj) {
      const int64_t c = col0 + jj * kThreadsX;
      bias_v[jj] = (bias != nullptr && c < C) ? to_f32<T>(bias[j * C + c]) : 0.f;
    }
    if (preact != nullptr) {
#pragma unroll
      for (int i = 0; i < kTM; ++i) {
        const int64_t r = row0 + i * kThreadsY;
#pragma unroll
        for (int jj = 0; jj < kTN; ++jj) {
          const int64_t c = col0 + jj * kThreadsX;
          if (r < N && c < C) preact[r * f_used + j * C + c] = from_f32<T>(acc[i][jj] + bias_v[jj]);
        }
      }
    }
    ATTNFAST_BOOM_ACT_SWITCH(act_id,
                             simt_epilogue<kAct>(acc, sum, bias_v, row0, col0, j, N, F, C, d))
  }

#pragma unroll
  for (int i = 0; i < kTM; ++i) {
    const int64_t r = row0 + i * kThreadsY;
#pragma unroll
    for (int jj = 0; jj < kTN; ++jj) {
      const int64_t c = col0 + jj * kThreadsX;
      if (r < N && c < C) out[r * C + c] = from_f32<T>(sum[i][jj]);
    }
  }
}

// =============================================================================================
// Tensor-core kernel (bf16 / fp16, K % 8 == 0, 16-byte aligned x and W).
// Block tile 128 (rows n) x 128 (columns c), K step 32, 8 warps as 2 (M) x 4 (N), warp tile
// 64 x 32 = 4 x 4 mma.m16n8k16 tiles. Operands go global -> shared with cp.async in a 4-stage
// pipeline (one flattened loop over (chunk, k-tile), so the pipeline stays full across chunk
// boundaries), and shared -> registers with ldmatrix.x4. Shared rows are padded from 32 to 40
// elements (80 bytes): the 8 row addresses of an ldmatrix phase then fall in 8 distinct 16-byte
// bank groups (5 r mod 8 is a permutation), so ldmatrix is conflict-free.
// =============================================================================================
namespace tc {
constexpr int kBM = 128, kBN = 128, kBK = 32, kStages = 4;
constexpr int kWarpsM = 2, kWarpsN = 4, kThreads = 32 * kWarpsM * kWarpsN;
constexpr int kWM = kBM / kWarpsM;  // 64
constexpr int kWN = kBN / kWarpsN;  // 32
constexpr int kMT = kWM / 16;       // 4 m16 tiles per warp
constexpr int kNT = kWN / 8;        // 4 n8 tiles per warp
constexpr int kLd = kBK + 8;        // padded row pitch, elements
constexpr int kAStage = kBM * kLd;  // elements per stage
constexpr int kBStage = kBN * kLd;
constexpr int kChunksPerRow = kBK / 8;  // 16-byte chunks per tile row
constexpr int kSmemBytes = kStages * (kAStage + kBStage) * 2;  // 81920
static_assert(kBM * kChunksPerRow % kThreads == 0, "A tile loader");
static_assert(kBN * kChunksPerRow % kThreads == 0, "B tile loader");
static_assert(kNT % 2 == 0, "B fragments are loaded two n8 tiles at a time");
}  // namespace tc

template <typename T>
__device__ __forceinline__ void tc_load_tile(T* sA, T* sB, const T* __restrict__ x,
                                             const T* __restrict__ w, int64_t n0, int64_t c0,
                                             int64_t j, int64_t k0, int64_t N, int64_t K,
                                             int64_t C, int tid) {
  using namespace tc;
#pragma unroll
  for (int i = 0; i < kBM * kChunksPerRow / kThreads; ++i) {
    const int id = tid + i * kThreads;
    const int r = id / kChunksPerRow;
    const int kc = (id % kChunksPerRow) * 8;
    const int64_t gn = n0 + r, gk = k0 + kc;
    const bool ok = gn < N && gk < K;
    hw::cp_async_16(sA + r * kLd + kc, ok ? x + gn * K + gk : x, ok);
  }
#pragma unroll
  for (int i = 0; i < kBN * kChunksPerRow / kThreads; ++i) {
    const int id = tid + i * kThreads;
    const int r = id / kChunksPerRow;
    const int kc = (id % kChunksPerRow) * 8;
    const int64_t gc = c0 + r, gk = k0 + kc;
    const bool ok = gc < C && gk < K;
    hw::cp_async_16(sB + r * kLd + kc, ok ? w + (j * C + gc) * K + gk : w, ok);
  }
}

// Fragment coordinates (PTX ISA m16n8k16 layout, see hw.cuh): with g = lane / 4, t = lane % 4,
// acc[mt][nt][2 h + e] holds C[row = wrow + 16 mt + g + 8 h][col = wcol + 8 nt + 2 t + e].
template <Activation A, typename T>
__device__ __forceinline__ void tc_epilogue(float (&acc)[tc::kMT][tc::kNT][4],
                                            float (&sum)[tc::kMT][tc::kNT][4],
                                            const T* __restrict__ bias, T* __restrict__ preact,
                                            int64_t wrow, int64_t wcol, int lane, int64_t j,
                                            int64_t N, int64_t F, int64_t C, const Dropout& d) {
  using namespace tc;
  const int g = lane >> 2, t = lane & 3;
  const int64_t f_used = (F / C) * C;
  const bool paired = (C % 2) == 0;  // then 2t-aligned column pairs are both valid or both not
#pragma unroll
  for (int nt = 0; nt < kNT; ++nt) {
    const int64_t c = wcol + nt * 8 + 2 * t;
    const bool ok0 = c < C, ok1 = c + 1 < C;
    const int64_t f = j * C + c;
    float b0 = 0.f, b1 = 0.f;
    if (bias != nullptr) {
      if (ok0) b0 = to_f32<T>(bias[f]);
      if (ok1) b1 = to_f32<T>(bias[f + 1]);
    }
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t r = wrow + mt * 16 + g + 8 * h;
        const float z0 = acc[mt][nt][2 * h] + b0;
        const float z1 = acc[mt][nt][2 * h + 1] + b1;
        acc[mt][nt][2 * h] = 0.f;
        acc[mt][nt][2 * h + 1] = 0.f;
        if (r < N) {
          if (preact != nullptr) store2<T>(preact + r * f_used + f, z0, z1, ok0, ok1, paired);
          if (ok0) sum[mt][nt][2 * h] += boom_act_dropout<A>(z0, d, r, f, F);
          if (ok1) sum[mt][nt][2 * h + 1] += boom_act_dropout<A>(z1, d, r, f + 1, F);
        }
      }
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(tc::kThreads, 1)
    boom_forward_tc_kernel(const T* __restrict__ x, const T* __restrict__ w,
                           const T* __restrict__ bias, T* __restrict__ out,
                           T* __restrict__ preact, int64_t N, int64_t K, int64_t F, int64_t C,
                           int act_id, Dropout d) {
  using namespace tc;
  extern __shared__ __align__(16) unsigned char boom_smem_raw[];
  T* sA = reinterpret_cast<T*>(boom_smem_raw);  // [kStages][kBM][kLd]
  T* sB = sA + kStages * kAStage;               // [kStages][kBN][kLd]

  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & 31, warp = tid >> 5;
  const int wm = warp / kWarpsN, wn = warp % kWarpsN;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kBM;
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * kBN;
  const int64_t nchunks = F / C;
  const int64_t kt_count = K > 0 ? (K + kBK - 1) / kBK : 1;  // K == 0: one all-zero step
  const int64_t total = nchunks * kt_count;

  float acc[kMT][kNT][4];
  float sum[kMT][kNT][4];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][nt][e] = sum[mt][nt][e] = 0.f;

  // (chunk, k-tile) of the next tile to load; advanced incrementally (no 64-bit divisions in
  // the main loop).
  int64_t ld_j = 0, ld_kt = 0;

  // Prologue: tiles 0 .. kStages-2 (one commit group each, possibly empty).
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < total) {
      tc_load_tile<T>(sA + s * kAStage, sB + s * kBStage, x, w, n0, c0, ld_j, ld_kt * kBK, N, K,
                      C, tid);
      if (++ld_kt == kt_count) {
        ld_kt = 0;
        ++ld_j;
      }
    }
    hw::cp_async_commit();
  }

  // ldmatrix.x4 row addresses (per lane, relative to a stage and a 16-wide k step):
  //   A: matrices (rows +0, k +0), (rows +8, k +0), (rows +0, k +8), (rows +8, k +8)
  //      -> a[0..3] of the m16n8k16 A fragment.
  //   B: matrices (n +0, k +0), (n +0, k +8), (n +8, k +0), (n +8, k +8)
  //      -> b[0], b[1] of n8 tile 2p, then b[0], b[1] of n8 tile 2p + 1.
  const int a_row = wm * kWM + (lane & 7) + ((lane >> 3) & 1) * 8;
  const int a_col = (lane >> 4) * 8;
  const int b_row = wn * kWN + (lane & 7) + (lane >> 4) * 8;
  const int b_col = ((lane >> 3) & 1) * 8;

  int rd_stage = 0, wr_stage = kStages - 1;  // stage read at `it`, stage loaded at `it`
  int64_t cur_j = 0, cur_kt = 0;               // (chunk, k-tile) of tile `it`
  for (int64_t it = 0; it < total; ++it) {
    hw::cp_async_wait<kStages - 2>();  // tile `it` has landed (for this thread's copies)
    __syncthreads();                   // ... for all threads; stage (it - 1) % S is free again
    if (it + kStages - 1 < total) {
      tc_load_tile<T>(sA + wr_stage * kAStage, sB + wr_stage * kBStage, x, w, n0, c0, ld_j,
                      ld_kt * kBK, N, K, C, tid);
      if (++ld_kt == kt_count) {
        ld_kt = 0;
        ++ld_j;
      }
    }
    hw::cp_async_commit();  // possibly empty: keeps the group count in step with `it`
    wr_stage = wr_stage + 1 == kStages ? 0 : wr_stage + 1;

    const T* a_st = sA + rd_stage * kAStage;
    const T* b_st = sB + rd_stage * kBStage;
    rd_stage = rd_stage + 1 == kStages ? 0 : rd_stage + 1;
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16) {
      uint32_t af[kMT][4];
      uint32_t bfr[kNT][2];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
        hw::ldmatrix_x4(af[mt][0], af[mt][1], af[mt][2], af[mt][3],
                        a_st + (a_row + mt * 16) * kLd + kk + a_col);
#pragma unroll
      for (int p = 0; p < kNT / 2; ++p)
        hw::ldmatrix_x4(bfr[2 * p][0], bfr[2 * p][1], bfr[2 * p + 1][0], bfr[2 * p + 1][1],
                        b_st + (b_row + p * 16) * kLd + kk + b_col);
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
          hw::mma_m16n8k16<T>(acc[mt][nt], af[mt], bfr[nt], acc[mt][nt]);
    }

    if (++cur_kt == kt_count) {  // last k-tile of chunk cur_j: fold it into `sum`
      ATTNFAST_BOOM_ACT_SWITCH(act_id, tc_epilogue<kAct, T>(acc, sum, bias, preact,
                                                            n0 + wm * kWM, c0 + wn * kWN, lane,
                                                            cur_j, N, F, C, d))
      cur_kt = 0;
      ++cur_j;
    }
  }
  hw::cp_async_wait<0>();

  const int g = lane >> 2, t = lane & 3;
  const bool paired = (C % 2) == 0;
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t r = n0 + wm * kWM + mt * 16 + g + 8 * h;
        const int64_t c = c0 + wn * kWN + nt * 8 + 2 * t;
        if (r < N)
          store2<T>(out + r * C + c, sum[mt][nt][2 * h], sum[mt][nt][2 * h + 1], c < C,
                    c + 1 < C, paired);
      }
}

// =============================================================================================
// Backward: dz and the bias-gradient partial sums.
// Thread per column f (coalesced along f), block (256 columns) x (a range of rows); each thread
// walks its rows in order, writes dz, and (if requested) stores its fp32 partial column sum to
// workspace[row_block][f]. boom_colsum_kernel then adds the partials in row-block order.
// =============================================================================================
namespace bwd {
constexpr int kThreads = 256;
constexpr int64_t kMinRowsPerBlock = 64;
constexpr int64_t kMaxRowBlocks = 64;
inline int64_t row_blocks(int64_t N) {
  int64_t rb = (N + kMinRowsPerBlock - 1) / kMinRowsPerBlock;
  if (rb > kMaxRowBlocks) rb = kMaxRowBlocks;
  return rb < 1 ? 1 : rb;
}
}  // namespace bwd

template <Activation A, typename T>
__device__ __forceinline__ float boom_dz_rows(const T* __restrict__ grad_out,
                                              const T* __restrict__ preact, T* __restrict__ dz,
                                              int64_t r_begin, int64_t r_end, int64_t f,
                                              int64_t c, int64_t F, int64_t f_used, int64_t C,
                                              const Dropout& d) {
  float colsum = 0.f;
  for (int64_t r = r_begin; r < r_end; ++r) {
    float g = to_f32<T>(grad_out[r * C + c]);
    if (d.enabled) {
      const bool keep = philox::keep(d.seed, static_cast<uint64_t>(r * F + f), d.threshold);
      g = keep ? g * d.scale : 0.f;
    }
    const float v = g * act::backward<A>(to_f32<T>(preact[r * f_used + f]));
    const T v_t = from_f32<T>(v);
    dz[r * f_used + f] = v_t;
    // The bias gradient sums, in fp32, the dz that the weight GEMMs see (rounded to T), as the
    // CPU backend does (at::sum(dz, 0, kFloat)).
    colsum += to_f32<T>(v_t);
  }
  return colsum;
}

template <typename T>
__global__ void __launch_bounds__(bwd::kThreads)
    boom_dz_kernel(const T* __restrict__ grad_out, const T* __restrict__ preact,
                   T* __restrict__ dz, float* __restrict__ partial, int64_t N, int64_t F,
                   int64_t C, int64_t rows_per_block, int act_id, Dropout d) {
  const int64_t f_used = (F / C) * C;
  const int64_t f = static_cast<int64_t>(blockIdx.x) * bwd::kThreads + threadIdx.x;
  if (f >= f_used) return;  // no block-level synchronisation in this kernel
  const int64_t c = f % C;
  const int64_t r_begin = static_cast<int64_t>(blockIdx.y) * rows_per_block;
  int64_t r_end = r_begin + rows_per_block;
  if (r_end > N) r_end = N;
  float colsum = 0.f;
  ATTNFAST_BOOM_ACT_SWITCH(act_id, colsum = boom_dz_rows<kAct, T>(grad_out, preact, dz, r_begin,
                                                                  r_end, f, c, F, f_used, C, d))
  if (partial != nullptr) partial[static_cast<int64_t>(blockIdx.y) * f_used + f] = colsum;
}

__global__ void __launch_bounds__(bwd::kThreads)
    boom_colsum_kernel(const float* __restrict__ partial, float* __restrict__ out,
                       int64_t f_used, int64_t row_blocks) {
  const int64_t f = static_cast<int64_t>(blockIdx.x) * bwd::kThreads + threadIdx.x;
  if (f >= f_used) return;
  float s = 0.f;
  for (int64_t rb = 0; rb < row_blocks; ++rb) s += partial[rb * f_used + f];
  out[f] = s;
}

// =============================================================================================
// Epilogue-only kernel, for the "GEMM then epilogue" strategy: a library GEMM (cuBLAS, through
// the ATen glue) has written z = x W^T for a tile of rows; this kernel adds the bias, applies
// activation and dropout, sums the chunks into `out` and, when asked, stores z + b back into z
// (the saved pre-activation). Thread per output column c (coalesced along c), grid-stride over
// rows; each thread walks the chunks j in order (a fixed-order fp32 sum, deterministic).
// =============================================================================================
namespace epi {
constexpr int kThreads = 128;
constexpr int64_t kMaxRowBlocks = kMaxGridYZ;  // grid y (csrc/cuda/limits.h); rows grid-stride past it
}  // namespace epi

// `Vec` consecutive columns per thread: 16-byte loads and stores when the shapes and pointers
// allow it (Vec = 16 / sizeof(T)), else one column per thread (Vec = 1). A thread walks the chunks
// j in order, so each output is a fixed-order fp32 sum (deterministic).
template <typename T, int Vec>
struct alignas(sizeof(T) * Vec) Pack {
  T v[Vec];
};

template <Activation A, typename T, int Vec>
__device__ __forceinline__ void boom_epilogue_cols(T* __restrict__ z, const T* __restrict__ bias,
                                                   T* __restrict__ out, int64_t row, int64_t c,
                                                   int64_t nchunks, int64_t F, int64_t C,
                                                   bool write_preact, const Dropout& d) {
  float acc[Vec];
#pragma unroll
  for (int e = 0; e < Vec; ++e) acc[e] = 0.f;
  for (int64_t j = 0; j < nchunks; ++j) {
    const int64_t f = j * C + c;
    Pack<T, Vec> zv = *reinterpret_cast<const Pack<T, Vec>*>(z + f);
    Pack<T, Vec> bv;
    if (bias != nullptr) bv = *reinterpret_cast<const Pack<T, Vec>*>(bias + f);
#pragma unroll
    for (int e = 0; e < Vec; ++e) {
      float v = to_f32<T>(zv.v[e]);
      if (bias != nullptr) v += to_f32<T>(bv.v[e]);
      if (write_preact) {
        zv.v[e] = from_f32<T>(v);
        v = to_f32<T>(zv.v[e]);  // the activation sees the stored (rounded) pre-activation
      }
      acc[e] += boom_act_dropout<A>(v, d, row, f + e, F);
    }
    if (write_preact) *reinterpret_cast<Pack<T, Vec>*>(z + f) = zv;
  }
  Pack<T, Vec> o;
#pragma unroll
  for (int e = 0; e < Vec; ++e) o.v[e] = from_f32<T>(acc[e]);
  *reinterpret_cast<Pack<T, Vec>*>(out + c) = o;
}

template <typename T, int Vec>
__global__ void __launch_bounds__(epi::kThreads)
    boom_epilogue_kernel(T* __restrict__ z, int64_t ldz, const T* __restrict__ bias,
                         T* __restrict__ out, int64_t rows, int64_t row0, int64_t F, int64_t C,
                         int write_preact, int act_id, Dropout d) {
  const int64_t c = (static_cast<int64_t>(blockIdx.x) * epi::kThreads + threadIdx.x) * Vec;
  if (c >= C) return;  // no block-level synchronisation in this kernel
  const int64_t nchunks = F / C;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    ATTNFAST_BOOM_ACT_SWITCH(act_id, boom_epilogue_cols<kAct, T, Vec>(
                                         z + r * ldz, bias, out + r * C, row0 + r, c, nchunks, F,
                                         C, write_preact != 0, d))
  }
}

inline Dropout make_dropout(double p, uint64_t seed) {
  Dropout d;
  d.seed = seed;
  d.enabled = p > 0.0 ? 1 : 0;
  d.threshold = d.enabled ? philox::keep_threshold(p) : 0u;
  d.scale = d.enabled ? static_cast<float>(1.0 / (1.0 - p)) : 1.0f;
  return d;
}

template <typename T>
inline bool tc_eligible(const T* x, const T* w, int64_t K) {
  return K % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(w) % 16 == 0;
}
template <>
inline bool tc_eligible<float>(const float*, const float*, int64_t) {
  return false;  // fp32 stays exact fp32 (no TF32)
}

}  // namespace boom_detail

// ---- host launchers -------------------------------------------------------------------------
// boom_forward: x (N, K), w (F, K), bias (F,) or nullptr, out (N, C), preact (N, (F/C) C) or
// nullptr; all contiguous. Requires 1 <= C <= F, 0 <= dropout_p < 1. Launch errors are left for
// the caller to check (cudaGetLastError).
template <typename T>
void boom_forward(const T* x, const T* w, const T* bias, T* out, T* preact, int64_t N, int64_t K,
                  int64_t F, int64_t C, Activation act, double dropout_p, uint64_t seed,
                  cudaStream_t stream) {
  using namespace boom_detail;
  if (N <= 0 || C <= 0 || F < C) return;
  const Dropout d = make_dropout(dropout_p, seed);
  const int act_id = static_cast<int>(act);
  if constexpr (!std::is_same<T, float>::value) {
    if (tc_eligible<T>(x, w, K)) {
      const dim3 grid(static_cast<unsigned>((N + tc::kBM - 1) / tc::kBM),
                      static_cast<unsigned>((C + tc::kBN - 1) / tc::kBN));
      allow_dynamic_smem(boom_forward_tc_kernel<T>, tc::kSmemBytes);
      ATTNFAST_LAUNCH(boom_forward_tc_kernel<T>, grid, dim3(tc::kThreads), tc::kSmemBytes,
                      stream)(x, w, bias, out, preact, N, K, F, C, act_id, d);
      return;
    }
  }
  {
    const dim3 grid(static_cast<unsigned>((N + simt::kBM - 1) / simt::kBM),
                    static_cast<unsigned>((C + simt::kBN - 1) / simt::kBN));
    ATTNFAST_LAUNCH(boom_forward_simt_kernel<T>, grid, dim3(simt::kThreads), simt::kSmemBytes,
                    stream)(x, w, bias, out, preact, N, K, F, C, act_id, d);
  }
}

// boom_epilogue: the epilogue of the "GEMM then epilogue" strategy on a tile of `rows` rows
// whose first row is global row `row0` (for the dropout counter). z (rows, ldz >= F_used) holds
// x W^T from a library GEMM; out points at the tile's first output row (rows, C). With
// write_preact, z + b (rounded to T) is stored back into z.
template <typename T>
void boom_epilogue(T* z, int64_t ldz, const T* bias, T* out, int64_t rows, int64_t row0,
                   int64_t F, int64_t C, bool write_preact, Activation act, double dropout_p,
                   uint64_t seed, cudaStream_t stream) {
  using namespace boom_detail;
  if (rows <= 0 || C <= 0 || F < C) return;
  const Dropout d = make_dropout(dropout_p, seed);
  const int64_t row_blocks = rows < epi::kMaxRowBlocks ? rows : epi::kMaxRowBlocks;
  constexpr int kVec = 16 / static_cast<int>(sizeof(T));
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  const bool vec = C % kVec == 0 && ldz % kVec == 0 && aligned(z) && aligned(out) &&
                   (bias == nullptr || aligned(bias));
  const int64_t cols_per_block = static_cast<int64_t>(epi::kThreads) * (vec ? kVec : 1);
  const dim3 grid(static_cast<unsigned>((C + cols_per_block - 1) / cols_per_block),
                  static_cast<unsigned>(row_blocks));
  const int wp = write_preact ? 1 : 0, act_id = static_cast<int>(act);
  if (vec) {
    ATTNFAST_LAUNCH((boom_epilogue_kernel<T, kVec>), grid, dim3(epi::kThreads), 0, stream)(
        z, ldz, bias, out, rows, row0, F, C, wp, act_id, d);
  } else {
    ATTNFAST_LAUNCH((boom_epilogue_kernel<T, 1>), grid, dim3(epi::kThreads), 0, stream)(
        z, ldz, bias, out, rows, row0, F, C, wp, act_id, d);
  }
}

// Floats of workspace boom_backward_dz needs when grad_bias_f32 is not null (0 otherwise).
inline int64_t boom_backward_dz_workspace_floats(int64_t N, int64_t F, int64_t C) {
  if (N <= 0 || C <= 0 || F < C) return 0;
  return boom_detail::bwd::row_blocks(N) * ((F / C) * C);
}

// boom_backward_dz: grad_out (N, C), preact (N, F_used), dz (N, F_used) with F_used = (F/C) C;
// grad_bias_f32 (F_used floats) or nullptr; workspace as sized above (unused when
// grad_bias_f32 is null). F is the full weight row count (the dropout index is n F + f).
template <typename T>
void boom_backward_dz(const T* grad_out, const T* preact, T* dz, float* grad_bias_f32,
                      float* workspace, int64_t N, int64_t F, int64_t C, Activation act,
                      double dropout_p, uint64_t seed, cudaStream_t stream) {
  using namespace boom_detail;
  if (C <= 0 || F < C) return;
  const int64_t f_used = (F / C) * C;
  const int64_t col_blocks = (f_used + bwd::kThreads - 1) / bwd::kThreads;
  if (N <= 0) {
    return;  // dz is empty; the caller zero-fills grad_bias
  }
  const Dropout d = make_dropout(dropout_p, seed);
  const int64_t rb = bwd::row_blocks(N);
  const int64_t rows_per_block = (N + rb - 1) / rb;
  const bool want_bias = grad_bias_f32 != nullptr;
  ATTNFAST_LAUNCH(boom_dz_kernel<T>, dim3(static_cast<unsigned>(col_blocks),
                                          static_cast<unsigned>(rb)),
                  dim3(bwd::kThreads), 0, stream)(grad_out, preact, dz,
                                                  want_bias ? workspace : nullptr, N, F, C,
                                                  rows_per_block, static_cast<int>(act), d);
  if (want_bias) {
    ATTNFAST_LAUNCH(boom_colsum_kernel, dim3(static_cast<unsigned>(col_blocks)),
                    dim3(bwd::kThreads), 0, stream)(workspace, grad_bias_f32, f_used, rb);
  }
}

}  // namespace cuda
}  // namespace attnfast

#undef ATTNFAST_BOOM_ACT_SWITCH
