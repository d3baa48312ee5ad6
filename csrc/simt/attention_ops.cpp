// torch.ops.attnfast_simt.attention_*: the CUDA attention kernels (csrc/cuda/attention_kernels.cuh)
// run on CPU tensors by the SIMT harness, through the same glue as the CUDA ops
// (csrc/cuda/attention_glue.h), so the harness tests the exact launch sequence.
#include <torch/library.h>

#include "device_op.h"  // ATTNFAST_IMPL_SIMT
#include "op_lists.h"
#include "simt/prelude.h"  // before any kernel header
#include "cuda/attention_glue.h"

ATTNFAST_SIMT_DEFINE_EXTERN_SHARED(attnfast::cuda::attn_detail, attn_smem_raw)

TORCH_LIBRARY_IMPL(attnfast_simt, CPU, m) { ATTNFAST_ATTENTION_OPS(ATTNFAST_IMPL_SIMT) }
