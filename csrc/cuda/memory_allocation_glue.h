// ATen side of the CUDA DNC allocation kernels (allocation weights, write weights, usage update;
// memory_allocation_kernels.cuh), shared by the CUDA ops (memory_allocation.cu) and the SIMT
// harness ops (csrc/simt/memory_ops.cpp): the argument checks of the CPU ops (csrc/checks/memory.h:
// same messages), outputs, workspaces and launcher calls. One function per op,
// glue::<op>(stream, <the schema's arguments>); the device adaptors (csrc/device_op.h) check the
// devices and pass the stream. float32 and float64; deterministic (no atomics).
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>
#include <c10/util/Exception.h>

#include <tuple>
#include <type_traits>

#include "checks/memory.h"
#include "cuda/glue_common.h"
#include "cuda/limits.h"
#include "cuda/memory_allocation_kernels.cuh"

namespace attnfast {
namespace glue {

// The allocation kernels keep all N usages of a batch element in shared memory.
inline void check_allocation_slots(const at::Tensor& usage) {
  TORCH_CHECK(usage.size(1) <= cuda::kMaxAllocSlots,
              "dnc_allocation (CUDA kernels): usage must have N <= ", cuda::kMaxAllocSlots,
              " slots (the in-block sort keeps all N usages in shared memory), got N = ",
              usage.size(1));
}

inline at::Tensor dnc_allocation_forward(cudaStream_t stream, const at::Tensor& usage,
                                         const at::Tensor& gates, double eps) {
  checks::dnc_allocation(usage, gates);
  check_allocation_slots(usage);
  const int64_t B = usage.size(0), N = usage.size(1), Hw = gates.size(1);
  at::Tensor out = at::empty({B, Hw, N}, usage.options());
  dispatch_memory_dtype(usage.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::dnc_allocation_forward<T>(ptr<T>(usage), ptr<T>(gates), ptr<T>(out), B, N, Hw,
                                    static_cast<T>(eps), stream);
  });
  return out;
}

inline std::tuple<at::Tensor, at::Tensor> dnc_allocation_backward(cudaStream_t stream,
                                                                  const at::Tensor& grad,
                                                                  const at::Tensor& usage,
                                                                  const at::Tensor& gates,
                                                                  double eps) {
  checks::dnc_allocation_backward(grad, usage, gates);
  check_allocation_slots(usage);
  const int64_t B = usage.size(0), N = usage.size(1), Hw = gates.size(1);
  at::Tensor gu = at::zeros_like(usage), gg = at::zeros_like(gates);
  at::Tensor ws = workspace(usage, cuda::dnc_allocation_backward_ws(B, N, Hw), usage.scalar_type());
  at::Tensor ws_int = workspace(usage, cuda::dnc_allocation_backward_ws_int(B, N, Hw), at::kInt);
  dispatch_memory_dtype(usage.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::dnc_allocation_backward<T>(ptr<T>(grad), ptr<T>(usage), ptr<T>(gates), ptr<T>(gu),
                                     ptr<T>(gg), ptr<T>(ws), ptr<int32_t>(ws_int), B, N, Hw,
                                     static_cast<T>(eps), stream);
  });
  return {gu, gg};
}

inline at::Tensor dnc_write_weights_forward(cudaStream_t stream, const at::Tensor& usage,
                                            const at::Tensor& content, const at::Tensor& ga,
                                            const at::Tensor& gw, double eps) {
  checks::dnc_write_weights(usage, content, ga, gw);
  check_allocation_slots(usage);
  const int64_t B = usage.size(0), N = usage.size(1), Hw = content.size(1);
  at::Tensor out = at::empty({B, Hw, N}, usage.options());
  at::Tensor ws = workspace(usage, cuda::dnc_write_weights_forward_ws(B, Hw), usage.scalar_type());
  dispatch_memory_dtype(usage.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::dnc_write_weights_forward<T>(ptr<T>(usage), ptr<T>(content), ptr<T>(ga), ptr<T>(gw),
                                       ptr<T>(out), ptr<T>(ws), B, N, Hw, static_cast<T>(eps),
                                       stream);
  });
  return out;
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> dnc_write_weights_backward(
    cudaStream_t stream, const at::Tensor& grad, const at::Tensor& usage, const at::Tensor& content,
    const at::Tensor& ga, const at::Tensor& gw, double eps) {
  checks::dnc_write_weights_backward(grad, usage, content, ga, gw);
  check_allocation_slots(usage);
  const int64_t B = usage.size(0), N = usage.size(1), Hw = content.size(1);
  at::Tensor gu = at::zeros_like(usage), gc = at::empty_like(content), gga = at::empty_like(ga),
             ggw = at::empty_like(gw);
  at::Tensor ws = workspace(usage, cuda::dnc_write_weights_backward_ws(B, N, Hw),
                            usage.scalar_type());
  at::Tensor ws_int = workspace(usage, cuda::dnc_allocation_backward_ws_int(B, N, Hw), at::kInt);
  dispatch_memory_dtype(usage.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::dnc_write_weights_backward<T>(ptr<T>(grad), ptr<T>(usage), ptr<T>(content), ptr<T>(ga),
                                        ptr<T>(gw), ptr<T>(gu), ptr<T>(gc), ptr<T>(gga),
                                        ptr<T>(ggw), ptr<T>(ws), ptr<int32_t>(ws_int), B, N, Hw,
                                        static_cast<T>(eps), stream);
  });
  return {gu, gc, gga, ggw};
}

inline at::Tensor dnc_usage_forward(cudaStream_t stream, const at::Tensor& usage,
                                    const at::Tensor& ww, const at::Tensor& free_gate,
                                    const at::Tensor& rw) {
  checks::dnc_usage(usage, ww, free_gate, rw);
  const int64_t B = usage.size(0), N = usage.size(1), Hw = ww.size(1), R = rw.size(1);
  at::Tensor out = at::empty_like(usage);
  dispatch_memory_dtype(usage.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::dnc_usage_forward<T>(ptr<T>(usage), ptr<T>(ww), ptr<T>(free_gate), ptr<T>(rw),
                               ptr<T>(out), B, N, Hw, R, stream);
  });
  return out;
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> dnc_usage_backward(
    cudaStream_t stream, const at::Tensor& grad, const at::Tensor& usage, const at::Tensor& ww,
    const at::Tensor& free_gate, const at::Tensor& rw) {
  checks::dnc_usage_backward(grad, usage, ww, free_gate, rw);
  const int64_t B = usage.size(0), N = usage.size(1), Hw = ww.size(1), R = rw.size(1);
  at::Tensor du = at::empty_like(usage), df = at::empty_like(free_gate), dr = at::empty_like(rw);
  at::Tensor ws = workspace(usage, cuda::dnc_usage_backward_ws(B, R, N), usage.scalar_type());
  dispatch_memory_dtype(usage.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::dnc_usage_backward<T>(ptr<T>(grad), ptr<T>(usage), ptr<T>(ww), ptr<T>(free_gate),
                                ptr<T>(rw), ptr<T>(du), ptr<T>(df), ptr<T>(dr), ptr<T>(ws), B, N,
                                Hw, R, stream);
  });
  return {du, df, dr};
}

}  // namespace glue
}  // namespace attnfast
