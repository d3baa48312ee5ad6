// CUDA kernels of the second group of memory ops (contract in csrc/schemas.cpp, "memory, second
// group": NTM location addressing, Graves' window, DNC usage, memory read) and their raw-pointer
// host launchers. No torch headers: csrc/cuda/memory_extra.cu is the ATen glue (through
// csrc/cuda/memory_extra_glue.h, shared with the SIMT harness ops csrc/simt/memory_extra_ops.cpp,
// which compiles this header with g++ and runs the kernels thread by thread on the CPU).
//
// T is float or double; every accumulation is in T, like the CPU loops
// (csrc/cpu/kernels/memory_extra_impl.h) and the reference. Per-element formulas come from
// csrc/common/memory_math.h, in the CPU loops' operation order; the block / warp reductions
// (deterministic: fixed trees, no atomics) are those of csrc/cuda/memory_kernels.cuh.
//
// Designs (B batch, N slots, W word, H / R heads, S shift window, T steps, K Gaussians, U chars,
// C alphabet):
//   ntm_location  fwd: a block per (b, h); a thread per slot i computes the interpolated, shifted
//             weight (S taps, wrapping index walked without a modulo) and its sharpened power,
//             then a block sum normalises. bwd: a block per (b, h) with a (2, N) workspace row
//             (shifted weights, then p -> d shifted weights in place): block sums for the
//             normaliser, g.w, d gamma, one per shift tap for d shift, and d gate; d content and
//             d prev per slot (the adjoint shift = the opposite taps).
//   graves    fwd: (1) a thread per (b, k) walks t: kappa = running sum of exp(kappa_hat) +
//             kappa0 (the reference's cumsum order); (2) a block per (b, t): a thread per char
//             u for phi, then a thread per alphabet column c for window = phi chars (u in order).
//             bwd: (1) kappa again, into a workspace; (2) a block per (b, t): per char the
//             unmasked phi and d phi = g_phi + chars g_window into the workspace, then a warp per
//             Gaussian k sums over chars (lanes) for d alpha_hat, d beta_hat and d kappa_t;
//             (3) a thread per (b, u, c) sums over t for d chars, a thread per (b, u) for d mask;
//             (4) a thread per (b, k) walks t backwards: d kappa_hat = exp(kappa_hat) times the
//             suffix sum of d kappa, d kappa0 the total.
//   usage     fwd: elementwise over (b, i). bwd: elementwise over (b, i) (d usage, d read weights
//             through the exclusive product of the other read heads' factors -- no division by a
//             factor that may be 0), each head's contribution to d free into a (B, R, N)
//             workspace, then a block per (b, r) sums it.
//   read      fwd: a block per (b, 32 columns): row group `warp` sums rows warp, warp + 8, ... for
//             kReadChunk read heads at a time, the 8 partials added in order. bwd: a warp per
//             (b, i) memory row: d memory row (lanes over W, heads in order) and d read weights
//             (a dot over W per head).
//
// Rules kept for the harness: hardware instructions only through hw.cuh, launches only through
// ATTNFAST_LAUNCH, per-element math from csrc/common, 64-bit global offsets.
#pragma once
#include <cstdint>

#include "common/macros.h"
#include "common/memory_math.h"
#include "cuda/launch.cuh"
#include "cuda/memory_kernels.cuh"  // kThreads, block_sum, warp_sum_t, ceil_div, elementwise_blocks

namespace attnfast {
namespace cuda {
namespace mem_extra_detail {

namespace mm = ::attnfast::memory;
using mem_detail::block_sum;
using mem_detail::ceil_div;
using mem_detail::elementwise_blocks;
using mem_detail::kMinBlocks;
using mem_detail::kReadChunk;
using mem_detail::kThreads;
using mem_detail::kWarps;
using mem_detail::warp_sum_t;

// ---- NTM location addressing -----------------------------------------------------------------------

// ws[i] = sum_k shift[k] wg[(i - (k - S/2)) mod N], taps in order k = 0..S-1 (the CPU loop's
// order per slot); wg = g c + (1 - g) w_prev recomputed at each tap. The source index starts at
// (i + S/2) mod N and steps back by one per tap (one modulo per slot, not per tap).
template <typename T>
__device__ __forceinline__ T ntm_shifted_at(const T* c, const T* wp, const T* s, T g, int64_t i,
                                            int64_t N, int64_t S) {
  int64_t j = mm::wrap_index(i + S / 2, N);
  T acc = 0;
  for (int64_t k = 0; k < S; ++k) {
    acc += s[k] * mm::ntm_interpolate(g, c[j], wp[j]);
    j = j == 0 ? N - 1 : j - 1;
  }
  return acc;
}

// weights = p / sum p, p = sharpen(ws, gamma). A block per (b, h); out[] holds p until scaled
// (each thread rescales only the slots it wrote). sum p = 0 (all-zero inputs) gives NaN, as the
// reference does.
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    ntm_location_forward_kernel(const T* __restrict__ content, const T* __restrict__ gate,
                                const T* __restrict__ prev, const T* __restrict__ shift,
                                const T* __restrict__ gamma, T* __restrict__ weights, int64_t N,
                                int64_t S) {
  __shared__ T red[kThreads];
  const int64_t bh = blockIdx.x;
  const T* c = content + bh * N;
  const T* wp = prev + bh * N;
  const T* s = shift + bh * S;
  T* out = weights + bh * N;
  const T g = gate[bh], gam = gamma[bh];
  T part = 0;
  for (int64_t i = threadIdx.x; i < N; i += kThreads) {
    const T p = mm::ntm_sharpen(ntm_shifted_at(c, wp, s, g, i, N, S), gam);
    out[i] = p;
    part += p;
  }
  const T inv = T(1) / block_sum(part, red);
  for (int64_t i = threadIdx.x; i < N; i += kThreads) out[i] *= inv;
}

// out = p / P: dp_i = (g_i - sum_j g_j out_j) / P; dws_i = dp_i gamma ws_i^(gamma-1) (ws_i > 0,
// else 0); dgamma = sum_{ws_i > 0} dp_i p_i log ws_i; d shift_k = sum_i dws_i wg[(i - o_k) mod N]
// (o_k = (k - S/2) mod N); dwg_j = sum_k s_k dws[(j + k - S/2) mod N]; d content = g dwg,
// d prev = (1 - g) dwg, d gate = sum dwg (c - w_prev). ws: (B, H, 2, N).
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    ntm_location_backward_kernel(const T* __restrict__ grad, const T* __restrict__ content,
                                 const T* __restrict__ gate, const T* __restrict__ prev,
                                 const T* __restrict__ shift, const T* __restrict__ gamma,
                                 T* __restrict__ d_content, T* __restrict__ d_gate,
                                 T* __restrict__ d_prev, T* __restrict__ d_shift,
                                 T* __restrict__ d_gamma, T* __restrict__ ws, int64_t N,
                                 int64_t S) {
  __shared__ T red[kThreads];
  const int64_t bh = blockIdx.x;
  const T* c = content + bh * N;
  const T* wp = prev + bh * N;
  const T* s = shift + bh * S;
  const T* go = grad + bh * N;
  T* wsh = ws + bh * 2 * N;  // shifted weights
  T* dws = wsh + N;          // p, then d shifted weights (each slot by the thread that owns it)
  const T g = gate[bh], gam = gamma[bh];
  T part = 0;
  for (int64_t i = threadIdx.x; i < N; i += kThreads) {
    const T w = ntm_shifted_at(c, wp, s, g, i, N, S);
    const T p = mm::ntm_sharpen(w, gam);
    wsh[i] = w;
    dws[i] = p;
    part += p;
  }
  const T inv = T(1) / block_sum(part, red);
  T gdot = 0;
  for (int64_t i = threadIdx.x; i < N; i += kThreads) gdot += go[i] * (dws[i] * inv);
  gdot = block_sum(gdot, red);
  T dgam = 0;
  for (int64_t i = threadIdx.x; i < N; i += kThreads) {
    const T dp = (go[i] - gdot) * inv;
    const T w = wsh[i];
    if (w > T(0)) {
      dgam += dp * dws[i] * mm::log_t(w);
      dws[i] = dp * gam * mm::pow_t(w, gam - T(1));
    } else {
      dws[i] = 0;
    }
  }
  dgam = block_sum(dgam, red);  // (its barriers also publish dws[] to the whole block)
  if (threadIdx.x == 0) d_gamma[bh] = dgam;
  const int64_t half = S / 2;
  for (int64_t k = 0; k < S; ++k) {  // block-uniform loop: one block sum per tap
    const int64_t o = mm::wrap_index(k - half, N);
    T ds = 0;
    for (int64_t i = threadIdx.x; i < N; i += kThreads) {
      const int64_t j = i >= o ? i - o : i - o + N;
      ds += dws[i] * mm::ntm_interpolate(g, c[j], wp[j]);
    }
    ds = block_sum(ds, red);
    if (threadIdx.x == 0) d_shift[bh * S + k] = ds;
  }
  T dg = 0;
  for (int64_t j = threadIdx.x; j < N; j += kThreads) {
    int64_t src = mm::wrap_index(j - half, N);
    T dwg = 0;
    for (int64_t k = 0; k < S; ++k) {
      dwg += s[k] * dws[src];
      src = src + 1 == N ? 0 : src + 1;
    }
    d_content[bh * N + j] = g * dwg;
    d_prev[bh * N + j] = (T(1) - g) * dwg;
    dg += dwg * (c[j] - wp[j]);
  }
  dg = block_sum(dg, red);
  if (threadIdx.x == 0) d_gate[bh] = dg;
}

// ---- Graves' window --------------------------------------------------------------------------------

// kappa[b, t, k] = (sum_{t' <= t} exp(kappa_hat[b, t', k])) + kappa0[b, k]: the running sum first,
// as the reference's cumsum, then the offset. A thread per (b, k), t in order.
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    graves_kappa_kernel(const T* __restrict__ kappa_hat, const T* __restrict__ kappa0,
                        T* __restrict__ kappa, int64_t B, int64_t Tn, int64_t K) {
  for (int64_t bk = int64_t(blockIdx.x) * kThreads + threadIdx.x; bk < B * K;
       bk += int64_t(gridDim.x) * kThreads) {
    const int64_t b = bk / K, k = bk % K;
    const T k0 = kappa0[bk];
    T run = 0;
    for (int64_t t = 0; t < Tn; ++t) {
      const int64_t o = (b * Tn + t) * K + k;
      run += mm::exp_t(kappa_hat[o]);
      kappa[o] = run + k0;
    }
  }
}

// Unmasked phi at char u of one (b, t): sum_k alpha_k exp(-beta_k (kappa_k - (u + 1))^2), k in order.
template <typename T>
__device__ __forceinline__ T graves_raw_at(const T* ah, const T* bh, const T* kap, int64_t K,
                                           int64_t u) {
  T raw = 0;
  for (int64_t k = 0; k < K; ++k) raw += mm::graves_term(mm::exp_t(ah[k]), -mm::exp_t(bh[k]), kap[k], u);
  return raw;
}

// A block per (b, t): phi[b, t, :] (a thread per char), then window[b, t, :] = phi chars (a thread
// per alphabet column, chars in order). mask: (B, U) or nullptr.
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    graves_forward_kernel(const T* __restrict__ alpha_hat, const T* __restrict__ beta_hat,
                          const T* __restrict__ kappa, const T* __restrict__ chars,
                          const T* __restrict__ mask, T* __restrict__ window, T* __restrict__ phi,
                          int64_t Tn, int64_t K, int64_t U, int64_t C) {
  const int64_t bt = blockIdx.x, b = bt / Tn;
  const T* ah = alpha_hat + bt * K;
  const T* bh = beta_hat + bt * K;
  const T* kap = kappa + bt * K;
  T* ph = phi + bt * U;
  for (int64_t u = threadIdx.x; u < U; u += kThreads) {
    const T raw = graves_raw_at(ah, bh, kap, K, u);
    ph[u] = mask != nullptr ? raw * mask[b * U + u] : raw;
  }
  __syncthreads();  // phi[b, t, :] (global) complete and visible to the block
  const T* ch = chars + b * U * C;
  for (int64_t c = threadIdx.x; c < C; c += kThreads) {
    T acc = 0;
    for (int64_t u = 0; u < U; ++u) acc += ph[u] * ch[u * C + c];
    window[bt * C + c] = acc;
  }
}

// Backward, part 2, a block per (b, t). With draw = dphi mask (dphi = g_phi + chars g_window),
// e = exp(-beta d^2), d = kappa - u: d alpha_hat = alpha sum_u draw e,
// d beta_hat = -beta alpha sum_u draw e d^2, d kappa_t = g_kappa - 2 beta alpha sum_u draw e d
// (into d_kappa_hat; part 4 turns it into d kappa_hat). Writes the unmasked phi and dphi of the
// step into the workspace rows raw_ws / dphi_ws (B, T, U) for part 3.
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    graves_backward_steps_kernel(const T* __restrict__ g_window, const T* __restrict__ g_kappa,
                                 const T* __restrict__ g_phi, const T* __restrict__ alpha_hat,
                                 const T* __restrict__ beta_hat, const T* __restrict__ kappa,
                                 const T* __restrict__ chars, const T* __restrict__ mask,
                                 T* __restrict__ d_alpha_hat, T* __restrict__ d_beta_hat,
                                 T* __restrict__ d_kappa, T* __restrict__ raw_ws,
                                 T* __restrict__ dphi_ws, int64_t Tn, int64_t K, int64_t U,
                                 int64_t C) {
  __shared__ T red[kThreads];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t bt = blockIdx.x, b = bt / Tn;
  const T* ah = alpha_hat + bt * K;
  const T* bh = beta_hat + bt * K;
  const T* kap = kappa + bt * K;
  const T* gw = g_window + bt * C;
  const T* ch = chars + b * U * C;
  const T* mk = mask != nullptr ? mask + b * U : nullptr;
  T* raw = raw_ws + bt * U;
  T* dphi = dphi_ws + bt * U;
  for (int64_t u = threadIdx.x; u < U; u += kThreads) {
    raw[u] = graves_raw_at(ah, bh, kap, K, u);
    T dot = 0;
    for (int64_t c = 0; c < C; ++c) dot += ch[u * C + c] * gw[c];
    dphi[u] = g_phi[bt * U + u] + dot;
  }
  __syncthreads();  // dphi[] (global) visible to every warp
  for (int64_t k = warp; k < K; k += kWarps) {  // warp-uniform loop
    const T alpha = mm::exp_t(ah[k]), beta = mm::exp_t(bh[k]), kp = kap[k];
    T sa = 0, sb = 0, sk = 0;
    for (int64_t u = lane; u < U; u += 32) {
      const T d = kp - T(u + 1);
      const T e = mm::exp_t(-beta * d * d);
      const T de = (mk != nullptr ? dphi[u] * mk[u] : dphi[u]) * e;
      sa += de;
      sb += de * d * d;
      sk += de * d;
    }
    sa = warp_sum_t(sa, red + warp * 32);
    sb = warp_sum_t(sb, red + warp * 32);
    sk = warp_sum_t(sk, red + warp * 32);
    if (lane == 0) {
      d_alpha_hat[bt * K + k] = alpha * sa;
      d_beta_hat[bt * K + k] = -beta * alpha * sb;
      d_kappa[bt * K + k] = g_kappa[bt * K + k] - T(2) * beta * alpha * sk;
    }
  }
}

// Backward, part 3: d chars[b, u, c] = sum_t phi[b, t, u] g_window[b, t, c] (a thread per
// (b, u, c), t in order) and, with a mask, d mask[b, u] = sum_t dphi[b, t, u] raw[b, t, u].
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    graves_backward_chars_kernel(const T* __restrict__ g_window, const T* __restrict__ mask,
                                 const T* __restrict__ raw_ws, const T* __restrict__ dphi_ws,
                                 T* __restrict__ d_chars, T* __restrict__ d_mask, int64_t B,
                                 int64_t Tn, int64_t U, int64_t C) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t x = int64_t(blockIdx.x) * kThreads + threadIdx.x; x < B * U * C; x += stride) {
    const int64_t c = x % C, bu = x / C, u = bu % U, b = bu / U;
    const T m = mask != nullptr ? mask[bu] : T(1);
    T acc = 0;
    for (int64_t t = 0; t < Tn; ++t) {
      const int64_t bt = b * Tn + t;
      const T pu = mask != nullptr ? raw_ws[bt * U + u] * m : raw_ws[bt * U + u];
      acc += pu * g_window[bt * C + c];
    }
    d_chars[x] = acc;
  }
  if (d_mask == nullptr) return;
  for (int64_t bu = int64_t(blockIdx.x) * kThreads + threadIdx.x; bu < B * U; bu += stride) {
    const int64_t u = bu % U, b = bu / U;
    T acc = 0;
    for (int64_t t = 0; t < Tn; ++t) {
      const int64_t o = (b * Tn + t) * U + u;
      acc += dphi_ws[o] * raw_ws[o];
    }
    d_mask[bu] = acc;
  }
}

// Backward, part 4: kappa_t = kappa0 + sum_{t' <= t} exp(kappa_hat_t'), so
// d kappa_hat_t = exp(kappa_hat_t) sum_{t' >= t} d kappa_t' and d kappa0 = sum_t d kappa_t.
// d_kappa holds d kappa_t on entry and d kappa_hat on exit. A thread per (b, k).
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    graves_kappa_backward_kernel(const T* __restrict__ kappa_hat, T* __restrict__ d_kappa,
                                 T* __restrict__ d_kappa0, int64_t B, int64_t Tn, int64_t K) {
  for (int64_t bk = int64_t(blockIdx.x) * kThreads + threadIdx.x; bk < B * K;
       bk += int64_t(gridDim.x) * kThreads) {
    const int64_t b = bk / K, k = bk % K;
    T acc = 0;
    for (int64_t t = Tn - 1; t >= 0; --t) {
      const int64_t o = (b * Tn + t) * K + k;
      acc += d_kappa[o];
      d_kappa[o] = acc * mm::exp_t(kappa_hat[o]);
    }
    d_kappa0[bk] = acc;
  }
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

// ---- memory read ------------------------------------------------------------------------------------

// words[b, r, c] = sum_i rw[b, r, i] M[b, i, c]: a block per (b, 32 columns); row group `warp`
// sums rows warp, warp + 8, ... for kReadChunk heads at a time; the 8 partials are added in order.
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    read_forward_kernel(const T* __restrict__ memory, const T* __restrict__ rw,
                        T* __restrict__ words, int64_t N, int64_t W, int64_t R) {
  __shared__ T red[kReadChunk * kThreads];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t chunks = (W + 31) / 32;  // column chunks per batch element
  const int64_t b = blockIdx.x / chunks;
  const int64_t c = int64_t(blockIdx.x % chunks) * 32 + lane;
  const T* mem = memory + b * N * W;
  for (int64_t r0 = 0; r0 < R; r0 += kReadChunk) {  // block-uniform
    T acc[kReadChunk];
    ATTNFAST_UNROLL
    for (int q = 0; q < kReadChunk; ++q) acc[q] = 0;
    if (c < W) {
      for (int64_t i = warp; i < N; i += kWarps) {
        const T m = mem[i * W + c];
        ATTNFAST_UNROLL
        for (int q = 0; q < kReadChunk; ++q)
          if (r0 + q < R) acc[q] += rw[(b * R + r0 + q) * N + i] * m;
      }
    }
    ATTNFAST_UNROLL
    for (int q = 0; q < kReadChunk; ++q) red[q * kThreads + threadIdx.x] = acc[q];
    __syncthreads();
    if (warp == 0 && c < W) {
      ATTNFAST_UNROLL
      for (int q = 0; q < kReadChunk; ++q) {
        if (r0 + q < R) {
          T s = 0;
          for (int p = 0; p < kWarps; ++p) s += red[q * kThreads + p * 32 + lane];
          words[(b * R + r0 + q) * W + c] = s;
        }
      }
    }
    __syncthreads();
  }
}

// A warp per (b, i) memory row: d M[b, i, :] = sum_r rw[b, r, i] g[b, r, :] (heads in order) and
// d rw[b, r, i] = g[b, r, :] . M[b, i, :] (a warp sum per head).
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    read_backward_kernel(const T* __restrict__ grad, const T* __restrict__ memory,
                         const T* __restrict__ rw, T* __restrict__ d_memory, T* __restrict__ d_rw,
                         int64_t B, int64_t N, int64_t W, int64_t R) {
  __shared__ T red[kThreads];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t row = int64_t(blockIdx.x) * kWarps + warp;
  if (row >= B * N) return;  // warp-uniform; no block barrier below
  const int64_t b = row / N, i = row % N;
  const T* m = memory + row * W;
  T* dm = d_memory + row * W;
  for (int64_t c = lane; c < W; c += 32) {
    T acc = 0;
    for (int64_t r = 0; r < R; ++r) acc += rw[(b * R + r) * N + i] * grad[(b * R + r) * W + c];
    dm[c] = acc;
  }
  for (int64_t r = 0; r < R; ++r) {
    const T* g = grad + (b * R + r) * W;
    T part = 0;
    for (int64_t c = lane; c < W; c += 32) part += g[c] * m[c];
    part = warp_sum_t(part, red + warp * 32);
    if (lane == 0) d_rw[(b * R + r) * N + i] = part;
  }
}

}  // namespace mem_extra_detail

// ---- host launchers (raw pointers, contiguous row-major tensors, stream-ordered) ----------------

// Workspace sizes (elements of T) the glue allocates for the backward launchers.
inline int64_t ntm_location_backward_ws(int64_t B, int64_t H, int64_t N) { return B * H * 2 * N; }
inline int64_t graves_window_backward_ws(int64_t B, int64_t Tn, int64_t K, int64_t U) {
  return B * Tn * (K + 2 * U);
}
inline int64_t dnc_usage_backward_ws(int64_t B, int64_t R, int64_t N) { return B * R * N; }

template <typename T>
void ntm_location_forward(const T* content, const T* gate, const T* prev, const T* shift,
                          const T* gamma, T* weights, int64_t B, int64_t H, int64_t N, int64_t S,
                          cudaStream_t stream) {
  using namespace mem_extra_detail;
  if (B * H == 0 || N == 0) return;
  ATTNFAST_LAUNCH(ntm_location_forward_kernel<T>, dim3(unsigned(B * H)), dim3(kThreads), 0,
                  stream)(content, gate, prev, shift, gamma, weights, N, S);
}

// ws: ntm_location_backward_ws(B, H, N) elements.
template <typename T>
void ntm_location_backward(const T* grad, const T* content, const T* gate, const T* prev,
                           const T* shift, const T* gamma, T* d_content, T* d_gate, T* d_prev,
                           T* d_shift, T* d_gamma, T* ws, int64_t B, int64_t H, int64_t N,
                           int64_t S, cudaStream_t stream) {
  using namespace mem_extra_detail;
  if (B * H == 0 || N == 0) return;
  ATTNFAST_LAUNCH(ntm_location_backward_kernel<T>, dim3(unsigned(B * H)), dim3(kThreads), 0,
                  stream)(grad, content, gate, prev, shift, gamma, d_content, d_gate, d_prev,
                          d_shift, d_gamma, ws, N, S);
}

// mask: (B, U) or nullptr.
template <typename T>
void graves_window_forward(const T* alpha_hat, const T* beta_hat, const T* kappa_hat,
                           const T* kappa0, const T* chars, const T* mask, T* window, T* kappa,
                           T* phi, int64_t B, int64_t Tn, int64_t K, int64_t U, int64_t C,
                           cudaStream_t stream) {
  using namespace mem_extra_detail;
  if (B * Tn == 0) return;
  if (K > 0)
    ATTNFAST_LAUNCH(graves_kappa_kernel<T>, dim3(elementwise_blocks(B * K)), dim3(kThreads), 0,
                    stream)(kappa_hat, kappa0, kappa, B, Tn, K);
  ATTNFAST_LAUNCH(graves_forward_kernel<T>, dim3(unsigned(B * Tn)), dim3(kThreads), 0, stream)(
      alpha_hat, beta_hat, kappa, chars, mask, window, phi, Tn, K, U, C);
}

// ws: graves_window_backward_ws(B, T, K, U) elements; mask and d_mask: both or neither.
template <typename T>
void graves_window_backward(const T* g_window, const T* g_kappa, const T* g_phi,
                            const T* alpha_hat, const T* beta_hat, const T* kappa_hat,
                            const T* kappa0, const T* chars, const T* mask, T* d_alpha_hat,
                            T* d_beta_hat, T* d_kappa_hat, T* d_kappa0, T* d_chars, T* d_mask,
                            T* ws, int64_t B, int64_t Tn, int64_t K, int64_t U, int64_t C,
                            cudaStream_t stream) {
  using namespace mem_extra_detail;
  if (B == 0) return;
  T* kappa = ws;                  // (B, T, K)
  T* raw = kappa + B * Tn * K;    // (B, T, U) unmasked phi
  T* dphi = raw + B * Tn * U;     // (B, T, U) gradient on the masked phi
  if (Tn > 0) {
    if (K > 0)
      ATTNFAST_LAUNCH(graves_kappa_kernel<T>, dim3(elementwise_blocks(B * K)), dim3(kThreads), 0,
                      stream)(kappa_hat, kappa0, kappa, B, Tn, K);
    ATTNFAST_LAUNCH(graves_backward_steps_kernel<T>, dim3(unsigned(B * Tn)), dim3(kThreads), 0,
                    stream)(g_window, g_kappa, g_phi, alpha_hat, beta_hat, kappa, chars, mask,
                            d_alpha_hat, d_beta_hat, d_kappa_hat, raw, dphi, Tn, K, U, C);
  }
  if (U > 0)
    ATTNFAST_LAUNCH(graves_backward_chars_kernel<T>, dim3(elementwise_blocks(B * U * (C > 0 ? C : 1))),
                    dim3(kThreads), 0, stream)(g_window, mask, raw, dphi, d_chars, d_mask, B, Tn,
                                               U, C);
  if (K > 0)
    ATTNFAST_LAUNCH(graves_kappa_backward_kernel<T>, dim3(elementwise_blocks(B * K)),
                    dim3(kThreads), 0, stream)(kappa_hat, d_kappa_hat, d_kappa0, B, Tn, K);
}

template <typename T>
void dnc_usage_forward(const T* usage, const T* ww, const T* free_gate, const T* rw, T* out,
                       int64_t B, int64_t N, int64_t Hw, int64_t R, cudaStream_t stream) {
  using namespace mem_extra_detail;
  if (B * N == 0) return;
  ATTNFAST_LAUNCH(usage_forward_kernel<T>, dim3(elementwise_blocks(B * N)), dim3(kThreads), 0,
                  stream)(usage, ww, free_gate, rw, out, B, N, Hw, R);
}

// ws: dnc_usage_backward_ws(B, R, N) elements.
template <typename T>
void dnc_usage_backward(const T* grad, const T* usage, const T* ww, const T* free_gate,
                        const T* rw, T* d_usage, T* d_free, T* d_rw, T* ws, int64_t B, int64_t N,
                        int64_t Hw, int64_t R, cudaStream_t stream) {
  using namespace mem_extra_detail;
  if (B * N > 0)
    ATTNFAST_LAUNCH(usage_backward_kernel<T>, dim3(elementwise_blocks(B * N)), dim3(kThreads), 0,
                    stream)(grad, usage, ww, free_gate, rw, d_usage, d_rw, ws, B, N, Hw, R);
  if (B * R > 0)
    ATTNFAST_LAUNCH(usage_free_kernel<T>, dim3(unsigned(B * R)), dim3(kThreads), 0, stream)(
        ws, d_free, N);
}

template <typename T>
void memory_read_forward(const T* memory, const T* rw, T* words, int64_t B, int64_t N, int64_t W,
                         int64_t R, cudaStream_t stream) {
  using namespace mem_extra_detail;
  if (B * R * W == 0) return;
  ATTNFAST_LAUNCH(read_forward_kernel<T>, dim3(unsigned(B * ceil_div(W, 32))), dim3(kThreads), 0,
                  stream)(memory, rw, words, N, W, R);
}

template <typename T>
void memory_read_backward(const T* grad, const T* memory, const T* rw, T* d_memory, T* d_rw,
                          int64_t B, int64_t N, int64_t W, int64_t R, cudaStream_t stream) {
  using namespace mem_extra_detail;
  if (B * N == 0) return;
  ATTNFAST_LAUNCH(read_backward_kernel<T>, dim3(unsigned(ceil_div(B * N, kWarps))), dim3(kThreads),
                  0, stream)(grad, memory, rw, d_memory, d_rw, B, N, W, R);
}

}  // namespace cuda
}  // namespace attnfast
