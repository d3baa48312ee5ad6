// ATen side of the CUDA Boom kernels, shared by the CUDA ops (csrc/cuda/boom.cu) and the SIMT
// harness ops (csrc/simt/boom_ops.cpp): the same argument checks, the same strategy choice and
// the same launch sequence, so the harness tests exactly what runs on the GPU. One function per
// op, glue::<op>(stream, <the schema's arguments>); the device adaptors (csrc/device_op.h) check
// the devices and pass the stream. GEMMs go through at::mm (cuBLAS on CUDA tensors, ATen's CPU
// GEMM under the harness).
//
// Forward, two strategies (ATTNFAST_BOOM_CUDA=gemm|fused, read per call):
//   gemm  (default) a library GEMM on tiles of rows (at most ~64 MiB of d_ff-wide activation at
//         a time, or straight into the saved pre-activation when training), then attnfast's
//         epilogue kernel (bias + activation + dropout + chunk sum). Measured on an H100 (bf16,
//         4096 x 1024 -> 4096): cuBLAS runs the GEMM at ~510-650 TFLOP/s with wgmma, which the
//         mma.sync kernel below does not approach (~115), so the extra pass over the tile costs
//         far less than it saves.
//   fused one kernel (mma.sync GEMM + epilogue in registers, the activation never in memory):
//         the sm_80 design, kept for GPUs and shapes where it wins.
// Backward: the fused dz kernel (with deterministic bias-gradient column sums), then two
// GEMMs: grad_x = dz W[:F_used], grad_W[:F_used] = dz^T x (fp32 stays fp32 unless the user
// enabled TF32 for matmuls in torch).
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <tuple>
#include <type_traits>

#include "checks/boom.h"
#include "checks/seed.h"
#include "cuda/boom_kernels.cuh"
#include "cuda/glue_common.h"

namespace attnfast {
namespace glue {
namespace boom_detail {

// ATTNFAST_BOOM_CUDA=fused selects the single fused kernel; anything else the GEMM strategy.
inline bool use_fused_kernel() {
  const char* env = std::getenv("ATTNFAST_BOOM_CUDA");
  return env != nullptr && std::strcmp(env, "fused") == 0;
}

// Rows of x per GEMM call in the GEMM strategy when no pre-activation is kept: bounds the
// transient d_ff-wide buffer to ~64 MiB while keeping each GEMM large enough to fill the GPU.
inline int64_t gemm_tile_rows(int64_t f_used, int64_t elem_size, int64_t N) {
  const int64_t budget = int64_t(64) << 20;
  const int64_t rows = std::max<int64_t>(128, budget / std::max<int64_t>(1, f_used * elem_size));
  return std::min(rows, N);
}

}  // namespace boom_detail

inline std::tuple<at::Tensor, at::Tensor> boom_forward(
    cudaStream_t stream, const at::Tensor& x, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias_in, int64_t activation, int64_t chunk_width,
    double dropout_p, const at::Tensor& seed_t, bool save_preact) {
  using namespace boom_detail;
  checks::boom_forward(x, weight, bias_in, activation, chunk_width, dropout_p);
  const uint64_t seed = checks::dropout_seed(seed_t, "boom_forward");
  const std::optional<at::Tensor> bias =
      bias_in.has_value() ? std::optional<at::Tensor>(bias_in->contiguous()) : std::nullopt;
  const int64_t N = x.size(0), K = x.size(1), F = weight.size(0), C = chunk_width;
  const int64_t f_used = (F / C) * C;
  at::Tensor out = at::empty({N, C}, x.options());
  at::Tensor preact =
      save_preact ? at::empty({N, f_used}, x.options()) : at::empty({0}, x.options());
  if (N == 0) return {out, preact};
  const auto act = static_cast<Activation>(activation);

  if (use_fused_kernel()) {
    dispatch_dtype(x.scalar_type(), "boom: x", [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      const T* bias_ptr = bias.has_value() ? ptr<T>(*bias) : nullptr;
      cuda::boom_forward<T>(ptr<T>(x), ptr<T>(weight), bias_ptr, ptr<T>(out),
                            save_preact ? ptr<T>(preact) : nullptr, N, K, F, C, act,
                            dropout_p, seed, stream);
    });
    return {out, preact};
  }

  const at::Tensor w_t = (f_used == F ? weight : weight.narrow(0, 0, f_used)).t();
  const int64_t tile = save_preact ? N : gemm_tile_rows(f_used, x.element_size(), N);
  at::Tensor buffer = save_preact ? preact : at::empty({tile, f_used}, x.options());
  for (int64_t r0 = 0; r0 < N; r0 += tile) {
    const int64_t rows = std::min(tile, N - r0);
    at::Tensor z = buffer.narrow(0, save_preact ? r0 : 0, rows);
    at::mm_out(z, x.narrow(0, r0, rows), w_t);
    dispatch_dtype(x.scalar_type(), "boom: x", [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      const T* bias_ptr = bias.has_value() ? ptr<T>(*bias) : nullptr;
      cuda::boom_epilogue<T>(ptr<T>(z), f_used, bias_ptr, ptr<T>(out) + r0 * C, rows,
                             r0, F, C, save_preact, act, dropout_p, seed,
                             stream);
    });
  }
  return {out, preact};
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> boom_backward(
    cudaStream_t stream, const at::Tensor& grad_out_in, const at::Tensor& x,
    const at::Tensor& weight, const at::Tensor& preact_in, bool has_bias, int64_t activation,
    int64_t chunk_width, double dropout_p, const at::Tensor& seed_t) {
  // Autograd may hand over non-contiguous (e.g. expanded) gradients: make them dense here.
  const at::Tensor grad_out = grad_out_in.contiguous();
  const at::Tensor preact = preact_in.contiguous();
  checks::boom_backward(grad_out, x, weight, preact, activation, chunk_width, dropout_p);
  const uint64_t seed = checks::dropout_seed(seed_t, "boom_backward");
  const int64_t N = x.size(0), F = weight.size(0), C = chunk_width;
  const int64_t f_used = (F / C) * C;

  at::Tensor grad_bias = has_bias ? at::zeros({F}, x.options()) : at::empty({0}, x.options());
  if (N == 0) return {at::zeros_like(x), at::zeros_like(weight), grad_bias};

  at::Tensor dz = at::empty({N, f_used}, x.options());
  at::Tensor grad_bias_f32, workspace;
  if (has_bias) {
    grad_bias_f32 = at::empty({f_used}, x.options().dtype(at::kFloat));
    workspace = at::empty({cuda::boom_backward_dz_workspace_floats(N, F, C)},
                          x.options().dtype(at::kFloat));
  }
  dispatch_dtype(x.scalar_type(), "boom: x", [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::boom_backward_dz<T>(ptr<T>(grad_out), ptr<T>(preact), ptr<T>(dz),
                              ptr_or_null<float>(grad_bias_f32),
                              ptr_or_null<float>(workspace), N, F, C,
                              static_cast<Activation>(activation), dropout_p,
                              seed, stream);
  });

  // Rows of grad_W beyond F_used (the dropped remainder columns) get zero gradient.
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

}  // namespace glue
}  // namespace attnfast
