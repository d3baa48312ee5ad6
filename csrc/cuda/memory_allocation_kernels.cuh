// CUDA kernels of the DNC memory allocation ops: the allocation weights and the usage update
// (contract in csrc/schemas.h; shared pieces and conventions in memory_common.cuh).
//
// Designs:
//   allocation  a block per batch element, heads in sequence: a bitonic sort in shared memory
//             of the slot indices by the key (usage, index) -- a strict total order, so the
//             result is the stable ascending order (ties: lower index first) like the CPU's merge
//             sort -- then the exclusive cumulative product of the squashed usage in sorted order
//             as a chunked scan (a thread per contiguous chunk, chunk products scanned in order).
//             The backward recomputes the forward with the same device code (same roundings, so
//             the same permutations), then runs the heads in reverse; the cumulative product's
//             reverse recurrence G_j = ga_j (1 - s_j) + s_j G_{j+1} is an affine scan, done as
//             the same chunked scan over composed affine maps. N is capped at kMaxAllocSlots
//             (csrc/cuda/limits.h): all N keys live in shared memory.
//   write weights  the allocation kernels between elementwise ones: fwd: gates ga gw, the
//             allocation under them, the mix gw (ga a + (1 - ga) c) in place. bwd: gates, the
//             allocation recomputed, a block per (b, h) row for d content, d allocation and the
//             mix's gate gradients (block sums), the allocation backward, then its gate gradient
//             added to both gates'.
//   usage     fwd: elementwise over (b, i). bwd: elementwise over (b, i) (d usage, d read weights
//             through the exclusive product of the other read heads' factors -- no division by a
//             factor that may be 0), each head's contribution to d free into a (B, R, N)
//             workspace, then a block per (b, r) sums it.
#pragma once
#include <cstdint>

#include "cuda/memory_common.cuh"

namespace attnfast {
namespace cuda {
namespace mem_detail {

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

// ---- DNC usage ---------------------------------------------------------------------------------------

// keep = prod_h (1 - ww_h[i]) and psi = prod_r (1 - f_r rw_r[i]) at (b, i), heads in order.
template <typename T>
__device__ __forceinline__ void usage_factors(const T* ww, const T* free_gate, const T* rw,
                                              int64_t b, int64_t i, int64_t N, int64_t Hw,
                                              int64_t R, T& keep, T& psi) {
  keep = 1;
  for (int64_t h = 0; h < Hw; ++h) keep *= T(1) - ww[(b * Hw + h) * N + i];
  psi = 1;
  for (int64_t r = 0; r < R; ++r) psi *= T(1) - free_gate[b * R + r] * rw[(b * R + r) * N + i];
}

template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    usage_forward_kernel(const T* __restrict__ usage, const T* __restrict__ ww,
                         const T* __restrict__ free_gate, const T* __restrict__ rw,
                         T* __restrict__ out, int64_t B, int64_t N, int64_t Hw, int64_t R) {
  for (int64_t x = int64_t(blockIdx.x) * kThreads + threadIdx.x; x < B * N;
       x += int64_t(gridDim.x) * kThreads) {
    T keep, psi;
    usage_factors(ww, free_gate, rw, x / N, x % N, N, Hw, R, keep, psi);
    out[x] = mm::usage_update(usage[x], keep, psi);
  }
}

// out = u' psi: d usage = g psi (1 - written) (write weights carry no gradient: stop_gradient);
// d psi = g u'; d rw_r = -f_r excl_r, excl_r = d psi prod_{q != r} (1 - f_q rw_q) recomputed per
// head (O(R^2) per slot, R is a handful; no division by a factor that may be 0). Each head's
// d free contribution excl_r rw_r goes to ws (B, R, N), summed by usage_free_kernel.
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    usage_backward_kernel(const T* __restrict__ grad, const T* __restrict__ usage,
                          const T* __restrict__ ww, const T* __restrict__ free_gate,
                          const T* __restrict__ rw, T* __restrict__ d_usage, T* __restrict__ d_rw,
                          T* __restrict__ ws, int64_t B, int64_t N, int64_t Hw, int64_t R) {
  for (int64_t x = int64_t(blockIdx.x) * kThreads + threadIdx.x; x < B * N;
       x += int64_t(gridDim.x) * kThreads) {
    const int64_t b = x / N, i = x % N;
    T keep, psi;
    usage_factors(ww, free_gate, rw, b, i, N, Hw, R, keep, psi);
    const T written = T(1) - keep, u = usage[x], g = grad[x];
    d_usage[x] = g * psi * (T(1) - written);
    const T dpsi = g * (u + (T(1) - u) * written);
    for (int64_t r = 0; r < R; ++r) {
      T excl = dpsi;
      for (int64_t q = 0; q < R; ++q)
        if (q != r) excl *= T(1) - free_gate[b * R + q] * rw[(b * R + q) * N + i];
      const int64_t o = (b * R + r) * N + i;
      d_rw[o] = -free_gate[b * R + r] * excl;
      ws[o] = excl * rw[o];
    }
  }
}

// d free[b, r] = -sum_i ws[b, r, i]: a block per (b, r) (a fixed tree).
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    usage_free_kernel(const T* __restrict__ ws, T* __restrict__ d_free, int64_t N) {
  __shared__ T red[kThreads];
  const int64_t br = blockIdx.x;
  T part = 0;
  for (int64_t i = threadIdx.x; i < N; i += kThreads) part += ws[br * N + i];
  part = block_sum(part, red);
  if (threadIdx.x == 0) d_free[br] = -part;
}

// ---- write weights -----------------------------------------------------------------------------

// gates[k] = ga[k] gw[k] over the B Hw (batch, head) pairs.
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    write_gates_kernel(const T* __restrict__ ga, const T* __restrict__ gw, T* __restrict__ gates,
                       int64_t total) {
  for (int64_t k = int64_t(blockIdx.x) * kThreads + threadIdx.x; k < total;
       k += int64_t(gridDim.x) * kThreads)
    gates[k] = ga[k] * gw[k];
}

// ww = gw (ga a + (1 - ga) c), in place over the allocation, elementwise over (b, h, i).
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    write_mix_kernel(const T* __restrict__ ga, const T* __restrict__ gw,
                     const T* __restrict__ content, T* __restrict__ ww, int64_t total, int64_t N) {
  for (int64_t k = int64_t(blockIdx.x) * kThreads + threadIdx.x; k < total;
       k += int64_t(gridDim.x) * kThreads) {
    const int64_t bh = k / N;
    ww[k] = mm::write_weight(ga[bh], gw[bh], ww[k], content[k]);
  }
}

// A block per (b, h) row, as the CPU loop: dt = g gw; d a = dt ga; d c = dt (1 - ga);
// d ga = sum_i dt (a - c), d gw = sum_i g (ga a + (1 - ga) c) (block sums).
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    write_mix_backward_kernel(const T* __restrict__ grad, const T* __restrict__ ga,
                              const T* __restrict__ gw, const T* __restrict__ content,
                              const T* __restrict__ alloc, T* __restrict__ d_alloc,
                              T* __restrict__ d_content, T* __restrict__ d_ga,
                              T* __restrict__ d_gw, int64_t N) {
  __shared__ T red[kThreads];
  const int64_t k = blockIdx.x;
  const T a_gate = ga[k], w_gate = gw[k];
  T sa = 0, sw = 0;
  for (int64_t i = threadIdx.x; i < N; i += kThreads) {
    const int64_t o = k * N + i;
    const T dt = grad[o] * w_gate;
    sw += grad[o] * (a_gate * alloc[o] + (T(1) - a_gate) * content[o]);
    sa += dt * (alloc[o] - content[o]);
    d_alloc[o] = dt * a_gate;
    d_content[o] = dt * (T(1) - a_gate);
  }
  sa = block_sum(sa, red);
  sw = block_sum(sw, red);
  if (threadIdx.x == 0) {
    d_ga[k] = sa;
    d_gw[k] = sw;
  }
}

// The allocation's gate gradient dg (gate = ga gw): d ga += dg gw, d gw += dg ga.
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    write_gates_backward_kernel(const T* __restrict__ ga, const T* __restrict__ gw,
                                const T* __restrict__ dg, T* __restrict__ d_ga,
                                T* __restrict__ d_gw, int64_t total) {
  for (int64_t k = int64_t(blockIdx.x) * kThreads + threadIdx.x; k < total;
       k += int64_t(gridDim.x) * kThreads) {
    d_ga[k] += dg[k] * gw[k];
    d_gw[k] += dg[k] * ga[k];
  }
}

}  // namespace mem_detail

// ---- host launchers (raw pointers, contiguous row-major tensors, stream-ordered) ----------------

// Workspace sizes (elements of T / int32) the glue allocates for the backward launchers.
inline int64_t dnc_allocation_backward_ws(int64_t B, int64_t N, int64_t Hw) {
  return B * mem_detail::allocation_backward_ws(N, Hw);
}
inline int64_t dnc_allocation_backward_ws_int(int64_t B, int64_t N, int64_t Hw) {
  return B * mem_detail::allocation_backward_ws_int(N, Hw);
}
inline int64_t dnc_usage_backward_ws(int64_t B, int64_t R, int64_t N) { return B * R * N; }

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

// Workspace of dnc_write_weights_forward: the gates (B Hw).
inline int64_t dnc_write_weights_forward_ws(int64_t B, int64_t Hw) { return B * Hw; }
// Of dnc_write_weights_backward: gates, dg (B Hw each), A, d A (B Hw N each), then the allocation
// backward's; int32: the allocation backward's.
inline int64_t dnc_write_weights_backward_ws(int64_t B, int64_t N, int64_t Hw) {
  return 2 * B * Hw + 2 * B * Hw * N + dnc_allocation_backward_ws(B, N, Hw);
}

template <typename T>
void dnc_write_weights_forward(const T* usage, const T* content, const T* ga, const T* gw,
                               T* out, T* ws, int64_t B, int64_t N, int64_t Hw, T eps,
                               cudaStream_t stream) {
  using namespace mem_detail;
  if (B * Hw == 0 || N == 0) return;
  T* gates = ws;
  ATTNFAST_LAUNCH(write_gates_kernel<T>, dim3(elementwise_blocks(B * Hw)), dim3(kThreads), 0,
                  stream)(ga, gw, gates, B * Hw);
  dnc_allocation_forward(usage, gates, out, B, N, Hw, eps, stream);
  ATTNFAST_LAUNCH(write_mix_kernel<T>, dim3(elementwise_blocks(B * Hw * N)), dim3(kThreads), 0,
                  stream)(ga, gw, content, out, B * Hw * N, N);
}

// d_usage must come zeroed (no write head: nothing writes it); d_ga, d_gw are written.
template <typename T>
void dnc_write_weights_backward(const T* grad, const T* usage, const T* content, const T* ga,
                                const T* gw, T* d_usage, T* d_content, T* d_ga, T* d_gw, T* ws,
                                int32_t* ws_int, int64_t B, int64_t N, int64_t Hw, T eps,
                                cudaStream_t stream) {
  using namespace mem_detail;
  if (B * Hw == 0) return;
  T* gates = ws;
  T* dg = gates + B * Hw;
  T* A = dg + B * Hw;
  T* dA = A + B * Hw * N;
  T* alloc_ws = dA + B * Hw * N;
  ATTNFAST_LAUNCH(write_gates_kernel<T>, dim3(elementwise_blocks(B * Hw)), dim3(kThreads), 0,
                  stream)(ga, gw, gates, B * Hw);
  dnc_allocation_forward(usage, gates, A, B, N, Hw, eps, stream);
  ATTNFAST_LAUNCH(write_mix_backward_kernel<T>, dim3(unsigned(B * Hw)), dim3(kThreads), 0,
                  stream)(grad, ga, gw, content, A, dA, d_content, d_ga, d_gw, N);
  if (N == 0) return;  // no slots: the gate gradients are the (empty) sums above
  dnc_allocation_backward(dA, usage, gates, d_usage, dg, alloc_ws, ws_int, B, N, Hw, eps, stream);
  ATTNFAST_LAUNCH(write_gates_backward_kernel<T>, dim3(elementwise_blocks(B * Hw)),
                  dim3(kThreads), 0, stream)(ga, gw, dg, d_ga, d_gw, B * Hw);
}

template <typename T>
void dnc_usage_forward(const T* usage, const T* ww, const T* free_gate, const T* rw, T* out,
                       int64_t B, int64_t N, int64_t Hw, int64_t R, cudaStream_t stream) {
  using namespace mem_detail;
  if (B * N == 0) return;
  ATTNFAST_LAUNCH(usage_forward_kernel<T>, dim3(elementwise_blocks(B * N)), dim3(kThreads), 0,
                  stream)(usage, ww, free_gate, rw, out, B, N, Hw, R);
}

// ws: dnc_usage_backward_ws(B, R, N) elements.
template <typename T>
void dnc_usage_backward(const T* grad, const T* usage, const T* ww, const T* free_gate,
                        const T* rw, T* d_usage, T* d_free, T* d_rw, T* ws, int64_t B, int64_t N,
                        int64_t Hw, int64_t R, cudaStream_t stream) {
  using namespace mem_detail;
  if (B * N > 0)
    ATTNFAST_LAUNCH(usage_backward_kernel<T>, dim3(elementwise_blocks(B * N)), dim3(kThreads), 0,
                    stream)(grad, usage, ww, free_gate, rw, d_usage, d_rw, ws, B, N, Hw, R);
  if (B * R > 0)
    ATTNFAST_LAUNCH(usage_free_kernel<T>, dim3(unsigned(B * R)), dim3(kThreads), 0, stream)(
        ws, d_free, N);
}

}  // namespace cuda
}  // namespace attnfast
