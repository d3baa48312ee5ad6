// Boom on CUDA: the glue of boom_glue.h (strategies described there) as the CUDA kernels of the
// ops of ATTNFAST_BOOM_OPS (csrc/op_lists.h; adaptor: cuda_op.h).
#include "cuda/cuda_op.h"
#include "cuda/boom_glue.h"

TORCH_LIBRARY_IMPL(attnfast, CUDA, m) { ATTNFAST_BOOM_OPS(ATTNFAST_IMPL_CUDA) }
