// Fused single-head attention on the CPU: argument blocks and the per-ISA kernel table.
// The ATen glue (csrc/cpu/attention.cpp) packs operands, schedules tasks over threads and
// calls these; the kernels (attention_impl.h, compiled per ISA) do the tile GEMMs and the
// streaming softmax. No torch headers, no std templates (see isa_kernels.h).
//
// Operand formats of the tile GEMM C[M x N] (+)= A[M x K] B[K x N] (fp32 accumulation):
//   A: row-major, element type E (float or bf16), row stride lda; with bf16, elements k and
//      k+1 of a row are read as one pair (a k == K odd tail pairs with 0).
//   B (a "BOperand"), panel-major: the columns are cut into panels of kAttnPanel = 64, and
//      panel p holds columns [64 p, 64 p + 64) of every k row, its rows one after another:
//      fp32: B[p * ps + k * 64 + n % 64]; bf16: "VNNI" pair rows of 128 elements,
//      B[p * ps + (k / 2) * 128 + 2 (n % 64) + (k & 1)] (a pair row holds the two k of each
//      column side by side, the operand layout of AVX512-BF16's vdpbf16ps; an odd K is padded
//      with a zero row), p = n / 64, panel stride ps = attn_b_pstride. The micro-kernel's B
//      panel (up to KC rows of one panel) is then one contiguous run. With plain rows of
//      stride ~N (several KiB at N = Lk), every k row of it sat in its own 4 KiB page and the
//      tile GEMMs stalled on B loads (L1 TLB misses): measured on this Zen 5, single thread,
//      the backward's five tile GEMMs at D = 1024 went from 187-199 to 204-218 GFLOP/s fp32.
// fp16 inputs are converted to fp32 by the glue (no fp16 dot-product instruction here).
#pragma once
#include <cstdint>

#if defined(__x86_64__)
#include <immintrin.h>  // AVX-512 micro-kernels; used only inside the avx512 TU's functions
#endif

#include "convert.h"

namespace attnfast {
namespace cpu {

struct AttnFwdArgs {
  DType dtype;            // f32 or bf16
  const void* q;          // (B, Lq, D), element strides sqb, sqr
  const void* kt;         // packed K^T of one batch: B operand (K = D, N = Lk)
  int64_t pkt;            // its panel stride (attn_b_pstride)
  const void* v;          // packed V of one batch: B operand (K = Lk, N = Dv)
  int64_t pv;
  void* out;              // (B, Lq, Dv), strides sob, sor
  float* lse;             // (B, Lq) contiguous
  int64_t B, Lq, Lk, D, Dv;
  int64_t sqb, sqr, sob, sor;
  const float* bias;      // additive mask, element (b, i, j) at b*sbb + i*sbq + j*sbk, or null
  int64_t sbb, sbq, sbk;
  bool causal;            // bottom-right: key j visible to query i iff j <= i + Lk - Lq
  float scale;
  double dropout_p;
  uint64_t seed;
  int64_t bq, bk;         // query rows per task, keys per step
  float* probs;           // keep_probs: (B, Lq, Lk) fp32 contiguous, P = exp(s - lse) (0 where
                          // masked or the row is fully masked); null otherwise
};

struct AttnBwdArgs {
  DType dtype;
  const void* q;          // rows of batch b (strides sqb, sqr): A operand of S = Q K^T
  const void* kt;         // packed K^T (K = D, N = Lk) of the batch
  int64_t pkt;
  const void* vt;         // packed V^T (K = Dv, N = Lk) of the batch: dP = dO V^T
  int64_t pvt;
  const void* dout;       // dO rows (strides sdb, sdr): A operand of dP = dO V^T
  const void* qn;         // Q as a B operand over queries (K = Lq, N = D): dK += dS^T Q
  int64_t pqn;
  const void* don;        // dO as a B operand over queries (K = Lq, N = Dv): dV += P^T dO
  int64_t pdon;
  const void* kn;         // K as a B operand over keys (K = Lk, N = D): dQ += dS K
  int64_t pkn;
  const float* lse;       // (B, Lq)
  const float* delta;     // (B, Lq): rowsum(dO * O) in fp32
  float* dq_acc;          // fp32 (Lq, D) accumulator of this task's chunk, contiguous; a query
                          // block's rows are valid only once its flag below is set
  uint8_t* dq_touched;    // per query block of this task: 0 until its first dQ product, which
                          // overwrites instead of accumulating (no zeroing pass)
  void* dk;               // (B, Lk, D) contiguous, q's dtype
  void* dv;               // (B, Lk, Dv) contiguous
  int64_t B, Lq, Lk, D, Dv;
  int64_t sqb, sqr, sdb, sdr;
  const float* bias;
  int64_t sbb, sbq, sbk;
  bool causal;
  float scale;
  double dropout_p;
  uint64_t seed;
  int64_t bq, bk;
  const float* probs;     // the forward's kept P, (B, Lq, Lk) fp32 contiguous, or null: recompute
};

// Per-batch operand packing (see the operand formats above). `rows` x `cols` of src (row
// stride ld, element type of dtype) become a B operand:
//   pack_t: contraction over cols (B[c][r] = src[r][c], N = rows)  -- K^T, V^T
//   pack_n: contraction over rows (B[r][c] = src[r][c], N = cols)  -- V, Q, dO, K (a padded
//           copy for fp32, VNNI pairs for bf16)
// dst is panel-major with panel stride `pstride` (attn_b_pstride(dtype, K)).
using AttnPackFn = void (*)(DType, const void* src, int64_t ld, int64_t rows, int64_t cols,
                            void* dst, int64_t pstride, int64_t row_begin, int64_t row_end);
// One task: batch b, query block qb (rows qb*bq ...). scratch: attn_fwd_scratch_floats floats.
using AttnFwdFn = void (*)(const AttnFwdArgs&, int64_t b, int64_t qb, float* scratch);
// One task: batch b, key blocks kb_first, kb_first + kb_step, ... (interleaved, so causal
// work is balanced between tasks). scratch: attn_bwd_scratch_floats floats.
using AttnBwdFn = void (*)(const AttnBwdArgs&, int64_t b, int64_t kb_first, int64_t kb_step,
                           float* scratch);

struct AttentionKernels {
  AttnPackFn pack_t;
  AttnPackFn pack_n;
  AttnFwdFn forward;
  AttnBwdFn backward;
};

// Columns per B-operand panel (the AVX-512 micro-kernel's 4 x 16 floats).
constexpr int64_t kAttnPanel = 64;
// Rows of a packed B operand (k pairs for bf16).
inline int64_t attn_b_rows(DType dt, int64_t k) { return dt == DType::bf16 ? (k + 1) / 2 : k; }
// Elements per (pair) row of a panel.
inline int64_t attn_b_row_elems(DType dt) {
  return dt == DType::bf16 ? 2 * kAttnPanel : kAttnPanel;
}
// Panel stride (elements) of a B operand with contraction length k.
inline int64_t attn_b_pstride(DType dt, int64_t k) {
  return attn_b_rows(dt, k) * attn_b_row_elems(dt);
}
// Elements of a B operand with contraction length k and n columns.
inline int64_t attn_b_elems(DType dt, int64_t k, int64_t n) {
  return (n + kAttnPanel - 1) / kAttnPanel * attn_b_pstride(dt, k);
}
// A-operand tile row stride (elements) for K columns: even (bf16 pairs), 16-aligned.
inline int64_t attn_a_ld(int64_t k) { return (k + 15) / 16 * 16; }

inline int64_t attn_fwd_scratch_floats(const AttnFwdArgs& a) {
  // S tile, P tile (as fp32, large enough for bf16 too), O accumulator, m, l.
  return a.bq * attn_a_ld(a.bk) * 2 + a.bq * attn_a_ld(a.Dv) + 2 * a.bq + 64;
}
inline int64_t attn_bwd_scratch_floats(const AttnBwdArgs& a) {
  // S/P, dP, P^T, dS, dS^T tiles; dK, dV accumulators of one key block.
  const int64_t tile = attn_a_ld(a.bq) * attn_a_ld(a.bk);
  return 5 * tile + a.bk * (attn_a_ld(a.D) + attn_a_ld(a.Dv)) + 64;
}

}  // namespace cpu
}  // namespace attnfast
