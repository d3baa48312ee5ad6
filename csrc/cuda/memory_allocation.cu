// DNC allocation and usage on CUDA: the glue of memory_allocation_glue.h as the
// CUDA kernels of ATTNFAST_MEMORY_ALLOCATION_OPS (csrc/op_lists.h; adaptor: cuda_op.h). A TU
// per concept, so nvcc builds the memory kernels in parallel and an edit rebuilds one concept.
#include "cuda/cuda_op.h"
#include "cuda/memory_allocation_glue.h"

TORCH_LIBRARY_IMPL(attnfast, CUDA, m) { ATTNFAST_MEMORY_ALLOCATION_OPS(ATTNFAST_IMPL_CUDA) }
