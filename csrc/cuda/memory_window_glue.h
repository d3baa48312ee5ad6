// ATen side of the CUDA kernels of Graves' window (memory_window_kernels.cuh), shared by the CUDA
// ops (memory_window.cu) and the SIMT harness ops (csrc/simt/memory_ops.cpp): the argument checks
// of the CPU ops (csrc/checks/memory.h: same messages), outputs, workspaces and launcher calls.
// One function per op, glue::<op>(stream, <the schema's arguments>); the device adaptors
// (csrc/device_op.h) check the devices and pass the stream. float32 and float64; deterministic.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>

#include <optional>
#include <tuple>
#include <type_traits>

#include "checks/memory.h"
#include "cuda/glue_common.h"
#include "cuda/memory_window_kernels.cuh"

namespace attnfast {
namespace glue {

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> graves_window_forward(
    cudaStream_t stream, const at::Tensor& ah, const at::Tensor& bh, const at::Tensor& kh,
    const at::Tensor& k0, const at::Tensor& chars, const std::optional<at::Tensor>& mask) {
  checks::graves_window(ah, bh, kh, k0, chars, mask);
  const int64_t B = ah.size(0), T_ = ah.size(1), K = ah.size(2), U = chars.size(1),
                C = chars.size(2);
  // zeros: with K = 0 the kappa kernel is not launched (kappa is then empty anyway), and phi /
  // window are sums that may be over an empty axis.
  at::Tensor w = at::zeros({B, T_, C}, ah.options()), kap = at::empty_like(ah),
             phi = at::zeros({B, T_, U}, ah.options());
  dispatch_memory_dtype(ah.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::graves_window_forward<T>(ptr<T>(ah), ptr<T>(bh), ptr<T>(kh), ptr<T>(k0), ptr<T>(chars),
                                   mask.has_value() ? ptr<T>(*mask) : nullptr, ptr<T>(w),
                                   ptr<T>(kap), ptr<T>(phi), B, T_, K, U, C, stream);
  });
  return {w, kap, phi};
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
graves_window_backward(cudaStream_t stream, const at::Tensor& g_w, const at::Tensor& g_kappa,
                       const at::Tensor& g_phi, const at::Tensor& ah, const at::Tensor& bh,
                       const at::Tensor& kh, const at::Tensor& k0, const at::Tensor& chars,
                       const std::optional<at::Tensor>& mask) {
  checks::graves_window_backward(g_w, g_kappa, g_phi, ah, bh, kh, k0, chars, mask);
  const int64_t B = ah.size(0), T_ = ah.size(1), K = ah.size(2), U = chars.size(1),
                C = chars.size(2);
  // zeros: sums over t (d chars, d mask, d kappa0) stay 0 when T = 0.
  at::Tensor da = at::empty_like(ah), db = at::empty_like(bh), dk = at::empty_like(kh),
             dk0 = at::zeros_like(k0), dc = at::zeros_like(chars);
  // No mask: an empty (0,) tensor in the mask gradient's place (the schema's outputs are fixed).
  at::Tensor dm = mask.has_value() ? at::zeros_like(*mask) : at::empty({0}, ah.options());
  at::Tensor ws = workspace(ah, cuda::graves_window_backward_ws(B, T_, K, U), ah.scalar_type());
  dispatch_memory_dtype(ah.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const bool masked = mask.has_value();
    cuda::graves_window_backward<T>(ptr<T>(g_w), ptr<T>(g_kappa), ptr<T>(g_phi), ptr<T>(ah),
                                    ptr<T>(bh), ptr<T>(kh), ptr<T>(k0), ptr<T>(chars),
                                    masked ? ptr<T>(*mask) : nullptr, ptr<T>(da), ptr<T>(db),
                                    ptr<T>(dk), ptr<T>(dk0), ptr<T>(dc),
                                    masked ? ptr<T>(dm) : nullptr, ptr<T>(ws), B, T_, K, U, C,
                                    stream);
  });
  return {da, db, dk, dk0, dc, dm};
}

}  // namespace glue
}  // namespace attnfast
