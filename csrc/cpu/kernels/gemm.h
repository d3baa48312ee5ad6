// attnfast's CPU GEMM, ISA-independent part: argument blocks and kernel tables of the plain
// GEMM (used by the Boom backward) and of the Boom forward as one GEMM with its epilogue fused
// per output block. The kernels (gemm_impl.h: packing + micro-kernel; gemm_driver_impl.h:
// blocked driver; gemm_boom_impl.h: the Boom epilogue) are compiled only in the avx512 TU; the
// other ISAs leave the table pointers null and boom.cpp uses ATen's GEMM there.
#pragma once
#include <cstdint>

#include "convert.h"

namespace attnfast {
namespace cpu {

// C (M x N) = A (M x K) B (K x N) on the AVX-512 micro-kernel, any strides: the operands are
// packed (and converted: fp16 -> fp32, bf16 -> k-pairs) before use, C is written in dtype from
// the fp32 accumulators.
struct GemmArgs {
  DType dtype;            // of A, B and C
  int64_t M, N, K;
  const void* a;          // A(m, k) = a[m * a_row + k * a_k]
  int64_t a_row, a_k;
  const void* b;          // B(k, n) = b[n * b_col + k * b_k]
  int64_t b_col, b_k;
  void* packed_b;         // plan().packed_b_bytes, filled by pack_b()
  void* c;                // (M, N), row stride ldc; unused by the Boom forward (its own epilogue)
  int64_t ldc;
};

struct GemmPlan {
  int64_t packed_b_bytes;     // B packed into the micro-kernel's panel layout
  int64_t b_panels;           // pack_b() work items (NR-column panels of B)
  int64_t scratch_bytes;      // per task of rows(): packed A block + the fp32 C block
  int64_t min_rows_per_task;  // below this a task's micro-tiles are mostly padding
};

struct GemmKernels {
  GemmPlan (*plan)(const GemmArgs&);
  // Packs B panels [panel_begin, panel_end) into args.packed_b (tasks run in parallel).
  void (*pack_b)(const GemmArgs&, int64_t panel_begin, int64_t panel_end);
  // C rows [m_begin, m_end); `scratch`: this task's own plan().scratch_bytes, 64-byte aligned.
  void (*rows)(const GemmArgs&, int64_t m_begin, int64_t m_end, void* scratch);
};

// The Boom forward as that GEMM with A = x (N x K), B = W^T (W is (F, K): b_col = K, b_k = 1,
// N = f_used) and the Boom epilogue instead of a C store.
struct BoomGemmArgs {
  GemmArgs gemm;           // packed_b via GemmKernels::pack_b; c unused
  int activation;          // attnfast::Activation
  const float* bias;       // (f_used,) fp32, or nullptr
  void* out;               // (N, C) contiguous, dtype
  int64_t C;
  int64_t F;               // full d_ff: the dropout counter is row * F + f
  void* preact;            // (N, f_used) contiguous, dtype, or nullptr (inference)
  double dropout_p;
  uint64_t seed;
};

struct BoomGemmKernels {
  GemmPlan (*plan)(const BoomGemmArgs&);  // scratch_bytes includes the chunk-sum accumulator
  // out / preact rows [row_begin, row_end): GEMM + bias + activation + dropout + chunk sum.
  void (*forward_rows)(const BoomGemmArgs&, int64_t row_begin, int64_t row_end, void* scratch);
};

}  // namespace cpu
}  // namespace attnfast
