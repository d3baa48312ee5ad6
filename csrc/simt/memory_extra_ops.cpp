// torch.ops.attnfast_simt.<op> for the second group of memory ops (NTM location, Graves' window,
// DNC usage, memory read): the CUDA kernels of csrc/cuda/memory_extra_kernels.cuh run on CPU
// tensors by the SIMT harness. Same schemas as torch.ops.attnfast (csrc/schemas.cpp, "memory,
// second group") and the same glue as the CUDA ops (csrc/cuda/memory_extra.cu, both through
// csrc/cuda/memory_extra_glue.h), so the harness tests the exact launch sequence, workspaces
// included.
#include <torch/library.h>

#include "schemas.h"

#include <tuple>

#include "simt/prelude.h"  // before any kernel header
#include "cuda/memory_extra_glue.h"

// (No extern __shared__ here: memory_ops.cpp defines the one of memory_kernels.cuh, whose
// allocation kernels this file does not instantiate.)

namespace attnfast {
namespace simt_ops {
namespace {

void check_cpu(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), op, " (SIMT harness): ", name,
              " must be a CPU tensor, got device ", t.device());
}

at::Tensor ntm_forward(const at::Tensor& content, const at::Tensor& gate, const at::Tensor& prev,
                       const at::Tensor& shift, const at::Tensor& gamma) {
  check_cpu("ntm_location_forward", content, "content");
  return memory_extra_glue::ntm_location_forward(content, gate, prev, shift, gamma, nullptr);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> ntm_backward(
    const at::Tensor& grad, const at::Tensor& content, const at::Tensor& gate,
    const at::Tensor& prev, const at::Tensor& shift, const at::Tensor& gamma) {
  check_cpu("ntm_location_backward", content, "content");
  return memory_extra_glue::ntm_location_backward(grad, content, gate, prev, shift, gamma, nullptr);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> graves_forward(
    const at::Tensor& ah, const at::Tensor& bh, const at::Tensor& kh, const at::Tensor& k0,
    const at::Tensor& chars, const c10::optional<at::Tensor>& mask) {
  check_cpu("graves_window_forward", ah, "alpha_hat");
  return memory_extra_glue::graves_window_forward(ah, bh, kh, k0, chars, mask, nullptr);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
graves_backward(const at::Tensor& g_w, const at::Tensor& g_kappa, const at::Tensor& g_phi,
                const at::Tensor& ah, const at::Tensor& bh, const at::Tensor& kh,
                const at::Tensor& k0, const at::Tensor& chars,
                const c10::optional<at::Tensor>& mask) {
  check_cpu("graves_window_backward", ah, "alpha_hat");
  return memory_extra_glue::graves_window_backward(g_w, g_kappa, g_phi, ah, bh, kh, k0, chars,
                                                   mask, nullptr);
}

at::Tensor usage_forward(const at::Tensor& usage, const at::Tensor& ww,
                         const at::Tensor& free_gate, const at::Tensor& rw) {
  check_cpu("dnc_usage_forward", usage, "usage");
  return memory_extra_glue::usage_forward(usage, ww, free_gate, rw, nullptr);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> usage_backward(const at::Tensor& grad,
                                                              const at::Tensor& usage,
                                                              const at::Tensor& ww,
                                                              const at::Tensor& free_gate,
                                                              const at::Tensor& rw) {
  check_cpu("dnc_usage_backward", usage, "usage");
  return memory_extra_glue::usage_backward(grad, usage, ww, free_gate, rw, nullptr);
}

at::Tensor read_forward(const at::Tensor& memory, const at::Tensor& rw) {
  check_cpu("memory_read_forward", memory, "memory");
  return memory_extra_glue::read_forward(memory, rw, nullptr);
}

std::tuple<at::Tensor, at::Tensor> read_backward(const at::Tensor& grad, const at::Tensor& memory,
                                                 const at::Tensor& rw) {
  check_cpu("memory_read_backward", memory, "memory");
  return memory_extra_glue::read_backward(grad, memory, rw, nullptr);
}

}  // namespace
}  // namespace simt_ops
}  // namespace attnfast

TORCH_LIBRARY_FRAGMENT(attnfast_simt, m) {
  // The schemas of csrc/schemas.h, in namespace attnfast_simt.
  attnfast::schemas::define(m, attnfast::schemas::kMemoryExtra);
}

TORCH_LIBRARY_IMPL(attnfast_simt, CPU, m) {
  m.impl("ntm_location_forward", &attnfast::simt_ops::ntm_forward);
  m.impl("ntm_location_backward", &attnfast::simt_ops::ntm_backward);
  m.impl("graves_window_forward", &attnfast::simt_ops::graves_forward);
  m.impl("graves_window_backward", &attnfast::simt_ops::graves_backward);
  m.impl("dnc_usage_forward", &attnfast::simt_ops::usage_forward);
  m.impl("dnc_usage_backward", &attnfast::simt_ops::usage_backward);
  m.impl("memory_read_forward", &attnfast::simt_ops::read_forward);
  m.impl("memory_read_backward", &attnfast::simt_ops::read_backward);
}
