// Single-head attention on CUDA: ATen glue around csrc/cuda/attention_kernels.cuh (argument
// checks and the launcher calls are shared with the SIMT harness in attention_glue.h).
// Up to max(D, Dv) = 256 the flash kernels: tensor cores (mma.sync) for bf16/fp16 with 16-byte
// aligned rows, exact-fp32 SIMT kernels otherwise; wider heads take the GEMM strategy (cuBLAS on
// chunks of query rows, attnfast's row-softmax kernels between; attention_gemm.h). Either
// backward is deterministic (no atomics, fixed orders), so `deterministic` is accepted and always
// honoured.
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "cuda/attention_glue.h"

namespace attnfast {
namespace cuda {
namespace {

void check_cuda(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), "attention (CUDA): ", name, " must be a CUDA tensor, got device ",
              t.device());
}

std::tuple<at::Tensor, at::Tensor> attention_forward_cuda(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& bias, bool causal, double scale, double dropout_p,
    const at::Tensor& seed) {
  check_cuda(q, "q");
  const c10::cuda::CUDAGuard guard(q.device());
  auto res = attention_glue::forward(q, k, v, bias, causal, scale, dropout_p, seed,
                                     c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return res;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& lse, const std::optional<at::Tensor>& bias,
    bool causal, double scale, double dropout_p, const at::Tensor& seed,
    bool /*deterministic*/) {
  check_cuda(q, "q");
  const c10::cuda::CUDAGuard guard(q.device());
  auto res = attention_glue::backward(grad_out, q, k, v, out, lse, bias, causal, scale,
                                      dropout_p, seed, c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return res;
}

}  // namespace
}  // namespace cuda
}  // namespace attnfast

TORCH_LIBRARY_IMPL(attnfast, CUDA, m) {
  m.impl("attention_forward", &attnfast::cuda::attention_forward_cuda);
  m.impl("attention_backward", &attnfast::cuda::attention_backward_cuda);
}
