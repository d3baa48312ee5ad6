// ATen side of the CUDA memory addressing kernels, shared by the CUDA ops (csrc/cuda/memory.cu)
// and the SIMT harness ops (csrc/simt/memory_ops.cpp): the same argument checks (those of the CPU
// ops, csrc/checks/memory.h: same messages), outputs, workspaces and launcher calls of
// csrc/cuda/memory_kernels.cuh. The includer checks the device (CUDA vs CPU tensors) and passes
// the stream.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <tuple>

#include "checks/memory.h"
#include "cuda/memory_kernels.cuh"
#include "cuda/glue_common.h"

namespace attnfast {
namespace memory_glue {

// The shared glue helpers (csrc/cuda/glue_common.h).
template <typename Fn>
void dispatch_dtype(at::ScalarType dt, Fn&& f) {
  glue::dispatch_float_double(dt, "memory ops (CUDA kernels): tensors", std::forward<Fn>(f));
}
using glue::ptr;
using glue::workspace;

// ---- content --------------------------------------------------------------------------------------

inline at::Tensor content_forward(const at::Tensor& memory, const at::Tensor& keys,
                                  const at::Tensor& strengths, double eps, cudaStream_t stream) {
  checks::memory_content(memory, keys, strengths);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), H = keys.size(1);
  at::Tensor out = at::empty({B, H, N}, memory.options());
  dispatch_dtype(memory.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::memory_content_forward<T>(ptr<T>(memory), ptr<T>(keys), ptr<T>(strengths), ptr<T>(out),
                                    B, N, W, H, static_cast<T>(eps), stream);
  });
  return out;
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> content_backward(
    const at::Tensor& grad, const at::Tensor& memory, const at::Tensor& keys,
    const at::Tensor& strengths, const at::Tensor& weights, double eps, cudaStream_t stream) {
  checks::memory_content(memory, keys, strengths);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), H = keys.size(1);
  checks::memory_tensor("memory_content_backward", "grad_weights", grad, {B, H, N}, memory);
  checks::memory_tensor("memory_content_backward", "weights", weights, {B, H, N}, memory);
  glue::check_grid_yz(B, "memory_content_backward", "B");
  at::Tensor gm = at::zeros_like(memory), gk = at::zeros_like(keys), gs = at::zeros_like(strengths);
  at::Tensor ws = workspace(memory, cuda::memory_content_backward_ws(B, N, H), memory.scalar_type());
  dispatch_dtype(memory.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::memory_content_backward<T>(ptr<T>(grad), ptr<T>(memory), ptr<T>(keys),
                                     ptr<T>(strengths), ptr<T>(weights), ptr<T>(gm), ptr<T>(gk),
                                     ptr<T>(gs), ptr<T>(ws), B, N, W, H, static_cast<T>(eps),
                                     stream);
  });
  return {gm, gk, gs};
}

// ---- allocation -----------------------------------------------------------------------------------

inline void allocation_size(const at::Tensor& usage) {
  TORCH_CHECK(usage.size(1) <= cuda::dnc_allocation_max_slots(),
              "dnc_allocation (CUDA kernels): usage must have N <= ",
              cuda::dnc_allocation_max_slots(),
              " slots (the in-block sort keeps all N usages in shared memory), got N = ",
              usage.size(1));
}

inline at::Tensor allocation_forward(const at::Tensor& usage, const at::Tensor& gates, double eps,
                                     cudaStream_t stream) {
  checks::dnc_allocation(usage, gates);
  allocation_size(usage);
  const int64_t B = usage.size(0), N = usage.size(1), Hw = gates.size(1);
  at::Tensor out = at::empty({B, Hw, N}, usage.options());
  dispatch_dtype(usage.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::dnc_allocation_forward<T>(ptr<T>(usage), ptr<T>(gates), ptr<T>(out), B, N, Hw,
                                    static_cast<T>(eps), stream);
  });
  return out;
}

inline std::tuple<at::Tensor, at::Tensor> allocation_backward(const at::Tensor& grad,
                                                              const at::Tensor& usage,
                                                              const at::Tensor& gates, double eps,
                                                              cudaStream_t stream) {
  checks::dnc_allocation(usage, gates);
  allocation_size(usage);
  const int64_t B = usage.size(0), N = usage.size(1), Hw = gates.size(1);
  checks::memory_tensor("dnc_allocation_backward", "grad_allocation", grad, {B, Hw, N}, usage);
  at::Tensor gu = at::zeros_like(usage), gg = at::zeros_like(gates);
  at::Tensor ws = workspace(usage, cuda::dnc_allocation_backward_ws(B, N, Hw), usage.scalar_type());
  at::Tensor ws_int = workspace(usage, cuda::dnc_allocation_backward_ws_int(B, N, Hw), at::kInt);
  dispatch_dtype(usage.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::dnc_allocation_backward<T>(ptr<T>(grad), ptr<T>(usage), ptr<T>(gates), ptr<T>(gu),
                                     ptr<T>(gg), ptr<T>(ws), ptr<int32_t>(ws_int), B, N, Hw,
                                     static_cast<T>(eps), stream);
  });
  return {gu, gg};
}

// ---- erase / add write ----------------------------------------------------------------------------

inline at::Tensor write_forward(const at::Tensor& memory, const at::Tensor& ww,
                                const at::Tensor& erase, const at::Tensor& add,
                                cudaStream_t stream) {
  checks::memory_write(memory, ww, erase, add);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), Hw = ww.size(1);
  at::Tensor out = at::empty_like(memory);
  dispatch_dtype(memory.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::memory_write_forward<T>(ptr<T>(memory), ptr<T>(ww), ptr<T>(erase), ptr<T>(add),
                                  ptr<T>(out), B, N, W, Hw, stream);
  });
  return out;
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> write_backward(
    const at::Tensor& grad, const at::Tensor& memory, const at::Tensor& ww,
    const at::Tensor& erase, const at::Tensor& add, cudaStream_t stream) {
  checks::memory_write(memory, ww, erase, add);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), Hw = ww.size(1);
  checks::memory_tensor("memory_write_backward", "grad_out", grad, {B, N, W}, memory);
  glue::check_grid_yz(B * Hw, "memory_write_backward", "B x Hw");
  // zeros: a reduction over an empty axis (N = 0 or W = 0) launches nothing.
  at::Tensor gm = at::zeros_like(memory), gw = at::zeros_like(ww), ge = at::zeros_like(erase),
             ga = at::zeros_like(add);
  dispatch_dtype(memory.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::memory_write_backward<T>(ptr<T>(grad), ptr<T>(memory), ptr<T>(ww), ptr<T>(erase),
                                   ptr<T>(add), ptr<T>(gm), ptr<T>(gw), ptr<T>(ge), ptr<T>(ga),
                                   B, N, W, Hw, stream);
  });
  return {gm, gw, ge, ga};
}

// ---- link + directional reads ---------------------------------------------------------------------

inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> link_read_forward(
    const at::Tensor& link, const at::Tensor& prec, const at::Tensor& ww, const at::Tensor& rw,
    cudaStream_t stream) {
  checks::dnc_link_read(link, prec, ww, rw);
  const int64_t B = link.size(0), Hw = link.size(1), N = link.size(2), R = rw.size(1);
  glue::check_grid_yz(B * Hw, "dnc_link_read_forward", "B x Hw");
  at::Tensor nl = at::empty_like(link), np = at::empty_like(prec);
  at::Tensor f = at::empty({B, R, Hw, N}, link.options());
  at::Tensor bk = at::empty({B, R, Hw, N}, link.options());
  dispatch_dtype(link.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::dnc_link_read_forward<T>(ptr<T>(link), ptr<T>(prec), ptr<T>(ww), ptr<T>(rw), ptr<T>(nl),
                                   ptr<T>(np), ptr<T>(f), ptr<T>(bk), B, Hw, N, R, stream);
  });
  return {nl, np, f, bk};
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> link_read_backward(
    const at::Tensor& g_link, const at::Tensor& g_prec, const at::Tensor& g_fwd,
    const at::Tensor& g_bwd, const at::Tensor& link, const at::Tensor& prec, const at::Tensor& ww,
    const at::Tensor& rw, cudaStream_t stream) {
  checks::dnc_link_read(link, prec, ww, rw);
  const int64_t B = link.size(0), Hw = link.size(1), N = link.size(2), R = rw.size(1);
  const char* op = "dnc_link_read_backward";
  glue::check_grid_yz(B * Hw, op, "B x Hw");
  checks::memory_tensor(op, "grad_link", g_link, {B, Hw, N, N}, link);
  checks::memory_tensor(op, "grad_precedence", g_prec, {B, Hw, N}, link);
  checks::memory_tensor(op, "grad_forward", g_fwd, {B, R, Hw, N}, link);
  checks::memory_tensor(op, "grad_backward", g_bwd, {B, R, Hw, N}, link);
  at::Tensor dl = at::empty_like(link), dp = at::empty_like(prec), dw = at::empty_like(ww),
             dr = at::zeros_like(rw);
  at::Tensor ws = workspace(link, cuda::dnc_link_backward_ws(B, Hw, N, R), link.scalar_type());
  dispatch_dtype(link.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::dnc_link_read_backward<T>(ptr<T>(g_link), ptr<T>(g_prec), ptr<T>(g_fwd), ptr<T>(g_bwd),
                                    ptr<T>(link), ptr<T>(prec), ptr<T>(ww), ptr<T>(rw), ptr<T>(dl),
                                    ptr<T>(dp), ptr<T>(dw), ptr<T>(dr), ptr<T>(ws), B, Hw, N, R,
                                    stream);
  });
  return {dl, dp, dw, dr};
}

}  // namespace memory_glue
}  // namespace attnfast
