// torch.ops.attnfast_simt.attention_forward / attention_backward: the CUDA attention kernels
// (csrc/cuda/attention_kernels.cuh) run on CPU tensors by the SIMT harness. Same schemas as
// torch.ops.attnfast (csrc/schemas.cpp) and the same glue as the CUDA op (csrc/cuda/attention.cu,
// both through csrc/cuda/attention_glue.h), so the harness tests the exact launch sequence.
#include <torch/library.h>

#include "schemas.h"

#include "simt/prelude.h"  // before any kernel header
#include "cuda/attention_glue.h"

ATTNFAST_SIMT_DEFINE_EXTERN_SHARED(attnfast::cuda::attn_detail, attn_smem_raw)

namespace attnfast {
namespace simt_ops {
namespace {

void check_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "attention (SIMT harness): ", name,
              " must be a CPU tensor, got device ", t.device());
}

std::tuple<at::Tensor, at::Tensor> attention_forward(const at::Tensor& q, const at::Tensor& k,
                                                     const at::Tensor& v,
                                                     const std::optional<at::Tensor>& bias,
                                                     bool causal, double scale, double dropout_p,
                                                     const at::Tensor& seed) {
  check_cpu(q, "q");
  return attention_glue::forward(q, k, v, bias, causal, scale, dropout_p, seed, nullptr);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& lse, const std::optional<at::Tensor>& bias,
    bool causal, double scale, double dropout_p, const at::Tensor& seed,
    bool /*deterministic*/) {
  check_cpu(q, "q");
  return attention_glue::backward(grad_out, q, k, v, out, lse, bias, causal, scale, dropout_p,
                                  seed, nullptr);
}

}  // namespace
}  // namespace simt_ops
}  // namespace attnfast

TORCH_LIBRARY_FRAGMENT(attnfast_simt, m) {
  // The schemas of csrc/schemas.h, in namespace attnfast_simt.
  attnfast::schemas::define(m, attnfast::schemas::kAttention);
}

TORCH_LIBRARY_IMPL(attnfast_simt, CPU, m) {
  m.impl("attention_forward", &attnfast::simt_ops::attention_forward);
  m.impl("attention_backward", &attnfast::simt_ops::attention_backward);
}
