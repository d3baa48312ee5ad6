// ATen-side helpers shared by the glue of every CUDA kernel family (csrc/cuda/*_glue.h, namespace
// attnfast::glue), which the CUDA ops and the SIMT-harness ops both include.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda/limits.h"

namespace attnfast {
namespace glue {

// Calls f(static_cast<T*>(nullptr)) with T the CUDA element type of `dt` (float, __half,
// __nv_bfloat16); `what` names the tensor in the error for any other dtype.
template <typename Fn>
void dispatch_dtype(at::ScalarType dt, const char* what, Fn&& f) {
  switch (dt) {
    case at::kFloat: f(static_cast<float*>(nullptr)); break;
    case at::kBFloat16: f(static_cast<__nv_bfloat16*>(nullptr)); break;
    case at::kHalf: f(static_cast<__half*>(nullptr)); break;
    default: TORCH_CHECK(false, what, " must be float32, bfloat16 or float16, got ", dt);
  }
}

// The memory ops' variant (csrc/cuda/memory_*_glue.h): T = float or double.
template <typename Fn>
void dispatch_memory_dtype(at::ScalarType dt, Fn&& f) {
  switch (dt) {
    case at::kFloat: f(static_cast<float*>(nullptr)); break;
    case at::kDouble: f(static_cast<double*>(nullptr)); break;
    default:
      TORCH_CHECK(false, "memory ops (CUDA kernels): tensors must be float32 or float64, got ", dt);
  }
}

// Kernels that put a batch-like count in grid y or z (and do not slice it) check it against
// CUDA's cap (csrc/cuda/limits.h) with a clear error instead of failing at launch.
inline void check_grid_yz(int64_t blocks, const char* op, const char* what) {
  TORCH_CHECK(blocks <= cuda::kMaxGridYZ, op, " (CUDA kernels): ", what, " = ", blocks,
              " exceeds the ", cuda::kMaxGridYZ, " blocks CUDA allows in a grid's y dimension; "
              "split the batch or use the cpu / reference backend");
}

// A scratch buffer of n (at least 1) elements of dtype dt on like's device.
inline at::Tensor workspace(const at::Tensor& like, int64_t n, at::ScalarType dt) {
  return at::empty({std::max<int64_t>(1, n)}, like.options().dtype(dt));
}

// at::BFloat16 / at::Half have the layout of __nv_bfloat16 / __half: reinterpret the pointers.
template <typename T>
T* ptr(const at::Tensor& t) {
  return reinterpret_cast<T*>(t.data_ptr());
}
template <typename T>
T* ptr_or_null(const at::Tensor& t) {
  return t.defined() && t.numel() > 0 ? reinterpret_cast<T*>(t.data_ptr()) : nullptr;
}

}  // namespace glue
}  // namespace attnfast
