// Single-head attention on CUDA: the glue of attention_glue.h (strategies described there) as the
// CUDA kernels of the ops of ATTNFAST_ATTENTION_OPS (csrc/op_lists.h; adaptor: cuda_op.h).
#include "cuda/cuda_op.h"
#include "cuda/attention_glue.h"

TORCH_LIBRARY_IMPL(attnfast, CUDA, m) { ATTNFAST_ATTENTION_OPS(ATTNFAST_IMPL_CUDA) }
