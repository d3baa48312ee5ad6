// Argument checks of the memory ops (NTM / DNC), shared by every backend's ATen glue (CPU:
// csrc/cpu/memory_*.cpp; CUDA and SIMT harness: csrc/cuda/memory_*_glue.h) so all of them
// reject the same inputs with the same messages; a backward's check covers the forward's
// arguments and the incoming gradients. By concept, like the ops (csrc/schemas.h). (The Python
// API checks first and raises ValueError; these guard direct torch.ops.attnfast calls.)
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <initializer_list>
#include <utility>
#include <vector>

namespace attnfast {
namespace checks {

// `t` must have exactly `shape`, the dtype and device of `ref`, and be contiguous.
inline void memory_tensor(const char* op, const char* name, const at::Tensor& t,
                          std::vector<int64_t> shape, const at::Tensor& ref) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is undefined");
  TORCH_CHECK(t.sizes() == c10::IntArrayRef(shape), op, ": ", name, " must have shape ",
              c10::IntArrayRef(shape), ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " dtype ", t.scalar_type(),
              " must match ", ref.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but the other "
              "inputs are on ", ref.device());
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous");
}

inline void memory_dtype(const char* op, const at::Tensor& t) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op,
              ": tensors must be float32 or float64 (the DNC state is kept in full precision), got ",
              t.scalar_type());
}

inline void memory_rank(const char* op, const char* name, const at::Tensor& t, int64_t rank,
                        const char* axes) {
  TORCH_CHECK(t.dim() == rank, op, ": ", name, " must be ", rank, "-D ", axes, ", got shape ",
              t.sizes());
}

// ---- addressing: content, NTM location ----------------------------------------------------------

inline void memory_content(const at::Tensor& memory, const at::Tensor& keys,
                           const at::Tensor& strengths) {
  const char* op = "memory_content";
  memory_rank(op, "memory", memory, 3, "(B, N, W)");
  memory_rank(op, "keys", keys, 3, "(B, H, W)");
  memory_dtype(op, memory);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), H = keys.size(1);
  TORCH_CHECK(N >= 1, op, ": memory must have N >= 1 slots, got ", memory.sizes());
  memory_tensor(op, "memory", memory, {B, N, W}, memory);
  memory_tensor(op, "keys", keys, {B, H, W}, memory);
  memory_tensor(op, "strengths", strengths, {B, H}, memory);
}

inline void memory_content_backward(const at::Tensor& grad, const at::Tensor& memory,
                                    const at::Tensor& keys, const at::Tensor& strengths,
                                    const at::Tensor& weights) {
  memory_content(memory, keys, strengths);
  const int64_t B = memory.size(0), N = memory.size(1), H = keys.size(1);
  memory_tensor("memory_content_backward", "grad_weights", grad, {B, H, N}, memory);
  memory_tensor("memory_content_backward", "weights", weights, {B, H, N}, memory);
}

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

inline void ntm_location_backward(const at::Tensor& grad, const at::Tensor& content,
                                  const at::Tensor& gate, const at::Tensor& prev,
                                  const at::Tensor& shift, const at::Tensor& gamma) {
  ntm_location(content, gate, prev, shift, gamma);
  memory_tensor("ntm_location_backward", "grad_weights", grad,
                {content.size(0), content.size(1), content.size(2)}, content);
}

// ---- allocation: DNC allocation, usage ----------------------------------------------------------

inline void dnc_allocation(const at::Tensor& usage, const at::Tensor& gates) {
  const char* op = "dnc_allocation";
  memory_rank(op, "usage", usage, 2, "(B, N)");
  memory_rank(op, "write_gates", gates, 2, "(B, Hw)");
  memory_dtype(op, usage);
  TORCH_CHECK(usage.size(1) < (int64_t(1) << 31), op, ": N must be < 2^31, got ", usage.size(1));
  memory_tensor(op, "usage", usage, {usage.size(0), usage.size(1)}, usage);
  memory_tensor(op, "write_gates", gates, {usage.size(0), gates.size(1)}, usage);
}

inline void dnc_allocation_backward(const at::Tensor& grad, const at::Tensor& usage,
                                    const at::Tensor& gates) {
  dnc_allocation(usage, gates);
  memory_tensor("dnc_allocation_backward", "grad_allocation", grad,
                {usage.size(0), gates.size(1), usage.size(1)}, usage);
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

inline void dnc_usage_backward(const at::Tensor& grad, const at::Tensor& usage,
                               const at::Tensor& ww, const at::Tensor& free_gate,
                               const at::Tensor& rw) {
  dnc_usage(usage, ww, free_gate, rw);
  memory_tensor("dnc_usage_backward", "grad_usage", grad, {usage.size(0), usage.size(1)}, usage);
}

inline void dnc_write_weights(const at::Tensor& usage, const at::Tensor& content,
                              const at::Tensor& allocation_gate, const at::Tensor& write_gate) {
  const char* op = "dnc_write_weights";
  memory_rank(op, "usage", usage, 2, "(B, N)");
  memory_rank(op, "content_weights", content, 3, "(B, Hw, N)");
  memory_dtype(op, usage);
  TORCH_CHECK(usage.size(1) < (int64_t(1) << 31), op, ": N must be < 2^31, got ", usage.size(1));
  const int64_t B = usage.size(0), N = usage.size(1), Hw = content.size(1);
  memory_tensor(op, "usage", usage, {B, N}, usage);
  memory_tensor(op, "content_weights", content, {B, Hw, N}, usage);
  memory_tensor(op, "allocation_gate", allocation_gate, {B, Hw}, usage);
  memory_tensor(op, "write_gate", write_gate, {B, Hw}, usage);
}

inline void dnc_write_weights_backward(const at::Tensor& grad, const at::Tensor& usage,
                                       const at::Tensor& content, const at::Tensor& allocation_gate,
                                       const at::Tensor& write_gate) {
  dnc_write_weights(usage, content, allocation_gate, write_gate);
  memory_tensor("dnc_write_weights_backward", "grad_write_weights", grad,
                {usage.size(0), content.size(1), usage.size(1)}, usage);
}

// ---- links: DNC temporal link + directional reads -----------------------------------------------

inline void dnc_link_read(const at::Tensor& link, const at::Tensor& prec, const at::Tensor& ww,
                          const at::Tensor& rw) {
  const char* op = "dnc_link_read";
  memory_rank(op, "link", link, 4, "(B, Hw, N, N)");
  memory_rank(op, "read_weights", rw, 3, "(B, R, N)");
  memory_dtype(op, link);
  const int64_t B = link.size(0), Hw = link.size(1), N = link.size(2), R = rw.size(1);
  memory_tensor(op, "link", link, {B, Hw, N, N}, link);
  memory_tensor(op, "precedence", prec, {B, Hw, N}, link);
  memory_tensor(op, "write_weights", ww, {B, Hw, N}, link);
  memory_tensor(op, "read_weights", rw, {B, R, N}, link);
}

inline void dnc_link_read_backward(const at::Tensor& g_link, const at::Tensor& g_prec,
                                   const at::Tensor& g_fwd, const at::Tensor& g_bwd,
                                   const at::Tensor& link, const at::Tensor& prec,
                                   const at::Tensor& ww, const at::Tensor& rw) {
  dnc_link_read(link, prec, ww, rw);
  const int64_t B = link.size(0), Hw = link.size(1), N = link.size(2), R = rw.size(1);
  const char* op = "dnc_link_read_backward";
  memory_tensor(op, "grad_link", g_link, {B, Hw, N, N}, link);
  memory_tensor(op, "grad_precedence", g_prec, {B, Hw, N}, link);
  memory_tensor(op, "grad_forward", g_fwd, {B, R, Hw, N}, link);
  memory_tensor(op, "grad_backward", g_bwd, {B, R, Hw, N}, link);
}

// ---- read / write -------------------------------------------------------------------------------

inline void memory_write(const at::Tensor& memory, const at::Tensor& ww, const at::Tensor& erase,
                         const at::Tensor& add) {
  const char* op = "memory_write";
  memory_rank(op, "memory", memory, 3, "(B, N, W)");
  memory_rank(op, "write_weights", ww, 3, "(B, Hw, N)");
  memory_dtype(op, memory);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), Hw = ww.size(1);
  memory_tensor(op, "memory", memory, {B, N, W}, memory);
  memory_tensor(op, "write_weights", ww, {B, Hw, N}, memory);
  memory_tensor(op, "erase", erase, {B, Hw, W}, memory);
  memory_tensor(op, "add", add, {B, Hw, W}, memory);
}

inline void memory_write_backward(const at::Tensor& grad, const at::Tensor& memory,
                                  const at::Tensor& ww, const at::Tensor& erase,
                                  const at::Tensor& add) {
  memory_write(memory, ww, erase, add);
  memory_tensor("memory_write_backward", "grad_out", grad,
                {memory.size(0), memory.size(1), memory.size(2)}, memory);
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

inline void memory_read_backward(const at::Tensor& grad, const at::Tensor& memory,
                                 const at::Tensor& rw) {
  memory_read(memory, rw);
  memory_tensor("memory_read_backward", "grad_words", grad,
                {memory.size(0), rw.size(1), memory.size(2)}, memory);
}

inline void dnc_read_mix(const at::Tensor& memory, const at::Tensor& content,
                         const at::Tensor& fwd, const at::Tensor& bwd, const at::Tensor& mode) {
  const char* op = "dnc_read_mix";
  memory_rank(op, "memory", memory, 3, "(B, N, W)");
  memory_rank(op, "content", content, 3, "(B, R, N)");
  memory_rank(op, "forward", fwd, 4, "(B, R, Hw, N)");
  memory_dtype(op, memory);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), R = content.size(1),
                Hw = fwd.size(2);
  memory_tensor(op, "memory", memory, {B, N, W}, memory);
  memory_tensor(op, "content", content, {B, R, N}, memory);
  memory_tensor(op, "forward", fwd, {B, R, Hw, N}, memory);
  memory_tensor(op, "backward", bwd, {B, R, Hw, N}, memory);
  memory_tensor(op, "read_mode", mode, {B, R, 1 + 2 * Hw}, memory);
}

inline void dnc_read_mix_backward(const at::Tensor& grad_rw, const at::Tensor& grad_words,
                                  const at::Tensor& memory, const at::Tensor& content,
                                  const at::Tensor& fwd, const at::Tensor& bwd,
                                  const at::Tensor& mode) {
  dnc_read_mix(memory, content, fwd, bwd, mode);
  const char* op = "dnc_read_mix_backward";
  memory_tensor(op, "grad_read_weights", grad_rw, {memory.size(0), content.size(1), memory.size(1)},
                memory);
  memory_tensor(op, "grad_words", grad_words, {memory.size(0), content.size(1), memory.size(2)},
                memory);
}

// ---- window: Graves' soft window ----------------------------------------------------------------

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

inline void graves_window_backward(const at::Tensor& g_window, const at::Tensor& g_kappa,
                                   const at::Tensor& g_phi, const at::Tensor& alpha_hat,
                                   const at::Tensor& beta_hat, const at::Tensor& kappa_hat,
                                   const at::Tensor& kappa0, const at::Tensor& chars,
                                   const c10::optional<at::Tensor>& mask) {
  graves_window(alpha_hat, beta_hat, kappa_hat, kappa0, chars, mask);
  const int64_t B = alpha_hat.size(0), T = alpha_hat.size(1), K = alpha_hat.size(2);
  const int64_t U = chars.size(1), C = chars.size(2);
  const char* op = "graves_window_backward";
  memory_tensor(op, "grad_window", g_window, {B, T, C}, alpha_hat);
  memory_tensor(op, "grad_kappa", g_kappa, {B, T, K}, alpha_hat);
  memory_tensor(op, "grad_phi", g_phi, {B, T, U}, alpha_hat);
}

}  // namespace checks
}  // namespace attnfast
