// Argument checks of the second group of memory ops (NTM location, Graves' window, DNC usage,
// memory read), shared by every backend's ATen glue; built on checks/memory.h's helpers so the
// messages read the same. (The Python API checks first and raises ValueError.)
#pragma once
#include "checks/memory.h"

namespace attnfast {
namespace checks {

inline void ntm_location(const at::Tensor& content, const at::Tensor& gate,
                         const at::Tensor& prev, const at::Tensor& shift, const at::Tensor& gamma) {
  const char* op = "ntm_location";
  memory_rank(op, "content", content, 3, "(B, H, N)");
  memory_rank(op, "shift", shift, 3, "(B, H, S)");
  memory_dtype(op, content);
  const int64_t B = content.size(0), H = content.size(1), N = content.size(2), S = shift.size(2);
  TORCH_CHECK(N >= 1, op, ": content must have N >= 1 slots, got ", content.sizes());
  TORCH_CHECK(S % 2 == 1, op, ": shift must have an odd last dim S (offsets -(S//2)..S//2), got S=",
              S);
  memory_tensor(op, "content", content, {B, H, N}, content);
  memory_tensor(op, "gate", gate, {B, H}, content);
  memory_tensor(op, "prev_weights", prev, {B, H, N}, content);
  memory_tensor(op, "shift", shift, {B, H, S}, content);
  memory_tensor(op, "gamma", gamma, {B, H}, content);
}

inline void graves_window(const at::Tensor& alpha_hat, const at::Tensor& beta_hat,
                          const at::Tensor& kappa_hat, const at::Tensor& kappa0,
                          const at::Tensor& chars, const c10::optional<at::Tensor>& mask) {
  const char* op = "graves_window";
  memory_rank(op, "alpha_hat", alpha_hat, 3, "(B, T, K)");
  memory_rank(op, "chars", chars, 3, "(B, U, C)");
  memory_dtype(op, alpha_hat);
  const int64_t B = alpha_hat.size(0), T = alpha_hat.size(1), K = alpha_hat.size(2);
  const int64_t U = chars.size(1), C = chars.size(2);
  memory_tensor(op, "alpha_hat", alpha_hat, {B, T, K}, alpha_hat);
  memory_tensor(op, "beta_hat", beta_hat, {B, T, K}, alpha_hat);
  memory_tensor(op, "kappa_hat", kappa_hat, {B, T, K}, alpha_hat);
  memory_tensor(op, "kappa0", kappa0, {B, K}, alpha_hat);
  memory_tensor(op, "chars", chars, {B, U, C}, alpha_hat);
  if (mask.has_value()) memory_tensor(op, "char_mask", *mask, {B, U}, alpha_hat);
}

inline void dnc_usage(const at::Tensor& usage, const at::Tensor& ww, const at::Tensor& free_gate,
                      const at::Tensor& rw) {
  const char* op = "dnc_usage";
  memory_rank(op, "usage", usage, 2, "(B, N)");
  memory_rank(op, "write_weights", ww, 3, "(B, Hw, N)");
  memory_rank(op, "read_weights", rw, 3, "(B, R, N)");
  memory_dtype(op, usage);
  const int64_t B = usage.size(0), N = usage.size(1), Hw = ww.size(1), R = rw.size(1);
  memory_tensor(op, "usage", usage, {B, N}, usage);
  memory_tensor(op, "write_weights", ww, {B, Hw, N}, usage);
  memory_tensor(op, "free_gate", free_gate, {B, R}, usage);
  memory_tensor(op, "read_weights", rw, {B, R, N}, usage);
}

inline void memory_read(const at::Tensor& memory, const at::Tensor& rw) {
  const char* op = "memory_read";
  memory_rank(op, "memory", memory, 3, "(B, N, W)");
  memory_rank(op, "read_weights", rw, 3, "(B, R, N)");
  memory_dtype(op, memory);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), R = rw.size(1);
  memory_tensor(op, "memory", memory, {B, N, W}, memory);
  memory_tensor(op, "read_weights", rw, {B, R, N}, memory);
}

}  // namespace checks
}  // namespace attnfast
