// ATen side of the CUDA kernels of the second group of memory ops (NTM location, Graves' window,
// DNC usage, memory read), shared by the CUDA ops (csrc/cuda/memory_extra.cu) and the SIMT harness
// ops (csrc/simt/memory_extra_ops.cpp): the argument checks of the CPU ops
// (csrc/checks/memory_extra.h: same messages), outputs, workspaces and the launcher calls of
// csrc/cuda/memory_extra_kernels.cuh. The includer checks the device and passes the stream.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <tuple>
#include <type_traits>

#include "checks/memory_extra.h"
#include "cuda/memory_extra_kernels.cuh"
#include "cuda/glue_common.h"

namespace attnfast {
namespace memory_extra_glue {

// The shared glue helpers (csrc/cuda/glue_common.h).
template <typename Fn>
void dispatch_dtype(at::ScalarType dt, Fn&& f) {
  glue::dispatch_float_double(dt, "memory ops (CUDA kernels): tensors", std::forward<Fn>(f));
}
using glue::ptr;
using glue::workspace;

// ---- NTM location addressing ----------------------------------------------------------------------

inline at::Tensor ntm_location_forward(const at::Tensor& content, const at::Tensor& gate,
                                       const at::Tensor& prev, const at::Tensor& shift,
                                       const at::Tensor& gamma, cudaStream_t stream) {
  checks::ntm_location(content, gate, prev, shift, gamma);
  const int64_t B = content.size(0), H = content.size(1), N = content.size(2), S = shift.size(2);
  at::Tensor out = at::empty_like(content);
  dispatch_dtype(content.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::ntm_location_forward<T>(ptr<T>(content), ptr<T>(gate), ptr<T>(prev), ptr<T>(shift),
                                  ptr<T>(gamma), ptr<T>(out), B, H, N, S, stream);
  });
  return out;
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
ntm_location_backward(const at::Tensor& grad, const at::Tensor& content, const at::Tensor& gate,
                      const at::Tensor& prev, const at::Tensor& shift, const at::Tensor& gamma,
                      cudaStream_t stream) {
  checks::ntm_location(content, gate, prev, shift, gamma);
  const int64_t B = content.size(0), H = content.size(1), N = content.size(2), S = shift.size(2);
  checks::memory_tensor("ntm_location_backward", "grad_weights", grad, {B, H, N}, content);
  // Every element is written by the kernel (a block per (b, h), N >= 1 by the checks).
  at::Tensor dc = at::empty_like(content), dg = at::empty_like(gate), dp = at::empty_like(prev),
             ds = at::empty_like(shift), dgam = at::empty_like(gamma);
  at::Tensor ws = workspace(content, cuda::ntm_location_backward_ws(B, H, N), content.scalar_type());
  dispatch_dtype(content.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::ntm_location_backward<T>(ptr<T>(grad), ptr<T>(content), ptr<T>(gate), ptr<T>(prev),
                                   ptr<T>(shift), ptr<T>(gamma), ptr<T>(dc), ptr<T>(dg),
                                   ptr<T>(dp), ptr<T>(ds), ptr<T>(dgam), ptr<T>(ws), B, H, N, S,
                                   stream);
  });
  return {dc, dg, dp, ds, dgam};
}

// ---- Graves' window ---------------------------------------------------------------------------------

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> graves_window_forward(
    const at::Tensor& ah, const at::Tensor& bh, const at::Tensor& kh, const at::Tensor& k0,
    const at::Tensor& chars, const c10::optional<at::Tensor>& mask, cudaStream_t stream) {
  checks::graves_window(ah, bh, kh, k0, chars, mask);
  const int64_t B = ah.size(0), T_ = ah.size(1), K = ah.size(2), U = chars.size(1),
                C = chars.size(2);
  // zeros: with K = 0 the kappa kernel is not launched (kappa is then empty anyway), and phi /
  // window are sums that may be over an empty axis.
  at::Tensor w = at::zeros({B, T_, C}, ah.options()), kap = at::empty_like(ah),
             phi = at::zeros({B, T_, U}, ah.options());
  dispatch_dtype(ah.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::graves_window_forward<T>(ptr<T>(ah), ptr<T>(bh), ptr<T>(kh), ptr<T>(k0), ptr<T>(chars),
                                   mask.has_value() ? ptr<T>(*mask) : nullptr, ptr<T>(w),
                                   ptr<T>(kap), ptr<T>(phi), B, T_, K, U, C, stream);
  });
  return {w, kap, phi};
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
graves_window_backward(const at::Tensor& g_w, const at::Tensor& g_kappa, const at::Tensor& g_phi,
                       const at::Tensor& ah, const at::Tensor& bh, const at::Tensor& kh,
                       const at::Tensor& k0, const at::Tensor& chars,
                       const c10::optional<at::Tensor>& mask, cudaStream_t stream) {
  checks::graves_window(ah, bh, kh, k0, chars, mask);
  const int64_t B = ah.size(0), T_ = ah.size(1), K = ah.size(2), U = chars.size(1),
                C = chars.size(2);
  const char* op = "graves_window_backward";
  checks::memory_tensor(op, "grad_window", g_w, {B, T_, C}, ah);
  checks::memory_tensor(op, "grad_kappa", g_kappa, {B, T_, K}, ah);
  checks::memory_tensor(op, "grad_phi", g_phi, {B, T_, U}, ah);
  // zeros: sums over t (d chars, d mask, d kappa0) stay 0 when T = 0.
  at::Tensor da = at::empty_like(ah), db = at::empty_like(bh), dk = at::empty_like(kh),
             dk0 = at::zeros_like(k0), dc = at::zeros_like(chars);
  // No mask: an empty (0,) tensor in the mask gradient's place (the schema's outputs are fixed).
  at::Tensor dm = mask.has_value() ? at::zeros_like(*mask) : at::empty({0}, ah.options());
  at::Tensor ws = workspace(ah, cuda::graves_window_backward_ws(B, T_, K, U), ah.scalar_type());
  dispatch_dtype(ah.scalar_type(), [&](auto* tag) {
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

// ---- DNC usage ----------------------------------------------------------------------------------------

inline at::Tensor usage_forward(const at::Tensor& usage, const at::Tensor& ww,
                                const at::Tensor& free_gate, const at::Tensor& rw,
                                cudaStream_t stream) {
  checks::dnc_usage(usage, ww, free_gate, rw);
  const int64_t B = usage.size(0), N = usage.size(1), Hw = ww.size(1), R = rw.size(1);
  at::Tensor out = at::empty_like(usage);
  dispatch_dtype(usage.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::dnc_usage_forward<T>(ptr<T>(usage), ptr<T>(ww), ptr<T>(free_gate), ptr<T>(rw),
                               ptr<T>(out), B, N, Hw, R, stream);
  });
  return out;
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> usage_backward(
    const at::Tensor& grad, const at::Tensor& usage, const at::Tensor& ww,
    const at::Tensor& free_gate, const at::Tensor& rw, cudaStream_t stream) {
  checks::dnc_usage(usage, ww, free_gate, rw);
  const int64_t B = usage.size(0), N = usage.size(1), Hw = ww.size(1), R = rw.size(1);
  checks::memory_tensor("dnc_usage_backward", "grad_usage", grad, {B, N}, usage);
  at::Tensor du = at::empty_like(usage), df = at::empty_like(free_gate), dr = at::empty_like(rw);
  at::Tensor ws = workspace(usage, cuda::dnc_usage_backward_ws(B, R, N), usage.scalar_type());
  dispatch_dtype(usage.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::dnc_usage_backward<T>(ptr<T>(grad), ptr<T>(usage), ptr<T>(ww), ptr<T>(free_gate),
                                ptr<T>(rw), ptr<T>(du), ptr<T>(df), ptr<T>(dr), ptr<T>(ws), B, N,
                                Hw, R, stream);
  });
  return {du, df, dr};
}

// ---- memory read ----------------------------------------------------------------------------------------

inline at::Tensor read_forward(const at::Tensor& memory, const at::Tensor& rw,
                               cudaStream_t stream) {
  checks::memory_read(memory, rw);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), R = rw.size(1);
  at::Tensor out = at::empty({B, R, W}, memory.options());
  dispatch_dtype(memory.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::memory_read_forward<T>(ptr<T>(memory), ptr<T>(rw), ptr<T>(out), B, N, W, R, stream);
  });
  return out;
}

inline std::tuple<at::Tensor, at::Tensor> read_backward(const at::Tensor& grad,
                                                        const at::Tensor& memory,
                                                        const at::Tensor& rw,
                                                        cudaStream_t stream) {
  checks::memory_read(memory, rw);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), R = rw.size(1);
  checks::memory_tensor("memory_read_backward", "grad_words", grad, {B, R, W}, memory);
  at::Tensor dm = at::empty_like(memory), dr = at::empty_like(rw);
  dispatch_dtype(memory.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::memory_read_backward<T>(ptr<T>(grad), ptr<T>(memory), ptr<T>(rw), ptr<T>(dm), ptr<T>(dr),
                                  B, N, W, R, stream);
  });
  return {dm, dr};
}

}  // namespace memory_extra_glue
}  // namespace attnfast
