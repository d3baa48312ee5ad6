// torch.ops.attnfast_simt.<memory op>: the CUDA kernels of the memory ops
// (csrc/cuda/memory_*_kernels.cuh, one header per concept) run on CPU tensors by the SIMT harness,
// through the same glue as the CUDA ops (csrc/cuda/memory_*_glue.h), so the harness tests the
// exact launch sequence, workspaces included.
#include <torch/library.h>

#include "device_op.h"  // ATTNFAST_IMPL_SIMT
#include "op_lists.h"
#include "simt/prelude.h"  // before any kernel header
#include "cuda/memory_addressing_glue.h"
#include "cuda/memory_allocation_glue.h"
#include "cuda/memory_links_glue.h"
#include "cuda/memory_read_write_glue.h"
#include "cuda/memory_window_glue.h"

// The allocation kernels' dynamic shared memory (the only extern __shared__ of the memory kernels).
ATTNFAST_SIMT_DEFINE_EXTERN_SHARED(attnfast::cuda::mem_detail, mem_smem_raw)

TORCH_LIBRARY_IMPL(attnfast_simt, CPU, m) { ATTNFAST_MEMORY_OPS(ATTNFAST_IMPL_SIMT) }
