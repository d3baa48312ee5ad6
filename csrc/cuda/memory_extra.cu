// Second group of memory ops (NTM location, Graves' window, DNC usage, memory read) on CUDA: ATen
// glue around csrc/cuda/memory_extra_kernels.cuh. The argument checks, outputs, workspaces and
// launcher calls are shared with the SIMT harness ops (csrc/cuda/memory_extra_glue.h); here only
// the device check, the device guard and the stream. float32 and float64; deterministic (no
// atomics).
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "cuda/memory_extra_glue.h"

namespace attnfast {
namespace cuda {
namespace {

void check_cuda(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.is_cuda(), op, " (CUDA): ", name, " must be a CUDA tensor, got device ",
              t.device());
}

cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream(); }

at::Tensor ntm_location_forward_cuda(const at::Tensor& content, const at::Tensor& gate,
                                     const at::Tensor& prev, const at::Tensor& shift,
                                     const at::Tensor& gamma) {
  check_cuda("ntm_location_forward", "content", content);
  const c10::cuda::CUDAGuard guard(content.device());
  auto out = memory_extra_glue::ntm_location_forward(content, gate, prev, shift, gamma, stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> ntm_location_backward_cuda(
    const at::Tensor& grad, const at::Tensor& content, const at::Tensor& gate,
    const at::Tensor& prev, const at::Tensor& shift, const at::Tensor& gamma) {
  check_cuda("ntm_location_backward", "content", content);
  const c10::cuda::CUDAGuard guard(content.device());
  auto out = memory_extra_glue::ntm_location_backward(grad, content, gate, prev, shift, gamma,
                                                      stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> graves_window_forward_cuda(
    const at::Tensor& ah, const at::Tensor& bh, const at::Tensor& kh, const at::Tensor& k0,
    const at::Tensor& chars, const c10::optional<at::Tensor>& mask) {
  check_cuda("graves_window_forward", "alpha_hat", ah);
  const c10::cuda::CUDAGuard guard(ah.device());
  auto out = memory_extra_glue::graves_window_forward(ah, bh, kh, k0, chars, mask, stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
graves_window_backward_cuda(const at::Tensor& g_w, const at::Tensor& g_kappa,
                            const at::Tensor& g_phi, const at::Tensor& ah, const at::Tensor& bh,
                            const at::Tensor& kh, const at::Tensor& k0, const at::Tensor& chars,
                            const c10::optional<at::Tensor>& mask) {
  check_cuda("graves_window_backward", "alpha_hat", ah);
  const c10::cuda::CUDAGuard guard(ah.device());
  auto out = memory_extra_glue::graves_window_backward(g_w, g_kappa, g_phi, ah, bh, kh, k0, chars,
                                                       mask, stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor usage_forward_cuda(const at::Tensor& usage, const at::Tensor& ww,
                              const at::Tensor& free_gate, const at::Tensor& rw) {
  check_cuda("dnc_usage_forward", "usage", usage);
  const c10::cuda::CUDAGuard guard(usage.device());
  auto out = memory_extra_glue::usage_forward(usage, ww, free_gate, rw, stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> usage_backward_cuda(const at::Tensor& grad,
                                                                   const at::Tensor& usage,
                                                                   const at::Tensor& ww,
                                                                   const at::Tensor& free_gate,
                                                                   const at::Tensor& rw) {
  check_cuda("dnc_usage_backward", "usage", usage);
  const c10::cuda::CUDAGuard guard(usage.device());
  auto out = memory_extra_glue::usage_backward(grad, usage, ww, free_gate, rw, stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor read_forward_cuda(const at::Tensor& memory, const at::Tensor& rw) {
  check_cuda("memory_read_forward", "memory", memory);
  const c10::cuda::CUDAGuard guard(memory.device());
  auto out = memory_extra_glue::read_forward(memory, rw, stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::tuple<at::Tensor, at::Tensor> read_backward_cuda(const at::Tensor& grad,
                                                      const at::Tensor& memory,
                                                      const at::Tensor& rw) {
  check_cuda("memory_read_backward", "memory", memory);
  const c10::cuda::CUDAGuard guard(memory.device());
  auto out = memory_extra_glue::read_backward(grad, memory, rw, stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace
}  // namespace cuda
}  // namespace attnfast

// The other tensors' devices are checked against the first one by the shared glue
// (checks::memory_tensor: "... is on cpu but the other inputs are on cuda:0").
TORCH_LIBRARY_IMPL(attnfast, CUDA, m) {
  m.impl("ntm_location_forward", &attnfast::cuda::ntm_location_forward_cuda);
  m.impl("ntm_location_backward", &attnfast::cuda::ntm_location_backward_cuda);
  m.impl("graves_window_forward", &attnfast::cuda::graves_window_forward_cuda);
  m.impl("graves_window_backward", &attnfast::cuda::graves_window_backward_cuda);
  m.impl("dnc_usage_forward", &attnfast::cuda::usage_forward_cuda);
  m.impl("dnc_usage_backward", &attnfast::cuda::usage_backward_cuda);
  m.impl("memory_read_forward", &attnfast::cuda::read_forward_cuda);
  m.impl("memory_read_backward", &attnfast::cuda::read_backward_cuda);
}
