// Argument checks of the LSTM recurrence ops (csrc/schemas.h, kLstm), written to be shared by
// the CPU and CUDA implementations so both reject the same inputs with the same messages.
// (The Python API checks first and raises ValueError; these guard direct torch.ops calls.)
#pragma once
#include <optional>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace attnfast {
namespace checks {

// `t` has the dtype, device and contiguity of `like` (named `like_name`) and the shape `shape`.
inline void lstm_tensor(const char* op, const char* name, const at::Tensor& t,
                        at::IntArrayRef shape, at::ScalarType dtype, const at::Tensor& like,
                        const char* like_name) {
  TORCH_CHECK(t.sizes() == shape, op, ": ", name, " must have shape ", shape, ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == dtype, op, ": ", name, " must be ", dtype, ", got ",
              t.scalar_type());
  TORCH_CHECK(t.device() == like.device(), op, ": ", name, " is on ", t.device(), " but ",
              like_name, " is on ", like.device());
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous");
}

inline void lstm_dtype(const char* op, const char* name, const at::Tensor& t) {
  const auto dt = t.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf, op, ": ", name,
              " must be float32, bfloat16 or float16, got ", dt);
}

inline void lstm_forward(const at::Tensor& gates_x, const at::Tensor& h0, const at::Tensor& c0,
                         const at::Tensor& w_hh) {
  const char* op = "lstm_forward";
  TORCH_CHECK(h0.dim() == 2, op, ": h0 must be 2-D (B, H), got shape ", h0.sizes());
  const int64_t B = h0.size(0), H = h0.size(1);
  TORCH_CHECK(gates_x.dim() == 3 && gates_x.size(1) == B && gates_x.size(2) == 4 * H, op,
              ": gates_x must have shape (T, ", B, ", ", 4 * H, ") for h0 of shape ", h0.sizes(),
              ", got ", gates_x.sizes());
  lstm_dtype(op, "gates_x", gates_x);
  const auto dt = gates_x.scalar_type();
  TORCH_CHECK(gates_x.is_contiguous(), op, ": gates_x must be contiguous");
  lstm_tensor(op, "h0", h0, {B, H}, dt, gates_x, "gates_x");
  lstm_tensor(op, "c0", c0, {B, H}, dt, gates_x, "gates_x");
  lstm_tensor(op, "w_hh", w_hh, {4 * H, H}, dt, gates_x, "gates_x");
}

inline void lstm_backward(const at::Tensor& grad_h, const std::optional<at::Tensor>& grad_c,
                          const at::Tensor& c0, const at::Tensor& w_hh, const at::Tensor& c,
                          const at::Tensor& gates) {
  const char* op = "lstm_backward";
  TORCH_CHECK(c.dim() == 3, op, ": c must be 3-D (T, B, H), got shape ", c.sizes());
  const int64_t T = c.size(0), B = c.size(1), H = c.size(2);
  lstm_dtype(op, "grad_h", grad_h);
  const auto dt = grad_h.scalar_type();
  lstm_tensor(op, "grad_h", grad_h, {T, B, H}, dt, c, "c");
  lstm_tensor(op, "c", c, {T, B, H}, at::kFloat, c, "c");
  if (grad_c.has_value()) lstm_tensor(op, "grad_c", *grad_c, {T, B, H}, at::kFloat, c, "c");
  lstm_tensor(op, "c0", c0, {B, H}, dt, c, "c");
  lstm_tensor(op, "w_hh", w_hh, {4 * H, H}, dt, c, "c");
  if (T * B * H == 0 && gates.numel() == 0) return;  // no step: nothing was saved
  TORCH_CHECK(gates.sizes() == at::IntArrayRef({T, B, 4 * H}), op, ": gates must have shape (",
              T, ", ", B, ", ", 4 * H,
              ") (the activated gates: run lstm_forward with save_gates=True), got ",
              gates.sizes());
  lstm_tensor(op, "gates", gates, {T, B, 4 * H}, dt, c, "c");
}

}  // namespace checks
}  // namespace attnfast
