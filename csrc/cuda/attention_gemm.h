// The GEMM strategy of the CUDA attention for wide heads: library GEMMs (cuBLAS through ATen on
// CUDA tensors; an fp32 ATen GEMM on the CPU under the SIMT harness) on chunks of query rows,
// with attnfast's row kernels (attention_rows_kernels.cuh) between them. Shared by the CUDA op
// and the SIMT harness op through attention_glue.h.
//
// Why: the flash kernels keep a (64 x Dv-slice) fp32 output tile on chip, so at Dv = 1024 they run
// 8 slices, each recomputing S = q k^T (9 GEMM-units of work against 2), and their mma.sync
// loops do not reach what cuBLAS reaches with wgmma on sm_90 (bench/notes/attention_gpu.md has
// the measurements). At D = 1024 the attention's arithmetic intensity against the S traffic is
// high (a chunk row does 4 D flops per score for S and P v, and moves ~6-8 bytes per score), so
// materialising S for a chunk of rows costs little next to the GEMMs.
//
// When this strategy runs and how many rows a chunk holds: attention_strategy.h, the C++ mirror
// of the rule whose authority is triton_kernels/attention_strategy.py.
//
// Forward, per chunk of `rows` queries [i0, i0 + rows) and its visible-key prefix [0, n) (causal
// chunks stop at their last query's diagonal, so blocks above it are skipped at chunk
// granularity):  S = q_c k_n^T (fp32)  ->  P = dropout(exp(scale S + bias - lse)) in T, lse
// ->  out_c = P v_n (T, fp32 accumulation inside the GEMM).
// Backward, per chunk, after Delta = rowsum(dO O):  S = q_c k_n^T, dP = dO_c v_n^T (fp32)  ->
// P, dS in T  ->  dV_n += P^T dO_c, dK_n += scale dS^T q_c (fp32 accumulators; written once in
// T when one chunk holds every query), dQ_c = scale dS k_n. Fixed chunk order and no atomics:
// deterministic whenever the GEMMs are (cuBLAS is, on one stream).
//
// Memory: the chunk's S (and dP) buffers hold B x rows x Lk fp32 values, rows chosen
// (chunk_rows) so that this stays linear in the sequence lengths (O(B L D), the size of the
// inputs), never O(B Lq Lk) as Lq and Lk grow (plus fp32 dK/dV accumulators, O(B Lk D), for
// bf16/fp16).
// Numerics: the GEMMs accumulate in fp32; fp32 inputs follow torch's matmul precision setting
// (TF32 only if the user enabled it), like attnfast's other cuBLAS paths (Boom).
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/baddbmm.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <limits>
#include <type_traits>

#include "cuda/attention_kernels.cuh"
#include "cuda/attention_rows_kernels.cuh"
#include "cuda/attention_strategy.h"
#include "cuda/glue_common.h"

namespace attnfast {
namespace attention_gemm {

// One past the last key query rows [i0, i0 + rows) can see (bottom-right causal).
inline int64_t visible_prefix(int64_t i0, int64_t rows, int64_t Lq, int64_t Lk, bool causal) {
  if (!causal) return Lk;
  return std::clamp<int64_t>(i0 + rows + (Lk - Lq), 0, Lk);
}

// ---- GEMMs --------------------------------------------------------------------------------------
// c = alpha a b + beta c over the batch (beta = 0: c is not read), c fp32 or of a's dtype, with
// fp32 accumulation. CUDA: cuBLAS through ATen (the out_dtype overload for fp32 results from
// bf16/fp16). CPU (the SIMT harness): an fp32 GEMM on upcast copies, rounded once into c.
inline void gemm(at::Tensor c, const at::Tensor& a, const at::Tensor& b, double beta, double alpha) {
  if (a.is_cuda()) {
    if (c.scalar_type() == a.scalar_type()) {
      at::baddbmm_out(c, c, a, b, beta, alpha);
    } else {
      at::baddbmm_out(c, c, a, b, c.scalar_type(), beta, alpha);
    }
    return;
  }
  const at::Tensor a32 = a.to(at::kFloat), b32 = b.to(at::kFloat);
  if (beta == 0.0) {
    c.copy_(at::bmm(a32, b32).mul_(alpha));
  } else if (c.scalar_type() == at::kFloat) {
    c.baddbmm_(a32, b32, beta, alpha);
  } else {
    c.copy_(at::baddbmm(c.to(at::kFloat), a32, b32, beta, alpha));
  }
}

// A (B, rows, n) contiguous view at the start of a flat buffer.
inline at::Tensor view3(const at::Tensor& buffer, int64_t B, int64_t rows, int64_t n) {
  return buffer.narrow(0, 0, B * rows * n).view({B, rows, n});
}

// ---- forward ------------------------------------------------------------------------------------
// out (B, Lq, Dv) and lse (B, Lq) are written; q, k, v have contiguous last dims; s is the
// flash kernels' Shape of the same call. B, Lq > 0.
template <typename T>
void forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
             const at::Tensor& bias, at::Tensor& out, at::Tensor& lse, const cuda::Shape& s,
             double dropout_p, uint64_t seed, cudaStream_t stream) {
  const bool causal = s.causal != 0;
  const int64_t B = s.B, Lq = s.Lq, Lk = s.Lk;
  const int64_t rows = chunk_rows(B, Lq, Lk, s.D, s.Dv, causal);
  const int64_t elems = B * std::min(rows, Lq) * Lk;
  const at::Tensor S_buf = glue::workspace(q, elems, at::kFloat);
  const at::Tensor P_buf = glue::workspace(q, elems, q.scalar_type());
  const float* bias_ptr = bias.defined() ? glue::ptr<float>(bias) : nullptr;
  for (int64_t i0 = 0; i0 < Lq; i0 += rows) {
    const int64_t c = std::min(rows, Lq - i0);
    const int64_t n = visible_prefix(i0, c, Lq, Lk, causal);
    at::Tensor out_c = out.narrow(1, i0, c);
    if (n == 0) {  // no query of the chunk sees a key: dead rows
      out_c.zero_();
      lse.narrow(1, i0, c).fill_(-std::numeric_limits<float>::infinity());
      continue;
    }
    const at::Tensor S = view3(S_buf, B, c, n), P = view3(P_buf, B, c, n);
    gemm(S, q.narrow(1, i0, c), k.narrow(1, 0, n).transpose(1, 2), 0.0, 1.0);
    cuda::attention_rows_forward<T>(glue::ptr<float>(S), bias_ptr, glue::ptr<T>(P),
                                    glue::ptr<float>(lse), s, cuda::attn_rows::Chunk{i0, c, n},
                                    dropout_p, seed, stream);
    gemm(out_c, P, v.narrow(1, 0, n), 0.0, 1.0);
  }
}

// ---- backward -----------------------------------------------------------------------------------
// dq (B, Lq, D), dk (B, Lk, D), dv (B, Lk, Dv) contiguous, all written. In s, (sob, sol) are
// grad_out's strides. B, Lq, Lk > 0.
template <typename T>
void backward(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
              const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
              const at::Tensor& bias, at::Tensor& dq, at::Tensor& dk, at::Tensor& dv,
              const cuda::Shape& s, double dropout_p, uint64_t seed, cudaStream_t stream) {
  const bool causal = s.causal != 0;
  const int64_t B = s.B, Lq = s.Lq, Lk = s.Lk;
  at::Tensor delta = at::empty({B, Lq}, q.options().dtype(at::kFloat));
  cuda::attention_backward_delta<T>(glue::ptr<T>(grad_out), glue::ptr<T>(out), out.stride(0),
                                    out.stride(1), glue::ptr<float>(delta), s, stream);

  // dK and dV are sums over the chunks: fp32 accumulators unless T is fp32 already, or unless
  // one chunk holds every query (the SHA-RNN shapes), whose GEMMs write them once, in T.
  const int64_t rows = chunk_rows(B, Lq, Lk, s.D, s.Dv, causal);
  const bool one_chunk = rows >= Lq;  // its visible prefix is all Lk keys
  const bool direct = std::is_same_v<T, float> || one_chunk;
  at::Tensor dk_acc = direct ? dk : at::zeros(dk.sizes(), dk.options().dtype(at::kFloat));
  at::Tensor dv_acc = direct ? dv : at::zeros(dv.sizes(), dv.options().dtype(at::kFloat));
  if (direct && !one_chunk) {
    dk.zero_();
    dv.zero_();
  }
  const double beta_kv = one_chunk ? 0.0 : 1.0;

  const int64_t elems = B * std::min(rows, Lq) * Lk;
  const at::Tensor S_buf = glue::workspace(q, elems, at::kFloat);
  const at::Tensor dP_buf = glue::workspace(q, elems, at::kFloat);
  const at::Tensor P_buf = glue::workspace(q, elems, q.scalar_type());
  const at::Tensor dS_buf = glue::workspace(q, elems, q.scalar_type());
  const float* bias_ptr = bias.defined() ? glue::ptr<float>(bias) : nullptr;
  const double scale = s.scale;
  for (int64_t i0 = 0; i0 < Lq; i0 += rows) {
    const int64_t c = std::min(rows, Lq - i0);
    const int64_t n = visible_prefix(i0, c, Lq, Lk, causal);
    at::Tensor dq_c = dq.narrow(1, i0, c);
    if (n == 0) {  // dead rows: nothing flows
      dq_c.zero_();
      continue;
    }
    const at::Tensor q_c = q.narrow(1, i0, c), go_c = grad_out.narrow(1, i0, c);
    const at::Tensor k_n = k.narrow(1, 0, n), v_n = v.narrow(1, 0, n);
    const at::Tensor S = view3(S_buf, B, c, n), dP = view3(dP_buf, B, c, n);
    const at::Tensor P = view3(P_buf, B, c, n), dS = view3(dS_buf, B, c, n);
    gemm(S, q_c, k_n.transpose(1, 2), 0.0, 1.0);
    gemm(dP, go_c, v_n.transpose(1, 2), 0.0, 1.0);
    cuda::attention_rows_backward<T>(glue::ptr<float>(S), glue::ptr<float>(dP), bias_ptr,
                                     glue::ptr<float>(lse), glue::ptr<float>(delta),
                                     glue::ptr<T>(P), glue::ptr<T>(dS), s,
                                     cuda::attn_rows::Chunk{i0, c, n}, dropout_p, seed, stream);
    gemm(dv_acc.narrow(1, 0, n), P.transpose(1, 2), go_c, beta_kv, 1.0);
    gemm(dk_acc.narrow(1, 0, n), dS.transpose(1, 2), q_c, beta_kv, scale);
    gemm(dq_c, dS, k_n, 0.0, scale);
  }
  if (!direct) {
    dk.copy_(dk_acc);
    dv.copy_(dv_acc);
  }
}

}  // namespace attention_gemm
}  // namespace attnfast
