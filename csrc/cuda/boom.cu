// Boom on CUDA: the ATen glue of csrc/cuda/boom_glue.h (shared with the SIMT harness op) on
// CUDA tensors, on the current stream. Strategies and the backward are described there.
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "cuda/boom_glue.h"

namespace attnfast {
namespace cuda {
namespace {

void check_cuda(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), "boom (CUDA): ", name, " must be a CUDA tensor, got device ",
              t.device());
}

std::tuple<at::Tensor, at::Tensor> boom_forward_cuda(const at::Tensor& x,
                                                     const at::Tensor& weight,
                                                     const std::optional<at::Tensor>& bias,
                                                     int64_t activation, int64_t chunk_width,
                                                     double dropout_p, const at::Tensor& seed,
                                                     bool save_preact) {
  check_cuda(x, "x");
  check_cuda(weight, "weight");
  if (bias.has_value()) check_cuda(*bias, "bias");
  const c10::cuda::CUDAGuard guard(x.device());
  auto res = boom_glue::forward(x, weight, bias, activation, chunk_width, dropout_p, seed,
                                save_preact, c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return res;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> boom_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& preact, bool has_bias, int64_t activation, int64_t chunk_width,
    double dropout_p, const at::Tensor& seed) {
  check_cuda(x, "x");
  check_cuda(weight, "weight");
  check_cuda(grad_out, "grad_out");
  check_cuda(preact, "preact");
  const c10::cuda::CUDAGuard guard(x.device());
  auto res = boom_glue::backward(grad_out, x, weight, preact, has_bias, activation, chunk_width,
                                 dropout_p, seed, c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return res;
}

}  // namespace
}  // namespace cuda
}  // namespace attnfast

TORCH_LIBRARY_IMPL(attnfast, CUDA, m) {
  m.impl("boom_forward", &attnfast::cuda::boom_forward_cuda);
  m.impl("boom_backward", &attnfast::cuda::boom_backward_cuda);
}
