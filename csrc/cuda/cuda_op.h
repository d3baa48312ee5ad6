// The CUDA device kind of csrc/device_op.h: a family's glue (csrc/cuda/<family>_glue.h) as its
// CUDA kernels. Used by csrc/cuda/<family>.cu as
//   TORCH_LIBRARY_IMPL(attnfast, CUDA, m) { ATTNFAST_BOOM_OPS(ATTNFAST_IMPL_CUDA) }
// Slim headers only (no torch/extension.h): these TUs also compile the kernels.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "device_op.h"
#include "op_lists.h"

namespace attnfast {
namespace device_op {

// On the first tensor's device and its current stream; a failed launch raises here.
template <>
struct Launch<c10::DeviceType::CUDA> {
  static constexpr const char* kName = "CUDA";
  template <typename F>
  static auto run(const at::Tensor& first, F&& f) {
    const c10::cuda::CUDAGuard guard(first.device());
    auto out = f(c10::cuda::getCurrentCUDAStream().stream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return out;
  }
};

}  // namespace device_op
}  // namespace attnfast

#define ATTNFAST_IMPL_CUDA(op) \
  m.impl(#op, ::attnfast::device_op::adapt<c10::DeviceType::CUDA>(#op, &::attnfast::glue::op));
