// torch.ops.attnfast_simt.boom_*: the CUDA Boom kernels (csrc/cuda/boom_kernels.cuh) run on CPU
// tensors by the SIMT harness, through the same glue as the CUDA ops (csrc/cuda/boom_glue.h):
// forward is the GEMM + epilogue kernel, or the fused kernel with ATTNFAST_BOOM_CUDA=fused;
// backward is the dz kernel (+ the deterministic bias column sums) and two GEMMs, here at::mm.
#include <torch/library.h>

#include "device_op.h"  // ATTNFAST_IMPL_SIMT
#include "op_lists.h"
#include "simt/prelude.h"  // before any kernel header
#include "cuda/boom_glue.h"

ATTNFAST_SIMT_DEFINE_EXTERN_SHARED(attnfast::cuda::boom_detail, boom_smem_raw)

TORCH_LIBRARY_IMPL(attnfast_simt, CPU, m) { ATTNFAST_BOOM_OPS(ATTNFAST_IMPL_SIMT) }
