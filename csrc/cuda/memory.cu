// Memory addressing ops (NTM / DNC) on CUDA: ATen glue around csrc/cuda/memory_kernels.cuh. The
// argument checks, outputs, workspaces and launcher calls are shared with the SIMT harness ops
// (csrc/cuda/memory_glue.h); here only the device check, the device guard and the stream.
// float32 and float64; deterministic (no atomics).
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <initializer_list>
#include <tuple>

#include "cuda/memory_glue.h"

namespace attnfast {
namespace cuda {
namespace {

void check_cuda(const char* op, std::initializer_list<std::pair<const char*, const at::Tensor*>> ts) {
  for (const auto& [name, t] : ts)
    TORCH_CHECK(t->is_cuda(), op, " (CUDA): ", name, " must be a CUDA tensor, got device ",
                t->device());
}

cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream(); }

at::Tensor content_forward_cuda(const at::Tensor& memory, const at::Tensor& keys,
                                const at::Tensor& strengths, double eps) {
  check_cuda("memory_content_forward", {{"memory", &memory}});
  const c10::cuda::CUDAGuard guard(memory.device());
  auto out = memory_glue::content_forward(memory, keys, strengths, eps, stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> content_backward_cuda(
    const at::Tensor& grad, const at::Tensor& memory, const at::Tensor& keys,
    const at::Tensor& strengths, const at::Tensor& weights, double eps) {
  check_cuda("memory_content_backward", {{"memory", &memory}});
  const c10::cuda::CUDAGuard guard(memory.device());
  auto out = memory_glue::content_backward(grad, memory, keys, strengths, weights, eps, stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor allocation_forward_cuda(const at::Tensor& usage, const at::Tensor& gates, double eps) {
  check_cuda("dnc_allocation_forward", {{"usage", &usage}});
  const c10::cuda::CUDAGuard guard(usage.device());
  auto out = memory_glue::allocation_forward(usage, gates, eps, stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::tuple<at::Tensor, at::Tensor> allocation_backward_cuda(const at::Tensor& grad,
                                                            const at::Tensor& usage,
                                                            const at::Tensor& gates, double eps) {
  check_cuda("dnc_allocation_backward", {{"usage", &usage}});
  const c10::cuda::CUDAGuard guard(usage.device());
  auto out = memory_glue::allocation_backward(grad, usage, gates, eps, stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor write_forward_cuda(const at::Tensor& memory, const at::Tensor& ww,
                              const at::Tensor& erase, const at::Tensor& add) {
  check_cuda("memory_write_forward", {{"memory", &memory}});
  const c10::cuda::CUDAGuard guard(memory.device());
  auto out = memory_glue::write_forward(memory, ww, erase, add, stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> write_backward_cuda(
    const at::Tensor& grad, const at::Tensor& memory, const at::Tensor& ww,
    const at::Tensor& erase, const at::Tensor& add) {
  check_cuda("memory_write_backward", {{"memory", &memory}});
  const c10::cuda::CUDAGuard guard(memory.device());
  auto out = memory_glue::write_backward(grad, memory, ww, erase, add, stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> link_read_forward_cuda(
    const at::Tensor& link, const at::Tensor& prec, const at::Tensor& ww, const at::Tensor& rw) {
  check_cuda("dnc_link_read_forward", {{"link", &link}});
  const c10::cuda::CUDAGuard guard(link.device());
  auto out = memory_glue::link_read_forward(link, prec, ww, rw, stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> link_read_backward_cuda(
    const at::Tensor& g_link, const at::Tensor& g_prec, const at::Tensor& g_fwd,
    const at::Tensor& g_bwd, const at::Tensor& link, const at::Tensor& prec, const at::Tensor& ww,
    const at::Tensor& rw) {
  check_cuda("dnc_link_read_backward", {{"link", &link}});
  const c10::cuda::CUDAGuard guard(link.device());
  auto out = memory_glue::link_read_backward(g_link, g_prec, g_fwd, g_bwd, link, prec, ww, rw,
                                             stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace
}  // namespace cuda
}  // namespace attnfast

// The other tensors' devices are checked against the first one by the shared glue
// (checks::memory_tensor: "... is on cpu but the other inputs are on cuda:0").
TORCH_LIBRARY_IMPL(attnfast, CUDA, m) {
  m.impl("memory_content_forward", &attnfast::cuda::content_forward_cuda);
  m.impl("memory_content_backward", &attnfast::cuda::content_backward_cuda);
  m.impl("dnc_allocation_forward", &attnfast::cuda::allocation_forward_cuda);
  m.impl("dnc_allocation_backward", &attnfast::cuda::allocation_backward_cuda);
  m.impl("memory_write_forward", &attnfast::cuda::write_forward_cuda);
  m.impl("memory_write_backward", &attnfast::cuda::write_backward_cuda);
  m.impl("dnc_link_read_forward", &attnfast::cuda::link_read_forward_cuda);
  m.impl("dnc_link_read_backward", &attnfast::cuda::link_read_backward_cuda);
}
