// The LSTM recurrence on CUDA: the glue of lstm_glue.h (one step kernel launch per time step,
// described in lstm_kernels.cuh) as the CUDA kernels of the ops of ATTNFAST_LSTM_OPS
// (csrc/op_lists.h; adaptor: cuda_op.h).
#include "cuda/cuda_op.h"
#include "cuda/lstm_glue.h"

TORCH_LIBRARY_IMPL(attnfast, CUDA, m) { ATTNFAST_LSTM_OPS(ATTNFAST_IMPL_CUDA) }
