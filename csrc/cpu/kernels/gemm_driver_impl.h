// The blocked GEMM driver over gemm_impl.h's micro-kernel, with a pluggable epilogue, and the
// plain GEMM built on it (C = A B, stored in the dtype). Included by cpu/isa_kernels.h inside
// namespace attnfast::cpu::<isa>; empty unless this is the avx512 TU (gemm_isa.h).
//
// Per task (a contiguous range of rows of C, one per thread; B packed once per call, shared):
//   for each row block (Mc rows):       pack A rows into MR-wide panels, all of K, slab-major
//     epi.begin(rows)
//     for each column block (Nc columns):
//       for each K slab (Kc units):     Z (Mc x Nc, fp32) [+]= A_block(slab) B(slab, block)
//         for each NR panel of B: for each MR panel of A: micro-kernel
//       epi.block(Z)                    the epilogue sees the finished fp32 block while in L2
//     epi.end(rows)
// No include guard on purpose: included once per ISA namespace.
#if ATTNFAST_CPU_GEMM_AVX512

namespace gemm {

// Cache blocking (Zen 5: 48 KB L1d, 1 MB L2 per core, 32 MB shared L3), in 32-bit K-units:
//  - Kc = 256 units: one packed B micro-panel (Kc x NR x 4 B = 32 KB) stays in L1 while the
//    micro-kernel walks the A panels of the block (Kc x MR x 4 B = 14 KB each, from L2).
//  - Mc = 112 rows (8 x MR): the packed A block of one K slab (112 KB) and the Z block
//    (Mc x Nc x 4 B = 112 KB) stay in L2 next to the epilogue's own data.
//  - Nc = 256 columns: small enough for L2, wide enough for long epilogue vector loops.
// Measured at the Boom size (4096 x 1024 -> 4096, bench/notes/boom_cpu.md): Kc 128 lost ~10%,
// 512 and Mc 224 / Nc 512 were within the noise.
#ifndef ATTNFAST_GEMM_KC  // (overridable for blocking experiments only)
#define ATTNFAST_GEMM_KC 256
#define ATTNFAST_GEMM_MC_PANELS 8
#define ATTNFAST_GEMM_NC_PANELS 8
#endif
constexpr int64_t kKc = ATTNFAST_GEMM_KC;
constexpr int64_t kMc = ATTNFAST_GEMM_MC_PANELS * kMR;
constexpr int64_t kNc = ATTNFAST_GEMM_NC_PANELS * kNR;

ATTNFAST_INLINE int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
ATTNFAST_INLINE int64_t align64(int64_t bytes) { return (bytes + 63) / 64 * 64; }

// Scratch of one task: the packed A block, then the Z block.
template <typename T>
struct Layout {
  int64_t U;        // K-units
  int64_t a_block;  // bytes of the packed A block (kMc rows x all units)
  int64_t z_block;  // bytes of Z (kMc x kNc fp32)
  explicit Layout(const GemmArgs& g)
      : U(units<T>(g.K)), a_block(align64(kMc * U * 4)), z_block(align64(kMc * kNc * 4)) {}
  int64_t bytes() const { return a_block + z_block; }
};

template <typename T>
GemmPlan plan_typed(const GemmArgs& g) {
  const Layout<T> l(g);
  const int64_t panels = ceil_div(g.N, kNR);
  return GemmPlan{panels * l.U * kNR * 4, panels, l.bytes(), 4 * kMR};
}

template <typename T>
void pack_b_typed(const GemmArgs& g, int64_t p_begin, int64_t p_end) {
  using P = typename Packed<T>::type;
  const T* b = static_cast<const T*>(g.b);
  const int64_t panels = ceil_div(g.N, kNR);
  for (int64_t p = p_begin; p < p_end; ++p) {
    const int64_t n0 = p * kNR;
    const int64_t cols = g.N - n0 < kNR ? g.N - n0 : kNR;
    pack_panel_slabs<T>(b + n0 * g.b_col, g.b_col, g.b_k, cols, g.K, kKc, panels, p, kNR,
                        static_cast<P*>(g.packed_b));
  }
}

// Z (mpanels*MR x ncols, row stride kNc) = A_block * B[:, n0 : n0 + ncols], all K.
template <typename P>
void gemm_block(const P* ap, int64_t mpanels, const P* bp, int64_t bpanels, int64_t U,
                int64_t n0, int64_t ncols, float* Z) {
  const int64_t npanels = ceil_div(ncols, kNR);
  const int64_t p0 = n0 / kNR;
  for (int64_t u0 = 0; u0 < U; u0 += kKc) {
    const int64_t kc = U - u0 < kKc ? U - u0 : kKc;
    for (int64_t jp = 0; jp < npanels; ++jp) {
      const P* bpanel = bp + slab_offset(u0, U, kKc, bpanels, p0 + jp, kNR);
      for (int64_t ip = 0; ip < mpanels; ++ip)
        micro_kernel(kc, ap + slab_offset(u0, U, kKc, mpanels, ip, kMR), bpanel,
                     Z + ip * kMR * kNc + jp * kNR, kNc, u0 > 0);
    }
  }
}

// Rows [m_begin, m_end) of C through the epilogue `epi` (see the file comment). Requires K > 0.
template <typename T, typename Epilogue>
void blocked_rows(const GemmArgs& g, int64_t m_begin, int64_t m_end, void* scratch,
                  Epilogue& epi) {
  using P = typename Packed<T>::type;
  const Layout<T> l(g);
  P* ap = static_cast<P*>(scratch);
  float* Z = reinterpret_cast<float*>(static_cast<char*>(scratch) + l.a_block);
  const T* a = static_cast<const T*>(g.a);
  const P* bp = static_cast<const P*>(g.packed_b);
  const int64_t bpanels = ceil_div(g.N, kNR);
  // Equal row blocks of at most kMc rows, rounded up to MR: no block is a thin remainder.
  const int64_t rows = m_end - m_begin;
  const int64_t nblocks = ceil_div(rows, kMc);
  const int64_t mc_max = ceil_div(ceil_div(rows, nblocks), kMR) * kMR;
  for (int64_t r0 = m_begin; r0 < m_end; r0 += mc_max) {
    const int64_t mc = m_end - r0 < mc_max ? m_end - r0 : mc_max;
    const int64_t mpanels = ceil_div(mc, kMR);
    for (int64_t ip = 0; ip < mpanels; ++ip) {
      const int64_t valid = mc - ip * kMR < kMR ? mc - ip * kMR : kMR;
      pack_panel_slabs<T>(a + (r0 + ip * kMR) * g.a_row, g.a_row, g.a_k, valid, g.K, kKc,
                          mpanels, ip, kMR, ap);
    }
    epi.begin(r0, mc);
    for (int64_t n0 = 0; n0 < g.N; n0 += kNc) {
      const int64_t nn = g.N - n0 < kNc ? g.N - n0 : kNc;
      gemm_block<P>(ap, mpanels, bp, bpanels, l.U, n0, nn, Z);
      epi.block(Z, kNc, r0, mc, n0, nn);
    }
    epi.end(r0, mc);
  }
}

// The plain GEMM's epilogue: store the fp32 block into C, rounded once to the dtype.
template <typename T>
struct StoreEpilogue {
  const GemmArgs& g;
  void begin(int64_t, int64_t) {}
  void end(int64_t, int64_t) {}
  void block(const float* Z, int64_t ldz, int64_t r0, int64_t rows, int64_t n0, int64_t nn) {
    for (int64_t r = 0; r < rows; ++r) {
      T* c = static_cast<T*>(g.c) + (r0 + r) * g.ldc + n0;
      const float* z = Z + r * ldz;
#pragma omp simd
      for (int64_t j = 0; j < nn; ++j) c[j] = from_f32<T>(z[j]);
    }
  }
};

template <typename T>
void rows_typed(const GemmArgs& g, int64_t m_begin, int64_t m_end, void* scratch) {
  StoreEpilogue<T> epi{g};
  blocked_rows<T>(g, m_begin, m_end, scratch, epi);
}

GemmPlan plan(const GemmArgs& g) {
  switch (g.dtype) {
    case DType::f32: return plan_typed<float>(g);
    case DType::bf16: return plan_typed<bf16_t>(g);
    default: return plan_typed<f16_t>(g);
  }
}

void pack_b(const GemmArgs& g, int64_t b, int64_t e) {
  switch (g.dtype) {
    case DType::f32: return pack_b_typed<float>(g, b, e);
    case DType::bf16: return pack_b_typed<bf16_t>(g, b, e);
    default: return pack_b_typed<f16_t>(g, b, e);
  }
}

void rows(const GemmArgs& g, int64_t b, int64_t e, void* s) {
  switch (g.dtype) {
    case DType::f32: return rows_typed<float>(g, b, e, s);
    case DType::bf16: return rows_typed<bf16_t>(g, b, e, s);
    default: return rows_typed<f16_t>(g, b, e, s);
  }
}

extern const GemmKernels kernels;
const GemmKernels kernels{&plan, &pack_b, &rows};

}  // namespace gemm

#endif  // ATTNFAST_CPU_GEMM_AVX512
