// ATen side of the CUDA DNC link kernels (temporal link update + directional reads;
// memory_links_kernels.cuh), shared by the CUDA ops (memory_links.cu) and the SIMT harness ops
// (csrc/simt/memory_ops.cpp): the argument checks of the CPU ops (csrc/checks/memory.h: same
// messages), outputs, workspaces and launcher calls. One function per op,
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
#include "cuda/memory_links_kernels.cuh"

namespace attnfast {
namespace glue {

inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> dnc_link_read_forward(
    cudaStream_t stream, const at::Tensor& link, const at::Tensor& prec, const at::Tensor& ww,
    const at::Tensor& rw) {
  checks::dnc_link_read(link, prec, ww, rw);
  const int64_t B = link.size(0), Hw = link.size(1), N = link.size(2), R = rw.size(1);
  check_grid_yz(B * Hw, "dnc_link_read_forward", "B x Hw");
  at::Tensor nl = at::empty_like(link), np = at::empty_like(prec);
  at::Tensor f = at::empty({B, R, Hw, N}, link.options());
  at::Tensor bk = at::empty({B, R, Hw, N}, link.options());
  dispatch_memory_dtype(link.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::dnc_link_read_forward<T>(ptr<T>(link), ptr<T>(prec), ptr<T>(ww), ptr<T>(rw), ptr<T>(nl),
                                   ptr<T>(np), ptr<T>(f), ptr<T>(bk), B, Hw, N, R, stream);
  });
  return {nl, np, f, bk};
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> dnc_link_read_backward(
    cudaStream_t stream, const at::Tensor& g_link, const at::Tensor& g_prec,
    const at::Tensor& g_fwd, const at::Tensor& g_bwd, const at::Tensor& link,
    const at::Tensor& prec, const at::Tensor& ww, const at::Tensor& rw) {
  checks::dnc_link_read_backward(g_link, g_prec, g_fwd, g_bwd, link, prec, ww, rw);
  const int64_t B = link.size(0), Hw = link.size(1), N = link.size(2), R = rw.size(1);
  check_grid_yz(B * Hw, "dnc_link_read_backward", "B x Hw");
  at::Tensor dl = at::empty_like(link), dp = at::empty_like(prec), dw = at::empty_like(ww),
             dr = at::zeros_like(rw);
  at::Tensor ws = workspace(link, cuda::dnc_link_backward_ws(B, Hw, N, R), link.scalar_type());
  dispatch_memory_dtype(link.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::dnc_link_read_backward<T>(ptr<T>(g_link), ptr<T>(g_prec), ptr<T>(g_fwd), ptr<T>(g_bwd),
                                    ptr<T>(link), ptr<T>(prec), ptr<T>(ww), ptr<T>(rw), ptr<T>(dl),
                                    ptr<T>(dp), ptr<T>(dw), ptr<T>(dr), ptr<T>(ws), B, Hw, N, R,
                                    stream);
  });
  return {dl, dp, dw, dr};
}

}  // namespace glue
}  // namespace attnfast
