// AVX-512 GEMM building blocks, BLIS-style: operand packing and the register-blocked
// micro-kernel (fp32 FMA and bf16 vdpbf16ps). Included by cpu/isa_kernels.h inside namespace
// attnfast::cpu::<isa>; empty unless this TU is the avx512 one (see gemm_isa.h).
// No include guard on purpose: each isa_*.cpp includes it once, in its own namespace.
//
// Computes Z (MR x NR, fp32) [+]= A_panel (MR x k) * B_panel (k x NR), both operands packed in
// "K-units" of 32-bit words:
//   fp32 (and fp16, converted while packing): one unit = one element, FMA vfmadd231ps.
//   bf16: one unit = a PAIR of consecutive k (k = 2u, 2u + 1) in one 32-bit word, for
//         vdpbf16ps, which multiplies the two bf16 pairs of each 32-bit lane and adds both
//         products to the fp32 lane. An odd K is padded with a zero bf16.
// Packed layouts (w = MR for A panels, NR for B panels): panel[u * w + i] = unit(row i, u),
// rows past the operand's edge are zero (the micro-tile never needs a masked edge case).
#if ATTNFAST_CPU_GEMM_AVX512

namespace gemm {

// Register blocking: a 14 x 32 fp32 micro-tile = 14 rows x 2 zmm = 28 accumulators, plus the
// two B vectors of the current unit = 30 of the 32 zmm registers (A is broadcast straight from
// memory: `vfmadd231ps zmm, zmm, [mem]{1to16}`). Per unit: 28 FMAs (14 cycles at 2 FMA/cycle
// on Zen 5) against 2 vector loads + 14 broadcasts; 28 independent chains hide the 4-cycle FMA
// latency twice over.
constexpr int kMR = 14;
constexpr int kNR = 32;

// The 32-bit word type of a packed operand: float for fp32/fp16 storage, the bf16 pair (as
// uint32_t) for bf16 storage.
template <typename T> struct Packed { using type = float; static constexpr bool pairs = false; };
template <> struct Packed<bf16_t> { using type = uint32_t; static constexpr bool pairs = true; };

// Number of K-units of a reduction of length k.
template <typename T>
ATTNFAST_INLINE int64_t units(int64_t k) { return Packed<T>::pairs ? (k + 1) / 2 : k; }

template <typename P> inline constexpr bool kIsF32 = false;
template <> inline constexpr bool kIsF32<float> = true;

ATTNFAST_INLINE float pack_elem(float v) { return v; }
ATTNFAST_INLINE float pack_elem(f16_t v) { return static_cast<float>(v); }  // exact

// Packs units [u_begin, u_end) of rows [0, rows) of a strided operand into one panel block of
// width w (w >= rows; the rest zero): element (i, k) is src[i * s_row + k * s_k], the reduction
// runs over k in [0, K); unit u goes to dst[(u - u_begin) * w + i].
template <typename T>
void pack_panel(const T* src, int64_t s_row, int64_t s_k, int64_t rows, int64_t K,
                int64_t u_begin, int64_t u_end, int w, typename Packed<T>::type* dst) {
  using P = typename Packed<T>::type;
  if (s_row == 1 && s_k != 1) {  // rows are the contiguous dimension: walk them innermost
    for (int64_t u = u_begin; u < u_end; ++u) {
      P* d = dst + (u - u_begin) * w;
      if constexpr (Packed<T>::pairs) {
        const T* lo = src + 2 * u * s_k;
        const T* hi = src + (2 * u + 1) * s_k;
        if (2 * u + 1 < K) {
          for (int64_t i = 0; i < rows; ++i) d[i] = uint32_t(lo[i].bits) | (uint32_t(hi[i].bits) << 16);
        } else {
          for (int64_t i = 0; i < rows; ++i) d[i] = uint32_t(lo[i].bits);  // odd K: pad
        }
      } else {
        const T* s = src + u * s_k;
        for (int64_t i = 0; i < rows; ++i) d[i] = pack_elem(s[i]);
      }
      for (int64_t i = rows; i < w; ++i) d[i] = P(0);
    }
    return;
  }
  for (int i = 0; i < w; ++i) {
    P* d = dst + i - u_begin * w;
    if (i >= rows) {
      for (int64_t u = u_begin; u < u_end; ++u) d[u * w] = P(0);
      continue;
    }
    const T* s = src + i * s_row;
    if constexpr (Packed<T>::pairs) {
      const int64_t full = K / 2 < u_end ? K / 2 : u_end;  // units with both halves inside K
      for (int64_t u = u_begin; u < full; ++u)
        d[u * w] = uint32_t(s[2 * u * s_k].bits) | (uint32_t(s[(2 * u + 1) * s_k].bits) << 16);
      if (K % 2 && full < u_end) d[full * w] = uint32_t(s[(K - 1) * s_k].bits);  // pad: 0 hi
    } else {
      for (int64_t u = u_begin; u < u_end; ++u) d[u * w] = pack_elem(s[u * s_k]);
    }
  }
}

// Slab-major placement of packed panels: the K-units are cut into slabs of kc_max; slab s of
// panel p lives at slab_offset(...) so that, for one slab, all panels are consecutive in
// memory (the micro-kernel walks them in order: one sequential stream for the prefetcher).
// Returns the offset in 32-bit words of panel p's block of the slab starting at unit u0.
ATTNFAST_INLINE int64_t slab_offset(int64_t u0, int64_t U, int64_t kc_max, int64_t npanels,
                                    int64_t p, int w) {
  const int64_t kc = U - u0 < kc_max ? U - u0 : kc_max;
  return u0 * w * npanels + p * kc * w;
}

// Packs a whole operand panel (all units) slab-major; see slab_offset.
template <typename T>
void pack_panel_slabs(const T* src, int64_t s_row, int64_t s_k, int64_t rows, int64_t K,
                      int64_t kc_max, int64_t npanels, int64_t p, int w,
                      typename Packed<T>::type* base) {
  const int64_t U = units<T>(K);
  for (int64_t u0 = 0; u0 < U; u0 += kc_max) {
    const int64_t u1 = U - u0 < kc_max ? U : u0 + kc_max;
    pack_panel<T>(src, s_row, s_k, rows, K, u0, u1, w,
                  base + slab_offset(u0, U, kc_max, npanels, p, w));
  }
}

// Z[0:MR, 0:NR] (row stride ldz) = (accumulate ? Z : 0) + A_panel * B_panel over kc units.
// A points at unit 0 of an MR-wide packed panel, B at unit 0 of an NR-wide one.
// Numerics: fp32 FMAs, one rounding per unit. bf16: every bf16 x bf16 product is exact in fp32
// (8-bit x 8-bit significands); vdpbf16ps adds the pair's two products to the accumulator with
// round-to-nearest-even whatever MXCSR says, and treats denormal inputs/outputs as zero (DAZ/
// FTZ, Intel SDM "VDPBF16PS") -- values below ~1e-38 in x or W contribute nothing.
template <typename P>
__attribute__((noinline)) void micro_kernel(int64_t kc, const P* __restrict__ A,
                                            const P* __restrict__ B, float* __restrict__ Z,
                                            int64_t ldz, bool accumulate) {
  __m512 c[kMR][2];
#pragma GCC unroll 14
  for (int m = 0; m < kMR; ++m) {
    c[m][0] = accumulate ? _mm512_loadu_ps(Z + m * ldz) : _mm512_setzero_ps();
    c[m][1] = accumulate ? _mm512_loadu_ps(Z + m * ldz + 16) : _mm512_setzero_ps();
  }
#pragma GCC unroll 2
  for (int64_t u = 0; u < kc; ++u) {
    const P* a = A + u * kMR;
    const P* b = B + u * kNR;
    if constexpr (kIsF32<P>) {
      const __m512 b0 = _mm512_loadu_ps(b);
      const __m512 b1 = _mm512_loadu_ps(b + 16);
#pragma GCC unroll 14
      for (int m = 0; m < kMR; ++m) {
        const __m512 am = _mm512_set1_ps(a[m]);
        c[m][0] = _mm512_fmadd_ps(am, b0, c[m][0]);
        c[m][1] = _mm512_fmadd_ps(am, b1, c[m][1]);
      }
    } else {  // P = uint32_t: bf16 pairs
      const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b);
      const __m512bh b1 = (__m512bh)_mm512_loadu_si512(b + 16);
#pragma GCC unroll 14
      for (int m = 0; m < kMR; ++m) {
        const __m512bh am = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[m]));
        c[m][0] = _mm512_dpbf16_ps(c[m][0], am, b0);
        c[m][1] = _mm512_dpbf16_ps(c[m][1], am, b1);
      }
    }
  }
#pragma GCC unroll 14
  for (int m = 0; m < kMR; ++m) {
    _mm512_storeu_ps(Z + m * ldz, c[m][0]);
    _mm512_storeu_ps(Z + m * ldz + 16, c[m][1]);
  }
}

}  // namespace gemm

#endif  // ATTNFAST_CPU_GEMM_AVX512
