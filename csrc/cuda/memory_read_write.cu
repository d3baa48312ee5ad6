// Memory write (erase / add) and read on CUDA: the glue of memory_read_write_glue.h as the
// CUDA kernels of ATTNFAST_MEMORY_READ_WRITE_OPS (csrc/op_lists.h; adaptor: cuda_op.h). A TU
// per concept, so nvcc builds the memory kernels in parallel and an edit rebuilds one concept.
#include "cuda/cuda_op.h"
#include "cuda/memory_read_write_glue.h"

TORCH_LIBRARY_IMPL(attnfast, CUDA, m) { ATTNFAST_MEMORY_READ_WRITE_OPS(ATTNFAST_IMPL_CUDA) }
