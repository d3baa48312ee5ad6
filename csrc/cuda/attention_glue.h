// ATen side of the CUDA attention kernels, shared by the CUDA ops (csrc/cuda/attention.cu) and
// the SIMT harness ops (csrc/simt/attention_ops.cpp), so both check the same arguments with the
// same messages and call the launchers of csrc/cuda/attention_kernels.cuh the same way. One
// function per op, glue::<op>(stream, <the schema's arguments>); the device adaptors
// (csrc/device_op.h) check the devices and pass the stream.
//
// Two strategies (attention_gemm.h chooses; ATTNFAST_ATTN_STRATEGY=gemm|flash overrides):
//   flash  the fused kernels of attention_kernels.cuh (tensor cores for aligned bf16/fp16,
//          exact-fp32 SIMT otherwise); the default up to max(D, Dv) = 256;
//   gemm   library GEMMs on chunks of query rows with attnfast's row-softmax kernels between
//          them (attention_gemm.h); the default for wider heads.
// Kept probabilities (the schema's keep_probs / probs) are a CPU-kernel feature: the forward
// refuses keep_probs=True, the backward recomputes P whether or not probs are given (the same
// values; attnfast/ops/attention.py asks only the CPU backend to keep).
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <optional>
#include <tuple>
#include <type_traits>

#include "checks/attention.h"
#include "checks/seed.h"
#include "cuda/attention_gemm.h"
#include "cuda/attention_kernels.cuh"
#include "cuda/glue_common.h"

namespace attnfast {
namespace glue {
namespace attention_detail {

// The dtype dispatch and pointer helpers shared by every glue (csrc/cuda/glue_common.h).
template <typename Fn>
void dispatch_dtype(at::ScalarType dt, Fn&& f) {
  glue::dispatch_dtype(dt, "attention: q", std::forward<Fn>(f));
}
using glue::ptr;

// A view with a contiguous last dim (the kernels take any other strides).
inline at::Tensor last_dim_contiguous(const at::Tensor& t) {
  return t.size(-1) <= 1 || t.stride(-1) == 1 ? t : t.contiguous();
}

struct Dims {
  int64_t B, Lq, Lk, D, Dv;
};

// The argument checks are those of the CPU op (csrc/checks/attention.h): same messages.
inline Dims dims(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  return Dims{q.size(0), q.size(1), k.size(1), q.size(2), v.size(2)};
}

inline at::Tensor bias_view(const std::optional<at::Tensor>& bias) {
  return bias.has_value() && bias->defined() ? *bias : at::Tensor();
}

inline cuda::Shape make_shape(const Dims& d, const at::Tensor& q, const at::Tensor& k,
                              const at::Tensor& v, const at::Tensor& bias, const at::Tensor& o,
                              bool causal, double scale) {
  cuda::Shape s;
  s.B = d.B;
  s.Lq = d.Lq;
  s.Lk = d.Lk;
  s.D = d.D;
  s.Dv = d.Dv;
  s.b0 = 0;
  s.sqb = q.stride(0);
  s.sql = q.stride(1);
  s.skb = k.stride(0);
  s.skl = k.stride(1);
  s.svb = v.stride(0);
  s.svl = v.stride(1);
  s.sbb = bias.defined() ? bias.stride(0) : 0;
  s.sbi = bias.defined() ? bias.stride(1) : 0;
  s.sbj = bias.defined() ? bias.stride(2) : 0;
  s.sob = o.stride(0);
  s.sol = o.stride(1);
  s.scale = static_cast<float>(scale);
  s.causal = causal ? 1 : 0;
  return s;
}

}  // namespace attention_detail

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_forward(
    cudaStream_t stream, const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
    const std::optional<at::Tensor>& bias_in, bool causal, double scale, double dropout_p,
    const at::Tensor& seed_t, bool keep_probs) {
  using namespace attention_detail;
  checks::attention_common(q_in, k_in, v_in, bias_in, dropout_p);
  TORCH_CHECK(!keep_probs,
              "attention_forward: keep_probs=True is not implemented by the CUDA kernels (nor "
              "under the SIMT harness): they recompute the probabilities in the backward; only "
              "the CPU kernels keep them. Pass keep_probs=False.");
  at::Tensor probs = at::empty({0}, q_in.options().dtype(at::kFloat));
  const uint64_t seed = checks::dropout_seed(seed_t, "attention_forward");
  const Dims d = dims(q_in, k_in, v_in);
  const at::Tensor q = last_dim_contiguous(q_in), k = last_dim_contiguous(k_in),
                   v = last_dim_contiguous(v_in);
  const at::Tensor bias = bias_view(bias_in);
  at::Tensor out = at::empty({d.B, d.Lq, d.Dv}, q.options());
  at::Tensor lse = at::empty({d.B, d.Lq}, q.options().dtype(at::kFloat));
  if (d.B == 0 || d.Lq == 0) return {out, lse, probs};
  const cuda::Shape s = make_shape(d, q, k, v, bias, out, causal, scale);
  const bool gemm = attention_gemm::use_gemm_strategy(d.D, d.Dv);
  dispatch_dtype(q.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    if (gemm) {
      attention_gemm::forward<T>(q, k, v, bias, out, lse, s, dropout_p,
                                 seed, stream);
      return;
    }
    cuda::attention_forward<T>(ptr<T>(q), ptr<T>(k), ptr<T>(v),
                               bias.defined() ? ptr<float>(bias) : nullptr, ptr<T>(out),
                               ptr<float>(lse), s, dropout_p, seed, stream);
  });
  return {out, lse, probs};
}

// Either strategy's backward is deterministic (no atomics, fixed orders): `deterministic` is
// accepted and always honoured. `probs` is checked but not read: P is recomputed (see the top).
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward(
    cudaStream_t stream, const at::Tensor& grad_out_in, const at::Tensor& q_in,
    const at::Tensor& k_in, const at::Tensor& v_in, const at::Tensor& out_in,
    const at::Tensor& lse_in, const std::optional<at::Tensor>& probs,
    const std::optional<at::Tensor>& bias_in, bool causal, double scale, double dropout_p,
    const at::Tensor& seed_t, bool /*deterministic*/) {
  using namespace attention_detail;
  checks::attention_backward(grad_out_in, q_in, k_in, v_in, out_in, lse_in, bias_in, dropout_p);
  (void)checks::attention_probs_given(q_in, k_in, probs);
  const uint64_t seed = checks::dropout_seed(seed_t, "attention_backward");
  const Dims d = dims(q_in, k_in, v_in);
  const at::Tensor q = last_dim_contiguous(q_in), k = last_dim_contiguous(k_in),
                   v = last_dim_contiguous(v_in);
  const at::Tensor grad_out = last_dim_contiguous(grad_out_in), out = last_dim_contiguous(out_in);
  const at::Tensor lse = lse_in.contiguous();
  const at::Tensor bias = bias_view(bias_in);
  at::Tensor dq = at::empty({d.B, d.Lq, d.D}, q.options());
  at::Tensor dk = at::empty({d.B, d.Lk, d.D}, q.options());
  at::Tensor dv = at::empty({d.B, d.Lk, d.Dv}, q.options());
  if (d.B == 0 || d.Lq == 0 || d.Lk == 0) {  // nothing flows: zero gradients
    dq.zero_();
    dk.zero_();
    dv.zero_();
    return {dq, dk, dv};
  }
  const cuda::Shape s = make_shape(d, q, k, v, bias, grad_out, causal, scale);
  if (attention_gemm::use_gemm_strategy(d.D, d.Dv)) {
    dispatch_dtype(q.scalar_type(), [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      attention_gemm::backward<T>(grad_out, q, k, v, out, lse, bias, dq, dk, dv, s, dropout_p,
                                  seed, stream);
    });
    return {dq, dk, dv};
  }
  at::Tensor delta = at::empty({d.B, d.Lq}, q.options().dtype(at::kFloat));
  dispatch_dtype(q.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    // Routing: the tensor-core kernels when the forward's tensor-core conditions hold (bf16 /
    // fp16, D and Dv multiples of 8, 16-byte aligned rows) and grad_out's rows are aligned too;
    // otherwise (fp32, odd widths, unaligned views) the exact-fp32 SIMT kernels.
    const bool tc = cuda::attention_backward_uses_tc<T>(ptr<T>(grad_out), ptr<T>(q), ptr<T>(k),
                                                        ptr<T>(v), s);
    auto run = tc ? &cuda::attention_backward_tc<T> : &cuda::attention_backward_simt<T>;
    run(ptr<T>(grad_out), ptr<T>(q), ptr<T>(k), ptr<T>(v), ptr<T>(out), out.stride(0),
        out.stride(1), ptr<float>(lse), bias.defined() ? ptr<float>(bias) : nullptr,
        ptr<float>(delta), ptr<T>(dq), ptr<T>(dk), ptr<T>(dv), s, dropout_p,
        seed, stream);
  });
  return {dq, dk, dv};
}

}  // namespace glue
}  // namespace attnfast
