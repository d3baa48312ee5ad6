// The CPU Boom forward as one fused GEMM (x W^T + epilogue), ISA-independent part: the argument
// block and the kernel table. The kernels themselves (AVX-512 micro-kernels, packing, the
// blocked driver with the Boom epilogue fused per output block) live in gemm_impl.h and
// gemm_boom_impl.h, compiled only in the avx512 TU; the other ISAs leave the table pointer null
// and boom.cpp keeps the ATen-GEMM path for them.
#pragma once
#include <cstdint>

#include "convert.h"

namespace attnfast {
namespace cpu {

struct BoomGemmArgs {
  DType dtype;
  int activation;          // attnfast::Activation
  const void* x;           // (N, K) contiguous, dtype
  int64_t N;
  int64_t K;
  const void* weight;      // (F, K) contiguous, dtype; rows [0, f_used) are used
  int64_t f_used;          // nchunks * C
  const float* bias;       // (f_used,) fp32, or nullptr
  void* packed_weight;     // plan().packed_weight_bytes, filled by pack_weight()
  void* out;               // (N, C) contiguous, dtype
  int64_t C;
  int64_t F;               // full d_ff: the dropout counter is row * F + f
  void* preact;            // (N, f_used) contiguous, dtype, or nullptr (inference)
  double dropout_p;
  uint64_t seed;
};

struct BoomGemmPlan {
  int64_t packed_weight_bytes;  // W packed into the micro-kernel's panel layout
  int64_t weight_panels;        // pack_weight() work items (column panels of W^T)
  int64_t scratch_bytes;        // per task of forward_rows(): packed x block + tiles
  int64_t min_rows_per_task;    // below this a task's micro-tiles are mostly padding
};

struct BoomGemmKernels {
  BoomGemmPlan (*plan)(const BoomGemmArgs&);
  // Packs W panels [panel_begin, panel_end) into args.packed_weight (tasks run in parallel).
  void (*pack_weight)(const BoomGemmArgs&, int64_t panel_begin, int64_t panel_end);
  // out / preact rows [row_begin, row_end): GEMM + bias + activation + dropout + chunk sum.
  // `scratch` is this task's own plan().scratch_bytes buffer, 64-byte aligned.
  void (*forward_rows)(const BoomGemmArgs&, int64_t row_begin, int64_t row_end, void* scratch);
};

}  // namespace cpu
}  // namespace attnfast
