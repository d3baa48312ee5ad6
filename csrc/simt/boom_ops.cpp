// torch.ops.attnfast_simt.boom_forward / boom_backward: the CUDA Boom kernels
// (csrc/cuda/boom_kernels.cuh) run on CPU tensors by the SIMT harness. Same schemas as
// torch.ops.attnfast (csrc/schemas.cpp) and the same composition as the CUDA glue
// (csrc/cuda/boom.cu): forward is the GEMM + epilogue kernel, or the fused kernel with
// ATTNFAST_BOOM_CUDA=fused; backward is the dz kernel (+ the
// deterministic bias column sums) and two GEMMs, here at::mm on the CPU.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <tuple>
#include <type_traits>

#include "simt/prelude.h"  // before any kernel header
#include "checks/boom.h"
#include "cuda/boom_kernels.cuh"

ATTNFAST_SIMT_DEFINE_EXTERN_SHARED(attnfast::cuda::boom_detail, boom_smem_raw)

namespace attnfast {
namespace simt_ops {
namespace {

template <typename Fn>
void dispatch_dtype(at::ScalarType dt, Fn&& f) {
  switch (dt) {
    case at::kFloat: f(static_cast<float*>(nullptr)); break;
    case at::kBFloat16: f(static_cast<__nv_bfloat16*>(nullptr)); break;
    case at::kHalf: f(static_cast<__half*>(nullptr)); break;
    default: TORCH_CHECK(false, "boom: unsupported dtype ", dt);
  }
}
template <typename T>
T* ptr(const at::Tensor& t) {
  return reinterpret_cast<T*>(t.data_ptr());
}
template <typename T>
T* ptr_or_null(const at::Tensor& t) {
  return t.defined() && t.numel() > 0 ? reinterpret_cast<T*>(t.data_ptr()) : nullptr;
}

// As csrc/cuda/boom.cu: ATTNFAST_BOOM_CUDA=fused (read per call) selects the single fused kernel,
// anything else the GEMM strategy (GEMM, then boom_epilogue_kernel).
bool use_fused_kernel() {
  const char* env = std::getenv("ATTNFAST_BOOM_CUDA");
  return env != nullptr && std::strcmp(env, "fused") == 0;
}
int64_t gemm_tile_rows(int64_t f_used, int64_t elem_size, int64_t N) {
  const int64_t budget = int64_t(64) << 20;
  const int64_t rows = std::max<int64_t>(128, budget / std::max<int64_t>(1, f_used * elem_size));
  return std::min(rows, N);
}

std::tuple<at::Tensor, at::Tensor> boom_forward(const at::Tensor& x, const at::Tensor& weight,
                                                const std::optional<at::Tensor>& bias,
                                                int64_t activation, int64_t chunk_width,
                                                double dropout_p, int64_t seed,
                                                bool save_preact) {
  checks::boom_forward(x, weight, bias, activation, chunk_width, dropout_p);
  if (bias.has_value()) TORCH_CHECK(bias->is_contiguous(), "boom: bias must be contiguous");
  const int64_t N = x.size(0), K = x.size(1), F = weight.size(0), C = chunk_width;
  const int64_t f_used = (F / C) * C;
  at::Tensor out = at::empty({N, C}, x.options());
  at::Tensor preact =
      save_preact ? at::empty({N, f_used}, x.options()) : at::empty({0}, x.options());
  if (N == 0) return {out, preact};
  const auto act = static_cast<Activation>(activation);
  if (use_fused_kernel()) {
    dispatch_dtype(x.scalar_type(), [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      const T* bias_ptr = bias.has_value() ? ptr<T>(*bias) : nullptr;
      attnfast::cuda::boom_forward<T>(ptr<T>(x), ptr<T>(weight), bias_ptr, ptr<T>(out),
                                      save_preact ? ptr<T>(preact) : nullptr, N, K, F, C, act,
                                      dropout_p, static_cast<uint64_t>(seed), nullptr);
    });
    return {out, preact};
  }
  // GEMM strategy: the library GEMM (cuBLAS there, ATen CPU here), then the epilogue kernel.
  const at::Tensor w_t = (f_used == F ? weight : weight.narrow(0, 0, f_used)).t();
  const int64_t tile = save_preact ? N : gemm_tile_rows(f_used, x.element_size(), N);
  at::Tensor buffer = save_preact ? preact : at::empty({tile, f_used}, x.options());
  for (int64_t r0 = 0; r0 < N; r0 += tile) {
    const int64_t rows = std::min(tile, N - r0);
    at::Tensor z = buffer.narrow(0, save_preact ? r0 : 0, rows);
    at::mm_out(z, x.narrow(0, r0, rows), w_t);
    dispatch_dtype(x.scalar_type(), [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      const T* bias_ptr = bias.has_value() ? ptr<T>(*bias) : nullptr;
      attnfast::cuda::boom_epilogue<T>(ptr<T>(z), f_used, bias_ptr, ptr<T>(out) + r0 * C, rows,
                                       r0, F, C, save_preact, act, dropout_p,
                                       static_cast<uint64_t>(seed), nullptr);
    });
  }
  return {out, preact};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> boom_backward(
    const at::Tensor& grad_out_in, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& preact_in, bool has_bias, int64_t activation, int64_t chunk_width,
    double dropout_p, int64_t seed) {
  const at::Tensor grad_out = grad_out_in.contiguous();
  const at::Tensor preact = preact_in.contiguous();
  checks::boom_backward(grad_out, x, weight, preact, activation, chunk_width, dropout_p);
  const int64_t N = x.size(0), F = weight.size(0), C = chunk_width;
  const int64_t f_used = (F / C) * C;
  at::Tensor grad_bias = has_bias ? at::zeros({F}, x.options()) : at::empty({0}, x.options());
  if (N == 0) return {at::zeros_like(x), at::zeros_like(weight), grad_bias};

  at::Tensor dz = at::empty({N, f_used}, x.options());
  at::Tensor grad_bias_f32, workspace;
  if (has_bias) {
    grad_bias_f32 = at::empty({f_used}, x.options().dtype(at::kFloat));
    workspace = at::empty({attnfast::cuda::boom_backward_dz_workspace_floats(N, F, C)},
                          x.options().dtype(at::kFloat));
  }
  dispatch_dtype(x.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    attnfast::cuda::boom_backward_dz<T>(ptr<T>(grad_out), ptr<T>(preact), ptr<T>(dz),
                                        ptr_or_null<float>(grad_bias_f32),
                                        ptr_or_null<float>(workspace), N, F, C,
                                        static_cast<Activation>(activation), dropout_p,
                                        static_cast<uint64_t>(seed), nullptr);
  });
  // The two GEMMs of the CUDA glue (cuBLAS there, ATen CPU here).
  const at::Tensor w_used = f_used == F ? weight : weight.narrow(0, 0, f_used);
  at::Tensor grad_x = at::mm(dz, w_used);
  at::Tensor grad_weight;
  if (f_used == F) {
    grad_weight = at::mm(dz.t(), x);
  } else {
    grad_weight = at::empty_like(weight);
    at::Tensor head = grad_weight.narrow(0, 0, f_used);
    at::mm_out(head, dz.t(), x);
    grad_weight.narrow(0, f_used, F - f_used).zero_();
  }
  if (has_bias) grad_bias.narrow(0, 0, f_used).copy_(grad_bias_f32);
  return {grad_x, grad_weight, grad_bias};
}

}  // namespace
}  // namespace simt_ops
}  // namespace attnfast

TORCH_LIBRARY_FRAGMENT(attnfast_simt, m) {
  // The schemas of csrc/schemas.cpp, namespace attnfast_simt.
  m.def(
      "boom_forward(Tensor x, Tensor weight, Tensor? bias, int activation, int chunk_width, "
      "float dropout_p, int seed, bool save_preact) -> (Tensor out, Tensor preact)");
  m.def(
      "boom_backward(Tensor grad_out, Tensor x, Tensor weight, Tensor preact, bool has_bias, "
      "int activation, int chunk_width, float dropout_p, int seed) "
      "-> (Tensor grad_x, Tensor grad_weight, Tensor grad_bias)");
}

TORCH_LIBRARY_IMPL(attnfast_simt, CPU, m) {
  m.impl("boom_forward", &attnfast::simt_ops::boom_forward);
  m.impl("boom_backward", &attnfast::simt_ops::boom_backward);
}
