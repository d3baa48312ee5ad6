// Memory addressing ops on the CPU: ATen glue (checks, outputs, per-batch scratch) around the
// per-ISA loops of kernels/memory_impl.h, split over the batch with at::parallel_for. Each
// op's work per batch element is small (a DNC step at N = 512 is ~1 MFLOP per element outside
// the link), so the win over eager PyTorch is one pass per op instead of a dozen small ops,
// each with its own dispatch, allocation and trip through memory.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "checks/memory.h"
#include "cpu/block_cache.h"
#include "cpu/isa.h"
#include "cpu/kernels/memory.h"

namespace attnfast {
namespace cpu {
namespace {

const MemoryKernels& kernels() {
  return select_isa(base::memory_kernels, avx2::memory_kernels, avx512::memory_kernels);
}

template <typename T>
const MemoryKernelsT<T>& table();
template <>
const MemoryKernelsT<float>& table<float>() { return kernels().f32; }
template <>
const MemoryKernelsT<double>& table<double>() { return kernels().f64; }

// Batch elements per task: enough that a task does >= ~16k element operations.
int64_t grain(int64_t work_per_batch) {
  return std::max<int64_t>(1, int64_t(16384) / std::max<int64_t>(1, work_per_batch));
}

template <typename Args, typename Fn>
void run(int64_t B, int64_t work, const Args& args, Fn fn) {
  at::parallel_for(0, B, grain(work), [&](int64_t b0, int64_t b1) { fn(args, b0, b1); });
}

// Like run, but each task gets `per_task` elements of scratch of like's dtype, reused over its
// batch range: a few tens of KiB that the allocator serves from its heap, where B per-batch copies
// at once would be fresh pages (page faults) on every call.
template <typename T, typename Args, typename Fn>
void run_with_task_scratch(int64_t B, int64_t work, int64_t per_task, const at::Tensor& like,
                           const Args& args, Fn fn) {
  at::parallel_for(0, B, grain(work), [&](int64_t b0, int64_t b1) {
    at::Tensor s = at::empty({per_task}, like.options());
    Args task = args;
    task.scratch = s.data_ptr<T>();
    fn(task, b0, b1);
  });
}

// Per-batch scratch of `per_batch` elements of t's dtype.
at::Tensor scratch(const at::Tensor& like, int64_t B, int64_t per_batch) {
  return at::empty({std::max<int64_t>(1, B * per_batch)}, like.options());
}

at::Tensor int_scratch(const at::Tensor& like, int64_t B, int64_t per_batch) {
  return at::empty({std::max<int64_t>(1, B * per_batch)}, like.options().dtype(at::kInt));
}

// ---- content ------------------------------------------------------------------------------------

template <typename T>
ContentArgs<T> content_args(const at::Tensor& memory, const at::Tensor& keys,
                            const at::Tensor& strengths, double eps) {
  ContentArgs<T> a{};
  a.memory = memory.data_ptr<T>();
  a.keys = keys.data_ptr<T>();
  a.strengths = strengths.data_ptr<T>();
  a.B = memory.size(0);
  a.N = memory.size(1);
  a.W = memory.size(2);
  a.H = keys.size(1);
  a.eps = static_cast<T>(eps);
  return a;
}

at::Tensor content_forward(const at::Tensor& memory, const at::Tensor& keys,
                           const at::Tensor& strengths, double eps) {
  checks::memory_content(memory, keys, strengths);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), H = keys.size(1);
  at::Tensor out = at::empty({B, H, N}, memory.options());
  at::Tensor s = scratch(memory, B, N);
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "memory_content_forward", [&] {
    auto a = content_args<scalar_t>(memory, keys, strengths, eps);
    a.weights = out.data_ptr<scalar_t>();
    a.scratch = s.data_ptr<scalar_t>();
    a.scratch_stride = N;
    run(B, (H + 1) * N * W, a, table<scalar_t>().content_forward);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> content_backward(
    const at::Tensor& grad, const at::Tensor& memory, const at::Tensor& keys,
    const at::Tensor& strengths, const at::Tensor& weights, double eps) {
  checks::memory_content(memory, keys, strengths);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), H = keys.size(1);
  checks::memory_tensor("memory_content_backward", "grad_weights", grad, {B, H, N}, memory);
  checks::memory_tensor("memory_content_backward", "weights", weights, {B, H, N}, memory);
  at::Tensor gm = at::empty_like(memory), gk = at::empty_like(keys), gs = at::empty_like(strengths);
  at::Tensor s = scratch(memory, B, (H + 2) * N);
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "memory_content_backward", [&] {
    auto a = content_args<scalar_t>(memory, keys, strengths, eps);
    a.weights = const_cast<scalar_t*>(weights.data_ptr<scalar_t>());
    a.grad = grad.data_ptr<scalar_t>();
    a.grad_memory = gm.data_ptr<scalar_t>();
    a.grad_keys = gk.data_ptr<scalar_t>();
    a.grad_strengths = gs.data_ptr<scalar_t>();
    a.scratch = s.data_ptr<scalar_t>();
    a.scratch_stride = (H + 2) * N;
    run(B, 3 * (H + 1) * N * W, a, table<scalar_t>().content_backward);
  });
  return {gm, gk, gs};
}

// ---- allocation ---------------------------------------------------------------------------------

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

at::Tensor allocation_forward(const at::Tensor& usage, const at::Tensor& gates, double eps) {
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

std::tuple<at::Tensor, at::Tensor> allocation_backward(const at::Tensor& grad,
                                                       const at::Tensor& usage,
                                                       const at::Tensor& gates, double eps) {
  checks::dnc_allocation(usage, gates);
  const int64_t B = usage.size(0), N = usage.size(1), Hw = gates.size(1);
  checks::memory_tensor("dnc_allocation_backward", "grad_allocation", grad, {B, Hw, N}, usage);
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

// ---- erase / add write --------------------------------------------------------------------------

template <typename T>
WriteArgs<T> write_args(const at::Tensor& memory, const at::Tensor& ww, const at::Tensor& erase,
                        const at::Tensor& add) {
  WriteArgs<T> a{};
  a.memory = memory.data_ptr<T>();
  a.ww = ww.data_ptr<T>();
  a.erase = erase.data_ptr<T>();
  a.add = add.data_ptr<T>();
  a.B = memory.size(0);
  a.N = memory.size(1);
  a.W = memory.size(2);
  a.Hw = ww.size(1);
  return a;
}

at::Tensor write_forward(const at::Tensor& memory, const at::Tensor& ww, const at::Tensor& erase,
                         const at::Tensor& add) {
  checks::memory_write(memory, ww, erase, add);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), Hw = ww.size(1);
  at::Tensor out = at::empty_like(memory);
  at::Tensor s = scratch(memory, B, 3 * W);
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "memory_write_forward", [&] {
    auto a = write_args<scalar_t>(memory, ww, erase, add);
    a.out = out.data_ptr<scalar_t>();
    a.scratch = s.data_ptr<scalar_t>();
    a.scratch_stride = 3 * W;
    run(B, 2 * Hw * N * W, a, table<scalar_t>().write_forward);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> write_backward(
    const at::Tensor& grad, const at::Tensor& memory, const at::Tensor& ww,
    const at::Tensor& erase, const at::Tensor& add) {
  checks::memory_write(memory, ww, erase, add);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), Hw = ww.size(1);
  checks::memory_tensor("memory_write_backward", "grad_out", grad, {B, N, W}, memory);
  at::Tensor gm = at::empty_like(memory), gw = at::empty_like(ww), ge = at::empty_like(erase),
             ga = at::empty_like(add);
  at::Tensor s = scratch(memory, B, 3 * W);
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "memory_write_backward", [&] {
    auto a = write_args<scalar_t>(memory, ww, erase, add);
    a.grad = grad.data_ptr<scalar_t>();
    a.grad_memory = gm.data_ptr<scalar_t>();
    a.grad_ww = gw.data_ptr<scalar_t>();
    a.grad_erase = ge.data_ptr<scalar_t>();
    a.grad_add = ga.data_ptr<scalar_t>();
    a.scratch = s.data_ptr<scalar_t>();
    a.scratch_stride = 3 * W;
    run(B, (Hw + 2) * Hw * N * W, a, table<scalar_t>().write_backward);
  });
  return {gm, gw, ge, ga};
}

// ---- link + directional reads -------------------------------------------------------------------

template <typename T>
LinkArgs<T> link_args(const at::Tensor& link, const at::Tensor& prec, const at::Tensor& ww,
                      const at::Tensor& rw) {
  LinkArgs<T> a{};
  a.link = link.data_ptr<T>();
  a.prec = prec.data_ptr<T>();
  a.ww = ww.data_ptr<T>();
  a.rw = rw.data_ptr<T>();
  a.B = link.size(0);
  a.Hw = link.size(1);
  a.N = link.size(2);
  a.R = rw.size(1);
  return a;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> link_read_forward(
    const at::Tensor& link, const at::Tensor& prec, const at::Tensor& ww, const at::Tensor& rw) {
  checks::dnc_link_read(link, prec, ww, rw);
  const int64_t B = link.size(0), Hw = link.size(1), N = link.size(2), R = rw.size(1);
  at::Tensor nl = cached_empty(link.sizes(), link.options()), np = at::empty_like(prec);
  at::Tensor f = at::empty({B, R, Hw, N}, link.options()), bk = at::empty({B, R, Hw, N}, link.options());
  AT_DISPATCH_FLOATING_TYPES(link.scalar_type(), "dnc_link_read_forward", [&] {
    auto a = link_args<scalar_t>(link, prec, ww, rw);
    a.new_link = nl.data_ptr<scalar_t>();
    a.new_prec = np.data_ptr<scalar_t>();
    a.fwd = f.data_ptr<scalar_t>();
    a.bwd = bk.data_ptr<scalar_t>();
    run_with_task_scratch<scalar_t>(B, Hw * N * N * (1 + R), link_forward_scratch(R, N), link, a,
                                    table<scalar_t>().link_forward);
  });
  return {nl, np, f, bk};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> link_read_backward(
    const at::Tensor& g_link, const at::Tensor& g_prec, const at::Tensor& g_fwd,
    const at::Tensor& g_bwd, const at::Tensor& link, const at::Tensor& prec, const at::Tensor& ww,
    const at::Tensor& rw) {
  checks::dnc_link_read(link, prec, ww, rw);
  const int64_t B = link.size(0), Hw = link.size(1), N = link.size(2), R = rw.size(1);
  const char* op = "dnc_link_read_backward";
  checks::memory_tensor(op, "grad_link", g_link, {B, Hw, N, N}, link);
  checks::memory_tensor(op, "grad_precedence", g_prec, {B, Hw, N}, link);
  checks::memory_tensor(op, "grad_forward", g_fwd, {B, R, Hw, N}, link);
  checks::memory_tensor(op, "grad_backward", g_bwd, {B, R, Hw, N}, link);
  at::Tensor dl = cached_empty(link.sizes(), link.options()), dp = at::empty_like(prec), dw = at::empty_like(ww),
             dr = at::empty_like(rw);
  AT_DISPATCH_FLOATING_TYPES(link.scalar_type(), "dnc_link_read_backward", [&] {
    auto a = link_args<scalar_t>(link, prec, ww, rw);
    a.g_link = g_link.data_ptr<scalar_t>();
    a.g_prec = g_prec.data_ptr<scalar_t>();
    a.g_fwd = g_fwd.data_ptr<scalar_t>();
    a.g_bwd = g_bwd.data_ptr<scalar_t>();
    a.d_link = dl.data_ptr<scalar_t>();
    a.d_prec = dp.data_ptr<scalar_t>();
    a.d_ww = dw.data_ptr<scalar_t>();
    a.d_rw = dr.data_ptr<scalar_t>();
    run_with_task_scratch<scalar_t>(B, Hw * N * N * (2 + 2 * R), link_backward_scratch(R, N), link,
                                    a, table<scalar_t>().link_backward);
  });
  return {dl, dp, dw, dr};
}

}  // namespace
}  // namespace cpu
}  // namespace attnfast

TORCH_LIBRARY_IMPL(attnfast, CPU, m) {
  m.impl("memory_content_forward", &attnfast::cpu::content_forward);
  m.impl("memory_content_backward", &attnfast::cpu::content_backward);
  m.impl("dnc_allocation_forward", &attnfast::cpu::allocation_forward);
  m.impl("dnc_allocation_backward", &attnfast::cpu::allocation_backward);
  m.impl("memory_write_forward", &attnfast::cpu::write_forward);
  m.impl("memory_write_backward", &attnfast::cpu::write_backward);
  m.impl("dnc_link_read_forward", &attnfast::cpu::link_read_forward);
  m.impl("dnc_link_read_backward", &attnfast::cpu::link_read_backward);
}
