// torch.ops.attnfast_simt.lstm_*: the CUDA LSTM step kernels (csrc/cuda/lstm_kernels.cuh) run on
// CPU tensors by the SIMT harness, through the same glue as the CUDA ops (csrc/cuda/lstm_glue.h):
// one forward step launch per time step, one backward step launch per time step + the final one.
#include <torch/library.h>

#include "device_op.h"  // ATTNFAST_IMPL_SIMT
#include "op_lists.h"
#include "simt/prelude.h"  // before any kernel header
#include "cuda/lstm_glue.h"

TORCH_LIBRARY_IMPL(attnfast_simt, CPU, m) { ATTNFAST_LSTM_OPS(ATTNFAST_IMPL_SIMT) }
