// The memory ops' CPU loops (NTM / DNC), included once per ISA inside namespace
// attnfast::cpu::<isa> (csrc/cpu/isa_kernels.h), one header per concept, and their dispatch table
// (argument blocks and table type: memory.h). Inner loops run over contiguous rows (N or W) with
// `#pragma omp simd` or the fixed-width lanes of lanes.h; the per-element formulas are
// csrc/common/memory_math.h's, each in the reference's operation order
// (attnfast/reference/memory.py). Accumulations are in T (float32 or float64), like the
// reference's. No include guard on purpose.

namespace mm = ::attnfast::memory;

#include "cpu/kernels/lanes.h"

template <typename T>
ATTNFAST_INLINE T dot_row(const T* a, const T* b, int64_t n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

#include "cpu/kernels/memory_addressing_impl.h"
#include "cpu/kernels/memory_allocation_impl.h"
#include "cpu/kernels/memory_links_impl.h"
#include "cpu/kernels/memory_read_write_impl.h"
#include "cpu/kernels/memory_window_impl.h"

template <typename T>
constexpr MemoryKernelsT<T> memory_table() {
  MemoryKernelsT<T> t{};
  t.content_forward = &content_forward_impl<T>;
  t.content_backward = &content_backward_impl<T>;
  t.ntm_location_forward = &ntm_location_forward_impl<T>;
  t.ntm_location_backward = &ntm_location_backward_impl<T>;
  t.allocation_forward = &allocation_forward_impl<T>;
  t.allocation_backward = &allocation_backward_impl<T>;
  t.usage_forward = &usage_forward_impl<T>;
  t.usage_backward = &usage_backward_impl<T>;
  t.write_weights_forward = &write_weights_forward_impl<T>;
  t.write_weights_backward = &write_weights_backward_impl<T>;
  t.link_forward = &link_forward_impl<T>;
  t.link_backward = &link_backward_impl<T>;
  t.write_forward = &write_forward_impl<T>;
  t.write_backward = &write_backward_impl<T>;
  t.read_forward = &read_forward_impl<T>;
  t.read_backward = &read_backward_impl<T>;
  t.read_mix_forward = &read_mix_forward_impl<T>;
  t.read_mix_backward = &read_mix_backward_impl<T>;
  t.graves_forward = &graves_forward_impl<T>;
  t.graves_backward = &graves_backward_impl<T>;
  return t;
}

const MemoryKernels memory_kernels{memory_table<float>(), memory_table<double>()};
