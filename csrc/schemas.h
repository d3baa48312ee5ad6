// Every attnfast op schema, in one place, in tables by op family (memory: by concept). Schema
// strings only: csrc/schemas.cpp defines them all in the `attnfast` library, csrc/simt/module.cpp
// in `attnfast_simt` (where the CUDA kernels run on the CPU). Which kernel implements an op on
// which device is declared once per family in csrc/op_lists.h, whose lists generate the
// TORCH_LIBRARY_IMPL blocks (CPU: csrc/cpu/*.cpp; CUDA: csrc/cuda/*.cu; SIMT: csrc/simt/*_ops.cpp);
// Python registers the fake (meta) kernels and autograd formulas in attnfast/ops/. The CUDA and
// SIMT adaptor (csrc/device_op.h) reads each op's argument names from here for its device
// checks. Integer enums in the schemas:
//   activation: 0 gelu_sigmoid, 1 gelu (erf), 2 gelu_tanh, 3 relu   (csrc/common/activations.h)
// Dropout seeds are tensors: `Tensor seed` is a one-element int64 CPU tensor holding the 64-bit
// Philox key's bit pattern (csrc/checks/seed.h, attnfast/ops/seed.py), so torch.compile traces
// it as a value rather than guarding on it; ignored when dropout_p is 0. It stays on the CPU
// whatever device the op runs on (the device checks skip arguments named `seed`).
#pragma once
#include <cstddef>
#include <string_view>

namespace attnfast {
namespace schemas {

inline constexpr const char* kBoom[] = {
  // ---- Boom (csrc/cpu/boom.cpp, csrc/cuda/boom.cu) -------------------------------------------
  // x (N, K), weight (F, K), bias (F,) or None; chunk_width C in [1, F].
  // out (N, C) = sum over j < F // C of dropout(act(x W^T + b))[:, j C : (j + 1) C].
  // preact (N, (F // C) * C) = x W^T + b when save_preact, else an empty (0,) tensor.
  "boom_forward(Tensor x, Tensor weight, Tensor? bias, int activation, int chunk_width, "
      "float dropout_p, Tensor seed, bool save_preact) -> (Tensor out, Tensor preact)",
  // Gradients of boom_forward from the saved pre-activation: (grad_x, grad_weight, grad_bias);
  // grad_bias is an empty (0,) tensor when has_bias is false.
  "boom_backward(Tensor grad_out, Tensor x, Tensor weight, Tensor preact, bool has_bias, "
      "int activation, int chunk_width, float dropout_p, Tensor seed) "
      "-> (Tensor grad_x, Tensor grad_weight, Tensor grad_bias)",
};

inline constexpr const char* kAttention[] = {
  // ---- Single-head attention (csrc/cpu/attention.cpp, csrc/cuda/attention*.cu) -----------------
  // q (B, Lq, D), k (B, Lk, D), v (B, Lk, Dv): one dtype (fp32/bf16/fp16), one device, last dim
  // contiguous (other strides arbitrary). bias: optional additive fp32 mask broadcastable to
  // (B, Lq, Lk), passed as an expanded (B, Lq, Lk) view (0 strides allowed; -inf = masked).
  // causal: bottom-right aligned, query i sees key j iff j <= i + (Lk - Lq).
  // scores s = scale * q k^T + bias; out (B, Lq, Dv) in q's dtype = dropout(softmax(s)) v;
  // lse (B, Lq) fp32 = natural-log logsumexp_j s_ij, -inf for a fully masked row (whose output
  // and gradients are 0). Dropout: Philox (csrc/common/philox.h) at counter index
  // (b * Lq + i) * Lk + j of the (B, Lq, Lk) weight matrix.
  // keep_probs: probs (B, Lq, Lk) fp32 contiguous = softmax(s) before dropout (exactly
  // exp(s - lse), 0 where masked and on fully masked rows), kept for the backward; else an
  // empty (0,) tensor. Only the CPU kernels keep; the CUDA, SIMT and Triton kernels refuse
  // keep_probs=True with an error (attnfast/ops/attention.py asks only the CPU backend).
  "attention_forward(Tensor q, Tensor k, Tensor v, Tensor? bias, bool causal, float scale, "
      "float dropout_p, Tensor seed, bool keep_probs) -> (Tensor out, Tensor lse, Tensor probs)",
  // Flash-style backward: D_i = rowsum(dO * O) in fp32; P = the forward's kept probs when given
  // (the CPU kernels then skip the q k^T GEMM and the exp), else recomputed from q, k, lse as
  // exp(s - lse) (the CUDA, SIMT and Triton kernels always recompute and ignore probs). Either
  // way the same P: the CPU forward keeps exactly what the CPU backward recomputes. No gradient
  // for bias. deterministic=True: bitwise repeatable (no atomics); the CPU kernels are always
  // deterministic.
  "attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
      "Tensor? probs, Tensor? bias, bool causal, float scale, float dropout_p, Tensor seed, "
      "bool deterministic) -> (Tensor grad_q, Tensor grad_k, Tensor grad_v)",
};

// ---- memory: NTM / DNC (csrc/cpu/memory_*.cpp, csrc/cuda/memory_*.cu; attnfast/ops/memory.py) --
// float32 or float64, contiguous, one device; B batch, N memory slots, W word size, H heads
// (R read heads, Hw write heads). eps as in DeepMind's DNC (1e-6). Every forward has an explicit
// backward op that recomputes what it needs from the forward's inputs (and output, for content).
// One table per concept: addressing, allocation, links, read / write, window.

// Addressing: content weights, then NTM location addressing (interpolation, shift, sharpening).
inline constexpr const char* kMemoryAddressing[] = {
  // weights (B,H,N) = softmax_i(strengths[b,h] * k.M_i / (|k| |M_i| + eps)), |x| = sqrt(x.x + eps).
  "memory_content_forward(Tensor memory, Tensor keys, Tensor strengths, float eps) "
        "-> Tensor weights",
  "memory_content_backward(Tensor grad_weights, Tensor memory, Tensor keys, "
        "Tensor strengths, Tensor weights, float eps) "
        "-> (Tensor grad_memory, Tensor grad_keys, Tensor grad_strengths)",
  // NTM location addressing after the content weights. content, prev_weights (B,H,N); gate,
  // gamma (B,H); shift (B,H,S), S odd, offsets -(S//2)..S//2 (offset +1 moves weight i -> i+1):
  // wg = g c + (1-g) prev; ws[i] = sum_k shift[k] wg[(i - (k - S//2)) mod N];
  // weights = p / sum p, p = ws^gamma where ws > 0, else 0 (no NaN in the gamma gradient).
  "ntm_location_forward(Tensor content, Tensor gate, Tensor prev_weights, Tensor shift, "
        "Tensor gamma) -> Tensor weights",
  "ntm_location_backward(Tensor grad_weights, Tensor content, Tensor gate, "
        "Tensor prev_weights, Tensor shift, Tensor gamma) -> (Tensor grad_content, "
        "Tensor grad_gate, Tensor grad_prev_weights, Tensor grad_shift, Tensor grad_gamma)",
};

// Allocation: DNC allocation weights from the usage, and the usage update.
inline constexpr const char* kMemoryAllocation[] = {
  // usage (B,N), write_gates (B,Hw) -> allocation (B,Hw,N): per head a stable ascending sort of
  // the current usage (ties: lower index first), squashed s = eps + (1-eps) u,
  // a[phi_j] = (1 - s_j) prod_{i<j} s_i; then u <- u + (1 - u) g_h a_h before the next head.
  // No gradient through the permutation.
  "dnc_allocation_forward(Tensor usage, Tensor write_gates, float eps) -> Tensor allocation",
  "dnc_allocation_backward(Tensor grad_allocation, Tensor usage, Tensor write_gates, "
        "float eps) -> (Tensor grad_usage, Tensor grad_write_gates)",
  // DNC usage: usage (B,N), write_weights (B,Hw,N), free_gate (B,R), read_weights (B,R,N):
  // out = (u + (1-u)(1 - prod_h (1 - ww_h))) prod_r (1 - f_r rw_r). No gradient to
  // write_weights (DeepMind's stop_gradient), so the backward returns none for it.
  "dnc_usage_forward(Tensor usage, Tensor write_weights, Tensor free_gate, "
        "Tensor read_weights) -> Tensor new_usage",
  "dnc_usage_backward(Tensor grad_usage, Tensor usage, Tensor write_weights, "
        "Tensor free_gate, Tensor read_weights) "
        "-> (Tensor grad_usage_in, Tensor grad_free_gate, Tensor grad_read_weights)",
  // DNC write weights: usage (B,N), content_weights (B,Hw,N), allocation_gate, write_gate (B,Hw):
  // a = dnc_allocation_forward(usage, allocation_gate * write_gate, eps);
  // write_weights (B,Hw,N) = gw (ga a + (1 - ga) content_weights). The backward recomputes a.
  "dnc_write_weights_forward(Tensor usage, Tensor content_weights, Tensor allocation_gate, "
        "Tensor write_gate, float eps) -> Tensor write_weights",
  "dnc_write_weights_backward(Tensor grad_write_weights, Tensor usage, Tensor content_weights, "
        "Tensor allocation_gate, Tensor write_gate, float eps) -> (Tensor grad_usage, "
        "Tensor grad_content_weights, Tensor grad_allocation_gate, Tensor grad_write_gate)",
};

// Links: the DNC temporal link matrix and the directional reads through it.
inline constexpr const char* kMemoryLinks[] = {
  // The temporal link update fused with the directional reads through the new link.
  // link (B,Hw,N,N), precedence (B,Hw,N), write_weights (B,Hw,N), read_weights (B,R,N) (R may be 0):
  // new_link[i,j] = (1 - w_i - w_j) link[i,j] + w_i p[j] (i != j), 0 on the diagonal (the input's
  // diagonal is never read); new_precedence = (1 - sum w) p + w;
  // forward[b,r,h,i] = sum_j new_link[i,j] rw[j]; backward[b,r,h,j] = sum_i new_link[i,j] rw[i].
  "dnc_link_read_forward(Tensor link, Tensor precedence, Tensor write_weights, "
        "Tensor read_weights) "
        "-> (Tensor new_link, Tensor new_precedence, Tensor forward, Tensor backward)",
  // Recomputes new_link row by row from the inputs (nothing (N,N)-sized is saved).
  "dnc_link_read_backward(Tensor grad_link, Tensor grad_precedence, Tensor grad_forward, "
        "Tensor grad_backward, Tensor link, Tensor precedence, Tensor write_weights, "
        "Tensor read_weights) "
        "-> (Tensor grad_link, Tensor grad_precedence, Tensor grad_write_weights, "
        "Tensor grad_read_weights)",
};

// Read / write: the erase / add write into memory and the weighted read of words.
inline constexpr const char* kMemoryReadWrite[] = {
  // memory (B,N,W), write_weights (B,Hw,N), erase (B,Hw,W), add (B,Hw,W):
  // out = memory * prod_h (1 - w_h e_h^T) + sum_h w_h v_h^T.
  "memory_write_forward(Tensor memory, Tensor write_weights, Tensor erase, Tensor add) "
        "-> Tensor out",
  "memory_write_backward(Tensor grad_out, Tensor memory, Tensor write_weights, "
        "Tensor erase, Tensor add) "
        "-> (Tensor grad_memory, Tensor grad_write_weights, Tensor grad_erase, Tensor grad_add)",
  // Read words: memory (B,N,W), read_weights (B,R,N) -> words (B,R,W) = read_weights memory.
  "memory_read_forward(Tensor memory, Tensor read_weights) -> Tensor words",
  "memory_read_backward(Tensor grad_words, Tensor memory, Tensor read_weights) "
        "-> (Tensor grad_memory, Tensor grad_read_weights)",
  // The DNC read: the read-mode mix, then the read. memory (B,N,W), content (B,R,N), forward,
  // backward (B,R,Hw,N) (dnc_link_read_forward's), read_mode (B,R,1+2Hw) laid out
  // [backward x Hw, forward x Hw, content]: read_weights (B,R,N) = pi_c content
  // + sum_h pi_f,h forward_h + sum_h pi_b,h backward_h; words (B,R,W) = read_weights memory.
  "dnc_read_mix_forward(Tensor memory, Tensor content, Tensor forward, Tensor backward, "
        "Tensor read_mode) -> (Tensor read_weights, Tensor words)",
  // Recomputes read_weights from the inputs.
  "dnc_read_mix_backward(Tensor grad_read_weights, Tensor grad_words, Tensor memory, "
        "Tensor content, Tensor forward, Tensor backward, Tensor read_mode) "
        "-> (Tensor grad_memory, Tensor grad_content, Tensor grad_forward, Tensor grad_backward, "
        "Tensor grad_read_mode)",
};

// Window: Graves' soft attention window over a character sequence.
inline constexpr const char* kMemoryWindow[] = {
  // Graves' window over T steps. alpha_hat, beta_hat, kappa_hat (B,T,K); kappa0 (B,K);
  // chars (B,U,C); char_mask (B,U) or None. kappa = kappa0 + cumsum_t exp(kappa_hat);
  // phi[t,u] = mask[u] sum_k exp(alpha_hat) exp(-exp(beta_hat) (kappa - u)^2), characters
  // numbered u = 1..U; window (B,T,C) = phi chars. grad_char_mask is an empty (0,) tensor when
  // char_mask is None.
  "graves_window_forward(Tensor alpha_hat, Tensor beta_hat, Tensor kappa_hat, "
        "Tensor kappa0, Tensor chars, Tensor? char_mask) -> (Tensor window, Tensor kappa, "
        "Tensor phi)",
  "graves_window_backward(Tensor grad_window, Tensor grad_kappa, Tensor grad_phi, "
        "Tensor alpha_hat, Tensor beta_hat, Tensor kappa_hat, Tensor kappa0, Tensor chars, "
        "Tensor? char_mask) -> (Tensor grad_alpha_hat, Tensor grad_beta_hat, "
        "Tensor grad_kappa_hat, Tensor grad_kappa0, Tensor grad_chars, Tensor grad_char_mask)",
};

// ---- LSTM recurrence (csrc/cpu/lstm.cpp, csrc/cuda/lstm.cu; attnfast/ops/lstm.py) ------------
// The sequential part of one LSTM layer, torch's nn.LSTM gate order (i, f, g, o), no projection.
// gates_x (T, B, 4H) = x w_ih^T + b_ih + b_hh for every step (one GEMM, outside the op);
// h0, c0 (B, H); w_hh (4H, H); one dtype (fp32/bf16/fp16), one device, contiguous. Per step:
//   a_t = gates_x[t] + h_{t-1} w_hh^T  (fp32 accumulation);  i, f, o = sigmoid, g = tanh of a_t;
//   c_t = f c_{t-1} + i g  (fp32);  h_t = o tanh(c_t).
// h (T, B, H) in gates_x's dtype; c (T, B, H) fp32: the cell state is carried in fp32 whatever
// the dtype; gates (T, B, 4H) the activated (i, f, g, o) in gates_x's dtype when save_gates,
// else an empty (0,) tensor.
inline constexpr const char* kLstm[] = {
  "lstm_forward(Tensor gates_x, Tensor h0, Tensor c0, Tensor w_hh, bool save_gates) "
        "-> (Tensor h, Tensor c, Tensor gates)",
  // grad_h (T, B, H): the gradient of the output h (a final state h_n = h[T-1] has its gradient
  // there); grad_c (T, B, H) fp32 or None (zero): of the output c. dh and dc are carried in fp32
  // through the steps. grad_gates_x (T, B, 4H) in gates_x's dtype is d a_t: also the gradient of
  // both biases (summed over T and B) and, by one GEMM each outside the op, of w_ih, x and w_hh
  // (grad_w_hh = sum_t grad_gates_x[t]^T h_{t-1}). grad_h0, grad_c0 (B, H) in c0's dtype (h0's).
  // T = 0: grad_h0 = grad_c0 = 0. gates may be empty only when there is no step.
  "lstm_backward(Tensor grad_h, Tensor? grad_c, Tensor c0, Tensor w_hh, Tensor c, "
        "Tensor gates) -> (Tensor grad_gates_x, Tensor grad_h0, Tensor grad_c0)",
};

// Calls f(table) for every table above.
template <typename Fn>
void for_each_table(Fn&& f) {
  f(kBoom);
  f(kAttention);
  f(kMemoryAddressing);
  f(kMemoryAllocation);
  f(kMemoryLinks);
  f(kMemoryReadWrite);
  f(kMemoryWindow);
  f(kLstm);
}

// Defines every schema in the library `m` (a TORCH_LIBRARY or _FRAGMENT block).
template <typename Library>
void define_all(Library& m) {
  for_each_table([&](const auto& table) {
    for (const char* schema : table) m.def(schema);
  });
}

// The schema of op `name` ("name(...) -> ..."), or nullptr.
inline const char* find(std::string_view name) {
  const char* found = nullptr;
  for_each_table([&](const auto& table) {
    for (const char* schema : table) {
      const std::string_view s(schema);
      if (s.size() > name.size() && s.substr(0, name.size()) == name && s[name.size()] == '(')
        found = schema;
    }
  });
  return found;
}

}  // namespace schemas
}  // namespace attnfast
