// CUDA kernels of Graves' soft window (contract in csrc/schemas.h; shared pieces and conventions
// in memory_common.cuh). T steps, K Gaussians, U chars, C alphabet.
//
// Design: fwd: (1) a thread per (b, k) walks t: kappa = running sum of exp(kappa_hat) + kappa0
// (the reference's cumsum order); (2) a block per (b, t): a thread per char u for phi, then a
// thread per alphabet column c for window = phi chars (u in order).
// bwd: (1) kappa again, into a workspace; (2) a block per (b, t): per char the unmasked phi and
// d phi = g_phi + chars g_window into the workspace, then a warp per Gaussian k sums over chars
// (lanes) for d alpha_hat, d beta_hat and d kappa_t; (3) a thread per (b, u, c) sums over t for
// d chars, a thread per (b, u) for d mask; (4) a thread per (b, k) walks t backwards:
// d kappa_hat = exp(kappa_hat) times the suffix sum of d kappa, d kappa0 the total.
#pragma once
#include <cstdint>

#include "cuda/memory_common.cuh"

namespace attnfast {
namespace cuda {
namespace mem_detail {

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

}  // namespace mem_detail

// ---- host launchers (raw pointers, contiguous row-major tensors, stream-ordered) ----------------

// Workspace sizes (elements of T / int32) the glue allocates for the backward launchers.
inline int64_t graves_window_backward_ws(int64_t B, int64_t Tn, int64_t K, int64_t U) {
  return B * Tn * (K + 2 * U);
}

template <typename T>
void graves_window_forward(const T* alpha_hat, const T* beta_hat, const T* kappa_hat,
                           const T* kappa0, const T* chars, const T* mask, T* window, T* kappa,
                           T* phi, int64_t B, int64_t Tn, int64_t K, int64_t U, int64_t C,
                           cudaStream_t stream) {
  using namespace mem_detail;
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
  using namespace mem_detail;
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

}  // namespace cuda
}  // namespace attnfast
