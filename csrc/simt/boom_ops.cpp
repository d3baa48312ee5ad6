// torch.ops.attnfast_simt.boom_forward / boom_backward: the CUDA Boom kernels
// (csrc/cuda/boom_kernels.cuh) run on CPU tensors by the SIMT harness. Same schemas as
// torch.ops.attnfast (csrc/schemas.cpp) and the same glue as the CUDA op (csrc/cuda/boom.cu,
// both through csrc/cuda/boom_glue.h): forward is the GEMM + epilogue kernel, or the fused kernel
// with ATTNFAST_BOOM_CUDA=fused; backward is the dz kernel (+ the deterministic bias column
// sums) and two GEMMs, here at::mm on the CPU.
#include <torch/library.h>

#include "schemas.h"

#include "simt/prelude.h"  // before any kernel header
#include "cuda/boom_glue.h"

ATTNFAST_SIMT_DEFINE_EXTERN_SHARED(attnfast::cuda::boom_detail, boom_smem_raw)

namespace attnfast {
namespace simt_ops {
namespace {

void check_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "boom (SIMT harness): ", name,
              " must be a CPU tensor, got device ", t.device());
}

std::tuple<at::Tensor, at::Tensor> boom_forward(const at::Tensor& x, const at::Tensor& weight,
                                                const std::optional<at::Tensor>& bias,
                                                int64_t activation, int64_t chunk_width,
                                                double dropout_p, const at::Tensor& seed,
                                                bool save_preact) {
  check_cpu(x, "x");
  return boom_glue::forward(x, weight, bias, activation, chunk_width, dropout_p, seed,
                            save_preact, nullptr);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> boom_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& preact, bool has_bias, int64_t activation, int64_t chunk_width,
    double dropout_p, const at::Tensor& seed) {
  check_cpu(x, "x");
  return boom_glue::backward(grad_out, x, weight, preact, has_bias, activation, chunk_width,
                             dropout_p, seed, nullptr);
}

}  // namespace
}  // namespace simt_ops
}  // namespace attnfast

TORCH_LIBRARY_FRAGMENT(attnfast_simt, m) {
  // The schemas of csrc/schemas.h, in namespace attnfast_simt.
  attnfast::schemas::define(m, attnfast::schemas::kBoom);
}

TORCH_LIBRARY_IMPL(attnfast_simt, CPU, m) {
  m.impl("boom_forward", &attnfast::simt_ops::boom_forward);
  m.impl("boom_backward", &attnfast::simt_ops::boom_backward);
}
