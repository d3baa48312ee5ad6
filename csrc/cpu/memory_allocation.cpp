// DNC allocation ops on the CPU, the allocation weights, the write weights around them and the
// usage update: the glue
// (memory_glue.h) around the per-ISA loops of kernels/memory_allocation_impl.h.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <tuple>

#include "checks/memory.h"
#include "cpu/memory_glue.h"
#include "op_lists.h"

namespace attnfast {
namespace cpu {
namespace {

using namespace memory_glue;

template <typename T>
AllocationArgs<T> allocation_args(const at::Tensor& usage, const at::Tensor& gates, double eps) {
  AllocationArgs<T> a{};
  a.usage = usage.data_ptr<T>();
  a.gates = gates.data_ptr<T>();
  a.B = usage.size(0);
  a.N = usage.size(1);
  a.Hw = gates.size(1);
  a.eps = static_cast<T>(eps);
  return a;
}

at::Tensor dnc_allocation_forward(const at::Tensor& usage, const at::Tensor& gates, double eps) {
  checks::dnc_allocation(usage, gates);
  const int64_t B = usage.size(0), N = usage.size(1), Hw = gates.size(1);
  at::Tensor out = at::empty({B, Hw, N}, usage.options());
  at::Tensor s = scratch(usage, B, N);
  at::Tensor o = int_scratch(usage, B, 2 * N);
  AT_DISPATCH_FLOATING_TYPES(usage.scalar_type(), "dnc_allocation_forward", [&] {
    auto a = allocation_args<scalar_t>(usage, gates, eps);
    a.alloc = out.data_ptr<scalar_t>();
    a.scratch = s.data_ptr<scalar_t>();
    a.scratch_stride = N;
    a.order = o.data_ptr<int32_t>();
    a.order_stride = 2 * N;
    run(B, Hw * N * 8, a, table<scalar_t>().allocation_forward);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> dnc_allocation_backward(const at::Tensor& grad,
                                                           const at::Tensor& usage,
                                                           const at::Tensor& gates, double eps) {
  checks::dnc_allocation_backward(grad, usage, gates);
  const int64_t B = usage.size(0), N = usage.size(1), Hw = gates.size(1);

  at::Tensor gu = at::empty_like(usage), gg = at::empty_like(gates);
  at::Tensor s = scratch(usage, B, (2 * Hw + 4) * N);
  at::Tensor o = int_scratch(usage, B, (Hw + 1) * N);
  AT_DISPATCH_FLOATING_TYPES(usage.scalar_type(), "dnc_allocation_backward", [&] {
    auto a = allocation_args<scalar_t>(usage, gates, eps);
    a.grad = grad.data_ptr<scalar_t>();
    a.grad_usage = gu.data_ptr<scalar_t>();
    a.grad_gates = gg.data_ptr<scalar_t>();
    a.scratch = s.data_ptr<scalar_t>();
    a.scratch_stride = (2 * Hw + 4) * N;
    a.order = o.data_ptr<int32_t>();
    a.order_stride = (Hw + 1) * N;
    run(B, Hw * N * 16, a, table<scalar_t>().allocation_backward);
  });
  return {gu, gg};
}

// Write weights: the allocation's block around a (B, Hw) gates buffer the loops fill.
template <typename T>
WriteWeightsArgs<T> write_weights_args(const at::Tensor& usage, const at::Tensor& content,
                                       const at::Tensor& ga, const at::Tensor& gw,
                                       const at::Tensor& gates, double eps) {
  WriteWeightsArgs<T> a{};
  a.alloc = allocation_args<T>(usage, gates, eps);
  a.gates = gates.data_ptr<T>();
  a.content = content.data_ptr<T>();
  a.ga = ga.data_ptr<T>();
  a.gw = gw.data_ptr<T>();
  return a;
}

at::Tensor dnc_write_weights_forward(const at::Tensor& usage, const at::Tensor& content,
                                     const at::Tensor& ga, const at::Tensor& gw, double eps) {
  checks::dnc_write_weights(usage, content, ga, gw);
  const int64_t B = usage.size(0), N = usage.size(1), Hw = content.size(1);
  at::Tensor out = at::empty({B, Hw, N}, usage.options());
  at::Tensor gates = at::empty({B, Hw}, usage.options());
  at::Tensor s = scratch(usage, B, N);
  at::Tensor o = int_scratch(usage, B, 2 * N);
  AT_DISPATCH_FLOATING_TYPES(usage.scalar_type(), "dnc_write_weights_forward", [&] {
    auto a = write_weights_args<scalar_t>(usage, content, ga, gw, gates, eps);
    a.alloc.alloc = out.data_ptr<scalar_t>();
    a.alloc.scratch = s.data_ptr<scalar_t>();
    a.alloc.scratch_stride = N;
    a.alloc.order = o.data_ptr<int32_t>();
    a.alloc.order_stride = 2 * N;
    run(B, Hw * N * 10, a, table<scalar_t>().write_weights_forward);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> dnc_write_weights_backward(
    const at::Tensor& grad, const at::Tensor& usage, const at::Tensor& content,
    const at::Tensor& ga, const at::Tensor& gw, double eps) {
  checks::dnc_write_weights_backward(grad, usage, content, ga, gw);
  const int64_t B = usage.size(0), N = usage.size(1), Hw = content.size(1);
  at::Tensor gu = at::empty_like(usage), gc = at::empty_like(content), gga = at::empty_like(ga),
             ggw = at::empty_like(gw);
  at::Tensor gates = at::empty({B, Hw}, usage.options());
  at::Tensor dgates = at::empty({B, Hw}, usage.options());
  // The allocation backward's (2 Hw + 4) N, then d allocation (Hw N).
  at::Tensor s = scratch(usage, B, (3 * Hw + 4) * N);
  at::Tensor o = int_scratch(usage, B, (Hw + 1) * N);
  AT_DISPATCH_FLOATING_TYPES(usage.scalar_type(), "dnc_write_weights_backward", [&] {
    auto a = write_weights_args<scalar_t>(usage, content, ga, gw, gates, eps);
    a.alloc.grad_usage = gu.data_ptr<scalar_t>();
    a.alloc.grad_gates = dgates.data_ptr<scalar_t>();
    a.alloc.scratch = s.data_ptr<scalar_t>();
    a.alloc.scratch_stride = (3 * Hw + 4) * N;
    a.alloc.order = o.data_ptr<int32_t>();
    a.alloc.order_stride = (Hw + 1) * N;
    a.grad = grad.data_ptr<scalar_t>();
    a.d_content = gc.data_ptr<scalar_t>();
    a.d_ga = gga.data_ptr<scalar_t>();
    a.d_gw = ggw.data_ptr<scalar_t>();
    run(B, Hw * N * 20, a, table<scalar_t>().write_weights_backward);
  });
  return {gu, gc, gga, ggw};
}

template <typename T>
UsageArgs<T> usage_args(const at::Tensor& usage, const at::Tensor& ww, const at::Tensor& free_gate,
                        const at::Tensor& rw) {
  UsageArgs<T> a{};
  a.usage = usage.data_ptr<T>();
  a.ww = ww.data_ptr<T>();
  a.free = free_gate.data_ptr<T>();
  a.rw = rw.data_ptr<T>();
  a.B = usage.size(0);
  a.N = usage.size(1);
  a.Hw = ww.size(1);
  a.R = rw.size(1);
  return a;
}

at::Tensor dnc_usage_forward(const at::Tensor& usage, const at::Tensor& ww,
                             const at::Tensor& free_gate, const at::Tensor& rw) {
  checks::dnc_usage(usage, ww, free_gate, rw);
  const int64_t B = usage.size(0), N = usage.size(1), Hw = ww.size(1), R = rw.size(1);
  at::Tensor out = at::empty_like(usage);
  at::Tensor s = scratch(usage, B, N);
  AT_DISPATCH_FLOATING_TYPES(usage.scalar_type(), "dnc_usage_forward", [&] {
    auto a = usage_args<scalar_t>(usage, ww, free_gate, rw);
    a.out = out.data_ptr<scalar_t>();
    a.scratch = s.data_ptr<scalar_t>();
    a.scratch_stride = N;
    run(B, (Hw + R + 2) * N, a, table<scalar_t>().usage_forward);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dnc_usage_backward(
    const at::Tensor& grad, const at::Tensor& usage, const at::Tensor& ww,
    const at::Tensor& free_gate, const at::Tensor& rw) {
  checks::dnc_usage_backward(grad, usage, ww, free_gate, rw);
  const int64_t B = usage.size(0), N = usage.size(1), Hw = ww.size(1), R = rw.size(1);
  at::Tensor du = at::empty_like(usage), df = at::empty_like(free_gate), dr = at::empty_like(rw);
  at::Tensor s = scratch(usage, B, 3 * N);
  AT_DISPATCH_FLOATING_TYPES(usage.scalar_type(), "dnc_usage_backward", [&] {
    auto a = usage_args<scalar_t>(usage, ww, free_gate, rw);
    a.grad = grad.data_ptr<scalar_t>();
    a.d_usage = du.data_ptr<scalar_t>();
    a.d_free = df.data_ptr<scalar_t>();
    a.d_rw = dr.data_ptr<scalar_t>();
    a.scratch = s.data_ptr<scalar_t>();
    a.scratch_stride = 3 * N;
    run(B, (Hw + R * R + 4) * N, a, table<scalar_t>().usage_backward);
  });
  return {du, df, dr};
}

}  // namespace
}  // namespace cpu
}  // namespace attnfast

TORCH_LIBRARY_IMPL(attnfast, CPU, m) { ATTNFAST_MEMORY_ALLOCATION_OPS(ATTNFAST_IMPL_CPU) }
