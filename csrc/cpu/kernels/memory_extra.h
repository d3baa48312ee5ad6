// Argument blocks of the second group of memory ops on the CPU (NTM location addressing,
// Graves' window, DNC usage, memory read): raw pointers to contiguous row-major tensors, 64-bit
// sizes. The loops (memory_extra_impl.h) run batch elements [b_begin, b_end); per-batch scratch
// comes from the glue (csrc/cpu/memory_extra.cpp) at `scratch + b * scratch_stride`.
// No torch headers here.
#pragma once
#include <cstdint>

namespace attnfast {
namespace cpu {

// NTM location addressing after the content weights: interpolation, circular shift, sharpening.
template <typename T>
struct NtmLocationArgs {
  const T* content;  // (B, H, N)
  const T* gate;     // (B, H)
  const T* prev;     // (B, H, N)
  const T* shift;    // (B, H, S), S odd: offsets -(S/2)..S/2
  const T* gamma;    // (B, H)
  T* weights;        // (B, H, N) forward output
  const T* grad;     // (B, H, N) backward input
  T* d_content;      // backward outputs, shaped like the inputs
  T* d_gate;
  T* d_prev;
  T* d_shift;
  T* d_gamma;
  T* scratch;        // forward 2 N, backward 4 N per batch element
  int64_t scratch_stride;
  int64_t B, H, N, S;
};

// Graves' window over T steps: kappa = kappa0 + cumsum_t exp(kappa_hat),
// phi(t, u) = mask_u sum_k exp(alpha_hat) exp(-exp(beta_hat) (kappa - u)^2), u = 1..U;
// window = phi chars.
template <typename T>
struct GravesArgs {
  const T* alpha_hat;  // (B, T, K)
  const T* beta_hat;   // (B, T, K)
  const T* kappa_hat;  // (B, T, K)
  const T* kappa0;     // (B, K)
  const T* chars;      // (B, U, C)
  const T* mask;       // (B, U) or nullptr
  T* window;           // (B, T, C) forward outputs
  T* kappa;            // (B, T, K)
  T* phi;              // (B, T, U)
  const T* g_window;   // backward inputs: gradients of the three outputs
  const T* g_kappa;
  const T* g_phi;
  T* d_alpha_hat;      // backward outputs
  T* d_beta_hat;
  T* d_kappa_hat;
  T* d_kappa0;
  T* d_chars;
  T* d_mask;           // (B, U) or nullptr (no mask)
  T* scratch;          // forward K, backward 2 U + K per batch element
  int64_t scratch_stride;
  int64_t B, T_, K, U, C;
};

// DNC usage: u' = u + (1 - u)(1 - prod_h (1 - ww_h)); out = u' prod_r (1 - f_r rw_r).
template <typename T>
struct UsageArgs {
  const T* usage;  // (B, N)
  const T* ww;     // (B, Hw, N)
  const T* free;   // (B, R)
  const T* rw;     // (B, R, N)
  T* out;          // (B, N) forward output
  const T* grad;   // (B, N) backward input
  T* d_usage;      // (B, N)
  T* d_free;       // (B, R)
  T* d_rw;         // (B, R, N)
  T* scratch;      // forward N, backward 3 N per batch element
  int64_t scratch_stride;
  int64_t B, N, Hw, R;
};

// Read words r = rw M.
template <typename T>
struct ReadArgs {
  const T* memory;  // (B, N, W)
  const T* rw;      // (B, R, N)
  T* words;         // (B, R, W) forward output
  const T* grad;    // (B, R, W) backward input
  T* d_memory;      // (B, N, W)
  T* d_rw;          // (B, R, N)
  int64_t B, N, W, R;
};

}  // namespace cpu
}  // namespace attnfast
