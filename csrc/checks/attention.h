// Argument checks of the attention ops, shared by the CPU and CUDA implementations so both
// reject the same inputs with the same messages. (The Python API checks first and raises
// ValueError; these guard direct torch.ops.attnfast calls.)
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <optional>

namespace attnfast {
namespace checks {

inline void attention_common(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const std::optional<at::Tensor>& bias, double dropout_p) {
  TORCH_CHECK(q.dim() == 3, "attention: q must be 3-D (B, Lq, D), got shape ", q.sizes());
  TORCH_CHECK(k.dim() == 3 && k.size(0) == q.size(0) && k.size(2) == q.size(2),
              "attention: k must have shape (B, Lk, D) = (", q.size(0), ", Lk, ", q.size(2),
              "), got ", k.sizes());
  TORCH_CHECK(v.dim() == 3 && v.size(0) == q.size(0) && v.size(1) == k.size(1),
              "attention: v must have shape (B, Lk, Dv) = (", q.size(0), ", ", k.size(1),
              ", Dv), got ", v.sizes());
  const auto dt = q.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf,
              "attention: q must be float32, bfloat16 or float16, got ", dt);
  TORCH_CHECK(k.scalar_type() == dt && v.scalar_type() == dt, "attention: k (", k.scalar_type(),
              ") and v (", v.scalar_type(), ") must have q's dtype ", dt);
  TORCH_CHECK(k.device() == q.device() && v.device() == q.device(),
              "attention: q, k, v must be on one device, got ", q.device(), ", ", k.device(),
              ", ", v.device());
  for (const at::Tensor* t : {&q, &k, &v}) {
    TORCH_CHECK(t->size(2) <= 1 || t->stride(2) == 1,
                "attention: q, k and v need a contiguous last dim (stride 1), got strides ",
                t->strides());
  }
  TORCH_CHECK(dropout_p >= 0.0 && dropout_p < 1.0, "attention: dropout_p must be in [0, 1), got ",
              dropout_p);
  if (bias.has_value()) {
    const at::Tensor& b = *bias;
    TORCH_CHECK(b.dim() == 3 && b.size(0) == q.size(0) && b.size(1) == q.size(1) &&
                    b.size(2) == k.size(1),
                "attention: bias must be an additive fp32 mask expanded to (B, Lq, Lk) = (",
                q.size(0), ", ", q.size(1), ", ", k.size(1), "), got shape ", b.sizes());
    TORCH_CHECK(b.scalar_type() == at::kFloat, "attention: bias must be float32, got ",
                b.scalar_type());
    TORCH_CHECK(b.device() == q.device(), "attention: bias is on ", b.device(), " but q is on ",
                q.device());
  }
}

// The kept probabilities given to a backward: None, an empty tensor (none kept), or the
// forward's (B, Lq, Lk) fp32 contiguous probs on q's device.
inline bool attention_probs_given(const at::Tensor& q, const at::Tensor& k,
                                  const std::optional<at::Tensor>& probs) {
  if (!probs.has_value() || !probs->defined() || probs->numel() == 0) return false;
  const at::Tensor& p = *probs;
  TORCH_CHECK(p.dim() == 3 && p.size(0) == q.size(0) && p.size(1) == q.size(1) &&
                  p.size(2) == k.size(1) && p.scalar_type() == at::kFloat &&
                  p.device() == q.device() && p.is_contiguous(),
              "attention_backward: probs must be the forward's contiguous float32 (B, Lq, Lk) = (",
              q.size(0), ", ", q.size(1), ", ", k.size(1), ") tensor on q's device, or None / "
              "empty, got ", p.sizes(), " ", p.scalar_type(), " on ", p.device());
  return true;
}

inline void attention_backward(const at::Tensor& grad_out, const at::Tensor& q,
                               const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
                               const at::Tensor& lse, const std::optional<at::Tensor>& bias,
                               double dropout_p) {
  attention_common(q, k, v, bias, dropout_p);
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"grad_out", &grad_out},
                                {"out", &out}}) {
    TORCH_CHECK(t->dim() == 3 && t->size(0) == q.size(0) && t->size(1) == q.size(1) &&
                    t->size(2) == v.size(2),
                "attention_backward: ", name, " must have shape (B, Lq, Dv) = (", q.size(0), ", ",
                q.size(1), ", ", v.size(2), "), got ", t->sizes());
    TORCH_CHECK(t->scalar_type() == q.scalar_type() && t->device() == q.device(),
                "attention_backward: ", name, " must have q's dtype and device");
  }
  TORCH_CHECK(lse.dim() == 2 && lse.size(0) == q.size(0) && lse.size(1) == q.size(1) &&
                  lse.scalar_type() == at::kFloat && lse.device() == q.device(),
              "attention_backward: lse must be a float32 (B, Lq) = (", q.size(0), ", ",
              q.size(1), ") tensor on q's device, got ", lse.sizes(), " ", lse.scalar_type());
}

}  // namespace checks
}  // namespace attnfast
