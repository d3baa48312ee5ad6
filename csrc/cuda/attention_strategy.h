// The strategy rule of the GPU attention (flash kernels or the GEMM strategy of attention_gemm.h,
// and the query rows of a GEMM chunk) with its environment variables ATTNFAST_ATTN_STRATEGY and
// ATTNFAST_ATTN_GEMM_ROWS.
//
// The authority is triton_kernels/attention_strategy.py: the rule, the accepted values, the error
// messages and the reasons are written there first; this is its C++ mirror, for the CUDA op and
// the SIMT harness op. tests/test_attention_strategy.py checks that both give the same answers
// and the same errors over a grid of shapes and environment values, through
// attnfast._C.attention_use_gemm / attention_chunk_rows (csrc/module.cpp).
//
// Plain C++ with no CUDA header: module.cpp includes it in every build.
#pragma once
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <limits>

namespace attnfast {
namespace attention_gemm {

// ATTNFAST_ATTN_STRATEGY: auto (also when unset or empty) takes the GEMM strategy when
// max(D, Dv) > 256; flash or gemm force one. Any other value throws c10::ValueError (Python's
// ValueError). Read at every call.
inline bool use_gemm_strategy(int64_t D, int64_t Dv) {
  const char* env = std::getenv("ATTNFAST_ATTN_STRATEGY");
  if (env == nullptr || *env == '\0' || std::strcmp(env, "auto") == 0) return std::max(D, Dv) > 256;
  if (std::strcmp(env, "gemm") == 0) return true;
  TORCH_CHECK_VALUE(std::strcmp(env, "flash") == 0, "attnfast: ATTNFAST_ATTN_STRATEGY=\"", env,
                    "\" is not valid; expected auto, flash or gemm (unset or empty means auto)");
  return false;
}

// ATTNFAST_ATTN_GEMM_ROWS: 0 when unset or empty, else its value, a positive integer written in
// decimal digits only (saturating at INT64_MAX, which chunk_rows caps at Lq anyway). Any other
// value throws c10::ValueError.
inline int64_t gemm_rows_override() {
  const char* env = std::getenv("ATTNFAST_ATTN_GEMM_ROWS");
  if (env == nullptr || *env == '\0') return 0;
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  int64_t rows = 0;
  bool digits = true;
  for (const char* c = env; *c != '\0' && digits; ++c) {
    digits = *c >= '0' && *c <= '9';
    rows = rows > (kMax - 9) / 10 ? kMax : rows * 10 + (*c - '0');
  }
  TORCH_CHECK_VALUE(digits && rows > 0, "attnfast: ATTNFAST_ATTN_GEMM_ROWS=\"", env,
                    "\" is not valid; expected a positive integer (decimal digits; unset or empty "
                    "means the default rule)");
  return rows;
}

// Query rows per GEMM chunk, in [1, max(Lq, 1)]: the override, or the chunk's S buffer
// (B x rows x Lk fp32) within max(2 B max(Lq, Lk) max(D, Dv), 4 Mi) values, causal chunks of at
// most max(1024, Lq / 4) rows, multiples of 64 rows (or all of Lq).
inline int64_t chunk_rows(int64_t B, int64_t Lq, int64_t Lk, int64_t D, int64_t Dv, bool causal) {
  if (const int64_t rows = gemm_rows_override(); rows > 0) {
    return std::min<int64_t>(rows, std::max<int64_t>(Lq, 1));
  }
  const int64_t widest = std::max<int64_t>({D, Dv, 1});
  const int64_t budget = std::max<int64_t>(2 * B * std::max(Lq, Lk) * widest, int64_t(1) << 22);
  int64_t rows = budget / std::max<int64_t>(B * Lk, 1);
  if (causal) rows = std::min<int64_t>(rows, std::max<int64_t>(1024, (Lq + 255) / 256 * 64));
  rows = std::max<int64_t>(64, rows / 64 * 64);
  return std::min<int64_t>(rows, std::max<int64_t>(Lq, 1));
}

}  // namespace attention_gemm
}  // namespace attnfast
