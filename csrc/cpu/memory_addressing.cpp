// Memory addressing ops on the CPU, content and NTM location addressing (interpolation, circular
// shift, sharpening): the glue (memory_glue.h) around the per-ISA loops of
// kernels/memory_addressing_impl.h.
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

at::Tensor memory_content_forward(const at::Tensor& memory, const at::Tensor& keys,
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

std::tuple<at::Tensor, at::Tensor, at::Tensor> memory_content_backward(
    const at::Tensor& grad, const at::Tensor& memory, const at::Tensor& keys,
    const at::Tensor& strengths, const at::Tensor& weights, double eps) {
  checks::memory_content_backward(grad, memory, keys, strengths, weights);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), H = keys.size(1);
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

template <typename T>
NtmLocationArgs<T> ntm_args(const at::Tensor& content, const at::Tensor& gate,
                            const at::Tensor& prev, const at::Tensor& shift,
                            const at::Tensor& gamma) {
  NtmLocationArgs<T> a{};
  a.content = content.data_ptr<T>();
  a.gate = gate.data_ptr<T>();
  a.prev = prev.data_ptr<T>();
  a.shift = shift.data_ptr<T>();
  a.gamma = gamma.data_ptr<T>();
  a.B = content.size(0);
  a.H = content.size(1);
  a.N = content.size(2);
  a.S = shift.size(2);
  return a;
}

at::Tensor ntm_location_forward(const at::Tensor& content, const at::Tensor& gate,
                                const at::Tensor& prev, const at::Tensor& shift,
                                const at::Tensor& gamma) {
  checks::ntm_location(content, gate, prev, shift, gamma);
  const int64_t B = content.size(0), H = content.size(1), N = content.size(2), S = shift.size(2);
  at::Tensor out = at::empty_like(content);
  at::Tensor s = scratch(content, B, 2 * N);
  AT_DISPATCH_FLOATING_TYPES(content.scalar_type(), "ntm_location_forward", [&] {
    auto a = ntm_args<scalar_t>(content, gate, prev, shift, gamma);
    a.weights = out.data_ptr<scalar_t>();
    a.scratch = s.data_ptr<scalar_t>();
    a.scratch_stride = 2 * N;
    run(B, H * N * (S + 8), a, table<scalar_t>().ntm_location_forward);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> ntm_location_backward(
    const at::Tensor& grad, const at::Tensor& content, const at::Tensor& gate,
    const at::Tensor& prev, const at::Tensor& shift, const at::Tensor& gamma) {
  checks::ntm_location_backward(grad, content, gate, prev, shift, gamma);
  const int64_t B = content.size(0), H = content.size(1), N = content.size(2), S = shift.size(2);
  at::Tensor dc = at::empty_like(content), dg = at::empty_like(gate), dp = at::empty_like(prev),
             ds = at::empty_like(shift), dgam = at::empty_like(gamma);
  at::Tensor s = scratch(content, B, 4 * N);
  AT_DISPATCH_FLOATING_TYPES(content.scalar_type(), "ntm_location_backward", [&] {
    auto a = ntm_args<scalar_t>(content, gate, prev, shift, gamma);
    a.grad = grad.data_ptr<scalar_t>();
    a.d_content = dc.data_ptr<scalar_t>();
    a.d_gate = dg.data_ptr<scalar_t>();
    a.d_prev = dp.data_ptr<scalar_t>();
    a.d_shift = ds.data_ptr<scalar_t>();
    a.d_gamma = dgam.data_ptr<scalar_t>();
    a.scratch = s.data_ptr<scalar_t>();
    a.scratch_stride = 4 * N;
    run(B, H * N * (3 * S + 16), a, table<scalar_t>().ntm_location_backward);
  });
  return {dc, dg, dp, ds, dgam};
}

}  // namespace
}  // namespace cpu
}  // namespace attnfast

TORCH_LIBRARY_IMPL(attnfast, CPU, m) { ATTNFAST_MEMORY_ADDRESSING_OPS(ATTNFAST_IMPL_CPU) }
