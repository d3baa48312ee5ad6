// The memory ops' CPU loops (per ISA, csrc/cpu/kernels/memory_impl.h) and their argument
// blocks, by concept: raw pointers, contiguous row-major tensors, 64-bit sizes. Each function runs
// the batch elements [b_begin, b_end) (the glue in csrc/cpu/memory_<concept>.cpp splits the batch
// over threads); per-batch scratch is given by the glue (`scratch` + b * scratch_stride; the link
// loops get one scratch per call and reuse it over their batch range), so the loops allocate
// nothing and use no std containers (see csrc/cpu/isa_kernels.h on why that matters per ISA).
#pragma once
#include <cstdint>

namespace attnfast {
namespace cpu {

// ---- addressing: content, NTM location ----------------------------------------------------------

template <typename T>
struct ContentArgs {
  const T* memory;     // (B, N, W)
  const T* keys;       // (B, H, W)
  const T* strengths;  // (B, H)
  T* weights;          // (B, H, N): output of the forward, input of the backward
  const T* grad;       // (B, H, N) backward only
  T* grad_memory;      // (B, N, W)
  T* grad_keys;        // (B, H, W)
  T* grad_strengths;   // (B, H)
  T* scratch;          // forward: N per batch; backward: (H + 2) N per batch
  int64_t scratch_stride;
  int64_t B, N, W, H;
  T eps;
};

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

// ---- allocation: DNC allocation, usage ----------------------------------------------------------

template <typename T>
struct AllocationArgs {
  const T* usage;        // (B, N)
  const T* gates;        // (B, Hw)
  T* alloc;              // (B, Hw, N) forward output
  const T* grad;         // (B, Hw, N) backward only
  T* grad_usage;         // (B, N)
  T* grad_gates;         // (B, Hw)
  T* scratch;            // forward: N; backward: (2 Hw + 4) N per batch
  int32_t* order;        // forward: 2 N; backward: (Hw + 1) N per batch (sort permutations)
  int64_t scratch_stride, order_stride;
  int64_t B, N, Hw;
  T eps;
};

// DNC write weights ww = gw (ga a + (1 - ga) c), a the allocation with gates ga * gw. `alloc` is
// the allocation's block (its gates: `gates`, written by the loops); forward: its
// alloc is the output and its scratch / order as the allocation forward's; backward: its
// grad_usage the output, grad_gates a (B, Hw) buffer, scratch (3 Hw + 4) N per batch (the
// allocation backward's, then d allocation), order as the allocation backward's.
template <typename T>
struct WriteWeightsArgs {
  AllocationArgs<T> alloc;
  T* gates;          // (B, Hw) buffer: ga * gw, the allocation's gates (alloc.gates points here)
  const T* content;  // (B, Hw, N)
  const T* ga;       // (B, Hw) allocation gate
  const T* gw;       // (B, Hw) write gate
  const T* grad;     // (B, Hw, N) backward input
  T* d_content;      // (B, Hw, N) backward outputs
  T* d_ga;           // (B, Hw)
  T* d_gw;           // (B, Hw)
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

// ---- links: DNC temporal link + directional reads -----------------------------------------------

template <typename T>
struct LinkArgs {
  const T* link;        // (B, Hw, N, N)
  const T* prec;        // (B, Hw, N)
  const T* ww;          // (B, Hw, N)
  const T* rw;          // (B, R, N)
  T* new_link;          // (B, Hw, N, N) forward
  T* new_prec;          // (B, Hw, N)
  T* fwd;               // (B, R, Hw, N)
  T* bwd;               // (B, R, Hw, N)
  const T* g_link;      // backward inputs: gradients of the four forward outputs
  const T* g_prec;
  const T* g_fwd;
  const T* g_bwd;
  T* d_link;            // backward outputs
  T* d_prec;
  T* d_ww;
  T* d_rw;
  T* scratch;           // link_{forward,backward}_scratch(R, N), reused over [b_begin, b_end)
  int64_t B, Hw, N, R;
};

// Link kernels: read heads go in groups of kLinkHeads, copied into per-batch scratch padded with
// zero heads (csrc/cpu/kernels/memory_links_impl.h explains why); the glue sizes the scratch with these.
constexpr int64_t kLinkHeads = 4;

// At least one group, so that R = 0 (no read heads) still runs the link update.
inline int64_t link_heads_padded(int64_t R) {
  return R > kLinkHeads ? (R + kLinkHeads - 1) / kLinkHeads * kLinkHeads : kLinkHeads;
}

// Row stride of the padded head rows in scratch: N rounded up, plus 64 bytes or more, so that the
// rows (loaded and stored in the same loop) do not sit a multiple of 4 KiB apart.
inline int64_t link_head_stride(int64_t N) { return (N + 15) / 16 * 16 + 16; }

// Scratch of one call (elements): forward rw4 + bk4, backward rw4 + gb4 + gf4 + drw4 + one G row.
inline int64_t link_forward_scratch(int64_t R, int64_t N) {
  return 2 * link_heads_padded(R) * link_head_stride(N);
}
inline int64_t link_backward_scratch(int64_t R, int64_t N) {
  return (4 * link_heads_padded(R) + 1) * link_head_stride(N);
}

// ---- read / write -------------------------------------------------------------------------------

template <typename T>
struct WriteArgs {
  const T* memory;  // (B, N, W)
  const T* ww;      // (B, Hw, N)
  const T* erase;   // (B, Hw, W)
  const T* add;     // (B, Hw, W)
  T* out;           // (B, N, W) forward
  const T* grad;    // (B, N, W) backward
  T* grad_memory;   // (B, N, W)
  T* grad_ww;       // (B, Hw, N)
  T* grad_erase;    // (B, Hw, W)
  T* grad_add;      // (B, Hw, W)
  T* scratch;       // 3 W per batch
  int64_t scratch_stride;
  int64_t B, N, W, Hw;
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

// The DNC read: read-mode mix rw = pi_c c + sum_h pi_f,h f_h + sum_h pi_b,h b_h, then words =
// rw M. `read` is the read's block (its rw: `rw`): forward, its words the words output;
// backward, its grad the words' gradient, d_memory the output and d_rw a (B, R, N) buffer.
template <typename T>
struct ReadMixArgs {
  ReadArgs<T> read;
  T* rw;             // (B, R, N): forward the read_weights output, backward a buffer (recomputed)
  const T* content;  // (B, R, N)
  const T* fwd;      // (B, R, Hw, N)
  const T* bwd;      // (B, R, Hw, N)
  const T* mode;     // (B, R, 1 + 2 Hw): [backward x Hw, forward x Hw, content]
  const T* grad_rw;  // (B, R, N) backward input
  T* d_content;      // backward outputs, shaped like the inputs
  T* d_fwd;
  T* d_bwd;
  T* d_mode;
  int64_t Hw;
};

// ---- window: Graves' soft window ----------------------------------------------------------------

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

// ---- the dispatch table (one per ISA, in csrc/cpu/isa.h's KernelTable) ---------------------------

template <typename T>
struct MemoryKernelsT {
  void (*content_forward)(const ContentArgs<T>&, int64_t, int64_t);
  void (*content_backward)(const ContentArgs<T>&, int64_t, int64_t);
  void (*ntm_location_forward)(const NtmLocationArgs<T>&, int64_t, int64_t);
  void (*ntm_location_backward)(const NtmLocationArgs<T>&, int64_t, int64_t);
  void (*allocation_forward)(const AllocationArgs<T>&, int64_t, int64_t);
  void (*allocation_backward)(const AllocationArgs<T>&, int64_t, int64_t);
  void (*usage_forward)(const UsageArgs<T>&, int64_t, int64_t);
  void (*usage_backward)(const UsageArgs<T>&, int64_t, int64_t);
  void (*write_weights_forward)(const WriteWeightsArgs<T>&, int64_t, int64_t);
  void (*write_weights_backward)(const WriteWeightsArgs<T>&, int64_t, int64_t);
  void (*link_forward)(const LinkArgs<T>&, int64_t, int64_t);
  void (*link_backward)(const LinkArgs<T>&, int64_t, int64_t);
  void (*write_forward)(const WriteArgs<T>&, int64_t, int64_t);
  void (*write_backward)(const WriteArgs<T>&, int64_t, int64_t);
  void (*read_forward)(const ReadArgs<T>&, int64_t, int64_t);
  void (*read_backward)(const ReadArgs<T>&, int64_t, int64_t);
  void (*read_mix_forward)(const ReadMixArgs<T>&, int64_t, int64_t);
  void (*read_mix_backward)(const ReadMixArgs<T>&, int64_t, int64_t);
  void (*graves_forward)(const GravesArgs<T>&, int64_t, int64_t);
  void (*graves_backward)(const GravesArgs<T>&, int64_t, int64_t);
};

struct MemoryKernels {
  MemoryKernelsT<float> f32;
  MemoryKernelsT<double> f64;
};

}  // namespace cpu
}  // namespace attnfast
