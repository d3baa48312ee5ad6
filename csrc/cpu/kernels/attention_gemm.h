// Tile GEMMs of the CPU attention kernels, included once per ISA inside namespace
// attnfast::cpu::<isa> (via attention_impl.h). No include guard on purpose.
//
//   attn_gemm<T>(M, N, K, A, lda, B, ps, C, ldc, accumulate): C[M x N] (+)= A[M x K] B[K x N]
//   with fp32 accumulation; A and B in the formats of kernels/attention.h (T = float: plain
//   rows; T = bf16_t: A rows read as bf16 pairs, B in VNNI pair rows), B panel-major with
//   panel stride ps, pointing at a panel's first column.
//
// AVX-512 micro-kernels (this machine's case): a 6-row x 64-column register tile (24 zmm
// accumulators), the "outer product" form -- per k, 4 vector loads of B and 6 broadcasts of A
// feed 24 FMAs (fp32) or 24 vdpbf16ps (bf16, two k per instruction: 2x the fp32 rate). K is
// cut in KC-long slices so the B panel (KC x 64) stays in L1 while the M rows stream past;
// the C tile is reloaded per slice (24 loads/stores per 6 x 64 x KC MACs). No horizontal sums
// anywhere, so small head dims (D = 64) run as well as large ones.
// Other ISAs: plain loops the compiler vectorises (correct everywhere, not tuned).

#if defined(__x86_64__) && ATTNFAST_ATTN_LEVEL == 2
#define ATTNFAST_ATTN_AVX512 1
#else
#define ATTNFAST_ATTN_AVX512 0
#endif

// Pointer to element (k, n) of a panel-major B operand with panel stride ps (see
// kernels/attention.h); P is float or bf16_t, const or not. A tile GEMM's B argument is such a
// pointer with n a multiple of kAttnPanel (the GEMM steps through panels from there) and, for
// bf16, k even (tiles start on pair rows).
template <typename P>
ATTNFAST_INLINE P* attn_b_at(P* b, int64_t ps, int64_t k, int64_t n) {
  P* panel = b + (n / kAttnPanel) * ps;
  if constexpr (sizeof(P) == 4) return panel + k * kAttnPanel + n % kAttnPanel;
  else return panel + (k / 2) * (2 * kAttnPanel) + 2 * (n % kAttnPanel) + (k & 1);
}

ATTNFAST_INLINE uint32_t attn_load_pair(const bf16_t* p) {
  uint32_t u;
  __builtin_memcpy(&u, p, sizeof u);
  return u;
}

// ---- portable version ------------------------------------------------------------------------

template <typename T>
void attn_gemm_generic(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
                       int64_t ps, float* C, int64_t ldc, bool accumulate) {
  for (int64_t m = 0; m < M; ++m) {
    float* c = C + m * ldc;
    if (!accumulate) {
      for (int64_t n = 0; n < N; ++n) c[n] = 0.f;
    }
    for (int64_t n0 = 0; n0 < N; n0 += kAttnPanel) {  // one panel of B at a time
      const int64_t nw = N - n0 < kAttnPanel ? N - n0 : kAttnPanel;
      const T* panel = B + (n0 / kAttnPanel) * ps;
      for (int64_t k = 0; k < K; ++k) {
        const float av = to_f32(A[m * lda + k]);
        if constexpr (sizeof(T) == 4) {
          const T* b = panel + k * kAttnPanel;
#pragma omp simd
          for (int64_t n = 0; n < nw; ++n) c[n0 + n] += av * to_f32(b[n]);
        } else {
          const T* b = panel + (k / 2) * (2 * kAttnPanel) + (k & 1);
#pragma omp simd
          for (int64_t n = 0; n < nw; ++n) c[n0 + n] += av * to_f32(b[2 * n]);
        }
      }
    }
  }
}

#if ATTNFAST_ATTN_AVX512

constexpr int kAttnMR = 6;   // rows of the register tile
constexpr int kAttnNV = 4;   // 16-float vectors per row of the register tile (64 columns)
constexpr int64_t kAttnKC = 256;

template <int NV>
ATTNFAST_INLINE __mmask16 attn_vmask(int v, __mmask16 last) {
  return v == NV - 1 ? last : static_cast<__mmask16>(0xFFFF);
}

// The C tile is not loaded into the accumulators up front: they start at zero and C is added
// at the end, its lines prefetched at the start. With C loaded first, every accumulator chain
// waited for its C line (from L2 or further: the dV/dK/dQ tiles are 512 KiB at D = 1024)
// before its first FMA, in calls of only K = 128 (fp32) or 64 (bf16 pairs) steps.
template <int NV>
ATTNFAST_INLINE void attn_prefetch_c(const float* C, int64_t ldc, int mv) {
#pragma GCC unroll 8
  for (int r = 0; r < kAttnMR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      if (r < mv) _mm_prefetch(reinterpret_cast<const char*>(C + r * ldc + 16 * v), _MM_HINT_T0);
}

// C[r][:] (+)= acc[r][:] for the mv valid rows.
template <int NV>
ATTNFAST_INLINE void attn_store_c(__m512 (&acc)[kAttnMR][NV], float* C, int64_t ldc, int mv,
                                  __mmask16 last, bool load_c) {
  // Constant trip counts everywhere: acc must stay an array of registers (a loop to `mv`
  // would index it at run time and send all 24 accumulators through the stack every k).
#pragma GCC unroll 8
  for (int r = 0; r < kAttnMR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      if (r < mv) {
        const __mmask16 m = attn_vmask<NV>(v, last);
        float* c = C + r * ldc + 16 * v;
        const __m512 x = load_c ? _mm512_add_ps(acc[r][v], _mm512_maskz_loadu_ps(m, c)) : acc[r][v];
        _mm512_mask_storeu_ps(c, m, x);
      }
}

template <int NV>
void attn_micro_f32(int64_t K, const float* A, int64_t lda, int mv, const float* B, int64_t ldb,
                    float* C, int64_t ldc, __mmask16 last, bool load_c) {
  __m512 acc[kAttnMR][NV];
  const float* ar[kAttnMR];
#pragma GCC unroll 8
  for (int r = 0; r < kAttnMR; ++r) {
    ar[r] = A + (r < mv ? r : mv - 1) * lda;  // rows past M recompute row M-1, never stored
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  }
  if (load_c) attn_prefetch_c<NV>(C, ldc, mv);
  for (int64_t k = 0; k < K; ++k) {
    __m512 bv[NV];
    for (int v = 0; v < NV; ++v)
      bv[v] = _mm512_maskz_loadu_ps(attn_vmask<NV>(v, last), B + k * ldb + 16 * v);
#pragma GCC unroll 8
    for (int r = 0; r < kAttnMR; ++r) {
      const __m512 av = _mm512_set1_ps(ar[r][k]);
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
  attn_store_c<NV>(acc, C, ldc, mv, last, load_c);
}

template <int NV>
void attn_micro_bf16(int64_t K, const bf16_t* A, int64_t lda, int mv, const bf16_t* B,
                     int64_t ldb, float* C, int64_t ldc, __mmask16 last, bool load_c) {
  __m512 acc[kAttnMR][NV];
  const bf16_t* ar[kAttnMR];
#pragma GCC unroll 8
  for (int r = 0; r < kAttnMR; ++r) {
    ar[r] = A + (r < mv ? r : mv - 1) * lda;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  }
  if (load_c) attn_prefetch_c<NV>(C, ldc, mv);
  const int64_t pairs = K / 2;
  for (int64_t kk = 0; kk < pairs; ++kk) {
    __m512i bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      bv[v] = _mm512_maskz_loadu_epi32(attn_vmask<NV>(v, last), B + kk * ldb + 32 * v);
#pragma GCC unroll 8
    for (int r = 0; r < kAttnMR; ++r) {
      // One (a_k, a_k+1) pair broadcast to all 16 lanes.
      const __m512i av = _mm512_set1_epi32(static_cast<int>(attn_load_pair(ar[r] + 2 * kk)));
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v)
        acc[r][v] = _mm512_dpbf16_ps(acc[r][v], (__m512bh)av, (__m512bh)bv[v]);
    }
  }
  if (K & 1) {  // odd K: a_{K-1} pairs with 0 (the B operand's padding row is zero too)
    __m512i bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      bv[v] = _mm512_maskz_loadu_epi32(attn_vmask<NV>(v, last), B + pairs * ldb + 32 * v);
#pragma GCC unroll 8
    for (int r = 0; r < kAttnMR; ++r) {
      const __m512i av = _mm512_set1_epi32(static_cast<int>(ar[r][2 * pairs].bits));
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v)
        acc[r][v] = _mm512_dpbf16_ps(acc[r][v], (__m512bh)av, (__m512bh)bv[v]);
    }
  }
  attn_store_c<NV>(acc, C, ldc, mv, last, load_c);
}

template <typename T, int NV>
ATTNFAST_INLINE void attn_micro(int64_t K, const T* A, int64_t lda, int mv, const T* B, int64_t ldb,
                                float* C, int64_t ldc, __mmask16 last, bool load_c) {
  if constexpr (sizeof(T) == 4)
    attn_micro_f32<NV>(K, A, lda, mv, B, ldb, C, ldc, last, load_c);
  else
    attn_micro_bf16<NV>(K, A, lda, mv, B, ldb, C, ldc, last, load_c);
}

// dst[j * ldd + i] = src word j of row i (rows `src_stride` bytes apart), for a 16 x 16 block of
// 32-bit words: 16 loads, 64 shuffles, 16 stores. Stage 1 interleaves the words of row pairs
// (vpunpck{l,h}dq), stage 2 the 64-bit pairs of row quads (vpunpck{l,h}qdq) -- then 128-bit
// lane L of register U_k holds column 4 L + k of rows 4 q .. 4 q + 3 (q = the quad) -- and
// stage 3 gathers, for each column, its four lanes from U_k, U_{4+k}, U_{8+k}, U_{12+k} with two
// rounds of 128-bit lane shuffles (vshufi32x4). Written with __builtin_shufflevector (GCC 12
// flags the unpack intrinsics' undefined pass-through operand as maybe-uninitialized).
using AttnWords16 = uint32_t __attribute__((vector_size(64)));

// Index lists for __builtin_shufflevector(a, b, ...): 0-15 pick from a, 16-31 from b.
#define ATTNFAST_UNPACK_LO32 0, 16, 1, 17, 4, 20, 5, 21, 8, 24, 9, 25, 12, 28, 13, 29
#define ATTNFAST_UNPACK_HI32 2, 18, 3, 19, 6, 22, 7, 23, 10, 26, 11, 27, 14, 30, 15, 31
#define ATTNFAST_UNPACK_LO64 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29
#define ATTNFAST_UNPACK_HI64 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31
// 128-bit lanes: a0 a1 b0 b1 / a2 a3 b2 b3 / a0 a2 b0 b2 / a1 a3 b1 b3
#define ATTNFAST_LANES_01_01 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23
#define ATTNFAST_LANES_23_23 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31
#define ATTNFAST_LANES_02_02 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27
#define ATTNFAST_LANES_13_13 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31

// out[j] = word j of the 16 rows.
ATTNFAST_INLINE void attn_transpose16x16_regs(const char* src, int64_t src_stride,
                                              AttnWords16 (&out)[16]) {
  AttnWords16 r[16], t[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) __builtin_memcpy(&r[i], src + i * src_stride, sizeof(AttnWords16));
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = __builtin_shufflevector(r[2 * i], r[2 * i + 1], ATTNFAST_UNPACK_LO32);
    t[2 * i + 1] = __builtin_shufflevector(r[2 * i], r[2 * i + 1], ATTNFAST_UNPACK_HI32);
  }
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) {  // U_{4q + k}: column 4 L + k of rows 4q .. 4q + 3
    const AttnWords16 a = t[4 * q], b = t[4 * q + 1], c = t[4 * q + 2], d = t[4 * q + 3];
    r[4 * q + 0] = __builtin_shufflevector(a, c, ATTNFAST_UNPACK_LO64);
    r[4 * q + 1] = __builtin_shufflevector(a, c, ATTNFAST_UNPACK_HI64);
    r[4 * q + 2] = __builtin_shufflevector(b, d, ATTNFAST_UNPACK_LO64);
    r[4 * q + 3] = __builtin_shufflevector(b, d, ATTNFAST_UNPACK_HI64);
  }
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) {  // A..D = U_k, U_{4+k}, U_{8+k}, U_{12+k}
    const AttnWords16 x0 = __builtin_shufflevector(r[k], r[4 + k], ATTNFAST_LANES_01_01);
    const AttnWords16 x1 = __builtin_shufflevector(r[k], r[4 + k], ATTNFAST_LANES_23_23);
    const AttnWords16 y0 = __builtin_shufflevector(r[8 + k], r[12 + k], ATTNFAST_LANES_01_01);
    const AttnWords16 y1 = __builtin_shufflevector(r[8 + k], r[12 + k], ATTNFAST_LANES_23_23);
    out[k] = __builtin_shufflevector(x0, y0, ATTNFAST_LANES_02_02);       // [A0 B0 C0 D0]
    out[4 + k] = __builtin_shufflevector(x0, y0, ATTNFAST_LANES_13_13);   // [A1 B1 C1 D1]
    out[8 + k] = __builtin_shufflevector(x1, y1, ATTNFAST_LANES_02_02);   // [A2 B2 C2 D2]
    out[12 + k] = __builtin_shufflevector(x1, y1, ATTNFAST_LANES_13_13);  // [A3 B3 C3 D3]
  }
}
#undef ATTNFAST_UNPACK_LO32
#undef ATTNFAST_UNPACK_HI32
#undef ATTNFAST_UNPACK_LO64
#undef ATTNFAST_UNPACK_HI64
#undef ATTNFAST_LANES_01_01
#undef ATTNFAST_LANES_23_23
#undef ATTNFAST_LANES_02_02
#undef ATTNFAST_LANES_13_13

// dst[j * ldd + i] = word j of src row i (a 16 x 16 block of 32-bit words).
ATTNFAST_INLINE void attn_transpose16x16(const char* src, int64_t src_stride, uint32_t* dst,
                                         int64_t ldd) {
  AttnWords16 out[16];
  attn_transpose16x16_regs(src, src_stride, out);
#pragma GCC unroll 16
  for (int j = 0; j < 16; ++j) __builtin_memcpy(dst + j * ldd, &out[j], sizeof out[j]);
}

// dst[j * ldd + i] = bf16(src[i * lds + j]) for a 16 x 16 block, rounded to nearest even by
// vcvtneps2bf16 (which flushes fp32 denormals to zero; the bf16 GEMM, vdpbf16ps, treats
// denormal inputs as zero anyway, so the products are the same as with from_f32).
ATTNFAST_INLINE void attn_transpose16x16(const float* src, int64_t lds, bf16_t* dst, int64_t ldd) {
  AttnWords16 out[16];
  attn_transpose16x16_regs(reinterpret_cast<const char*>(src), lds * 4, out);
#pragma GCC unroll 16
  for (int j = 0; j < 16; ++j) {
    const __m256bh h = _mm512_cvtneps_pbh(reinterpret_cast<__m512&>(out[j]));
    __builtin_memcpy(dst + j * ldd, &h, sizeof h);
  }
}

// dst[j * ldd + i] = src[i * lds + j], fp32.
ATTNFAST_INLINE void attn_transpose16x16(const float* src, int64_t lds, float* dst, int64_t ldd) {
  attn_transpose16x16(reinterpret_cast<const char*>(src), lds * 4, reinterpret_cast<uint32_t*>(dst),
                      ldd);
}

template <typename T>
void attn_gemm_avx512(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
                      int64_t ps, float* C, int64_t ldc, bool accumulate) {
  constexpr int64_t NC = 16 * kAttnNV;
  static_assert(NC == kAttnPanel, "one register tile row spans one B panel");
  constexpr int64_t ldb = sizeof(T) == 4 ? kAttnPanel : 2 * kAttnPanel;  // within a panel
  for (int64_t n0 = 0; n0 < N; n0 += NC) {
    const int64_t nw = N - n0 < NC ? N - n0 : NC;
    const int nv = static_cast<int>((nw + 15) / 16);
    const __mmask16 last = (nw % 16) ? static_cast<__mmask16>((1u << (nw % 16)) - 1) : 0xFFFF;
    if (K == 0 && !accumulate) {
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < nw; ++n) C[m * ldc + n0 + n] = 0.f;
    }
    for (int64_t k0 = 0; k0 < K; k0 += kAttnKC) {
      const int64_t kc = K - k0 < kAttnKC ? K - k0 : kAttnKC;
      const bool load_c = accumulate || k0 > 0;
      const T* bp = attn_b_at(B, ps, k0, n0);
      for (int64_t m0 = 0; m0 < M; m0 += kAttnMR) {
        const int mv = static_cast<int>(M - m0 < kAttnMR ? M - m0 : kAttnMR);
        const T* ap = A + m0 * lda + k0;
        float* cp = C + m0 * ldc + n0;
        switch (nv) {
          case 4: attn_micro<T, 4>(kc, ap, lda, mv, bp, ldb, cp, ldc, last, load_c); break;
          case 3: attn_micro<T, 3>(kc, ap, lda, mv, bp, ldb, cp, ldc, last, load_c); break;
          case 2: attn_micro<T, 2>(kc, ap, lda, mv, bp, ldb, cp, ldc, last, load_c); break;
          default: attn_micro<T, 1>(kc, ap, lda, mv, bp, ldb, cp, ldc, last, load_c); break;
        }
      }
    }
  }
}

#endif  // ATTNFAST_ATTN_AVX512

template <typename T>
ATTNFAST_INLINE void attn_gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda,
                               const T* B, int64_t ps, float* C, int64_t ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return;
#if ATTNFAST_ATTN_AVX512
  attn_gemm_avx512<T>(M, N, K, A, lda, B, ps, C, ldc, accumulate);
#else
  attn_gemm_generic<T>(M, N, K, A, lda, B, ps, C, ldc, accumulate);
#endif
}
