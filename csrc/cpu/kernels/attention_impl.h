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
// Backward, one task = (batch b, key blocks kb_begin, kb_begin + step, ...): for each key
//   block, loop over the query blocks that see it; P = exp(s - lse) recomputed (same GEMM, same
//   order as the forward, so the same s), dP = dO V^T, dS = P (dP - Delta) (dropout applied to
//   P and dP with the forward's Philox mask), then dV += P^T dO, dK += scale dS^T Q in fp32
//   tiles owned by the task, and dQ += scale dS K into the task's own fp32 dQ buffer (the first
//   product into a query block overwrites it, so the buffers need no zeroing; the glue sums, per
//   query block, the buffers that were written, in a fixed order: no atomics, bitwise repeatable).
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

template <typename T>
void attn_pack_t_typed(const T* src, int64_t ld, int64_t rows, int64_t cols, T* dst, int64_t ldd,
                       int64_t r_begin, int64_t r_end) {
  for (int64_t r0 = r_begin; r0 < r_end; r0 += 16) {
    const int64_t r1 = r0 + 16 < r_end ? r0 + 16 : r_end;
    if constexpr (sizeof(T) == 4) {
      for (int64_t c = 0; c < cols; ++c)
        for (int64_t r = r0; r < r1; ++r) dst[c * ldd + r] = src[r * ld + c];
    } else {
      // VNNI: the pair (src[r][2p], src[r][2p + 1]) is one 32-bit word, stored at column r of
      // pair row p; an odd last column pairs with 0.
      const int64_t pairs = cols / 2;
      for (int64_t p = 0; p < pairs; ++p)
        for (int64_t r = r0; r < r1; ++r) {
          const uint32_t w = attn_load_pair(src + r * ld + 2 * p);
          __builtin_memcpy(dst + p * ldd + 2 * r, &w, sizeof w);
        }
      if (cols & 1)
        for (int64_t r = r0; r < r1; ++r) {
          dst[pairs * ldd + 2 * r] = src[r * ld + cols - 1];
          dst[pairs * ldd + 2 * r + 1] = bf16_t{0};
        }
    }
  }
  (void)rows;
}

// bf16 only: B[r][c] = src[r][c] as VNNI pair rows; [r_begin, r_end) are even (pair aligned).
void attn_pack_n_bf16(const bf16_t* src, int64_t ld, int64_t rows, int64_t cols, bf16_t* dst,
                      int64_t ldd, int64_t r_begin, int64_t r_end) {
  for (int64_t r = r_begin; r < r_end; r += 2) {
    const bf16_t* s0 = src + r * ld;
    const bf16_t* s1 = r + 1 < rows ? s0 + ld : nullptr;
    bf16_t* d = dst + (r / 2) * ldd;
    for (int64_t c = 0; c < cols; ++c) {
      d[2 * c] = s0[c];
      d[2 * c + 1] = s1 ? s1[c] : bf16_t{0};
    }
  }
}

void attn_pack_t(DType dt, const void* src, int64_t ld, int64_t rows, int64_t cols, void* dst,
                 int64_t ldd, int64_t r_begin, int64_t r_end) {
  if (dt == DType::bf16)
    attn_pack_t_typed<bf16_t>(static_cast<const bf16_t*>(src), ld, rows, cols,
                              static_cast<bf16_t*>(dst), ldd, r_begin, r_end);
  else
    attn_pack_t_typed<float>(static_cast<const float*>(src), ld, rows, cols,
                             static_cast<float*>(dst), ldd, r_begin, r_end);
}

void attn_pack_n(DType dt, const void* src, int64_t ld, int64_t rows, int64_t cols, void* dst,
                 int64_t ldd, int64_t r_begin, int64_t r_end) {
  if (dt == DType::bf16) {
    attn_pack_n_bf16(static_cast<const bf16_t*>(src), ld, rows, cols, static_cast<bf16_t*>(dst),
                     ldd, r_begin, r_end);
    return;
  }
  // fp32: a copy with the padded row stride of attn_b_ld (no L1 set aliasing).
  const float* s = static_cast<const float*>(src);
  float* d = static_cast<float*>(dst);
  for (int64_t r = r_begin; r < r_end; ++r) __builtin_memcpy(d + r * ldd, s + r * ld, cols * sizeof(float));
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
    attn_gemm<T>(mq, nk, a.D, Q, a.sqr, attn_b_at<T>(Kt, a.ldkt, 0, j0), a.ldkt, S, lds, false);
    for (int64_t r = 0; r < mq; ++r) {
      const int64_t i = i0 + r;
      const int64_t lim = a.causal ? i + off - j0 + 1 : nk;  // visible columns [0, lim)
      const int64_t nvis = lim < 0 ? 0 : (lim < nk ? lim : nk);
      float* s = S + r * lds;
      const float* bp = a.bias ? a.bias + b * a.sbb + i * a.sbq + j0 * a.sbk : nullptr;
      float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
      for (int64_t c = 0; c < nk; ++c) {
        float x = s[c] * a.scale + (bp ? bp[c * a.sbk] : 0.f);
        x = c < nvis ? x : -INFINITY;
        s[c] = x;
        mx = x > mx ? x : mx;
      }
      const float m_new = mrow[r] > mx ? mrow[r] : mx;
      T* prow = P + r * lds;
      if (m_new == -INFINITY) {  // nothing visible yet in this row: P = 0, state unchanged
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
    attn_gemm<T>(mq, a.Dv, nk, Pa, lds, attn_b_at<T>(V, a.ldv, j0, 0), a.ldv, O, ldo, true);
  }
  T* out = static_cast<T*>(a.out) + b * a.sob + i0 * a.sor;
  float* lse = a.lse + b * a.Lq + i0;
  for (int64_t r = 0; r < mq; ++r) {
    const float l = lrow[r];
    const float inv = l > 0.f ? 1.f / l : 0.f;
    const float* o = O + r * ldo;
    T* dst = out + r * a.sor;
#pragma omp simd
    for (int64_t c = 0; c < a.Dv; ++c) dst[c] = from_f32<T>(o[c] * inv);
    lse[r] = l > 0.f ? mrow[r] + std::log(l) : -INFINITY;
  }
}

void attn_forward(const AttnFwdArgs& a, int64_t b, int64_t qb, float* scratch) {
  if (a.dtype == DType::bf16)
    attn_forward_typed<bf16_t>(a, b, qb, scratch);
  else
    attn_forward_typed<float>(a, b, qb, scratch);
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
      attn_gemm<T>(mq, nk, a.D, Q + i0 * a.sqr, a.sqr, attn_b_at<T>(Kt, a.ldkt, 0, j0), a.ldkt,
                   S, ldt, false);
      attn_gemm<T>(mq, nk, a.Dv, dO + i0 * a.sdr, a.sdr, attn_b_at<T>(Vt, a.ldvt, 0, j0),
                   a.ldvt, dP, ldt, false);
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
        // exp(-inf - lse) = 0 for a -inf bias. dS = P (dP_dropped - Delta).
#pragma omp simd
        for (int64_t c = 0; c < nk; ++c) {
          const float x = s[c] * a.scale + (bp ? bp[c * a.sbk] : 0.f);
          const float p = c < nvis ? math::exp_f32(x - l) : 0.f;
          float pd = p, dpd = dp[c];
          if (dropout) {
            const bool keep = philox::keep(a.seed, base + static_cast<uint64_t>(c), threshold);
            pd = keep ? p * dscale : 0.f;
            dpd = keep ? dpd * dscale : 0.f;
          }
          s[c] = pd;
          dp[c] = p * (dpd - dl) * a.scale;
        }
        for (int64_t c = 0; c < nk; ++c) {
          PdT[c * ldtt + r] = from_f32<T>(s[c]);
          dSsT[c * ldtt + r] = from_f32<T>(dp[c]);
        }
        T* dsr = dSs + r * ldt;
#pragma omp simd
        for (int64_t c = 0; c < nk; ++c) dsr[c] = from_f32<T>(dp[c]);
      }
      attn_gemm<T>(nk, a.Dv, mq, PdT, ldtt, attn_b_at<T>(dOn, a.lddon, i0, 0), a.lddon, dV, ldv, true);
      attn_gemm<T>(nk, a.D, mq, dSsT, ldtt, attn_b_at<T>(Qn, a.ldqn, i0, 0), a.ldqn, dK, ldk, true);
      uint8_t& dq_valid = a.dq_touched[i0 / a.bq];
      attn_gemm<T>(mq, a.D, nk, dSs, ldt, attn_b_at<T>(Kn, a.ldkn, j0, 0), a.ldkn,
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

extern const AttentionKernels attention_kernels;
const AttentionKernels attention_kernels{&attn_pack_t, &attn_pack_n, &attn_forward,
                                         &attn_backward};

#undef ATTNFAST_ATTN_AVX512
#undef ATTNFAST_ATTN_LEVEL
