// Argument checks of the Boom ops, shared by the CPU and CUDA implementations so both reject
// the same inputs with the same messages. (The Python API checks first and raises
// ValueError; these guard direct torch.ops.attnfast calls.)
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <optional>

namespace attnfast {
namespace checks {

inline void boom_common(const at::Tensor& x, const at::Tensor& weight, int64_t activation,
                        int64_t chunk_width, double dropout_p) {
  TORCH_CHECK(x.dim() == 2, "boom: x must be 2-D (N, d_model), got shape ", x.sizes());
  TORCH_CHECK(weight.dim() == 2, "boom: weight must be 2-D (d_ff, d_model), got shape ",
              weight.sizes());
  TORCH_CHECK(weight.size(1) == x.size(1), "boom: weight must have shape (d_ff, ", x.size(1),
              ") to match x's last dim, got ", weight.sizes());
  const auto dt = x.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf,
              "boom: x must be float32, bfloat16 or float16, got ", dt);
  TORCH_CHECK(weight.scalar_type() == dt, "boom: weight dtype ", weight.scalar_type(),
              " must match x dtype ", dt);
  TORCH_CHECK(weight.device() == x.device(), "boom: weight is on ", weight.device(),
              " but x is on ", x.device());
  TORCH_CHECK(x.is_contiguous() && weight.is_contiguous(),
              "boom: x and weight must be contiguous");
  TORCH_CHECK(activation >= 0 && activation < 4,
              "boom: activation must be 0 (gelu_sigmoid), 1 (gelu), 2 (gelu_tanh) or 3 (relu), got ",
              activation);
  TORCH_CHECK(chunk_width >= 1 && chunk_width <= weight.size(0),
              "boom: chunk_width must be in [1, d_ff=", weight.size(0), "], got ", chunk_width);
  TORCH_CHECK(dropout_p >= 0.0 && dropout_p < 1.0, "boom: dropout_p must be in [0, 1), got ",
              dropout_p);
}

inline void boom_forward(const at::Tensor& x, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias, int64_t activation,
                         int64_t chunk_width, double dropout_p) {
  boom_common(x, weight, activation, chunk_width, dropout_p);
  if (bias.has_value()) {
    const at::Tensor& b = *bias;
    TORCH_CHECK(b.dim() == 1 && b.size(0) == weight.size(0), "boom: bias must have shape (",
                weight.size(0), ",), got ", b.sizes());
    TORCH_CHECK(b.scalar_type() == x.scalar_type(), "boom: bias dtype ", b.scalar_type(),
                " must match x dtype ", x.scalar_type());
    TORCH_CHECK(b.device() == x.device(), "boom: bias is on ", b.device(), " but x is on ",
                x.device());
  }
}

inline void boom_backward(const at::Tensor& grad_out, const at::Tensor& x,
                          const at::Tensor& weight, const at::Tensor& preact,
                          int64_t activation, int64_t chunk_width, double dropout_p) {
  boom_common(x, weight, activation, chunk_width, dropout_p);
  const int64_t f_used = (weight.size(0) / chunk_width) * chunk_width;
  TORCH_CHECK(grad_out.dim() == 2 && grad_out.size(0) == x.size(0) &&
                  grad_out.size(1) == chunk_width,
              "boom_backward: grad_out must have shape (", x.size(0), ", ", chunk_width,
              "), got ", grad_out.sizes());
  TORCH_CHECK(preact.dim() == 2 && preact.size(0) == x.size(0) && preact.size(1) == f_used,
              "boom_backward: preact must have shape (", x.size(0), ", ", f_used, "), got ",
              preact.sizes(), " (was boom_forward called with save_preact=True?)");
  for (const at::Tensor* t : {&grad_out, &preact}) {
    TORCH_CHECK(t->scalar_type() == x.scalar_type() && t->device() == x.device(),
                "boom_backward: grad_out and preact must have x's dtype and device");
  }
}

}  // namespace checks
}  // namespace attnfast
