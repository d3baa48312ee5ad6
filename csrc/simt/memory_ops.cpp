// torch.ops.attnfast_simt.<memory op>: the CUDA memory addressing kernels
// (csrc/cuda/memory_kernels.cuh) run on CPU tensors by the SIMT harness. Same schemas as
// torch.ops.attnfast (csrc/schemas.cpp, "memory") and the same glue as the CUDA ops
// (csrc/cuda/memory.cu, both through csrc/cuda/memory_glue.h), so the harness tests the exact
// launch sequence, workspaces included.
#include <torch/library.h>

#include "schemas.h"

#include <tuple>

#include "simt/prelude.h"  // before any kernel header
#include "cuda/memory_glue.h"

ATTNFAST_SIMT_DEFINE_EXTERN_SHARED(attnfast::cuda::mem_detail, mem_smem_raw)

namespace attnfast {
namespace simt_ops {
namespace {

void check_cpu(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), op, " (SIMT harness): ", name,
              " must be a CPU tensor, got device ", t.device());
}

at::Tensor content_forward(const at::Tensor& memory, const at::Tensor& keys,
                           const at::Tensor& strengths, double eps) {
  check_cpu("memory_content_forward", memory, "memory");
  return memory_glue::content_forward(memory, keys, strengths, eps, nullptr);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> content_backward(
    const at::Tensor& grad, const at::Tensor& memory, const at::Tensor& keys,
    const at::Tensor& strengths, const at::Tensor& weights, double eps) {
  check_cpu("memory_content_backward", memory, "memory");
  return memory_glue::content_backward(grad, memory, keys, strengths, weights, eps, nullptr);
}

at::Tensor allocation_forward(const at::Tensor& usage, const at::Tensor& gates, double eps) {
  check_cpu("dnc_allocation_forward", usage, "usage");
  return memory_glue::allocation_forward(usage, gates, eps, nullptr);
}

std::tuple<at::Tensor, at::Tensor> allocation_backward(const at::Tensor& grad,
                                                       const at::Tensor& usage,
                                                       const at::Tensor& gates, double eps) {
  check_cpu("dnc_allocation_backward", usage, "usage");
  return memory_glue::allocation_backward(grad, usage, gates, eps, nullptr);
}

at::Tensor write_forward(const at::Tensor& memory, const at::Tensor& ww, const at::Tensor& erase,
                         const at::Tensor& add) {
  check_cpu("memory_write_forward", memory, "memory");
  return memory_glue::write_forward(memory, ww, erase, add, nullptr);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> write_backward(
    const at::Tensor& grad, const at::Tensor& memory, const at::Tensor& ww,
    const at::Tensor& erase, const at::Tensor& add) {
  check_cpu("memory_write_backward", memory, "memory");
  return memory_glue::write_backward(grad, memory, ww, erase, add, nullptr);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> link_read_forward(
    const at::Tensor& link, const at::Tensor& prec, const at::Tensor& ww, const at::Tensor& rw) {
  check_cpu("dnc_link_read_forward", link, "link");
  return memory_glue::link_read_forward(link, prec, ww, rw, nullptr);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> link_read_backward(
    const at::Tensor& g_link, const at::Tensor& g_prec, const at::Tensor& g_fwd,
    const at::Tensor& g_bwd, const at::Tensor& link, const at::Tensor& prec, const at::Tensor& ww,
    const at::Tensor& rw) {
  check_cpu("dnc_link_read_backward", link, "link");
  return memory_glue::link_read_backward(g_link, g_prec, g_fwd, g_bwd, link, prec, ww, rw,
                                         nullptr);
}

}  // namespace
}  // namespace simt_ops
}  // namespace attnfast

TORCH_LIBRARY_FRAGMENT(attnfast_simt, m) {
  // The schemas of csrc/schemas.h, in namespace attnfast_simt.
  attnfast::schemas::define(m, attnfast::schemas::kMemory);
}

TORCH_LIBRARY_IMPL(attnfast_simt, CPU, m) {
  m.impl("memory_content_forward", &attnfast::simt_ops::content_forward);
  m.impl("memory_content_backward", &attnfast::simt_ops::content_backward);
  m.impl("dnc_allocation_forward", &attnfast::simt_ops::allocation_forward);
  m.impl("dnc_allocation_backward", &attnfast::simt_ops::allocation_backward);
  m.impl("memory_write_forward", &attnfast::simt_ops::write_forward);
  m.impl("memory_write_backward", &attnfast::simt_ops::write_backward);
  m.impl("dnc_link_read_forward", &attnfast::simt_ops::link_read_forward);
  m.impl("dnc_link_read_backward", &attnfast::simt_ops::link_read_backward);
}
