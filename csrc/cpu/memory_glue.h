// What the memory ops' CPU glue (csrc/cpu/memory_<concept>.cpp) shares: the kernel table of the
// active ISA (csrc/cpu/kernels/memory.h), the batch split over threads and the scratch buffers.
// Each op's glue checks its arguments (csrc/checks/memory.h), allocates the outputs, fills the
// op's argument block and runs the per-ISA loop over the batch with at::parallel_for. Each op's
// work per batch element is small (a DNC step at N = 512 is ~1 MFLOP per element outside the
// link), so the win over eager PyTorch is one pass per op instead of a dozen small ops, each with
// its own dispatch, allocation and trip through memory.
#pragma once
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>

#include "cpu/isa.h"
#include "cpu/kernels/memory.h"

namespace attnfast {
namespace cpu {
namespace memory_glue {

// The memory loops of the active ISA for element type T (float or double).
template <typename T>
const MemoryKernelsT<T>& table() {
  if constexpr (sizeof(T) == sizeof(float)) return isa_kernels().memory->f32;
  else return isa_kernels().memory->f64;
}

// Batch elements per task: enough that a task does >= ~16k element operations.
inline int64_t grain(int64_t work_per_batch) {
  return std::max<int64_t>(1, int64_t(16384) / std::max<int64_t>(1, work_per_batch));
}

// fn(args, b0, b1) over the batch [0, B), split over threads; `work` per batch element.
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

// Per-batch scratch of `per_batch` elements of like's dtype (or int32).
inline at::Tensor scratch(const at::Tensor& like, int64_t B, int64_t per_batch) {
  return at::empty({std::max<int64_t>(1, B * per_batch)}, like.options());
}
inline at::Tensor int_scratch(const at::Tensor& like, int64_t B, int64_t per_batch) {
  return at::empty({std::max<int64_t>(1, B * per_batch)}, like.options().dtype(at::kInt));
}

}  // namespace memory_glue
}  // namespace cpu
}  // namespace attnfast
