// What every CUDA kernel of the memory ops (NTM / DNC; contract in csrc/schemas.h, "memory")
// shares: block shape, launch bounds, the deterministic block / warp reductions and grid sizing.
// The kernels themselves are grouped by concept, one header each, with their raw-pointer host
// launchers: memory_addressing_kernels.cuh (content, NTM location), memory_allocation_kernels.cuh
// (DNC allocation, usage), memory_links_kernels.cuh (temporal link + directional reads),
// memory_read_write_kernels.cuh (erase / add write, read), memory_window_kernels.cuh (Graves'
// window). No torch headers: csrc/cuda/memory_<concept>_glue.h is the ATen glue, shared by the
// CUDA ops (csrc/cuda/memory_<concept>.cu) and the SIMT harness ops (csrc/simt/memory_ops.cpp),
// which compiles these headers with g++ and runs the kernels thread by thread on the CPU.
//
// T is float or double; every accumulation is in T, like the CPU kernels and the reference.
// The per-element formulas are csrc/common/memory_math.h's (shared with the CPU kernels), in the
// CPU loops' operation order. Deterministic everywhere: no atomics; every sum has a fixed order
// (block trees, warp butterflies, or per-tile partials summed in index order by a later kernel).
// Sizes: B batch, N slots, W word, H / Hw / R heads.
//
// Rules kept for the harness: hardware instructions only through hw.cuh, launches only through
// ATTNFAST_LAUNCH, per-element math from csrc/common, 64-bit global offsets.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/macros.h"
#include "common/memory_math.h"
#include "cuda/hw.cuh"
#include "cuda/launch.cuh"
#include "cuda/limits.h"

namespace attnfast {
namespace cuda {
namespace mem_detail {

namespace mm = ::attnfast::memory;

constexpr int kThreads = 256;            // every memory kernel runs 256-thread blocks
constexpr int kWarps = kThreads / 32;
// __launch_bounds__' min blocks per SM (<= 128 registers at 256 threads). Without it ptxas 13.0
// picked 40-64 registers for some of these kernels and spilled; with it, none spills. (The
// allocation kernels, one block per batch element, take 1: up to 255 registers.)
constexpr int kMinBlocks = 2;
constexpr int kReadChunk = 4;            // read heads per pass of the link and read kernels

// ---- deterministic reductions ------------------------------------------------------------------

// Sum over the block (a fixed tree in shared memory). Every thread calls it; all get the total.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* red) {
  const int t = threadIdx.x;
  red[t] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (t < s) red[t] += red[t + s];
    __syncthreads();
  }
  const T r = red[0];
  __syncthreads();
  return r;
}

template <typename T>
__device__ __forceinline__ T block_max(T v, T* red) {
  const int t = threadIdx.x;
  red[t] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (t < s) red[t] = red[t + s] > red[t] ? red[t + s] : red[t];
    __syncthreads();
  }
  const T r = red[0];
  __syncthreads();
  return r;
}

// Sum over the warp; every lane gets the same total. float: the shuffle butterfly of hw.cuh
// (a + b == b + a, so all lanes end with identical bits). double: through the warp's 32 slots
// of `lane_buf` (shared), summed in lane order by every lane. All 32 lanes must call it.
__device__ __forceinline__ float warp_sum_t(float v, float* /*lane_buf*/) { return hw::warp_sum(v); }
__device__ __forceinline__ double warp_sum_t(double v, double* lane_buf) {
  const int lane = threadIdx.x & 31;
  lane_buf[lane] = v;
  __syncwarp();
  double s = 0;
  for (int l = 0; l < 32; ++l) s += lane_buf[l];
  __syncwarp();
  return s;
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Grid of a grid-stride elementwise kernel: enough blocks to fill a GPU, never more than needed.
inline unsigned elementwise_blocks(int64_t total) {
  const int64_t blocks = ceil_div(total, kThreads);
  return static_cast<unsigned>(blocks < 4096 ? blocks : 4096);
}

}  // namespace mem_detail
}  // namespace cuda
}  // namespace attnfast
