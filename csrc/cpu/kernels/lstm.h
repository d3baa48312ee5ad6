// The LSTM recurrence's CPU kernels (per ISA) and their argument blocks (csrc/cpu/lstm.cpp is
// the glue). The work is split over the threads of ONE OpenMP parallel region for the whole
// sequence: the glue opens it and calls a kernel once per thread with (tid, nthreads); the
// kernel loops over the steps itself, with one barrier per step (kernels/lstm_impl.h).
//
// Partition: the hidden units are cut into groups of kLstmGroup (64) units; a thread owns a
// contiguous range of groups, ALL FOUR gate rows of those units in the forward (so the gate
// math is fused in its epilogue) and the same columns of w_hh in the backward's dh product.
// Every unit's result is computed by the same code in the same order whichever thread owns it,
// so the output does not depend on the thread count (bitwise).
#pragma once
#include <cstdint>

#include "convert.h"

namespace attnfast {
namespace cpu {

constexpr int64_t kLstmTile = 16;   // units per forward tile: one lane vector of fp32
constexpr int64_t kLstmGroup = 64;  // units per ownership group: 4 tiles / 4 lane vectors

// Units rounded up to whole groups, and the fp32 floats of one packed copy of w_hh (either
// layout): groups * 64 * 4H.
inline int64_t lstm_padded_units(int64_t H) { return (H + kLstmGroup - 1) / kLstmGroup * kLstmGroup; }
inline int64_t lstm_packed_floats(int64_t H) { return lstm_padded_units(H) * 4 * H; }
// The groups of thread `tid` of `n`: [lstm_group_begin(tid), lstm_group_begin(tid + 1)).
inline int64_t lstm_group_begin(int64_t groups, int64_t tid, int64_t n) { return groups * tid / n; }

struct LstmForwardArgs {
  DType dtype;           // of gates_x, h0, c0, w_hh, h, gates
  int64_t T, B, H;
  const void* gates_x;   // (T, B, 4H)
  const void* h0;        // (B, H)
  const void* c0;        // (B, H)
  const void* w_hh;      // (4H, H)
  void* h;               // (T, B, H)
  float* c;              // (T, B, H) fp32
  void* gates;           // (T, B, 4H) activated i, f, g, o, or nullptr
  float* packed;         // lstm_packed_floats(H): w_hh as [tile][k][gate][16] fp32
  float* hbuf;           // 2 * B * Hp fp32: h_{t-1} / h_t (double buffer, read by every thread)
  float* scratch;        // nthreads * B * 64 fp32: one tile's pre-activations per thread
  bool zigzag;           // tiles in descending order on odd steps
};

struct LstmBackwardArgs {
  DType dtype;
  int64_t T, B, H;
  const void* grad_h;    // (T, B, H)
  const float* grad_c;   // (T, B, H) fp32, the gradient of c; or one zero row (grad_c_row 0)
  int64_t grad_c_row;    // H, or 0: grad_c of step t, batch row b is grad_c + (t B + b) grad_c_row
  const void* c0;        // (B, H)
  const void* w_hh;      // (4H, H)
  const float* c;        // (T, B, H) fp32
  const void* gates;     // (T, B, 4H) activated
  void* grad_gates_x;    // (T, B, 4H)
  void* grad_h0;         // (B, H)
  void* grad_c0;         // (B, H)
  float* packed;         // lstm_packed_floats(H): w_hh as [group][r in 4H][64] fp32
  float* dabuf;          // 2 * B * 4H fp32: dA_t (double buffer, read by every thread)
  float* dh;             // B * Hp fp32: the recurrent dh (each column owned by one thread)
  float* dc;             // B * Hp fp32: the carried dc (owner only)
  float* c0f;            // B * Hp fp32: c0 in fp32 (owner only)
  bool zigzag;
};

// Called once per thread of one parallel region, all threads of the region: they meet at
// `#pragma omp barrier`s inside.
using LstmForwardFn = void (*)(const LstmForwardArgs&, int tid, int nthreads);
using LstmBackwardFn = void (*)(const LstmBackwardArgs&, int tid, int nthreads);

struct LstmKernels {
  LstmForwardFn forward;
  LstmBackwardFn backward;
};

}  // namespace cpu
}  // namespace attnfast
