// ATen side of the CUDA attention kernels, shared by the CUDA op (csrc/cuda/attention.cu) and
// the SIMT harness op (csrc/simt/attention_ops.cpp), so both check the same arguments with the
// same messages and call the launchers of csrc/cuda/attention_kernels.cuh the same way. The
// includer provides the device check (CUDA vs CPU tensors) and the stream.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <optional>
#include <tuple>
#include <type_traits>

#include "cuda/attention_kernels.cuh"

namespace attnfast {
namespace attention_glue {

// Calls f(static_cast<T*>(nullptr)) with T the CUDA element type of `dt`.
template <typename Fn>
void dispatch_dtype(at::ScalarType dt, Fn&& f) {
  switch (dt) {
    case at::kFloat: f(static_cast<float*>(nullptr)); break;
    case at::kBFloat16: f(static_cast<__nv_bfloat16*>(nullptr)); break;
    case at::kHalf: f(static_cast<__half*>(nullptr)); break;
    default: TORCH_CHECK(false, "attention: q must be float32, bfloat16 or float16, got ", dt);
  }
}

// at::BFloat16 / at::Half have the layout of __nv_bfloat16 / __half.
template <typename T>
T* ptr(const at::Tensor& t) {
  return reinterpret_cast<T*>(t.data_ptr());
}

// A view with a contiguous last dim (the kernels take any other strides).
inline at::Tensor last_dim_contiguous(const at::Tensor& t) {
  return t.size(-1) <= 1 || t.stride(-1) == 1 ? t : t.contiguous();
}

struct Dims {
  int64_t B, Lq, Lk, D, Dv;
};

inline Dims check_qkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      double dropout_p) {
  TORCH_CHECK(q.dim() == 3, "attention: q must be 3-D (B, Lq, D), got shape ", q.sizes());
  TORCH_CHECK(k.dim() == 3, "attention: k must be 3-D (B, Lk, D), got shape ", k.sizes());
  TORCH_CHECK(v.dim() == 3, "attention: v must be 3-D (B, Lk, Dv), got shape ", v.sizes());
  const Dims d{q.size(0), q.size(1), k.size(1), q.size(2), v.size(2)};
  TORCH_CHECK(k.size(0) == d.B && k.size(2) == d.D, "attention: k must have shape (", d.B,
              ", Lk, ", d.D, ") to match q ", q.sizes(), ", got ", k.sizes());
  TORCH_CHECK(v.size(0) == d.B && v.size(1) == d.Lk, "attention: v must have shape (", d.B, ", ",
              d.Lk, ", Dv) to match q and k, got ", v.sizes());
  const auto dt = q.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf,
              "attention: q must be float32, bfloat16 or float16, got ", dt);
  TORCH_CHECK(k.scalar_type() == dt, "attention: k dtype ", k.scalar_type(),
              " must match q dtype ", dt);
  TORCH_CHECK(v.scalar_type() == dt, "attention: v dtype ", v.scalar_type(),
              " must match q dtype ", dt);
  TORCH_CHECK(k.device() == q.device(), "attention: k is on ", k.device(), " but q is on ",
              q.device());
  TORCH_CHECK(v.device() == q.device(), "attention: v is on ", v.device(), " but q is on ",
              q.device());
  TORCH_CHECK(dropout_p >= 0.0 && dropout_p < 1.0, "attention: dropout_p must be in [0, 1), got ",
              dropout_p);
  return d;
}

// The bias as an fp32 (B, Lq, Lk) view (0 strides allowed), or an undefined tensor.
inline at::Tensor check_bias(const std::optional<at::Tensor>& bias, const at::Tensor& q,
                             const Dims& d) {
  if (!bias.has_value() || !bias->defined()) return at::Tensor();
  TORCH_CHECK(bias->scalar_type() == at::kFloat,
              "attention: bias must be float32 (an additive mask), got ", bias->scalar_type());
  TORCH_CHECK(bias->device() == q.device(), "attention: bias is on ", bias->device(),
              " but q is on ", q.device());
  TORCH_CHECK(bias->dim() <= 3, "attention: bias must be broadcastable to (B, Lq, Lk) = (", d.B,
              ", ", d.Lq, ", ", d.Lk, "), got shape ", bias->sizes());
  const int64_t want[3] = {d.B, d.Lq, d.Lk};
  for (int64_t i = 0; i < bias->dim(); ++i) {
    const int64_t s = bias->size(bias->dim() - 1 - i), w = want[2 - i];
    TORCH_CHECK(s == w || s == 1, "attention: bias must be broadcastable to (B, Lq, Lk) = (",
                d.B, ", ", d.Lq, ", ", d.Lk, "), got shape ", bias->sizes());
  }
  return bias->expand({d.B, d.Lq, d.Lk});
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

inline std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& q_in, const at::Tensor& k_in,
                                                  const at::Tensor& v_in,
                                                  const std::optional<at::Tensor>& bias_in,
                                                  bool causal, double scale, double dropout_p,
                                                  int64_t seed, cudaStream_t stream) {
  const Dims d = check_qkv(q_in, k_in, v_in, dropout_p);
  const at::Tensor q = last_dim_contiguous(q_in), k = last_dim_contiguous(k_in),
                   v = last_dim_contiguous(v_in);
  const at::Tensor bias = check_bias(bias_in, q, d);
  at::Tensor out = at::empty({d.B, d.Lq, d.Dv}, q.options());
  at::Tensor lse = at::empty({d.B, d.Lq}, q.options().dtype(at::kFloat));
  if (d.B == 0 || d.Lq == 0) return {out, lse};
  const cuda::Shape s = make_shape(d, q, k, v, bias, out, causal, scale);
  dispatch_dtype(q.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::attention_forward<T>(ptr<T>(q), ptr<T>(k), ptr<T>(v),
                               bias.defined() ? ptr<float>(bias) : nullptr, ptr<T>(out),
                               ptr<float>(lse), s, dropout_p, static_cast<uint64_t>(seed), stream);
  });
  return {out, lse};
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(
    const at::Tensor& grad_out_in, const at::Tensor& q_in, const at::Tensor& k_in,
    const at::Tensor& v_in, const at::Tensor& out_in, const at::Tensor& lse_in,
    const std::optional<at::Tensor>& bias_in, bool causal, double scale, double dropout_p,
    int64_t seed, cudaStream_t stream) {
  const Dims d = check_qkv(q_in, k_in, v_in, dropout_p);
  const at::Tensor q = last_dim_contiguous(q_in), k = last_dim_contiguous(k_in),
                   v = last_dim_contiguous(v_in);
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"grad_out", grad_out_in},
                                std::pair<const char*, const at::Tensor&>{"out", out_in}}) {
    TORCH_CHECK(t.dim() == 3 && t.size(0) == d.B && t.size(1) == d.Lq && t.size(2) == d.Dv,
                "attention: ", name, " must have shape (", d.B, ", ", d.Lq, ", ", d.Dv,
                "), got ", t.sizes());
    TORCH_CHECK(t.scalar_type() == q.scalar_type(), "attention: ", name, " dtype ",
                t.scalar_type(), " must match q dtype ", q.scalar_type());
    TORCH_CHECK(t.device() == q.device(), "attention: ", name, " is on ", t.device(),
                " but q is on ", q.device());
  }
  TORCH_CHECK(lse_in.dim() == 2 && lse_in.size(0) == d.B && lse_in.size(1) == d.Lq &&
                  lse_in.scalar_type() == at::kFloat && lse_in.device() == q.device(),
              "attention: lse must be a float32 (", d.B, ", ", d.Lq, ") tensor on ", q.device(),
              ", got ", lse_in.scalar_type(), " ", lse_in.sizes(), " on ", lse_in.device());
  const at::Tensor grad_out = last_dim_contiguous(grad_out_in), out = last_dim_contiguous(out_in);
  const at::Tensor lse = lse_in.contiguous();
  const at::Tensor bias = check_bias(bias_in, q, d);
  at::Tensor dq = at::empty({d.B, d.Lq, d.D}, q.options());
  at::Tensor dk = at::empty({d.B, d.Lk, d.D}, q.options());
  at::Tensor dv = at::empty({d.B, d.Lk, d.Dv}, q.options());
  if (d.B == 0 || d.Lq == 0 || d.Lk == 0) {  // nothing flows: zero gradients
    dq.zero_();
    dk.zero_();
    dv.zero_();
    return {dq, dk, dv};
  }
  at::Tensor delta = at::empty({d.B, d.Lq}, q.options().dtype(at::kFloat));
  const cuda::Shape s = make_shape(d, q, k, v, bias, grad_out, causal, scale);
  dispatch_dtype(q.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::attention_backward<T>(ptr<T>(grad_out), ptr<T>(q), ptr<T>(k), ptr<T>(v), ptr<T>(out),
                                out.stride(0), out.stride(1), ptr<float>(lse),
                                bias.defined() ? ptr<float>(bias) : nullptr, ptr<float>(delta),
                                ptr<T>(dq), ptr<T>(dk), ptr<T>(dv), s, dropout_p,
                                static_cast<uint64_t>(seed), stream);
  });
  return {dq, dk, dv};
}

}  // namespace attention_glue
}  // namespace attnfast
