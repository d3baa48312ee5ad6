// The Boom layer's CPU inner loops (per ISA) and their argument blocks: the fused epilogue of
// the forward (applied to a tile of rows of an ATen GEMM's output while it is hot in cache),
// the fused dz pass of the backward, and, in the AVX-512 build, the whole forward as one
// blocked GEMM with the epilogue fused per output block (gemm.h).
#pragma once
#include <cstdint>

#include "convert.h"
#include "gemm.h"

namespace attnfast {
namespace cpu {

struct BoomEpilogueArgs {
  DType dtype;
  int activation;       // attnfast::Activation
  void* z;              // (rows, F_used) GEMM output x W^T, row stride ldz; bias is added here
  int64_t ldz;
  const float* bias;    // (F_used,) fp32, or nullptr
  void* out;            // (rows, C), row stride ldo
  int64_t ldo;
  int64_t F;            // full d_ff: the dropout counter is global_row * F + f
  int64_t nchunks;
  int64_t C;
  int64_t row0;         // global index of tile row 0
  bool write_preact;    // store z + bias back into z (rounded to dtype)
  double dropout_p;
  uint64_t seed;
};

struct BoomDzArgs {
  DType dtype;
  int activation;
  const void* grad_out;  // (rows, C), row stride ldg
  int64_t ldg;
  const void* preact;    // (rows, F_used), row stride ldz
  int64_t ldz;
  void* dz;              // (rows, F_used), row stride ldz
  int64_t F;
  int64_t nchunks;
  int64_t C;
  int64_t row0;
  double dropout_p;
  uint64_t seed;
  float* bias_grad;      // (F_used,) fp32 column sums of dz over the rows, accumulated; or nullptr
};

// Rows [row_begin, row_end) of the tile; `scratch` holds C floats (the chunk-sum accumulator).
using BoomEpilogueFn = void (*)(const BoomEpilogueArgs&, int64_t row_begin, int64_t row_end,
                                float* scratch);
using BoomDzFn = void (*)(const BoomDzArgs&, int64_t row_begin, int64_t row_end);

struct BoomKernels {
  BoomEpilogueFn epilogue;
  BoomDzFn dz;
  const BoomGemmKernels* gemm;  // the fused GEMM forward (gemm.h); nullptr: ATen GEMM + epilogue
  const GemmKernels* mm;        // attnfast's plain GEMM (gemm.h); nullptr: ATen's
};

}  // namespace cpu
}  // namespace attnfast
