// The Boom forward as one blocked GEMM with the epilogue fused per output block (AVX-512 TU
// only; see gemm_impl.h for the micro-kernel and gemm.h for the arguments). Included by
// kernels/boom_impl.h inside namespace attnfast::cpu::<isa>, after the epilogue helpers.
//
// Per task (a contiguous range of rows, one per thread):
//   for each row block (Mc rows):             pack x rows into MR-wide panels (all of K)
//     acc (Mc x C, fp32) = 0                  the chunk sum of these rows
//     for each column block (Nc columns of W^T, i.e. of d_ff):
//       for each K slab (Kc units):           Z (Mc x Nc, fp32) += x_block W_slab^T
//         for each NR panel of W: for each MR panel of x: micro-kernel
//       epilogue on Z: + bias, preact store, act, dropout, add into acc at f mod C
//     out rows = acc (rounded once to the dtype)
// so the d_ff-wide activation exists only as one Mc x Nc fp32 block in L2, and the
// pre-activation never leaves fp32 before the activation (bf16 is rounded only for the saved
// preact and the output).
// No include guard on purpose: included once per ISA namespace.
#if ATTNFAST_CPU_GEMM_AVX512

namespace boom_gemm {

using gemm::kMR;
using gemm::kNR;

// Cache blocking (Zen 5: 48 KB L1d, 1 MB L2 per core, 32 MB shared L3), in 32-bit K-units:
//  - Kc = 256 units: one packed W micro-panel (Kc x NR x 4 B = 32 KB) stays in L1 while the
//    micro-kernel walks the x panels of the block (Kc x MR x 4 B = 14 KB each, from L2).
//  - Mc = 112 rows (8 x MR): the packed x block of one K slab (112 KB) and the Z block
//    (Mc x Nc x 4 B = 112 KB) stay in L2; acc (Mc x C x 4 B, 448 KB at C = 1024) too.
//  - Nc = 256 columns: the Z block of the epilogue; small enough for L2, wide enough that the
//    epilogue runs in long vector loops.
// W is packed once per call (shared by both threads, read from L3).
#ifndef ATTNFAST_BOOM_GEMM_KC  // (overridable for blocking experiments only)
#define ATTNFAST_BOOM_GEMM_KC 256
#define ATTNFAST_BOOM_GEMM_MC 8
#define ATTNFAST_BOOM_GEMM_NC 8
#endif
constexpr int64_t kKc = ATTNFAST_BOOM_GEMM_KC;
constexpr int64_t kMc = ATTNFAST_BOOM_GEMM_MC * kMR;
constexpr int64_t kNc = ATTNFAST_BOOM_GEMM_NC * kNR;

ATTNFAST_INLINE int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
ATTNFAST_INLINE int64_t align64(int64_t bytes) { return (bytes + 63) / 64 * 64; }

template <typename T>
struct Layout {
  int64_t U;             // K-units
  int64_t x_block;       // bytes of the packed x block (kMc rows x all units)
  int64_t z_block;       // bytes of Z (kMc x kNc fp32)
  int64_t acc;           // bytes of the chunk-sum accumulator (kMc x C fp32)
  explicit Layout(const BoomGemmArgs& a)
      : U(gemm::units<T>(a.K)),
        x_block(align64(kMc * U * 4)),
        z_block(align64(kMc * kNc * 4)),
        acc(align64(kMc * a.C * 4)) {}
};

template <typename T>
BoomGemmPlan plan_typed(const BoomGemmArgs& a) {
  const Layout<T> l(a);
  const int64_t panels = ceil_div(a.f_used, kNR);
  return BoomGemmPlan{panels * l.U * kNR * 4, panels, l.x_block + l.z_block + l.acc, 4 * kMR};
}

template <typename T>
void pack_weight_typed(const BoomGemmArgs& a, int64_t p_begin, int64_t p_end) {
  using P = typename gemm::Packed<T>::type;
  const T* w = static_cast<const T*>(a.weight);
  for (int64_t p = p_begin; p < p_end; ++p) {
    const int64_t f0 = p * kNR;
    const int64_t rows = f0 + kNR <= a.f_used ? kNR : a.f_used - f0;
    gemm::pack_panel_slabs<T>(w + f0 * a.K, a.K, 1, rows, a.K, kKc, ceil_div(a.f_used, kNR), p,
                              kNR, static_cast<P*>(a.packed_weight));
  }
}

// The epilogue of one Z block: columns [f0, f0 + nf) of d_ff for `rows` rows starting at
// global row `row0`; splits the columns at chunk boundaries and adds act(z + b) into acc at
// column f mod C. Same formulas as boom_epilogue_impl (act::forward, Philox counter
// row * F + f), but the activation is taken of the fp32 pre-activation.
template <typename T, Activation A>
void epilogue_block(const BoomGemmArgs& a, float* Z, int64_t ldz, int64_t row0,
                    int64_t rows, int64_t f0, int64_t nf, float* acc) {
  const bool dropout = a.dropout_p > 0.0;
  const uint32_t threshold = philox::keep_threshold(a.dropout_p);
  const float scale = static_cast<float>(1.0 / (1.0 - a.dropout_p));
  const int64_t C = a.C;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t grow = row0 + r;
    T* pre = a.preact ? static_cast<T*>(a.preact) + grow * a.f_used : nullptr;
    float* acc_r = acc + r * C;
    for (int64_t f = f0; f < f0 + nf;) {
      const int64_t j = f / C;
      const int64_t end = (j + 1) * C < f0 + nf ? (j + 1) * C : f0 + nf;
      const int64_t len = end - f;
      float* z = Z + r * ldz + (f - f0);
      float* o = acc_r + (f - j * C);
      // Bias first, in place in the fp32 block: the loops below then have no branch on it
      // (a conditional load would keep GCC from vectorising the activation).
      if (a.bias) {
        const float* b = a.bias + f;
#pragma omp simd
        for (int64_t i = 0; i < len; ++i) z[i] += b[i];
      }
      if (pre) {
        T* p = pre + f;
#pragma omp simd
        for (int64_t i = 0; i < len; ++i) p[i] = from_f32<T>(z[i]);
      }
      if (!dropout) {
#pragma omp simd
        for (int64_t i = 0; i < len; ++i) o[i] += act::forward<A>(z[i]);
      } else {
        const uint64_t drop = static_cast<uint64_t>(grow) * static_cast<uint64_t>(a.F) +
                              static_cast<uint64_t>(f);
#pragma omp simd
        for (int64_t i = 0; i < len; ++i) {
          const bool keep = philox::keep(a.seed, drop + static_cast<uint64_t>(i), threshold);
          o[i] += keep ? act::forward<A>(z[i]) * scale : 0.f;
        }
      }
      f = end;
    }
  }
}

// Z (mpanels*MR x ncols, row stride kNc) = x_block * W^T[:, f0 : f0 + ncols], all K.
// xp: the x block packed slab-major over mpanels panels; wp: W packed slab-major over
// wpanels panels (gemm::slab_offset).
template <typename P>
void gemm_block(const P* xp, int64_t mpanels, const P* wp, int64_t wpanels, int64_t U,
                int64_t f0, int64_t ncols, float* Z) {
  const int64_t npanels = ceil_div(ncols, kNR);
  const int64_t p0 = f0 / kNR;
  for (int64_t u0 = 0; u0 < U; u0 += kKc) {
    const int64_t kc = U - u0 < kKc ? U - u0 : kKc;
    for (int64_t jp = 0; jp < npanels; ++jp) {
      const P* wpanel = wp + gemm::slab_offset(u0, U, kKc, wpanels, p0 + jp, kNR);
      for (int64_t ip = 0; ip < mpanels; ++ip)
        gemm::micro_kernel(kc, xp + gemm::slab_offset(u0, U, kKc, mpanels, ip, kMR), wpanel,
                           Z + ip * kMR * kNc + jp * kNR, kNc, u0 > 0);
    }
  }
}

template <typename T, Activation A>
void forward_rows_impl(const BoomGemmArgs& a, int64_t row_begin, int64_t row_end,
                       void* scratch) {
  using P = typename gemm::Packed<T>::type;
  const Layout<T> l(a);
  P* xp = static_cast<P*>(scratch);
  float* Z = reinterpret_cast<float*>(static_cast<char*>(scratch) + l.x_block);
  float* acc = reinterpret_cast<float*>(static_cast<char*>(scratch) + l.x_block + l.z_block);
  const T* x = static_cast<const T*>(a.x);
  const P* wp = static_cast<const P*>(a.packed_weight);
  const int64_t C = a.C;
  // Equal row blocks of at most kMc rows (a multiple of MR), so no block is a thin remainder.
  const int64_t rows = row_end - row_begin;
  const int64_t nblocks = ceil_div(rows, kMc);
  const int64_t mc_max = ceil_div(ceil_div(rows, nblocks), kMR) * kMR;
  for (int64_t r0 = row_begin; r0 < row_end; r0 += mc_max) {
    const int64_t mc = row_end - r0 < mc_max ? row_end - r0 : mc_max;
    const int64_t mpanels = ceil_div(mc, kMR);
    for (int64_t ip = 0; ip < mpanels; ++ip) {
      const int64_t valid = mc - ip * kMR < kMR ? mc - ip * kMR : kMR;
      gemm::pack_panel_slabs<T>(x + (r0 + ip * kMR) * a.K, a.K, 1, valid, a.K, kKc, mpanels, ip,
                                kMR, xp);
    }
    for (int64_t i = 0; i < mc * C; ++i) acc[i] = 0.f;
    for (int64_t f0 = 0; f0 < a.f_used; f0 += kNc) {
      const int64_t nf = a.f_used - f0 < kNc ? a.f_used - f0 : kNc;
      gemm_block<P>(xp, mpanels, wp, ceil_div(a.f_used, kNR), l.U, f0, nf, Z);
      epilogue_block<T, A>(a, Z, kNc, r0, mc, f0, nf, acc);
    }
    T* out = static_cast<T*>(a.out) + r0 * C;
#pragma omp simd
    for (int64_t i = 0; i < mc * C; ++i) out[i] = from_f32<T>(acc[i]);
  }
}

template <typename T>
void forward_rows_typed(const BoomGemmArgs& a, int64_t b, int64_t e, void* s) {
  switch (static_cast<Activation>(a.activation)) {
    case Activation::gelu_sigmoid: return forward_rows_impl<T, Activation::gelu_sigmoid>(a, b, e, s);
    case Activation::gelu: return forward_rows_impl<T, Activation::gelu>(a, b, e, s);
    case Activation::gelu_tanh: return forward_rows_impl<T, Activation::gelu_tanh>(a, b, e, s);
    default: return forward_rows_impl<T, Activation::relu>(a, b, e, s);
  }
}

BoomGemmPlan plan(const BoomGemmArgs& a) {
  switch (a.dtype) {
    case DType::f32: return plan_typed<float>(a);
    case DType::bf16: return plan_typed<bf16_t>(a);
    default: return plan_typed<f16_t>(a);
  }
}

void pack_weight(const BoomGemmArgs& a, int64_t b, int64_t e) {
  switch (a.dtype) {
    case DType::f32: return pack_weight_typed<float>(a, b, e);
    case DType::bf16: return pack_weight_typed<bf16_t>(a, b, e);
    default: return pack_weight_typed<f16_t>(a, b, e);
  }
}

void forward_rows(const BoomGemmArgs& a, int64_t b, int64_t e, void* s) {
  switch (a.dtype) {
    case DType::f32: return forward_rows_typed<float>(a, b, e, s);
    case DType::bf16: return forward_rows_typed<bf16_t>(a, b, e, s);
    default: return forward_rows_typed<f16_t>(a, b, e, s);
  }
}

extern const BoomGemmKernels kernels;
const BoomGemmKernels kernels{&plan, &pack_weight, &forward_rows};

}  // namespace boom_gemm

#define ATTNFAST_BOOM_GEMM_KERNELS (&boom_gemm::kernels)
#else
#define ATTNFAST_BOOM_GEMM_KERNELS nullptr
#endif  // ATTNFAST_CPU_GEMM_AVX512
