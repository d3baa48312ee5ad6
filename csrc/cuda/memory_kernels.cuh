// CUDA kernels of the memory addressing ops (NTM / DNC; contract in csrc/schemas.cpp, "memory")
// and their raw-pointer host launchers. No torch headers: csrc/cuda/memory.cu is the ATen glue
// (through csrc/cuda/memory_glue.h, shared with the SIMT harness op csrc/simt/memory_ops.cpp,
// which compiles this header with g++ and runs the kernels thread by thread on the CPU).
//
// T is float or double; every accumulation is in T, like the CPU kernels and the reference.
// The per-element formulas are csrc/common/memory_math.h's (shared with the CPU kernels).
// Deterministic everywhere: no atomics; every sum has a fixed order (block trees, warp
// butterflies, or per-tile partials summed in index order by a later kernel).
//
// Designs (B batch, N slots, W word, H / Hw / R heads):
//   content   fwd: a block per (b, h); a warp per memory row (lanes over W) for k.M_i and |M_i|,
//             then the softmax over N in the block (block max, block sum).
//             bwd: (1) a block per (b, h): the scalar chain per row, grad_strengths (block sum),
//             grad_keys (column sums over rows: 8 row groups x 32 columns, partials summed in
//             order), and per-(h, i) scalars into a workspace; (2) a warp per (b, i) row:
//             grad_memory = (sum_h dD_hi |k_h|) / |M_i| M_i + sum_h d dot_hi k_h.
//   allocation  a block per batch element, heads in sequence: a bitonic sort in shared memory
//             of the slot indices by the key (usage, index) -- a strict total order, so the
//             result is the stable ascending order (ties: lower index first) like the CPU's merge
//             sort -- then the exclusive cumulative product of the squashed usage in sorted order
//             as a chunked scan (a thread per contiguous chunk, chunk products scanned in order).
//             The backward recomputes the forward with the same device code (same roundings, so
//             the same permutations), then runs the heads in reverse; the cumulative product's
//             reverse recurrence G_j = ga_j (1 - s_j) + s_j G_{j+1} is an affine scan, done as
//             the same chunked scan over composed affine maps.
//   write     fwd: elementwise over (b, i, c). bwd: a warp per (b, i) row (grad_memory,
//             grad_write_weights as reductions over W), and a block per (b, h, 32 columns)
//             for grad_erase / grad_add (reductions over N: 8 row groups, partials in order).
//   link      new_link is never read back: two kernels recompute it from link, w and p where
//             they need it. "rows": a warp per row i (lanes over j) for the row reductions
//             (forward[r, i]; backward: d w_i and the read-weight gradient at i); "cols": a
//             thread per column j walking all rows i (coalesced across the warp) for the column
//             reductions (backward[r, j] = sum_i new_link[i, j] rw[r, i], new_link itself and
//             new_precedence; backward: d w_j, d p_j, the read-weight gradient at j). Reads run in
//             chunks of kReadChunk read heads (accumulators in registers). The backward's read-
//             weight gradient is summed over the write heads by a last small kernel.
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
constexpr int kReadChunk = 4;            // read heads per pass of the link kernels
constexpr int64_t kMaxAllocSlots = 8192;  // the allocation sort keeps N keys in shared memory

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

// ---- content addressing --------------------------------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    content_forward_kernel(const T* __restrict__ memory, const T* __restrict__ keys,
                           const T* __restrict__ strengths, T* __restrict__ weights, int64_t N,
                           int64_t W, int64_t H, T eps) {
  __shared__ T red[kThreads];
  const int64_t bh = blockIdx.x, b = bh / H;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const T* mem = memory + b * N * W;
  const T* key = keys + bh * W;
  T* out = weights + bh * N;
  T kk = 0;
  for (int64_t c = threadIdx.x; c < W; c += kThreads) kk += key[c] * key[c];
  const T knorm = mm::norm_eps(block_sum(kk, red), eps);
  const T beta = strengths[bh];
  T mx = -INFINITY;
  for (int64_t i = warp; i < N; i += kWarps) {  // warp-uniform loop
    const T* row = mem + i * W;
    T dot = 0, sq = 0;
    for (int64_t c = lane; c < W; c += 32) {
      const T m = row[c];
      dot += key[c] * m;
      sq += m * m;
    }
    dot = warp_sum_t(dot, red + warp * 32);
    sq = warp_sum_t(sq, red + warp * 32);
    const T z = beta * mm::cosine(dot, knorm, mm::norm_eps(sq, eps), eps);
    if (lane == 0) out[i] = z;
    mx = z > mx ? z : mx;
  }
  mx = block_max(mx, red);  // (its barriers also publish out[] to the whole block)
  // softmax with the max subtracted: exp never overflows, the largest term is 1.
  T sum = 0;
  for (int64_t i = threadIdx.x; i < N; i += kThreads) {
    const T e = mm::exp_t(out[i] - mx);
    out[i] = e;
    sum += e;
  }
  const T inv = T(1) / block_sum(sum, red);
  for (int64_t i = threadIdx.x; i < N; i += kThreads) out[i] *= inv;
}

// Backward, part 1, a block per (b, h). With sim = dot / D, D = |k| |M_i| + eps:
// gs = w (g - g.w), d beta = sum gs sim, d sim = beta gs, d dot = d sim / D, dD = -d sim sim / D,
// |x|' = x / |x|. Writes grad_strengths, grad_keys and, per (b, h, i), d dot and dD |k| (the
// workspace `ws`, (B, H, 2, N)) for part 2.
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    content_backward_keys_kernel(const T* __restrict__ grad, const T* __restrict__ memory,
                                 const T* __restrict__ keys, const T* __restrict__ strengths,
                                 const T* __restrict__ weights, T* __restrict__ grad_keys,
                                 T* __restrict__ grad_strengths, T* __restrict__ ws, int64_t N,
                                 int64_t W, int64_t H, T eps) {
  __shared__ T red[kThreads];
  const int64_t bh = blockIdx.x, b = bh / H;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const T* mem = memory + b * N * W;
  const T* key = keys + bh * W;
  const T* w = weights + bh * N;
  const T* g = grad + bh * N;
  T* ddot = ws + bh * 2 * N;
  T* dD_k = ddot + N;
  T kk = 0, gw = 0;
  for (int64_t c = threadIdx.x; c < W; c += kThreads) kk += key[c] * key[c];
  for (int64_t i = threadIdx.x; i < N; i += kThreads) gw += g[i] * w[i];
  const T knorm = mm::norm_eps(block_sum(kk, red), eps);
  gw = block_sum(gw, red);
  const T beta = strengths[bh];
  T gbeta = 0, dD_mnorm = 0;  // accumulated by lane 0 of each warp
  for (int64_t i = warp; i < N; i += kWarps) {
    const T* row = mem + i * W;
    T dot = 0, sq = 0;
    for (int64_t c = lane; c < W; c += 32) {
      const T m = row[c];
      dot += key[c] * m;
      sq += m * m;
    }
    dot = warp_sum_t(dot, red + warp * 32);
    sq = warp_sum_t(sq, red + warp * 32);
    if (lane == 0) {
      const T mnorm = mm::norm_eps(sq, eps);
      const T D = knorm * mnorm + eps;
      const T sim = dot / D;
      const T gs = w[i] * (g[i] - gw);
      gbeta += gs * sim;
      const T gsim = beta * gs;
      const T gdot = gsim / D;
      const T gD = -gsim * sim / D;
      ddot[i] = gdot;
      dD_k[i] = gD * knorm;
      dD_mnorm += gD * mnorm;
    }
  }
  gbeta = block_sum(gbeta, red);  // (barriers: ddot[] is now visible to the block)
  dD_mnorm = block_sum(dD_mnorm, red);
  if (threadIdx.x == 0) grad_strengths[bh] = gbeta;
  // grad_keys[c] = sum_i d dot_i M_ic + (sum_i dD_i |M_i|) / |k| k_c: 32 columns at a time,
  // row group `warp` sums rows warp, warp + 8, ...; the 8 partials are added in order.
  const T kscale = dD_mnorm / knorm;
  T* gk = grad_keys + bh * W;
  for (int64_t c0 = 0; c0 < W; c0 += 32) {
    const int64_t c = c0 + lane;
    T part = 0;
    if (c < W)
      for (int64_t i = warp; i < N; i += kWarps) part += ddot[i] * mem[i * W + c];
    red[warp * 32 + lane] = part;
    __syncthreads();
    if (warp == 0 && c < W) {
      T s = 0;
      for (int q = 0; q < kWarps; ++q) s += red[q * 32 + lane];
      gk[c] = s + kscale * key[c];
    }
    __syncthreads();
  }
}

// Backward, part 2: a warp per (b, i) row of memory, lanes over W:
// grad_memory[i] = (sum_h dD_hi |k_h|) / |M_i| M_i + sum_h d dot_hi k_h.
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    content_backward_memory_kernel(const T* __restrict__ memory, const T* __restrict__ keys,
                                   const T* __restrict__ ws, T* __restrict__ grad_memory,
                                   int64_t N, int64_t W, int64_t H, T eps) {
  __shared__ T red[kThreads];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t b = blockIdx.y;
  const int64_t i = int64_t(blockIdx.x) * kWarps + warp;
  if (i >= N) return;  // warp-uniform; no block barrier below
  const T* row = memory + (b * N + i) * W;
  T sq = 0;
  for (int64_t c = lane; c < W; c += 32) sq += row[c] * row[c];
  const T mnorm = mm::norm_eps(warp_sum_t(sq, red + warp * 32), eps);
  T cm = 0;
  for (int64_t h = 0; h < H; ++h) cm += ws[((b * H + h) * 2 + 1) * N + i];
  const T mscale = cm / mnorm;
  T* gm = grad_memory + (b * N + i) * W;
  for (int64_t c = lane; c < W; c += 32) {
    T v = mscale * row[c];
    for (int64_t h = 0; h < H; ++h) v += ws[(b * H + h) * 2 * N + i] * keys[(b * H + h) * W + c];
    gm[c] = v;
  }
}

// ---- allocation ------------------------------------------------------------------------------------

// Dynamic shared memory of the allocation kernels: 2 kThreads T (scan partials) | P T (usage)
// | P int32 (slot indices), P = N rounded up to a power of two.
template <typename T>
inline int64_t allocation_smem_bytes(int64_t N) {
  int64_t P = 1;
  while (P < N) P <<= 1;
  return 2 * kThreads * int64_t(sizeof(T)) + P * int64_t(sizeof(T) + sizeof(int32_t));
}

// x sorts before y: smaller usage, or equal usage and lower index (a strict total order, so the
// bitonic network gives exactly the stable ascending order). Padding slots (>= N) go last.
template <typename T>
__device__ __forceinline__ bool sorts_before(int32_t x, int32_t y, const T* u, int32_t N) {
  if (x >= N) return false;
  if (y >= N) return true;
  const T ux = u[x], uy = u[y];
  return ux < uy || (ux == uy && x < y);
}

// idx[0..P) <- the slots 0..N-1 in stable ascending order of u (bitonic sort, P a power of 2).
template <typename T>
__device__ void sort_slots(const T* u, int32_t* idx, int32_t N, int32_t P) {
  for (int32_t i = threadIdx.x; i < P; i += kThreads) idx[i] = i;
  __syncthreads();
  for (int32_t k = 2; k <= P; k <<= 1) {
    for (int32_t j = k >> 1; j > 0; j >>= 1) {
      for (int32_t i = threadIdx.x; i < P; i += kThreads) {
        const int32_t l = i ^ j;
        if (l > i) {
          const int32_t a = idx[i], c = idx[l];
          const bool ascending = (i & k) == 0;
          if (ascending ? sorts_before(c, a, u, N) : sorts_before(a, c, u, N)) {
            idx[i] = c;
            idx[l] = a;
          }
        }
      }
      __syncthreads();
    }
  }
}

// One head: out[idx_j] = (1 - s_j) prod_{m<j} s_m, s = eps + (1 - eps) u, over the sorted order;
// prefix[j] = prod_{m<j} s_m when given. Thread t owns the sorted positions [t C, t C + C):
// its chunk product, then thread 0 scans the kThreads chunk products in order (exclusive), then
// each thread walks its chunk again from its prefix. The same code runs in the forward and in the
// backward's recomputation, so both see the same roundings.
template <typename T>
__device__ void allocate_head(const T* u, const int32_t* idx, T* part, T* out, T* prefix,
                              int32_t N, T eps) {
  const int32_t C = (N + kThreads - 1) / kThreads;
  const int32_t lo = threadIdx.x * C, hi = lo + C < N ? lo + C : N;
  T local = 1;
  for (int32_t j = lo; j < hi; ++j) local *= mm::squash_usage(u[idx[j]], eps);
  part[threadIdx.x] = local;
  __syncthreads();
  if (threadIdx.x == 0) {
    T run = 1;
    for (int t = 0; t < kThreads; ++t) {
      const T p = part[t];
      part[t] = run;
      run *= p;
    }
  }
  __syncthreads();
  T prod = part[threadIdx.x];
  for (int32_t j = lo; j < hi; ++j) {
    const int32_t i = idx[j];
    const T s = mm::squash_usage(u[i], eps);
    out[i] = (T(1) - s) * prod;
    if (prefix != nullptr) prefix[j] = prod;
    prod *= s;
  }
  __syncthreads();
}

template <typename T>
__device__ __forceinline__ void alloc_smem(unsigned char* raw, int32_t P, T*& part, T*& u,
                                           int32_t*& idx) {
  part = reinterpret_cast<T*>(raw);
  u = part + 2 * kThreads;
  idx = reinterpret_cast<int32_t*>(u + P);
}

// A block per batch element; heads in sequence, u <- u + (1 - u) g_h a_h in between.
template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
    allocation_forward_kernel(const T* __restrict__ usage, const T* __restrict__ gates,
                              T* __restrict__ alloc, int32_t N, int32_t P, int64_t Hw, T eps) {
  extern __shared__ __align__(16) unsigned char mem_smem_raw[];
  T *part, *u;
  int32_t* idx;
  alloc_smem(mem_smem_raw, P, part, u, idx);
  const int64_t b = blockIdx.x;
  for (int32_t i = threadIdx.x; i < N; i += kThreads) u[i] = usage[b * N + i];
  for (int64_t h = 0; h < Hw; ++h) {
    T* out = alloc + (b * Hw + h) * N;
    sort_slots(u, idx, N, P);  // (starts and ends with a barrier)
    allocate_head(u, idx, part, out, static_cast<T*>(nullptr), N, eps);
    if (h + 1 < Hw) {
      const T g = gates[b * Hw + h];
      for (int32_t i = threadIdx.x; i < N; i += kThreads)
        u[i] = mm::usage_after_alloc(u[i], g, out[i]);
      __syncthreads();
    }
  }
}

// Per batch element, the backward's global workspace: T: U (Hw + 1, N) the usage each head saw,
// A (Hw, N), Pfx (Hw, N) exclusive products in sorted order, du (N), ga (N); int32: perms (Hw, N).
ATTNFAST_HD inline int64_t allocation_backward_ws(int64_t N, int64_t Hw) { return (3 * Hw + 3) * N; }
ATTNFAST_HD inline int64_t allocation_backward_ws_int(int64_t N, int64_t Hw) { return Hw * N; }

// Reverse over heads. u_next = u + (1 - u) g a sends du_next to u, g and a; through one head's
// product (no division by s): ds_j = P_j (G_{j+1} - ga_j), G_j = ga_j (1 - s_j) + s_j G_{j+1},
// G_N = 0, du += ds (1 - eps).
template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
    allocation_backward_kernel(const T* __restrict__ grad, const T* __restrict__ usage,
                               const T* __restrict__ gates, T* __restrict__ grad_usage,
                               T* __restrict__ grad_gates, T* __restrict__ ws,
                               int32_t* __restrict__ ws_int, int32_t N, int32_t P, int64_t Hw,
                               T eps) {
  extern __shared__ __align__(16) unsigned char mem_smem_raw[];
  T *part, *u;
  int32_t* idx;
  alloc_smem(mem_smem_raw, P, part, u, idx);
  T* red = part;  // block_sum scratch (kThreads), used when no scan is in flight
  const int64_t b = blockIdx.x;
  T* U = ws + b * allocation_backward_ws(N, Hw);
  T* A = U + (Hw + 1) * N;
  T* Pfx = A + Hw * N;
  T* du = Pfx + Hw * N;
  T* ga = du + N;
  int32_t* perms = ws_int + b * allocation_backward_ws_int(N, Hw);

  // Recompute the forward: per head the usage, the permutation, the allocation, the prefixes.
  for (int32_t i = threadIdx.x; i < N; i += kThreads) {
    u[i] = usage[b * N + i];
    U[i] = u[i];
    du[i] = 0;
  }
  for (int64_t h = 0; h < Hw; ++h) {
    sort_slots(u, idx, N, P);
    for (int32_t j = threadIdx.x; j < N; j += kThreads) perms[h * N + j] = idx[j];
    allocate_head(u, idx, part, A + h * N, Pfx + h * N, N, eps);
    if (h + 1 < Hw) {
      const T g = gates[b * Hw + h];
      for (int32_t i = threadIdx.x; i < N; i += kThreads) {
        u[i] = mm::usage_after_alloc(u[i], g, A[h * N + i]);
        U[(h + 1) * N + i] = u[i];
      }
      __syncthreads();
    }
  }

  const int32_t C = (N + kThreads - 1) / kThreads;
  const int32_t lo = threadIdx.x * C, hi = lo + C < N ? lo + C : N;
  const T dsquash = T(1) - eps;
  for (int64_t h = Hw - 1; h >= 0; --h) {
    const T* uh = U + h * N;
    const T* ah = A + h * N;
    const T* gh = grad + (b * Hw + h) * N;
    const int32_t* ph = perms + h * N;
    const T g = gates[b * Hw + h];
    T dg = 0;
    for (int32_t i = threadIdx.x; i < N; i += kThreads) {
      const T free = T(1) - uh[i];
      dg += du[i] * free * ah[i];
      ga[i] = gh[i] + du[i] * free * g;
      du[i] = du[i] * (T(1) - g * ah[i]);
    }
    dg = block_sum(dg, red);  // (barriers: ga, du visible)
    if (threadIdx.x == 0) grad_gates[b * Hw + h] = dg;
    // The reverse recurrence as an affine scan: over its chunk (walked backwards) each thread
    // composes G_lo = alpha + beta G_hi; thread 0 chains the chunks right to left; then each
    // thread walks its chunk again from its incoming G.
    T alpha = 0, beta = 1;
    for (int32_t j = hi - 1; j >= lo; --j) {
      const T s = mm::squash_usage(uh[ph[j]], eps);
      alpha = ga[ph[j]] * (T(1) - s) + alpha * s;
      beta = beta * s;
    }
    part[threadIdx.x] = alpha;
    part[kThreads + threadIdx.x] = beta;
    __syncthreads();
    if (threadIdx.x == 0) {
      T run = 0;
      for (int t = kThreads - 1; t >= 0; --t) {
        const T a = part[t], bt = part[kThreads + t];
        part[t] = run;  // G entering chunk t from the right
        run = a + bt * run;
      }
    }
    __syncthreads();
    T G = part[threadIdx.x];
    const T* Ph = Pfx + h * N;
    for (int32_t j = hi - 1; j >= lo; --j) {
      const int32_t i = ph[j];
      const T s = mm::squash_usage(uh[i], eps);
      const T ds = Ph[j] * (G - ga[i]);
      G = ga[i] * (T(1) - s) + G * s;
      du[i] += ds * dsquash;
    }
    __syncthreads();
  }
  for (int32_t i = threadIdx.x; i < N; i += kThreads) grad_usage[b * N + i] = du[i];
}

// ---- erase / add write -------------------------------------------------------------------------------

// out[b, i, c] = m * prod_h (1 - w_hi e_hc) + sum_h w_hi v_hc, in the CPU kernel's order.
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    write_forward_kernel(const T* __restrict__ memory, const T* __restrict__ ww,
                         const T* __restrict__ erase, const T* __restrict__ add,
                         T* __restrict__ out, int64_t B, int64_t N, int64_t W, int64_t Hw) {
  const int64_t total = B * N * W;
  for (int64_t k = int64_t(blockIdx.x) * kThreads + threadIdx.x; k < total;
       k += int64_t(gridDim.x) * kThreads) {
    const int64_t c = k % W, bi = k / W, i = bi % N, b = bi / N;
    T keep = 1;
    for (int64_t h = 0; h < Hw; ++h) keep *= T(1) - ww[(b * Hw + h) * N + i] * erase[(b * Hw + h) * W + c];
    T o = memory[k] * keep;
    for (int64_t h = 0; h < Hw; ++h) o += ww[(b * Hw + h) * N + i] * add[(b * Hw + h) * W + c];
    out[k] = o;
  }
}

// prod_{h2 != h} (1 - w_h2 e_h2c) at (b, i, c): computed directly (Hw is small; dividing by
// 1 - w e would fail at w e = 1).
template <typename T>
__device__ __forceinline__ T keep_without(const T* ww, const T* erase, int64_t b, int64_t i,
                                          int64_t c, int64_t h, int64_t N, int64_t W, int64_t Hw) {
  T other = 1;
  for (int64_t h2 = 0; h2 < Hw; ++h2)
    if (h2 != h) other *= T(1) - ww[(b * Hw + h2) * N + i] * erase[(b * Hw + h2) * W + c];
  return other;
}

// A warp per (b, i): grad_memory row, grad_write_weights[b, :, i] (sums over W).
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    write_backward_rows_kernel(const T* __restrict__ grad, const T* __restrict__ memory,
                               const T* __restrict__ ww, const T* __restrict__ erase,
                               const T* __restrict__ add, T* __restrict__ grad_memory,
                               T* __restrict__ grad_ww, int64_t N, int64_t W, int64_t Hw) {
  __shared__ T red[kThreads];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t b = blockIdx.y;
  const int64_t i = int64_t(blockIdx.x) * kWarps + warp;
  if (i >= N) return;  // warp-uniform
  const T* m = memory + (b * N + i) * W;
  const T* g = grad + (b * N + i) * W;
  T* gm = grad_memory + (b * N + i) * W;
  for (int64_t c = lane; c < W; c += 32) {
    T keep = 1;
    for (int64_t h = 0; h < Hw; ++h) keep *= T(1) - ww[(b * Hw + h) * N + i] * erase[(b * Hw + h) * W + c];
    gm[c] = g[c] * keep;
  }
  for (int64_t h = 0; h < Hw; ++h) {
    const T* e = erase + (b * Hw + h) * W;
    const T* v = add + (b * Hw + h) * W;
    T dw = 0;
    for (int64_t c = lane; c < W; c += 32) {
      const T t = g[c] * m[c] * keep_without(ww, erase, b, i, c, h, N, W, Hw);  // dL/d(1 - w e_c)
      dw += g[c] * v[c] - t * e[c];
    }
    dw = warp_sum_t(dw, red + warp * 32);
    if (lane == 0) grad_ww[(b * Hw + h) * N + i] = dw;
  }
}

// A block per (b, h, 32 columns): grad_erase, grad_add = sums over the N rows (row group `warp`
// takes rows warp, warp + 8, ...; the 8 partials are added in order).
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    write_backward_cols_kernel(const T* __restrict__ grad, const T* __restrict__ memory,
                               const T* __restrict__ ww, const T* __restrict__ erase,
                               T* __restrict__ grad_erase, T* __restrict__ grad_add, int64_t N,
                               int64_t W, int64_t Hw) {
  __shared__ T red_e[kThreads];
  __shared__ T red_v[kThreads];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t bh = blockIdx.y, b = bh / Hw, h = bh % Hw;
  const int64_t c = int64_t(blockIdx.x) * 32 + lane;
  T ge = 0, gv = 0;
  if (c < W) {
    for (int64_t i = warp; i < N; i += kWarps) {
      const T w = ww[bh * N + i];
      const T g = grad[(b * N + i) * W + c];
      const T t = g * memory[(b * N + i) * W + c] * keep_without(ww, erase, b, i, c, h, N, W, Hw);
      ge -= t * w;
      gv += g * w;
    }
  }
  red_e[threadIdx.x] = ge;
  red_v[threadIdx.x] = gv;
  __syncthreads();
  if (warp == 0 && c < W) {
    T se = 0, sv = 0;
    for (int q = 0; q < kWarps; ++q) {
      se += red_e[q * 32 + lane];
      sv += red_v[q * 32 + lane];
    }
    grad_erase[bh * W + c] = se;
    grad_add[bh * W + c] = sv;
  }
}

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

// Grid of a grid-stride elementwise kernel: enough blocks to fill a GPU, never more than needed.
inline unsigned elementwise_blocks(int64_t total) {
  const int64_t blocks = ceil_div(total, kThreads);
  return static_cast<unsigned>(blocks < 4096 ? blocks : 4096);
}

}  // namespace mem_detail

// ---- host launchers (raw pointers, contiguous row-major tensors, stream-ordered) ----------------

// Workspace sizes (elements of T / int32) the glue allocates for the backward launchers.
inline int64_t memory_content_backward_ws(int64_t B, int64_t N, int64_t H) { return B * H * 2 * N; }
inline int64_t dnc_allocation_backward_ws(int64_t B, int64_t N, int64_t Hw) {
  return B * mem_detail::allocation_backward_ws(N, Hw);
}
inline int64_t dnc_allocation_backward_ws_int(int64_t B, int64_t N, int64_t Hw) {
  return B * mem_detail::allocation_backward_ws_int(N, Hw);
}
inline int64_t dnc_link_backward_ws(int64_t B, int64_t Hw, int64_t N, int64_t R) {
  return B * Hw * mem_detail::link_backward_ws(N, R);
}
// Largest N the allocation kernels take (all N usages and indices live in shared memory).
inline int64_t dnc_allocation_max_slots() { return mem_detail::kMaxAllocSlots; }

template <typename T>
void memory_content_forward(const T* memory, const T* keys, const T* strengths, T* weights,
                            int64_t B, int64_t N, int64_t W, int64_t H, T eps,
                            cudaStream_t stream) {
  using namespace mem_detail;
  if (B * H == 0) return;
  ATTNFAST_LAUNCH(content_forward_kernel<T>, dim3(unsigned(B * H)), dim3(kThreads), 0, stream)(
      memory, keys, strengths, weights, N, W, H, eps);
}

template <typename T>
void memory_content_backward(const T* grad, const T* memory, const T* keys, const T* strengths,
                             const T* weights, T* grad_memory, T* grad_keys, T* grad_strengths,
                             T* ws, int64_t B, int64_t N, int64_t W, int64_t H, T eps,
                             cudaStream_t stream) {
  using namespace mem_detail;
  if (B == 0 || N * W == 0) return;
  if (H > 0)
    ATTNFAST_LAUNCH(content_backward_keys_kernel<T>, dim3(unsigned(B * H)), dim3(kThreads), 0,
                    stream)(grad, memory, keys, strengths, weights, grad_keys, grad_strengths, ws,
                            N, W, H, eps);
  ATTNFAST_LAUNCH(content_backward_memory_kernel<T>,
                  dim3(unsigned(ceil_div(N, kWarps)), unsigned(B)), dim3(kThreads), 0, stream)(
      memory, keys, ws, grad_memory, N, W, H, eps);
}

template <typename T>
void dnc_allocation_forward(const T* usage, const T* gates, T* alloc, int64_t B, int64_t N,
                            int64_t Hw, T eps, cudaStream_t stream) {
  using namespace mem_detail;
  if (B * Hw == 0 || N == 0) return;
  int32_t P = 1;
  while (P < N) P <<= 1;
  const int smem = static_cast<int>(allocation_smem_bytes<T>(N));
  if (smem > 48 * 1024) allow_dynamic_smem(allocation_forward_kernel<T>, smem);
  ATTNFAST_LAUNCH(allocation_forward_kernel<T>, dim3(unsigned(B)), dim3(kThreads), smem, stream)(
      usage, gates, alloc, int32_t(N), P, Hw, eps);
}

template <typename T>
void dnc_allocation_backward(const T* grad, const T* usage, const T* gates, T* grad_usage,
                             T* grad_gates, T* ws, int32_t* ws_int, int64_t B, int64_t N,
                             int64_t Hw, T eps, cudaStream_t stream) {
  using namespace mem_detail;
  if (B == 0 || N == 0) return;
  int32_t P = 1;
  while (P < N) P <<= 1;
  const int smem = static_cast<int>(allocation_smem_bytes<T>(N));
  if (smem > 48 * 1024) allow_dynamic_smem(allocation_backward_kernel<T>, smem);
  ATTNFAST_LAUNCH(allocation_backward_kernel<T>, dim3(unsigned(B)), dim3(kThreads), smem, stream)(
      grad, usage, gates, grad_usage, grad_gates, ws, ws_int, int32_t(N), P, Hw, eps);
}

template <typename T>
void memory_write_forward(const T* memory, const T* ww, const T* erase, const T* add, T* out,
                          int64_t B, int64_t N, int64_t W, int64_t Hw, cudaStream_t stream) {
  using namespace mem_detail;
  const int64_t total = B * N * W;
  if (total == 0) return;
  ATTNFAST_LAUNCH(write_forward_kernel<T>, dim3(elementwise_blocks(total)), dim3(kThreads), 0,
                  stream)(memory, ww, erase, add, out, B, N, W, Hw);
}

template <typename T>
void memory_write_backward(const T* grad, const T* memory, const T* ww, const T* erase,
                           const T* add, T* grad_memory, T* grad_ww, T* grad_erase, T* grad_add,
                           int64_t B, int64_t N, int64_t W, int64_t Hw, cudaStream_t stream) {
  using namespace mem_detail;
  if (B == 0) return;
  if (N > 0)
    ATTNFAST_LAUNCH(write_backward_rows_kernel<T>, dim3(unsigned(ceil_div(N, kWarps)), unsigned(B)),
                    dim3(kThreads), 0, stream)(grad, memory, ww, erase, add, grad_memory, grad_ww,
                                               N, W, Hw);
  if (Hw > 0 && W > 0)
    ATTNFAST_LAUNCH(write_backward_cols_kernel<T>, dim3(unsigned(ceil_div(W, 32)), unsigned(B * Hw)),
                    dim3(kThreads), 0, stream)(grad, memory, ww, erase, grad_erase, grad_add, N, W,
                                               Hw);
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
