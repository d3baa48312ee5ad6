// CUDA kernels of the memory write (erase / add) and read ops (contract in csrc/schemas.h;
// shared pieces and conventions in memory_common.cuh).
//
// Designs:
//   write     fwd: elementwise over (b, i, c). bwd: a warp per (b, i) row (grad_memory,
//             grad_write_weights as reductions over W), and a block per (b, h, 32 columns)
//             for grad_erase / grad_add (reductions over N: 8 row groups, partials in order).
//   read      fwd: a block per (b, 32 columns): row group `warp` sums rows warp, warp + 8, ... for
//             kReadChunk read heads at a time, the 8 partials added in order. bwd: a warp per
//             (b, i) memory row: d memory row (lanes over W, heads in order) and d read weights
//             (a dot over W per head).
//   read mix  fwd: the read-mode mix elementwise over (b, r, i) into the read_weights output,
//             then the read. bwd: the mix recomputed into a workspace, the read backward, then a
//             block per (b, r) row: d content / forward / backward elementwise, d read_mode as
//             block sums.
#pragma once
#include <cstdint>

#include "cuda/memory_common.cuh"

namespace attnfast {
namespace cuda {
namespace mem_detail {

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

// ---- DNC read: read-mode mix ------------------------------------------------------------------

// rw[b, r, i] = (pi_c c + sum_h pi_f,h f_h) + sum_h pi_b,h b_h, in the CPU loop's order.
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    read_mix_kernel(const T* __restrict__ content, const T* __restrict__ fwd,
                    const T* __restrict__ bwd, const T* __restrict__ mode, T* __restrict__ rw,
                    int64_t total, int64_t N, int64_t Hw) {
  for (int64_t k = int64_t(blockIdx.x) * kThreads + threadIdx.x; k < total;
       k += int64_t(gridDim.x) * kThreads) {
    const int64_t br = k / N, i = k % N;
    const T* m = mode + br * (1 + 2 * Hw);
    T f = 0, b = 0;
    for (int64_t h = 0; h < Hw; ++h) {
      f += m[Hw + h] * fwd[(br * Hw + h) * N + i];
      b += m[h] * bwd[(br * Hw + h) * N + i];
    }
    rw[k] = (m[2 * Hw] * content[k] + f) + b;
  }
}

// A block per (b, r) row: d rw = grad_rw + the read's d rw (in place); d c = pi_c d rw,
// d f_h = pi_f,h d rw, d b_h = pi_b,h d rw; d pi: block sums of d rw times c, f_h, b_h. Each
// thread reads back only the d rw entries it wrote.
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    read_mix_backward_kernel(const T* __restrict__ grad_rw, T* __restrict__ drw,
                             const T* __restrict__ content, const T* __restrict__ fwd,
                             const T* __restrict__ bwd, const T* __restrict__ mode,
                             T* __restrict__ d_content, T* __restrict__ d_fwd,
                             T* __restrict__ d_bwd, T* __restrict__ d_mode, int64_t N, int64_t Hw) {
  __shared__ T red[kThreads];
  const int64_t br = blockIdx.x, M = 1 + 2 * Hw;
  const T* m = mode + br * M;
  const T pc = m[2 * Hw];
  T part = 0;
  for (int64_t i = threadIdx.x; i < N; i += kThreads) {
    const int64_t o = br * N + i;
    const T d = drw[o] + grad_rw[o];
    drw[o] = d;
    d_content[o] = pc * d;
    part += d * content[o];
  }
  part = block_sum(part, red);
  if (threadIdx.x == 0) d_mode[br * M + 2 * Hw] = part;
  for (int64_t h = 0; h < Hw; ++h) {
    const T pf = m[Hw + h], pb = m[h];
    T pf_part = 0, pb_part = 0;
    for (int64_t i = threadIdx.x; i < N; i += kThreads) {
      const int64_t row = (br * Hw + h) * N + i;
      const T d = drw[br * N + i];
      d_fwd[row] = pf * d;
      d_bwd[row] = pb * d;
      pf_part += d * fwd[row];
      pb_part += d * bwd[row];
    }
    pf_part = block_sum(pf_part, red);
    pb_part = block_sum(pb_part, red);
    if (threadIdx.x == 0) {
      d_mode[br * M + Hw + h] = pf_part;
      d_mode[br * M + h] = pb_part;
    }
  }
}

}  // namespace mem_detail

// ---- host launchers (raw pointers, contiguous row-major tensors, stream-ordered) ----------------

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
void memory_read_forward(const T* memory, const T* rw, T* words, int64_t B, int64_t N, int64_t W,
                         int64_t R, cudaStream_t stream) {
  using namespace mem_detail;
  if (B * R * W == 0) return;
  ATTNFAST_LAUNCH(read_forward_kernel<T>, dim3(unsigned(B * ceil_div(W, 32))), dim3(kThreads), 0,
                  stream)(memory, rw, words, N, W, R);
}

template <typename T>
void memory_read_backward(const T* grad, const T* memory, const T* rw, T* d_memory, T* d_rw,
                          int64_t B, int64_t N, int64_t W, int64_t R, cudaStream_t stream) {
  using namespace mem_detail;
  if (B * N == 0) return;
  ATTNFAST_LAUNCH(read_backward_kernel<T>, dim3(unsigned(ceil_div(B * N, kWarps))), dim3(kThreads),
                  0, stream)(grad, memory, rw, d_memory, d_rw, B, N, W, R);
}

// Workspace of dnc_read_mix_backward: the recomputed read weights and the read's d rw.
inline int64_t dnc_read_mix_backward_ws(int64_t B, int64_t R, int64_t N) { return 2 * B * R * N; }

template <typename T>
void dnc_read_mix_forward(const T* memory, const T* content, const T* fwd, const T* bwd,
                          const T* mode, T* rw, T* words, int64_t B, int64_t N, int64_t W,
                          int64_t R, int64_t Hw, cudaStream_t stream) {
  using namespace mem_detail;
  if (B * R * N > 0)
    ATTNFAST_LAUNCH(read_mix_kernel<T>, dim3(elementwise_blocks(B * R * N)), dim3(kThreads), 0,
                    stream)(content, fwd, bwd, mode, rw, B * R * N, N, Hw);
  memory_read_forward(memory, rw, words, B, N, W, R, stream);
}

// d_memory must come zeroed (no slot or no read head: the read backward may not write it).
template <typename T>
void dnc_read_mix_backward(const T* grad_rw, const T* grad_words, const T* memory,
                           const T* content, const T* fwd, const T* bwd, const T* mode,
                           T* d_memory, T* d_content, T* d_fwd, T* d_bwd, T* d_mode, T* ws,
                           int64_t B, int64_t N, int64_t W, int64_t R, int64_t Hw,
                           cudaStream_t stream) {
  using namespace mem_detail;
  if (B * R == 0) return;
  T* rw = ws;
  T* drw = ws + B * R * N;
  if (N > 0) {
    ATTNFAST_LAUNCH(read_mix_kernel<T>, dim3(elementwise_blocks(B * R * N)), dim3(kThreads), 0,
                    stream)(content, fwd, bwd, mode, rw, B * R * N, N, Hw);
    memory_read_backward(grad_words, memory, rw, d_memory, drw, B, N, W, R, stream);
  }
  ATTNFAST_LAUNCH(read_mix_backward_kernel<T>, dim3(unsigned(B * R)), dim3(kThreads), 0, stream)(
      grad_rw, drw, content, fwd, bwd, mode, d_content, d_fwd, d_bwd, d_mode, N, Hw);
}

}  // namespace cuda
}  // namespace attnfast
