// ATen side of the CUDA memory addressing kernels (content, NTM location;
// memory_addressing_kernels.cuh), shared by the CUDA ops (memory_addressing.cu) and the SIMT
// harness ops (csrc/simt/memory_ops.cpp): the argument checks of the CPU ops (csrc/checks/memory.h:
// same messages), outputs, workspaces and launcher calls. One function per op,
// glue::<op>(stream, <the schema's arguments>); the device adaptors (csrc/device_op.h) check the
// devices and pass the stream. float32 and float64; deterministic (no atomics).
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>

#include <tuple>
#include <type_traits>

#include "checks/memory.h"
#include "cuda/glue_common.h"
#include "cuda/memory_addressing_kernels.cuh"

namespace attnfast {
namespace glue {

inline at::Tensor memory_content_forward(cudaStream_t stream, const at::Tensor& memory,
                                         const at::Tensor& keys, const at::Tensor& strengths,
                                         double eps) {
  checks::memory_content(memory, keys, strengths);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), H = keys.size(1);
  at::Tensor out = at::empty({B, H, N}, memory.options());
  dispatch_memory_dtype(memory.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::memory_content_forward<T>(ptr<T>(memory), ptr<T>(keys), ptr<T>(strengths), ptr<T>(out),
                                    B, N, W, H, static_cast<T>(eps), stream);
  });
  return out;
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> memory_content_backward(
    cudaStream_t stream, const at::Tensor& grad, const at::Tensor& memory, const at::Tensor& keys,
    const at::Tensor& strengths, const at::Tensor& weights, double eps) {
  checks::memory_content_backward(grad, memory, keys, strengths, weights);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), H = keys.size(1);
  check_grid_yz(B, "memory_content_backward", "B");
  at::Tensor gm = at::zeros_like(memory), gk = at::zeros_like(keys), gs = at::zeros_like(strengths);
  at::Tensor ws = workspace(memory, cuda::memory_content_backward_ws(B, N, H), memory.scalar_type());
  dispatch_memory_dtype(memory.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::memory_content_backward<T>(ptr<T>(grad), ptr<T>(memory), ptr<T>(keys),
                                     ptr<T>(strengths), ptr<T>(weights), ptr<T>(gm), ptr<T>(gk),
                                     ptr<T>(gs), ptr<T>(ws), B, N, W, H, static_cast<T>(eps),
                                     stream);
  });
  return {gm, gk, gs};
}

inline at::Tensor ntm_location_forward(cudaStream_t stream, const at::Tensor& content,
                                       const at::Tensor& gate, const at::Tensor& prev,
                                       const at::Tensor& shift, const at::Tensor& gamma) {
  checks::ntm_location(content, gate, prev, shift, gamma);
  const int64_t B = content.size(0), H = content.size(1), N = content.size(2), S = shift.size(2);
  at::Tensor out = at::empty_like(content);
  dispatch_memory_dtype(content.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::ntm_location_forward<T>(ptr<T>(content), ptr<T>(gate), ptr<T>(prev), ptr<T>(shift),
                                  ptr<T>(gamma), ptr<T>(out), B, H, N, S, stream);
  });
  return out;
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
ntm_location_backward(cudaStream_t stream, const at::Tensor& grad, const at::Tensor& content,
                      const at::Tensor& gate, const at::Tensor& prev, const at::Tensor& shift,
                      const at::Tensor& gamma) {
  checks::ntm_location_backward(grad, content, gate, prev, shift, gamma);
  const int64_t B = content.size(0), H = content.size(1), N = content.size(2), S = shift.size(2);
  // Every element is written by the kernel (a block per (b, h), N >= 1 by the checks).
  at::Tensor dc = at::empty_like(content), dg = at::empty_like(gate), dp = at::empty_like(prev),
             ds = at::empty_like(shift), dgam = at::empty_like(gamma);
  at::Tensor ws = workspace(content, cuda::ntm_location_backward_ws(B, H, N), content.scalar_type());
  dispatch_memory_dtype(content.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::ntm_location_backward<T>(ptr<T>(grad), ptr<T>(content), ptr<T>(gate), ptr<T>(prev),
                                   ptr<T>(shift), ptr<T>(gamma), ptr<T>(dc), ptr<T>(dg),
                                   ptr<T>(dp), ptr<T>(ds), ptr<T>(dgam), ptr<T>(ws), B, H, N, S,
                                   stream);
  });
  return {dc, dg, dp, ds, dgam};
}

}  // namespace glue
}  // namespace attnfast
