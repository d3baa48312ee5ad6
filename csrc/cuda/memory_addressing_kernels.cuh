// CUDA kernels of the memory addressing ops: content addressing and NTM location addressing
// (contract in csrc/schemas.h; shared pieces and conventions in memory_common.cuh).
//
// Designs (S shift window):
//   content   fwd: a block per (b, h); a warp per memory row (lanes over W) for k.M_i and |M_i|,
//             then the softmax over N in the block (block max, block sum).
//             bwd: (1) a block per (b, h): the scalar chain per row, grad_strengths (block sum),
//             grad_keys (column sums over rows: 8 row groups x 32 columns, partials summed in
//             order), and per-(h, i) scalars into a workspace; (2) a warp per (b, i) row:
//             grad_memory = (sum_h dD_hi |k_h|) / |M_i| M_i + sum_h d dot_hi k_h.
//   ntm_location  fwd: a block per (b, h); a thread per slot i computes the interpolated, shifted
//             weight (S taps, wrapping index walked without a modulo) and its sharpened power,
//             then a block sum normalises. bwd: a block per (b, h) with a (2, N) workspace row
//             (shifted weights, then p -> d shifted weights in place): block sums for the
//             normaliser, g.w, d gamma, one per shift tap for d shift, and d gate; d content and
//             d prev per slot (the adjoint shift = the opposite taps).
#pragma once
#include <cstdint>

#include "cuda/memory_common.cuh"

namespace attnfast {
namespace cuda {
namespace mem_detail {

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

}  // namespace mem_detail

// ---- host launchers (raw pointers, contiguous row-major tensors, stream-ordered) ----------------

// Workspace sizes (elements of T / int32) the glue allocates for the backward launchers.
inline int64_t memory_content_backward_ws(int64_t B, int64_t N, int64_t H) { return B * H * 2 * N; }
inline int64_t ntm_location_backward_ws(int64_t B, int64_t H, int64_t N) { return B * H * 2 * N; }

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
void ntm_location_forward(const T* content, const T* gate, const T* prev, const T* shift,
                          const T* gamma, T* weights, int64_t B, int64_t H, int64_t N, int64_t S,
                          cudaStream_t stream) {
  using namespace mem_detail;
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
  using namespace mem_detail;
  if (B * H == 0 || N == 0) return;
  ATTNFAST_LAUNCH(ntm_location_backward_kernel<T>, dim3(unsigned(B * H)), dim3(kThreads), 0,
                  stream)(grad, content, gate, prev, shift, gamma, d_content, d_gate, d_prev,
                          d_shift, d_gamma, ws, N, S);
}

}  // namespace cuda
}  // namespace attnfast
