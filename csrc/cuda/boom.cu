// Boom on CUDA: ATen glue around csrc/cuda/boom_kernels.cuh.
// Forward, two strategies (ATTNFAST_BOOM_CUDA=gemm|fused, read per call):
//   gemm  (default) cuBLAS GEMM on tiles of rows (at most ~64 MiB of d_ff-wide activation at a
//         time, or straight into the saved pre-activation when training), then attnfast's
//         epilogue kernel (bias + activation + dropout + chunk sum). On an H100 (bf16, 4096 x
//         1024 -> 4096) cuBLAS runs the GEMM at ~640 TFLOP/s with wgmma, which the mma.sync
//         kernel below does not reach, so the extra pass over the tile costs less than it saves.
//   fused one kernel (mma.sync GEMM + epilogue in registers, the activation never in memory):
//         the sm_80 design, kept for GPUs and shapes where it wins and run under the SIMT harness. Backward: the fused dz kernel (with deterministic bias-gradient column
// sums), then two cuBLAS GEMMs through at::mm (fp32 stays fp32 unless the user enabled TF32 for
// matmuls in torch).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <tuple>

#include "checks/boom.h"
#include "cuda/boom_kernels.cuh"

namespace attnfast {
namespace cuda {
namespace {

// Calls f(static_cast<T*>(nullptr)) with T the CUDA element type of `dt`.
template <typename Fn>
void dispatch_dtype(at::ScalarType dt, Fn&& f) {
  switch (dt) {
    case at::kFloat: f(static_cast<float*>(nullptr)); break;
    case at::kBFloat16: f(static_cast<__nv_bfloat16*>(nullptr)); break;
    case at::kHalf: f(static_cast<__half*>(nullptr)); break;
    default: TORCH_CHECK(false, "boom: unsupported dtype ", dt);
  }
}

// at::BFloat16 / at::Half have the layout of __nv_bfloat16 / __half: reinterpret the pointers.
template <typename T>
T* ptr(const at::Tensor& t) {
  return reinterpret_cast<T*>(t.data_ptr());
}
template <typename T>
T* ptr_or_null(const at::Tensor& t) {
  return t.defined() && t.numel() > 0 ? reinterpret_cast<T*>(t.data_ptr()) : nullptr;
}

// ATTNFAST_BOOM_CUDA=fused selects the single fused kernel; anything else the GEMM strategy.
bool use_fused_kernel() {
  const char* env = std::getenv("ATTNFAST_BOOM_CUDA");
  return env != nullptr && std::strcmp(env, "fused") == 0;
}

// Rows of x per cuBLAS call in the GEMM strategy when no pre-activation is kept: bounds the
// transient d_ff-wide buffer to ~64 MiB while keeping each GEMM large enough to fill the GPU.
int64_t gemm_tile_rows(int64_t f_used, int64_t elem_size, int64_t N) {
  const int64_t budget = int64_t(64) << 20;
  const int64_t rows = std::max<int64_t>(128, budget / std::max<int64_t>(1, f_used * elem_size));
  return std::min(rows, N);
}

void check_cuda(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), "boom (CUDA): ", name, " must be a CUDA tensor, got device ",
              t.device());
}

std::tuple<at::Tensor, at::Tensor> boom_forward_cuda(const at::Tensor& x,
                                                     const at::Tensor& weight,
                                                     const std::optional<at::Tensor>& bias,
                                                     int64_t activation, int64_t chunk_width,
                                                     double dropout_p, int64_t seed,
                                                     bool save_preact) {
  checks::boom_forward(x, weight, bias, activation, chunk_width, dropout_p);
  check_cuda(x, "x");
  check_cuda(weight, "weight");
  if (bias.has_value()) {
    TORCH_CHECK(bias->is_contiguous(), "boom: bias must be contiguous");
    check_cuda(*bias, "bias");
  }
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = x.size(0), K = x.size(1), F = weight.size(0), C = chunk_width;
  const int64_t f_used = (F / C) * C;
  at::Tensor out = at::empty({N, C}, x.options());
  at::Tensor preact =
      save_preact ? at::empty({N, f_used}, x.options()) : at::empty({0}, x.options());
  if (N == 0) return {out, preact};

  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const auto act = static_cast<Activation>(activation);
  if (use_fused_kernel()) {
    dispatch_dtype(x.scalar_type(), [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      const T* bias_ptr = bias.has_value() ? ptr<T>(*bias) : nullptr;
      attnfast::cuda::boom_forward<T>(ptr<T>(x), ptr<T>(weight), bias_ptr, ptr<T>(out),
                                      save_preact ? ptr<T>(preact) : nullptr, N, K, F, C, act,
                                      dropout_p, static_cast<uint64_t>(seed), stream);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return {out, preact};
  }

  // GEMM strategy. fp32 stays fp32 in cuBLAS unless the user enabled TF32 for matmuls in torch.
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
                                       static_cast<uint64_t>(seed), stream);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {out, preact};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> boom_backward_cuda(
    const at::Tensor& grad_out_in, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& preact_in, bool has_bias, int64_t activation, int64_t chunk_width,
    double dropout_p, int64_t seed) {
  // Autograd may hand over non-contiguous (e.g. expanded) gradients: make them dense here.
  const at::Tensor grad_out = grad_out_in.contiguous();
  const at::Tensor preact = preact_in.contiguous();
  checks::boom_backward(grad_out, x, weight, preact, activation, chunk_width, dropout_p);
  check_cuda(x, "x");
  check_cuda(weight, "weight");
  check_cuda(grad_out, "grad_out");
  check_cuda(preact, "preact");
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = x.size(0), F = weight.size(0), C = chunk_width;
  const int64_t f_used = (F / C) * C;

  at::Tensor grad_bias = has_bias ? at::zeros({F}, x.options()) : at::empty({0}, x.options());
  if (N == 0) return {at::zeros_like(x), at::zeros_like(weight), grad_bias};

  at::Tensor dz = at::empty({N, f_used}, x.options());
  at::Tensor grad_bias_f32, workspace;
  if (has_bias) {
    grad_bias_f32 = at::empty({f_used}, x.options().dtype(at::kFloat));
    workspace = at::empty({boom_backward_dz_workspace_floats(N, F, C)},
                          x.options().dtype(at::kFloat));
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_dtype(x.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    attnfast::cuda::boom_backward_dz<T>(ptr<T>(grad_out), ptr<T>(preact), ptr<T>(dz),
                                        ptr_or_null<float>(grad_bias_f32),
                                        ptr_or_null<float>(workspace), N, F, C,
                                        static_cast<Activation>(activation), dropout_p,
                                        static_cast<uint64_t>(seed), stream);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  // The two GEMMs (cuBLAS): grad_x = dz W[:F_used], grad_W[:F_used] = dz^T x, rows beyond
  // F_used (dropped remainder columns) get zero gradient.
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
}  // namespace cuda
}  // namespace attnfast

TORCH_LIBRARY_IMPL(attnfast, CUDA, m) {
  m.impl("boom_forward", &attnfast::cuda::boom_forward_cuda);
  m.impl("boom_backward", &attnfast::cuda::boom_backward_cuda);
}
