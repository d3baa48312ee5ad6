// Graves' soft window op on the CPU: the glue (memory_glue.h) around the per-ISA loops of
// kernels/memory_window_impl.h.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "checks/memory.h"
#include "cpu/memory_glue.h"
#include "op_lists.h"

namespace attnfast {
namespace cpu {
namespace {

using namespace memory_glue;

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
    run(B, T * U * (K * 4 + C), a, table<scalar_t>().graves_forward);
  });
  return {w, kap, phi};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
graves_window_backward(const at::Tensor& g_w, const at::Tensor& g_kappa, const at::Tensor& g_phi,
                       const at::Tensor& ah, const at::Tensor& bh, const at::Tensor& kh,
                       const at::Tensor& k0, const at::Tensor& chars,
                       const c10::optional<at::Tensor>& mask) {
  checks::graves_window_backward(g_w, g_kappa, g_phi, ah, bh, kh, k0, chars, mask);
  const int64_t B = ah.size(0), T = ah.size(1), K = ah.size(2), U = chars.size(1),
                C = chars.size(2);
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
    run(B, T * U * (K * 8 + 2 * C), a, table<scalar_t>().graves_backward);
  });
  return {da, db, dk, dk0, dc, dm};
}

}  // namespace
}  // namespace cpu
}  // namespace attnfast

TORCH_LIBRARY_IMPL(attnfast, CPU, m) { ATTNFAST_MEMORY_WINDOW_OPS(ATTNFAST_IMPL_CPU) }
