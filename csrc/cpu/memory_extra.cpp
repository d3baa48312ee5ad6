// Second group of memory ops on the CPU: NTM location addressing (interpolation, circular
// shift, sharpening), Graves' soft window, DNC usage and the memory read. ATen glue (checks,
// outputs, per-batch scratch) around the loops of kernels/memory_extra_impl.h, split over the
// batch with at::parallel_for (OpenMP). The loops are compiled once, without the per-ISA scheme
// of memory_isa_*.cpp: they are short, memory-bound passes (see memory_extra_impl.h).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <type_traits>

#include "checks/memory_extra.h"
#include "cpu/kernels/memory_extra_impl.h"

namespace attnfast {
namespace cpu {
namespace {

// Batch elements per task: enough that a task does >= ~16k element operations.
int64_t grain(int64_t work_per_batch) {
  return std::max<int64_t>(1, int64_t(16384) / std::max<int64_t>(1, work_per_batch));
}

template <typename Args, typename Fn>
void run(int64_t B, int64_t work, const Args& args, Fn fn) {
  at::parallel_for(0, B, grain(work), [&](int64_t b0, int64_t b1) { fn(args, b0, b1); });
}

// The read is the one op of this group with GEMM-like arithmetic (R N W per batch element):
// its loops get AVX-512 / AVX2 clones chosen at load time (GCC function multiversioning;
// `flatten` inlines the templated loop into each clone so it is compiled for that target).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ATTNFAST_READ_CLONES __attribute__((target_clones("avx512f", "avx2", "default"), flatten))
#else
#define ATTNFAST_READ_CLONES
#endif
ATTNFAST_READ_CLONES void read_forward_f32(const ReadArgs<float>& a, int64_t b0, int64_t b1) {
  extra::read_forward_impl<float>(a, b0, b1);
}
ATTNFAST_READ_CLONES void read_backward_f32(const ReadArgs<float>& a, int64_t b0, int64_t b1) {
  extra::read_backward_impl<float>(a, b0, b1);
}
template <typename T>
void read_forward(const ReadArgs<T>& a, int64_t b0, int64_t b1) {
  if constexpr (std::is_same_v<T, float>) read_forward_f32(a, b0, b1);
  else extra::read_forward_impl<T>(a, b0, b1);
}
template <typename T>
void read_backward(const ReadArgs<T>& a, int64_t b0, int64_t b1) {
  if constexpr (std::is_same_v<T, float>) read_backward_f32(a, b0, b1);
  else extra::read_backward_impl<T>(a, b0, b1);
}

at::Tensor scratch(const at::Tensor& like, int64_t B, int64_t per_batch) {
  return at::empty({std::max<int64_t>(1, B * per_batch)}, like.options());
}

// ---- NTM location addressing ------------------------------------------------------------------

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
    run(B, H * N * (S + 8), a, extra::ntm_location_forward_impl<scalar_t>);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> ntm_location_backward(
    const at::Tensor& grad, const at::Tensor& content, const at::Tensor& gate,
    const at::Tensor& prev, const at::Tensor& shift, const at::Tensor& gamma) {
  checks::ntm_location(content, gate, prev, shift, gamma);
  const int64_t B = content.size(0), H = content.size(1), N = content.size(2), S = shift.size(2);
  checks::memory_tensor("ntm_location_backward", "grad_weights", grad, {B, H, N}, content);
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
    run(B, H * N * (3 * S + 16), a, extra::ntm_location_backward_impl<scalar_t>);
  });
  return {dc, dg, dp, ds, dgam};
}

// ---- Graves' window -----------------------------------------------------------------------------

template <typename T>
GravesArgs<T> graves_args(const at::Tensor& ah, const at::Tensor& bh, const at::Tensor& kh,
                          const at::Tensor& k0, const at::Tensor& chars,
                          const c10::optional<at::Tensor>& mask) {
  GravesArgs<T> a{};
  a.alpha_hat = ah.data_ptr<T>();
  a.beta_hat = bh.data_ptr<T>();
  a.kappa_hat = kh.data_ptr<T>();
  a.kappa0 = k0.data_ptr<T>();
  a.chars = chars.data_ptr<T>();
  a.mask = mask.has_value() ? mask->data_ptr<T>() : nullptr;
  a.B = ah.size(0);
  a.T_ = ah.size(1);
  a.K = ah.size(2);
  a.U = chars.size(1);
  a.C = chars.size(2);
  return a;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> graves_window_forward(
    const at::Tensor& ah, const at::Tensor& bh, const at::Tensor& kh, const at::Tensor& k0,
    const at::Tensor& chars, const c10::optional<at::Tensor>& mask) {
  checks::graves_window(ah, bh, kh, k0, chars, mask);
  const int64_t B = ah.size(0), T = ah.size(1), K = ah.size(2), U = chars.size(1),
                C = chars.size(2);
  at::Tensor w = at::empty({B, T, C}, ah.options()), kap = at::empty_like(ah),
             phi = at::empty({B, T, U}, ah.options());
  at::Tensor s = scratch(ah, B, K);
  AT_DISPATCH_FLOATING_TYPES(ah.scalar_type(), "graves_window_forward", [&] {
    auto a = graves_args<scalar_t>(ah, bh, kh, k0, chars, mask);
    a.window = w.data_ptr<scalar_t>();
    a.kappa = kap.data_ptr<scalar_t>();
    a.phi = phi.data_ptr<scalar_t>();
    a.scratch = s.data_ptr<scalar_t>();
    a.scratch_stride = K;
    run(B, T * U * (K * 4 + C), a, extra::graves_forward_impl<scalar_t>);
  });
  return {w, kap, phi};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
graves_window_backward(const at::Tensor& g_w, const at::Tensor& g_kappa, const at::Tensor& g_phi,
                       const at::Tensor& ah, const at::Tensor& bh, const at::Tensor& kh,
                       const at::Tensor& k0, const at::Tensor& chars,
                       const c10::optional<at::Tensor>& mask) {
  checks::graves_window(ah, bh, kh, k0, chars, mask);
  const int64_t B = ah.size(0), T = ah.size(1), K = ah.size(2), U = chars.size(1),
                C = chars.size(2);
  const char* op = "graves_window_backward";
  checks::memory_tensor(op, "grad_window", g_w, {B, T, C}, ah);
  checks::memory_tensor(op, "grad_kappa", g_kappa, {B, T, K}, ah);
  checks::memory_tensor(op, "grad_phi", g_phi, {B, T, U}, ah);
  at::Tensor da = at::empty_like(ah), db = at::empty_like(bh), dk = at::empty_like(kh),
             dk0 = at::empty_like(k0), dc = at::empty_like(chars);
  // No mask: an empty (0,) tensor in the mask gradient's place (the schema's outputs are fixed).
  at::Tensor dm = mask.has_value() ? at::empty_like(*mask) : at::empty({0}, ah.options());
  at::Tensor s = scratch(ah, B, 2 * U + K);
  AT_DISPATCH_FLOATING_TYPES(ah.scalar_type(), "graves_window_backward", [&] {
    auto a = graves_args<scalar_t>(ah, bh, kh, k0, chars, mask);
    a.g_window = g_w.data_ptr<scalar_t>();
    a.g_kappa = g_kappa.data_ptr<scalar_t>();
    a.g_phi = g_phi.data_ptr<scalar_t>();
    a.d_alpha_hat = da.data_ptr<scalar_t>();
    a.d_beta_hat = db.data_ptr<scalar_t>();
    a.d_kappa_hat = dk.data_ptr<scalar_t>();
    a.d_kappa0 = dk0.data_ptr<scalar_t>();
    a.d_chars = dc.data_ptr<scalar_t>();
    a.d_mask = mask.has_value() ? dm.data_ptr<scalar_t>() : nullptr;
    a.scratch = s.data_ptr<scalar_t>();
    a.scratch_stride = 2 * U + K;
    run(B, T * U * (K * 8 + 2 * C), a, extra::graves_backward_impl<scalar_t>);
  });
  return {da, db, dk, dk0, dc, dm};
}

// ---- DNC usage ----------------------------------------------------------------------------------

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
    run(B, (Hw + R + 2) * N, a, extra::usage_forward_impl<scalar_t>);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dnc_usage_backward(
    const at::Tensor& grad, const at::Tensor& usage, const at::Tensor& ww,
    const at::Tensor& free_gate, const at::Tensor& rw) {
  checks::dnc_usage(usage, ww, free_gate, rw);
  const int64_t B = usage.size(0), N = usage.size(1), Hw = ww.size(1), R = rw.size(1);
  checks::memory_tensor("dnc_usage_backward", "grad_usage", grad, {B, N}, usage);
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
    run(B, (Hw + R * R + 4) * N, a, extra::usage_backward_impl<scalar_t>);
  });
  return {du, df, dr};
}

// ---- memory read --------------------------------------------------------------------------------

template <typename T>
ReadArgs<T> read_args(const at::Tensor& memory, const at::Tensor& rw) {
  ReadArgs<T> a{};
  a.memory = memory.data_ptr<T>();
  a.rw = rw.data_ptr<T>();
  a.B = memory.size(0);
  a.N = memory.size(1);
  a.W = memory.size(2);
  a.R = rw.size(1);
  return a;
}

at::Tensor memory_read_forward(const at::Tensor& memory, const at::Tensor& rw) {
  checks::memory_read(memory, rw);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), R = rw.size(1);
  at::Tensor out = at::empty({B, R, W}, memory.options());
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "memory_read_forward", [&] {
    auto a = read_args<scalar_t>(memory, rw);
    a.words = out.data_ptr<scalar_t>();
    run(B, R * N * W, a, read_forward<scalar_t>);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> memory_read_backward(const at::Tensor& grad,
                                                        const at::Tensor& memory,
                                                        const at::Tensor& rw) {
  checks::memory_read(memory, rw);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), R = rw.size(1);
  checks::memory_tensor("memory_read_backward", "grad_words", grad, {B, R, W}, memory);
  at::Tensor dm = at::empty_like(memory), dr = at::empty_like(rw);
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "memory_read_backward", [&] {
    auto a = read_args<scalar_t>(memory, rw);
    a.grad = grad.data_ptr<scalar_t>();
    a.d_memory = dm.data_ptr<scalar_t>();
    a.d_rw = dr.data_ptr<scalar_t>();
    run(B, 2 * R * N * W, a, read_backward<scalar_t>);
  });
  return {dm, dr};
}

}  // namespace
}  // namespace cpu
}  // namespace attnfast

TORCH_LIBRARY_IMPL(attnfast, CPU, m) {
  m.impl("ntm_location_forward", &attnfast::cpu::ntm_location_forward);
  m.impl("ntm_location_backward", &attnfast::cpu::ntm_location_backward);
  m.impl("graves_window_forward", &attnfast::cpu::graves_window_forward);
  m.impl("graves_window_backward", &attnfast::cpu::graves_window_backward);
  m.impl("dnc_usage_forward", &attnfast::cpu::dnc_usage_forward);
  m.impl("dnc_usage_backward", &attnfast::cpu::dnc_usage_backward);
  m.impl("memory_read_forward", &attnfast::cpu::memory_read_forward);
  m.impl("memory_read_backward", &attnfast::cpu::memory_read_backward);
}
