// Which ops each family implements, declared once: X-macro lists that generate every
// TORCH_LIBRARY_IMPL block of the compiled backends. An entry X(op) names
//   - the op's schema in csrc/schemas.h (same name; the tables there follow these families),
//   - its CPU kernel attnfast::cpu::op (csrc/cpu/<family>.cpp), registered as it is,
//   - its CUDA glue attnfast::glue::op(cudaStream_t stream, <the schema's arguments>)
//     (csrc/cuda/<family>_glue.h), which the adaptor of csrc/device_op.h turns into the CUDA
//     kernel (csrc/cuda/<family>.cu: device checks, device guard, current stream, launch check)
//     and into the SIMT harness kernel on CPU tensors (csrc/simt/*_ops.cpp: null stream).
// A family's TU registers its list with one line, e.g.
//   TORCH_LIBRARY_IMPL(attnfast, CUDA, m) { ATTNFAST_BOOM_OPS(ATTNFAST_IMPL_CUDA) }
//
// Adding an op on the C++ side: its schema in csrc/schemas.h, its name in the family's list
// below, the CPU kernel attnfast::cpu::<op> and the glue attnfast::glue::<op> (+ its CUDA
// kernels and launcher in csrc/cuda/<family>_kernels.cuh); nothing else registers it.
// A new family: a list here, a table in schemas.h (schemas::for_each_table), one
// TORCH_LIBRARY_IMPL line in each of its csrc/cpu/<family>.cpp, csrc/cuda/<family>.cu and
// csrc/simt/<family>_ops.cpp.
#pragma once

#define ATTNFAST_BOOM_OPS(X) \
  X(boom_forward)            \
  X(boom_backward)

#define ATTNFAST_ATTENTION_OPS(X) \
  X(attention_forward)            \
  X(attention_backward)

#define ATTNFAST_LSTM_OPS(X) \
  X(lstm_forward)            \
  X(lstm_backward)

// The memory ops (NTM / DNC), by concept (csrc/schemas.h has a table per concept).
#define ATTNFAST_MEMORY_ADDRESSING_OPS(X) \
  X(memory_content_forward)               \
  X(memory_content_backward)              \
  X(ntm_location_forward)                 \
  X(ntm_location_backward)

#define ATTNFAST_MEMORY_ALLOCATION_OPS(X) \
  X(dnc_allocation_forward)               \
  X(dnc_allocation_backward)              \
  X(dnc_usage_forward)                    \
  X(dnc_usage_backward)                   \
  X(dnc_write_weights_forward)            \
  X(dnc_write_weights_backward)

#define ATTNFAST_MEMORY_LINKS_OPS(X) \
  X(dnc_link_read_forward)           \
  X(dnc_link_read_backward)

#define ATTNFAST_MEMORY_READ_WRITE_OPS(X) \
  X(memory_write_forward)                 \
  X(memory_write_backward)                \
  X(memory_read_forward)                  \
  X(memory_read_backward)                 \
  X(dnc_read_mix_forward)                 \
  X(dnc_read_mix_backward)

#define ATTNFAST_MEMORY_WINDOW_OPS(X) \
  X(graves_window_forward)            \
  X(graves_window_backward)

#define ATTNFAST_MEMORY_OPS(X)      \
  ATTNFAST_MEMORY_ADDRESSING_OPS(X) \
  ATTNFAST_MEMORY_ALLOCATION_OPS(X) \
  ATTNFAST_MEMORY_LINKS_OPS(X)      \
  ATTNFAST_MEMORY_READ_WRITE_OPS(X) \
  ATTNFAST_MEMORY_WINDOW_OPS(X)

// The CPU kernels' entry, for TORCH_LIBRARY_IMPL(attnfast, CPU, m) blocks (`m` is the block's
// library). The CUDA and SIMT entries, ATTNFAST_IMPL_CUDA and ATTNFAST_IMPL_SIMT, are defined
// with their adaptor (csrc/cuda/cuda_op.h, csrc/device_op.h).
#define ATTNFAST_IMPL_CPU(op) m.impl(#op, &::attnfast::cpu::op);
