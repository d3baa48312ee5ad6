// Flash-style single-head attention on the CPU, included once per ISA inside namespace
// attnfast::cpu::<isa> (isa_kernels.h). No include guard on purpose.
//
// Forward, one task = (batch b, block of bq query rows): stream key blocks of bk keys;
//   S = Q K^T (tile GEMM over D), s = scale S + bias, masked -> -inf; online softmax with a
//   running max m and sum l per row (fp32): O <- O exp(m_old - m_new) + P V. The (bq x Dv)
//   fp32 accumulator O lives in L2 (256 KiB at bq = 64, Dv = 1024), so D is not split: on a
//   CPU the "accumulator" is cache, not registers (the GPU kernels split Dv instead).
//   Causal key blocks entirely past the block's last visible key are never visited; only the
//   block straddling the diagonal is masked element by element.
//   out = O / l, lse = m + log(l); l == 0 (every key masked) gives out 0, lse -inf.
//   Keeping the probabilities (a.probs): each block's scores s go to the probs rows as they are
//   computed, and once the task knows its rows' lse they become P = exp(s - lse) in place --
//   the very expression the backward would recompute, from the same s (the same tile GEMM over
//   D), so the kept P equal the recomputed ones and the two backward paths agree.
// Backward, one task = (batch b, key blocks kb_begin, kb_begin + step, ...): for each key
//   block, loop over the query blocks that see it; P = exp(s - lse) recomputed (same GEMM, same
//   order as the forward, so the same s), dP = dO V^T, dS = P (dP - Delta) (dropout applied to
//   P and dP with the forward's Philox mask), then dV += P^T dO, dK += scale dS^T Q in fp32
//   tiles owned by the task, and dQ += scale dS K into the task's own fp32 dQ buffer (the first
//   product into a query block overwrites it, so the buffers need no zeroing; the glue sums, per
//   query block, the buffers that were written, in a fixed order: no atomics, bitwise repeatable).
//   With the forward's kept P (a.probs) the S = Q K^T GEMM and the exp are skipped: P is read.
// bf16: the tile GEMMs multiply bf16 operands with fp32 accumulation (vdpbf16ps); P and dS are
// rounded to bf16 before their GEMMs, as flash attention does on GPUs.

#define ATTNFAST_ATTN_CAT_(a, b) a##b
#define ATTNFAST_ATTN_CAT(a, b) ATTNFAST_ATTN_CAT_(a, b)
#define ATTNFAST_ATTN_LEVEL_base 0
#define ATTNFAST_ATTN_LEVEL_avx2 1
#define ATTNFAST_ATTN_LEVEL_avx512 2
#define ATTNFAST_ATTN_LEVEL ATTNFAST_ATTN_CAT(ATTNFAST_ATTN_LEVEL_, ATTNFAST_CPU_ISA)

#include "cpu/kernels/attention_gemm.h"

// ---- operand packing ------------------------------------------------------------------------
// Both write panel-major B operands (kernels/attention.h): element (k, n) of the operand at
// attn_b_at(dst, ps, k, n); for bf16 the pair (k, k + 1) of column n is one 32-bit word.

// B[k][n] = src[n][k] (contraction over src's columns): K^T, V^T. In 32-bit words (an fp32
// element, or a bf16 pair (src[r][2u], src[r][2u + 1]); an odd last bf16 column pairs with 0)
// this is a plain transpose: word u of src row r goes to word row u, column r. Rows [r_begin,
// r_end) of src are packed 16 at a time (a 16-aligned run never crosses a panel); with AVX-512
// a full 16 x 16 block of words is one register transpose, the rest word by word.
template <typename T>
void attn_pack_t_typed(const T* src, int64_t ld, int64_t cols, T* dst, int64_t ps,
                       int64_t r_begin, int64_t r_end) {
  constexpr int64_t per_word = 4 / sizeof(T);  // elements of T per 32-bit word
  const int64_t words = cols / per_word;        // whole words per src row
  const int64_t row_bytes = ld * static_cast<int64_t>(sizeof(T));
  for (int64_t r0 = r_begin; r0 < r_end; r0 = (r0 / 16 + 1) * 16) {
    const int64_t r1 = (r0 / 16 + 1) * 16 < r_end ? (r0 / 16 + 1) * 16 : r_end;
    uint32_t* d = reinterpret_cast<uint32_t*>(attn_b_at(dst, ps, 0, r0));  // word row u: + u * 64
    const char* s = reinterpret_cast<const char*>(src + r0 * ld);
    int64_t u = 0;
#if ATTNFAST_ATTN_AVX512
    if (r1 - r0 == 16)
      for (; u + 16 <= words; u += 16)
        attn_transpose16x16(s + 4 * u, row_bytes, d + u * kAttnPanel, kAttnPanel);
#endif
    for (; u < words; ++u)
      for (int64_t r = r0; r < r1; ++r) {
        uint32_t w;
        __builtin_memcpy(&w, s + (r - r0) * row_bytes + 4 * u, sizeof w);
        d[u * kAttnPanel + (r - r0)] = w;
      }
    if constexpr (per_word == 2) {
      if (cols & 1)
        for (int64_t r = r0; r < r1; ++r)
          d[words * kAttnPanel + (r - r0)] = src[r * ld + cols - 1].bits;  // high half 0
    }
  }
}

// B[r][c] = src[r][c] (contraction over src's rows): V, Q, dO, K. Rows [r_begin, r_end) (even
// for bf16: pair aligned) are packed, each cut into its panels' 64-column pieces.
template <typename T>
void attn_pack_n_typed(const T* src, int64_t ld, int64_t rows, int64_t cols, T* dst, int64_t ps,
                       int64_t r_begin, int64_t r_end) {
  for (int64_t c0 = 0; c0 < cols; c0 += kAttnPanel) {
    const int64_t w = cols - c0 < kAttnPanel ? cols - c0 : kAttnPanel;
    if constexpr (sizeof(T) == 4) {
      for (int64_t r = r_begin; r < r_end; ++r)
        __builtin_memcpy(attn_b_at(dst, ps, r, c0), src + r * ld + c0, w * sizeof(T));
    } else {
      for (int64_t r = r_begin; r < r_end; r += 2) {
        const uint16_t* s0 = reinterpret_cast<const uint16_t*>(src + r * ld + c0);
        uint32_t* d = reinterpret_cast<uint32_t*>(attn_b_at(dst, ps, r, c0));
        if (r + 1 < rows) {
          const uint16_t* s1 = reinterpret_cast<const uint16_t*>(src + (r + 1) * ld + c0);
#pragma omp simd
          for (int64_t c = 0; c < w; ++c) d[c] = uint32_t(s0[c]) | (uint32_t(s1[c]) << 16);
        } else {  // odd K: the pad row is zero
#pragma omp simd
          for (int64_t c = 0; c < w; ++c) d[c] = s0[c];
        }
      }
    }
  }
}

void attn_pack_t(DType dt, const void* src, int64_t ld, int64_t rows, int64_t cols, void* dst,
                 int64_t ps, int64_t r_begin, int64_t r_end) {
  (void)rows;
  if (dt == DType::bf16)
    attn_pack_t_typed<bf16_t>(static_cast<const bf16_t*>(src), ld, cols,
                              static_cast<bf16_t*>(dst), ps, r_begin, r_end);
  else
    attn_pack_t_typed<float>(static_cast<const float*>(src), ld, cols, static_cast<float*>(dst),
                             ps, r_begin, r_end);
}

void attn_pack_n(DType dt, const void* src, int64_t ld, int64_t rows, int64_t cols, void* dst,
                 int64_t ps, int64_t r_begin, int64_t r_end) {
  if (dt == DType::bf16)
    attn_pack_n_typed<bf16_t>(static_cast<const bf16_t*>(src), ld, rows, cols,
                              static_cast<bf16_t*>(dst), ps, r_begin, r_end);
  else
    attn_pack_n_typed<float>(static_cast<const float*>(src), ld, rows, cols,
                             static_cast<float*>(dst), ps, r_begin, r_end);
}

// ---- scores ---------------------------------------------------------------------------------

// s[c] <- scale * s[c] + bias[c * sbk] (no bias: scale * s[c]) for the visible columns
// c < nvis. The forward and the backward both call this, so the backward recomputes exactly the
// forward's scores. One branch per row, not per element: a conditional load inside the loop
// kept GCC from vectorising it (the whole softmax ran scalar).
ATTNFAST_INLINE void attn_scores_row(float* s, int64_t nvis, float scale, const float* bias,
                                     int64_t sbk) {
  if (bias == nullptr) {
#pragma omp simd
    for (int64_t c = 0; c < nvis; ++c) s[c] = s[c] * scale;
  } else if (sbk == 1) {
#pragma omp simd
    for (int64_t c = 0; c < nvis; ++c) s[c] = s[c] * scale + bias[c];
  } else {  // broadcast (sbk == 0) or strided mask
#pragma omp simd
    for (int64_t c = 0; c < nvis; ++c) s[c] = s[c] * scale + bias[c * sbk];
  }
}

// ---- forward --------------------------------------------------------------------------------

template <typename T>
void attn_forward_typed(const AttnFwdArgs& a, int64_t b, int64_t qb, float* scratch) {
  const int64_t i0 = qb * a.bq;
  const int64_t mq = a.Lq - i0 < a.bq ? a.Lq - i0 : a.bq;
  const int64_t off = a.Lk - a.Lq;  // bottom-right alignment: query i sees keys j <= i + off
  int64_t kend = a.Lk;
  if (a.causal) {
    const int64_t last = i0 + mq - 1 + off + 1;  // one past the last key any row here sees
    kend = last < 0 ? 0 : (last < a.Lk ? last : a.Lk);
  }
  const int64_t lds = attn_a_ld(a.bk), ldo = attn_a_ld(a.Dv);
  float* S = scratch;
  T* P = reinterpret_cast<T*>(S + a.bq * lds);
  float* O = S + 2 * a.bq * lds;
  float* mrow = O + a.bq * ldo;
  float* lrow = mrow + a.bq;
  for (int64_t r = 0; r < mq; ++r) {
    mrow[r] = -INFINITY;
    lrow[r] = 0.f;
    for (int64_t c = 0; c < a.Dv; ++c) O[r * ldo + c] = 0.f;
  }
  const T* Q = static_cast<const T*>(a.q) + b * a.sqb + i0 * a.sqr;
  const T* Kt = static_cast<const T*>(a.kt);
  const T* V = static_cast<const T*>(a.v);
  const bool dropout = a.dropout_p > 0.0;
  const uint32_t threshold = philox::keep_threshold(a.dropout_p);
  const float dscale = static_cast<float>(1.0 / (1.0 - a.dropout_p));

  for (int64_t j0 = 0; j0 < kend; j0 += a.bk) {
    const int64_t nk = kend - j0 < a.bk ? kend - j0 : a.bk;
    attn_gemm<T>(mq, nk, a.D, Q, a.sqr, attn_b_at(Kt, a.pkt, 0, j0), a.pkt, S, lds, false);
    for (int64_t r = 0; r < mq; ++r) {
      const int64_t i = i0 + r;
      const int64_t lim = a.causal ? i + off - j0 + 1 : nk;  // visible columns [0, lim)
      const int64_t nvis = lim < 0 ? 0 : (lim < nk ? lim : nk);
      float* s = S + r * lds;
      const float* bp = a.bias ? a.bias + b * a.sbb + i * a.sbq + j0 * a.sbk : nullptr;
      attn_scores_row(s, nvis, a.scale, bp, a.sbk);
      float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
      for (int64_t c = 0; c < nvis; ++c) mx = s[c] > mx ? s[c] : mx;
      for (int64_t c = nvis; c < nk; ++c) s[c] = -INFINITY;
      if (a.probs != nullptr)  // the scores, turned into P = exp(s - lse) after the last block
        __builtin_memcpy(a.probs + (b * a.Lq + i) * a.Lk + j0, s, nk * sizeof(float));
      const float m_new = mrow[r] > mx ? mrow[r] : mx;
      T* prow = P + r * lds;
      if (m_new == -INFINITY) {  // nothing visible yet in this row: P = 0, state unchanged
        // ... unless a visible score is NaN (the max above skips NaN): then the row is NaN, as
        // torch's softmax gives, through l (NaN propagates through every later block).
        for (int64_t c = 0; c < nvis; ++c)
          if (s[c] != s[c]) lrow[r] = s[c];
        for (int64_t c = 0; c < nk; ++c) {
          s[c] = 0.f;  // the fp32 path multiplies S itself by V
          prow[c] = from_f32<T>(0.f);
        }
        continue;
      }
      // Numerics: every exponent is <= 0 (s - m_new), so exp never overflows; alpha rescales
      // the earlier partial sums to the new maximum (exp(-inf) = 0 on the first block).
      const float alpha = math::exp_f32(mrow[r] - m_new);
      float sum = 0.f;
#pragma omp simd reduction(+ : sum)
      for (int64_t c = 0; c < nk; ++c) {
        const float p = math::exp_f32(s[c] - m_new);
        s[c] = p;
        sum += p;
      }
      lrow[r] = lrow[r] * alpha + sum;  // l sums the undropped weights: dropout is after softmax
      mrow[r] = m_new;
      if (alpha != 1.f) {
        float* o = O + r * ldo;
#pragma omp simd
        for (int64_t c = 0; c < a.Dv; ++c) o[c] *= alpha;
      }
      if (dropout) {
        const uint64_t base = (static_cast<uint64_t>(b) * a.Lq + i) * a.Lk + j0;
#pragma omp simd
        for (int64_t c = 0; c < nk; ++c) {
          const bool keep = philox::keep(a.seed, base + static_cast<uint64_t>(c), threshold);
          s[c] = keep ? s[c] * dscale : 0.f;
        }
      }
      if constexpr (sizeof(T) != 4) {
#pragma omp simd
        for (int64_t c = 0; c < nk; ++c) prow[c] = from_f32<T>(s[c]);
      }
    }
    const T* Pa = sizeof(T) == 4 ? reinterpret_cast<const T*>(S) : P;
    attn_gemm<T>(mq, a.Dv, nk, Pa, lds, attn_b_at(V, a.pv, j0, 0), a.pv, O, ldo, true);
  }
  T* out = static_cast<T*>(a.out) + b * a.sob + i0 * a.sor;
  float* lse = a.lse + b * a.Lq + i0;
  for (int64_t r = 0; r < mq; ++r) {
    const float l = lrow[r];
    // l > 0: a softmax row; l == 0: a fully masked row (output 0, lse -inf); l NaN: a NaN score
    // somewhere in the row, which the output and lse carry, as torch's softmax does.
    const float inv = l > 0.f ? 1.f / l : (l != l ? l : 0.f);
    const float* o = O + r * ldo;
    T* dst = out + r * a.sor;
#pragma omp simd
    for (int64_t c = 0; c < a.Dv; ++c) dst[c] = from_f32<T>(o[c] * inv);
    lse[r] = l > 0.f ? mrow[r] + std::log(l) : (l != l ? l : -INFINITY);
  }
  if (a.probs != nullptr) {
    // P = exp(s - lse) over the keys each row sees, 0 elsewhere and on a fully masked row: the
    // backward's recomputation exactly (same visibility rule, same exp). Keys past kend were
    // never scored; every row's visible keys end before kend.
    for (int64_t r = 0; r < mq; ++r) {
      const int64_t i = i0 + r;
      const float l = lse[r];
      const int64_t lim = a.causal ? i + off + 1 : a.Lk;
      const int64_t nvis = l == -INFINITY ? 0 : (lim < 0 ? 0 : (lim < a.Lk ? lim : a.Lk));
      float* p = a.probs + (b * a.Lq + i) * a.Lk;
#pragma omp simd
      for (int64_t c = 0; c < nvis; ++c) p[c] = math::exp_f32(p[c] - l);
      for (int64_t c = nvis; c < a.Lk; ++c) p[c] = 0.f;
    }
  }
}

void attn_forward(const AttnFwdArgs& a, int64_t b, int64_t qb, float* scratch) {
  if (a.dtype == DType::bf16)
    attn_forward_typed<bf16_t>(a, b, qb, scratch);
  else
    attn_forward_typed<float>(a, b, qb, scratch);
}

// dst[c * ldd + r] = T(src[r * lds + c]) for r < rows, c < cols: the backward's P^T and dS^T
// tiles (A operands of dV += P^T dO and dK += dS^T Q), 16 x 16 register blocks under AVX-512.
template <typename T>
void attn_transpose_tile(const float* src, int64_t lds, int64_t rows, int64_t cols, T* dst,
                         int64_t ldd) {
  for (int64_t r0 = 0; r0 < rows; r0 += 16)
    for (int64_t c0 = 0; c0 < cols; c0 += 16) {
#if ATTNFAST_ATTN_AVX512
      if (r0 + 16 <= rows && c0 + 16 <= cols) {
        attn_transpose16x16(src + r0 * lds + c0, lds, dst + c0 * ldd + r0, ldd);
        continue;
      }
#endif
      const int64_t r1 = rows - r0 < 16 ? rows : r0 + 16, c1 = cols - c0 < 16 ? cols : c0 + 16;
      for (int64_t c = c0; c < c1; ++c)
        for (int64_t r = r0; r < r1; ++r) dst[c * ldd + r] = from_f32<T>(src[r * lds + c]);
    }
}

// ---- backward -------------------------------------------------------------------------------

template <typename T>
void attn_backward_typed(const AttnBwdArgs& a, int64_t b, int64_t kb_begin, int64_t kb_step,
                         float* scratch) {
  const int64_t off = a.Lk - a.Lq;
  const int64_t ldt = attn_a_ld(a.bk);   // row stride of (bq x bk) tiles
  const int64_t ldtt = attn_a_ld(a.bq);  // row stride of (bk x bq) tiles
  const int64_t tile = attn_a_ld(a.bq) * attn_a_ld(a.bk);
  float* S = scratch;                                  // scores, then P (fp32)
  float* dP = S + tile;                                // dO V^T
  T* PdT = reinterpret_cast<T*>(dP + tile);            // dropout(P)^T     (bk x bq)
  T* dSs = reinterpret_cast<T*>(dP + 2 * tile);        // scale dS         (bq x bk)
  T* dSsT = reinterpret_cast<T*>(dP + 3 * tile);       // scale dS^T       (bk x bq)
  const int64_t ldk = attn_a_ld(a.D), ldv = attn_a_ld(a.Dv);
  float* dK = dP + 4 * tile;                           // (bk x D) fp32
  float* dV = dK + a.bk * ldk;                         // (bk x Dv) fp32
  const T* Q = static_cast<const T*>(a.q) + b * a.sqb;
  const T* dO = static_cast<const T*>(a.dout) + b * a.sdb;
  const T* Kt = static_cast<const T*>(a.kt);
  const T* Vt = static_cast<const T*>(a.vt);
  const T* Qn = static_cast<const T*>(a.qn);
  const T* dOn = static_cast<const T*>(a.don);
  const T* Kn = static_cast<const T*>(a.kn);
  const float* lse = a.lse + b * a.Lq;
  const float* delta = a.delta + b * a.Lq;
  const bool dropout = a.dropout_p > 0.0;
  const uint32_t threshold = philox::keep_threshold(a.dropout_p);
  const float dscale = static_cast<float>(1.0 / (1.0 - a.dropout_p));
  const int64_t nkb = (a.Lk + a.bk - 1) / a.bk;

  for (int64_t kb = kb_begin; kb < nkb; kb += kb_step) {
    const int64_t j0 = kb * a.bk;
    const int64_t nk = a.Lk - j0 < a.bk ? a.Lk - j0 : a.bk;
    for (int64_t j = 0; j < nk; ++j) {
      for (int64_t c = 0; c < a.D; ++c) dK[j * ldk + c] = 0.f;
      for (int64_t c = 0; c < a.Dv; ++c) dV[j * ldv + c] = 0.f;
    }
    // The first query that sees key j0: i + off >= j0.
    const int64_t qfirst = a.causal ? (j0 - off > 0 ? j0 - off : 0) : 0;
    for (int64_t i0 = (qfirst / a.bq) * a.bq; i0 < a.Lq; i0 += a.bq) {
      const int64_t mq = a.Lq - i0 < a.bq ? a.Lq - i0 : a.bq;
      if (a.probs == nullptr)  // else P is read from the forward's kept probs below
        attn_gemm<T>(mq, nk, a.D, Q + i0 * a.sqr, a.sqr, attn_b_at(Kt, a.pkt, 0, j0), a.pkt,
                     S, ldt, false);
      attn_gemm<T>(mq, nk, a.Dv, dO + i0 * a.sdr, a.sdr, attn_b_at(Vt, a.pvt, 0, j0), a.pvt,
                   dP, ldt, false);
      for (int64_t r = 0; r < mq; ++r) {
        const int64_t i = i0 + r;
        const float l = lse[i], dl = delta[i];
        const int64_t lim = a.causal ? i + off - j0 + 1 : nk;
        const int64_t nvis = l == -INFINITY ? 0 : (lim < 0 ? 0 : (lim < nk ? lim : nk));
        const float* bp = a.bias ? a.bias + b * a.sbb + i * a.sbq + j0 * a.sbk : nullptr;
        float* s = S + r * ldt;
        float* dp = dP + r * ldt;
        const uint64_t base = (static_cast<uint64_t>(b) * a.Lq + i) * a.Lk + j0;
        // P = exp(s - lse) <= 1 (s is computed exactly as in the forward); masked -> 0, and
        // exp(-inf - lse) = 0 for a -inf bias. Or the forward's kept P, the same values.
        // dS = P (dP_dropped - Delta).
        if (a.probs != nullptr) {
          __builtin_memcpy(s, a.probs + (b * a.Lq + i) * a.Lk + j0, nvis * sizeof(float));
        } else {
          attn_scores_row(s, nvis, a.scale, bp, a.sbk);
#pragma omp simd
          for (int64_t c = 0; c < nvis; ++c) s[c] = math::exp_f32(s[c] - l);
        }
        if (!dropout) {
#pragma omp simd
          for (int64_t c = 0; c < nvis; ++c) {
            const float p = s[c];
            dp[c] = p * (dp[c] - dl) * a.scale;
          }
        } else {
#pragma omp simd
          for (int64_t c = 0; c < nvis; ++c) {
            const float p = s[c];
            const bool keep = philox::keep(a.seed, base + static_cast<uint64_t>(c), threshold);
            s[c] = keep ? p * dscale : 0.f;
            dp[c] = p * ((keep ? dp[c] * dscale : 0.f) - dl) * a.scale;
          }
        }
        for (int64_t c = nvis; c < nk; ++c) s[c] = dp[c] = 0.f;
        if constexpr (sizeof(T) != 4) {  // fp32 multiplies dP itself by K
          T* dsr = dSs + r * ldt;
#pragma omp simd
          for (int64_t c = 0; c < nk; ++c) dsr[c] = from_f32<T>(dp[c]);
        }
      }
      attn_transpose_tile<T>(S, ldt, mq, nk, PdT, ldtt);
      attn_transpose_tile<T>(dP, ldt, mq, nk, dSsT, ldtt);
      attn_gemm<T>(nk, a.Dv, mq, PdT, ldtt, attn_b_at(dOn, a.pdon, i0, 0), a.pdon, dV, ldv, true);
      attn_gemm<T>(nk, a.D, mq, dSsT, ldtt, attn_b_at(Qn, a.pqn, i0, 0), a.pqn, dK, ldk, true);
      uint8_t& dq_valid = a.dq_touched[i0 / a.bq];
      const T* dSa = sizeof(T) == 4 ? reinterpret_cast<const T*>(dP) : dSs;
      attn_gemm<T>(mq, a.D, nk, dSa, ldt, attn_b_at(Kn, a.pkn, j0, 0), a.pkn,
                   a.dq_acc + i0 * a.D, a.D, /*accumulate=*/dq_valid != 0);
      dq_valid = 1;
    }
    T* dk = static_cast<T*>(a.dk) + (b * a.Lk + j0) * a.D;
    T* dv = static_cast<T*>(a.dv) + (b * a.Lk + j0) * a.Dv;
    for (int64_t j = 0; j < nk; ++j) {
#pragma omp simd
      for (int64_t c = 0; c < a.D; ++c) dk[j * a.D + c] = from_f32<T>(dK[j * ldk + c]);
#pragma omp simd
      for (int64_t c = 0; c < a.Dv; ++c) dv[j * a.Dv + c] = from_f32<T>(dV[j * ldv + c]);
    }
  }
}

void attn_backward(const AttnBwdArgs& a, int64_t b, int64_t kb_begin, int64_t kb_step,
                   float* scratch) {
  if (a.dtype == DType::bf16)
    attn_backward_typed<bf16_t>(a, b, kb_begin, kb_step, scratch);
  else
    attn_backward_typed<float>(a, b, kb_begin, kb_step, scratch);
}

const AttentionKernels attention_kernels{&attn_pack_t, &attn_pack_n, &attn_forward,
                                         &attn_backward};

#undef ATTNFAST_ATTN_AVX512
#undef ATTNFAST_ATTN_LEVEL
