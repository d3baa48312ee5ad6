// Every attnfast op schema, in one place. Kernels register implementations per device with
// TORCH_LIBRARY_IMPL(attnfast, CPU|CUDA, m) next to their code; Python registers the fake
// (meta) kernels and autograd formulas in attnfast/ops/. Integer enums in the schemas:
//   activation: 0 gelu_sigmoid, 1 gelu (erf), 2 gelu_tanh, 3 relu   (csrc/common/activations.h)
#include <torch/library.h>

TORCH_LIBRARY(attnfast, m) {
  // ---- Boom (csrc/cpu/boom.cpp, csrc/cuda/boom.cu) -------------------------------------------
  // x (N, K), weight (F, K), bias (F,) or None; chunk_width C in [1, F].
  // out (N, C) = sum over j < F // C of dropout(act(x W^T + b))[:, j C : (j + 1) C].
  // preact (N, (F // C) * C) = x W^T + b when save_preact, else an empty (0,) tensor.
  m.def(
      "boom_forward(Tensor x, Tensor weight, Tensor? bias, int activation, int chunk_width, "
      "float dropout_p, int seed, bool save_preact) -> (Tensor out, Tensor preact)");
  // Gradients of boom_forward from the saved pre-activation: (grad_x, grad_weight, grad_bias);
  // grad_bias is an empty (0,) tensor when has_bias is false.
  m.def(
      "boom_backward(Tensor grad_out, Tensor x, Tensor weight, Tensor preact, bool has_bias, "
      "int activation, int chunk_width, float dropout_p, int seed) "
      "-> (Tensor grad_x, Tensor grad_weight, Tensor grad_bias)");

  // ---- Single-head attention (csrc/cpu/attention.cpp, csrc/cuda/attention*.cu) -----------------
  // q (B, Lq, D), k (B, Lk, D), v (B, Lk, Dv): one dtype (fp32/bf16/fp16), one device, last dim
  // contiguous (other strides arbitrary). bias: optional additive fp32 mask broadcastable to
  // (B, Lq, Lk), passed as an expanded (B, Lq, Lk) view (0 strides allowed; -inf = masked).
  // causal: bottom-right aligned, query i sees key j iff j <= i + (Lk - Lq).
  // scores s = scale * q k^T + bias; out (B, Lq, Dv) in q's dtype = dropout(softmax(s)) v;
  // lse (B, Lq) fp32 = natural-log logsumexp_j s_ij, -inf for a fully masked row (whose output
  // and gradients are 0). Dropout: Philox (csrc/common/philox.h) at counter index
  // (b * Lq + i) * Lk + j of the (B, Lq, Lk) weight matrix.
  m.def(
      "attention_forward(Tensor q, Tensor k, Tensor v, Tensor? bias, bool causal, float scale, "
      "float dropout_p, int seed) -> (Tensor out, Tensor lse)");
  // Flash-style backward: P recomputed from q, k, lse; D_i = rowsum(dO * O) in fp32. No
  // gradient for bias. deterministic=True: bitwise repeatable (no atomics); the CPU kernels are
  // always deterministic.
  m.def(
      "attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
      "Tensor? bias, bool causal, float scale, float dropout_p, int seed, bool deterministic) "
      "-> (Tensor grad_q, Tensor grad_k, Tensor grad_v)");
}
