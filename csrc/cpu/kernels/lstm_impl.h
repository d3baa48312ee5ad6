// LSTM recurrence CPU loops, included once per ISA inside namespace attnfast::cpu::<isa>
// (isa_*.cpp); the argument blocks and the partition are in lstm.h.
//
// w_hh is packed once per call, by each thread for its own units only, into panels its
// micro-kernel streams contiguously:
//   forward   [tile of 16 units][k < H][gate][16 lanes] fp32: one step of a tile = B x 64
//             outputs, all four gates of 16 units, so the gate math runs on them at once; for
//             bf16 at B <= 6 on AVX-512 BF16, [tile][k pair][gate][16 lanes][2] bf16 instead
//             (vdpbf16ps: half the bytes where the step streams w_hh);
//   backward  [group of 64 units][r < 4H][64 lanes] fp32: the columns of w_hh a thread owns,
//             for dh_{t-1}[:, own units] = dA_t (B x 4H) @ w_hh[:, own units] (every row r).
// bf16/fp16 weights convert exactly to fp32; fp32 accumulation everywhere.
// Both products are one micro-kernel: out (BB x 64) += a (BB x K) @ panel (K x 64), 4 x BB
// lane-vector accumulators (BB <= 6: 24 of the 32 zmm registers), a broadcast of a per (b, k).
// No include guard on purpose: each isa_*.cpp includes it once, in its own namespace.

constexpr int64_t kLstmMaxRows = 6;   // batch rows per micro-kernel call (accumulator registers)
constexpr int64_t kLstmChunkK = 128;  // k per pass: a 32 KiB slice of a panel stays in L1d
                                      // while every batch block of B > 6 reads it

ATTNFAST_INLINE int64_t lstm_min(int64_t x, int64_t y) { return x < y ? x : y; }

ATTNFAST_INLINE Lanes<float>::V lstm_fma(Lanes<float>::V a, Lanes<float>::V b, Lanes<float>::V c) {
#if ATTNFAST_CPU_GEMM_AVX512
  return reinterpret_cast<Lanes<float>::V>(
      _mm512_fmadd_ps(reinterpret_cast<__m512>(a), reinterpret_cast<__m512>(b),
                      reinterpret_cast<__m512>(c)));
#else
  return a * b + c;
#endif
}

// out[b][0:64] (+)= sum_{k0 <= k < k1} a[b * lda + k] * panel[k][0:64] for b < BB; `init`:
// start from 0 rather than out. The k order is fixed, whoever calls it (determinism).
template <int BB>
void lstm_panel(float* out, int64_t ldo, const float* a, int64_t lda, const float* panel,
                int64_t k0, int64_t k1, bool init) {
  using V = Lanes<float>::V;
  V acc[BB][4];
#pragma GCC unroll 8
  for (int b = 0; b < BB; ++b)
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v)
      acc[b][v] = init ? V{} : lanes_load<V>(out + b * ldo + v * 16);
  for (int64_t k = k0; k < k1; ++k) {
    const float* p = panel + k * kLstmGroup;
    const V w0 = lanes_load<V>(p), w1 = lanes_load<V>(p + 16);
    const V w2 = lanes_load<V>(p + 32), w3 = lanes_load<V>(p + 48);
#pragma GCC unroll 8
    for (int b = 0; b < BB; ++b) {
      const V s = lanes_splat<V>(a[b * lda + k]);
      acc[b][0] = lstm_fma(s, w0, acc[b][0]);
      acc[b][1] = lstm_fma(s, w1, acc[b][1]);
      acc[b][2] = lstm_fma(s, w2, acc[b][2]);
      acc[b][3] = lstm_fma(s, w3, acc[b][3]);
    }
  }
#pragma GCC unroll 8
  for (int b = 0; b < BB; ++b)
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) lanes_store(out + b * ldo + v * 16, acc[b][v]);
}

// out (B x 64, row stride ldo) = a (B x K, row stride lda) @ panel (K x 64).
inline void lstm_panel_rows(float* out, int64_t ldo, const float* a, int64_t lda,
                            const float* panel, int64_t B, int64_t K) {
  for (int64_t k0 = 0; k0 < K; k0 += kLstmChunkK) {
    const int64_t k1 = k0 + kLstmChunkK < K ? k0 + kLstmChunkK : K;
    for (int64_t b0 = 0; b0 < B; b0 += kLstmMaxRows) {
      const int64_t bb = B - b0 < kLstmMaxRows ? B - b0 : kLstmMaxRows;
      float* o = out + b0 * ldo;
      const float* ab = a + b0 * lda;
      switch (bb) {
        case 1: lstm_panel<1>(o, ldo, ab, lda, panel, k0, k1, k0 == 0); break;
        case 2: lstm_panel<2>(o, ldo, ab, lda, panel, k0, k1, k0 == 0); break;
        case 3: lstm_panel<3>(o, ldo, ab, lda, panel, k0, k1, k0 == 0); break;
        case 4: lstm_panel<4>(o, ldo, ab, lda, panel, k0, k1, k0 == 0); break;
        case 5: lstm_panel<5>(o, ldo, ab, lda, panel, k0, k1, k0 == 0); break;
        default: lstm_panel<6>(o, ldo, ab, lda, panel, k0, k1, k0 == 0); break;
      }
    }
  }
}

// bf16 forward on AVX-512 BF16: w_hh stays bf16 in its panels (half the bytes of fp32: 8 MiB at
// H = 1024, what the two L2s hold) and vdpbf16ps multiplies pairs of k exactly, accumulating in
// fp32. h_{t-1} is bf16 already (h is stored in bf16), so the product is the one the fp32
// kernel computes up to the summation order. Panel per tile: [k pair][gate][16 lanes][2 k].
#if ATTNFAST_CPU_GEMM_AVX512
constexpr bool kLstmBf16Dot = true;

template <int BB>
void lstm_panel_bf16(float* out, int64_t ldo, const uint16_t* a, int64_t lda,
                     const uint16_t* panel, int64_t kp0, int64_t kp1, bool init) {
  __m512 acc[BB][4];
#pragma GCC unroll 8
  for (int b = 0; b < BB; ++b)
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v)
      acc[b][v] = init ? _mm512_setzero_ps() : _mm512_loadu_ps(out + b * ldo + v * 16);
  for (int64_t kp = kp0; kp < kp1; ++kp) {
    const uint16_t* p = panel + kp * 2 * kLstmGroup;
    const __m512bh w0 = (__m512bh)_mm512_loadu_si512(p), w1 = (__m512bh)_mm512_loadu_si512(p + 32);
    const __m512bh w2 = (__m512bh)_mm512_loadu_si512(p + 64), w3 = (__m512bh)_mm512_loadu_si512(p + 96);
#pragma GCC unroll 8
    for (int b = 0; b < BB; ++b) {
      int32_t pair;
      __builtin_memcpy(&pair, a + b * lda + 2 * kp, sizeof pair);
      const __m512bh s = (__m512bh)_mm512_set1_epi32(pair);
      acc[b][0] = _mm512_dpbf16_ps(acc[b][0], s, w0);
      acc[b][1] = _mm512_dpbf16_ps(acc[b][1], s, w1);
      acc[b][2] = _mm512_dpbf16_ps(acc[b][2], s, w2);
      acc[b][3] = _mm512_dpbf16_ps(acc[b][3], s, w3);
    }
  }
#pragma GCC unroll 8
  for (int b = 0; b < BB; ++b)
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) _mm512_storeu_ps(out + b * ldo + v * 16, acc[b][v]);
}

// out (B x 64) = a (B x 2 KP bf16, row stride lda) @ panel (KP pairs x 64 x 2).
inline void lstm_panel_rows_bf16(float* out, int64_t ldo, const uint16_t* a, int64_t lda,
                                 const uint16_t* panel, int64_t B, int64_t KP) {
  for (int64_t k0 = 0; k0 < KP; k0 += kLstmChunkK / 2) {
    const int64_t k1 = lstm_min(k0 + kLstmChunkK / 2, KP);
    for (int64_t b0 = 0; b0 < B; b0 += kLstmMaxRows) {
      const int64_t bb = lstm_min(B - b0, kLstmMaxRows);
      float* o = out + b0 * ldo;
      const uint16_t* ab = a + b0 * lda;
      switch (bb) {
        case 1: lstm_panel_bf16<1>(o, ldo, ab, lda, panel, k0, k1, k0 == 0); break;
        case 2: lstm_panel_bf16<2>(o, ldo, ab, lda, panel, k0, k1, k0 == 0); break;
        case 3: lstm_panel_bf16<3>(o, ldo, ab, lda, panel, k0, k1, k0 == 0); break;
        case 4: lstm_panel_bf16<4>(o, ldo, ab, lda, panel, k0, k1, k0 == 0); break;
        case 5: lstm_panel_bf16<5>(o, ldo, ab, lda, panel, k0, k1, k0 == 0); break;
        default: lstm_panel_bf16<6>(o, ldo, ab, lda, panel, k0, k1, k0 == 0); break;
      }
    }
  }
}
#else
constexpr bool kLstmBf16Dot = false;
inline void lstm_panel_rows_bf16(float*, int64_t, const uint16_t*, int64_t, const uint16_t*,
                                 int64_t, int64_t) {}
#endif

// tanh accurate to a few ulp in RELATIVE terms near 0 as well: math::tanh_f32's (1 - e)/(1 + e)
// loses the low bits of tanh(x) to cancellation for small |x| (relative error ~6e-8 / |x|),
// which the fp32 gates' ~1e-6 relative tolerance would not take; below |x| = 0.625 Cephes'
// odd minimax polynomial (tanhf) instead. Both branches are computed: the loop stays a select.
ATTNFAST_INLINE float lstm_tanh(float x) {
  const float z = x * x;
  const float p =
      ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z +
        1.33314422036e-1f) * z - 3.33332819422e-1f) * z * x + x;
  const float ax = x < 0.f ? -x : x;
  return ax < 0.625f ? p : math::tanh_f32(x);
}

ATTNFAST_INLINE float lstm_sigmoid(float x) { return math::sigmoid_f32(x); }

// Runs `f(i)` over [begin, end) ascending, or descending when `down`.
template <typename F>
ATTNFAST_INLINE void lstm_for_order(int64_t begin, int64_t end, bool down, F&& f) {
  if (!down) {
    for (int64_t i = begin; i < end; ++i) f(i);
  } else {
    for (int64_t i = end - 1; i >= begin; --i) f(i);
  }
}

template <typename T>
ATTNFAST_INLINE uint16_t bf16_bits(T v) {
  if constexpr (std::is_same_v<T, bf16_t>) return v.bits;
  else return 0;
}

template <typename T, bool kDot>
void lstm_forward_body(const LstmForwardArgs& a, int tid, int nthreads) {
  const int64_t T_ = a.T, B = a.B, H = a.H, H4 = 4 * H;
  const int64_t Hp = lstm_padded_units(H);
  const int64_t groups = Hp / kLstmGroup;
  const int64_t u0 = lstm_group_begin(groups, tid, nthreads) * kLstmGroup;
  const int64_t u1 = lstm_min(lstm_group_begin(groups, tid + 1, nthreads) * kLstmGroup, H);
  const T* w = static_cast<const T*>(a.w_hh);
  const T* gx = static_cast<const T*>(a.gates_x);
  const T* h0 = static_cast<const T*>(a.h0);
  const T* c0 = static_cast<const T*>(a.c0);
  T* hout = static_cast<T*>(a.h);
  T* gates = static_cast<T*>(a.gates);
  float* acc = a.scratch + static_cast<int64_t>(tid) * B * kLstmGroup;

  // Pack the own tiles (padding units: zero rows) and load h0 into the first buffer.
  const int64_t tile0 = u0 / kLstmTile, tile1 = (u1 + kLstmTile - 1) / kLstmTile;
  // bf16 on AVX-512 BF16: bf16 panels and h buffers (k padded to even: a zero weight pair
  // half and h's zero padding column H).
  constexpr bool dot = kDot;
  const int64_t KP = (H + 1) / 2;
  uint16_t* hbuf16 = reinterpret_cast<uint16_t*>(a.hbuf);
  uint16_t* packed16 = reinterpret_cast<uint16_t*>(a.packed);
  if constexpr (dot) {
    for (int64_t jt = tile0; jt < tile1; ++jt) {
      uint16_t* p = packed16 + jt * KP * 2 * kLstmGroup;
      for (int64_t gate = 0; gate < 4; ++gate)
        for (int64_t l = 0; l < kLstmTile; ++l) {
          const int64_t j = jt * kLstmTile + l;
          uint16_t* dst = p + (gate * kLstmTile + l) * 2;
          const T* row = w + (gate * H + (j < H ? j : 0)) * H;
          for (int64_t k = 0; k < 2 * KP; ++k)
            dst[(k / 2) * 2 * kLstmGroup + (k & 1)] = j < H && k < H ? bf16_bits(row[k]) : 0;
        }
    }
    for (int64_t half = 0; half < 2; ++half)
      for (int64_t b = 0; b < B; ++b)
        for (int64_t j = u0; j < lstm_group_begin(groups, tid + 1, nthreads) * kLstmGroup; ++j)
          hbuf16[(half * B + b) * Hp + j] = half == 0 && j < H ? bf16_bits(h0[b * H + j]) : 0;
  }
  for (int64_t jt = tile0; jt < tile1 && !dot; ++jt) {
    float* p = a.packed + jt * H * kLstmGroup;
    for (int64_t gate = 0; gate < 4; ++gate)
      for (int64_t l = 0; l < kLstmTile; ++l) {
        const int64_t j = jt * kLstmTile + l;
        float* dst = p + gate * kLstmTile + l;
        if (j < H) {
          const T* row = w + (gate * H + j) * H;
          for (int64_t k = 0; k < H; ++k) dst[k * kLstmGroup] = to_f32(row[k]);
        } else {
          for (int64_t k = 0; k < H; ++k) dst[k * kLstmGroup] = 0.f;
        }
      }
  }
  if constexpr (!dot)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = u0; j < u1; ++j) a.hbuf[b * Hp + j] = to_f32(h0[b * H + j]);
#pragma omp barrier

  for (int64_t t = 0; t < T_; ++t) {
    const float* hprev = a.hbuf + (t & 1) * B * Hp;
    float* hnext = a.hbuf + ((t + 1) & 1) * B * Hp;
    lstm_for_order(tile0, tile1, a.zigzag && (t & 1), [&](int64_t jt) {
      if constexpr (dot)
        lstm_panel_rows_bf16(acc, kLstmGroup, hbuf16 + (t & 1) * B * Hp, Hp,
                             packed16 + jt * KP * 2 * kLstmGroup, B, KP);
      else
        lstm_panel_rows(acc, kLstmGroup, hprev, Hp, a.packed + jt * H * kLstmGroup, B, H);
      const int64_t j0 = jt * kLstmTile;
      const int64_t nl = lstm_min(kLstmTile, H - j0);
      // The loop body is branch-free (both cases as template flags), so that it vectorises for
      // every T: a conditional 16-bit store or a load from a maybe-null pointer kept GCC from it.
      auto epilogue = [&](auto save) {
        for (int64_t b = 0; b < B; ++b) {
          const int64_t row = t * B + b;  // 64-bit: row * 4H can pass 2^31
          const T* g = gx + row * H4 + j0;
          const float* ab = acc + b * kLstmGroup;
          float c0row[kLstmTile];
          if (t == 0)
            for (int64_t l = 0; l < nl; ++l) c0row[l] = to_f32(c0[b * H + j0 + l]);
          const float* cp = t > 0 ? a.c + (row - B) * H + j0 : c0row;
          float* cn = a.c + row * H + j0;
          T* hn = hout + row * H + j0;
          float* hf = hnext + b * Hp + j0;
          uint16_t* hf16 = hbuf16 + (((t + 1) & 1) * B + b) * Hp + j0;
          T* gs = gates + row * H4 + j0;  // dereferenced only when save
#pragma omp simd
          for (int64_t l = 0; l < nl; ++l) {
            // fp32 throughout: pre-activation = recurrent part + input part (gates_x).
            const float i = lstm_sigmoid(ab[l] + to_f32(g[l]));
            const float f = lstm_sigmoid(ab[16 + l] + to_f32(g[H + l]));
            const float gg = lstm_tanh(ab[32 + l] + to_f32(g[2 * H + l]));
            const float o = lstm_sigmoid(ab[48 + l] + to_f32(g[3 * H + l]));
            const float c = f * cp[l] + i * gg;
            const T hv = from_f32<T>(o * lstm_tanh(c));
            cn[l] = c;
            hn[l] = hv;
            // the next step multiplies h_t as stored (rounded to T)
            if constexpr (dot)
              hf16[l] = bf16_bits(hv);
            else
              hf[l] = to_f32(hv);
            if constexpr (decltype(save)::value) {
              gs[l] = from_f32<T>(i);
              gs[H + l] = from_f32<T>(f);
              gs[2 * H + l] = from_f32<T>(gg);
              gs[3 * H + l] = from_f32<T>(o);
            }
          }
        }
      };
      if (gates != nullptr)
        epilogue(std::true_type{});
      else
        epilogue(std::false_type{});
    });
#pragma omp barrier
  }
}

// bf16 panels (vdpbf16ps) up to one micro-kernel row block: there the step streams w_hh and half
// the bytes is the gain. From B = 7 on the panel is re-read from L1 per row block and the step is
// bound by the multiply: vdpbf16ps (16 lanes x 2 k per instruction) did not beat fp32 FMAs on this
// CPU (1 thread, B 16, H 1024: ~1.74 ms/step bf16 panels vs ~1.48 fp32; bench/notes/lstm_cpu.md),
// so fp32 panels there.
constexpr int64_t kLstmBf16DotMaxRows = kLstmMaxRows;

template <typename T>
void lstm_forward_typed(const LstmForwardArgs& a, int tid, int nthreads) {
  if constexpr (kLstmBf16Dot && std::is_same_v<T, bf16_t>) {
    if (a.B <= kLstmBf16DotMaxRows) return lstm_forward_body<T, true>(a, tid, nthreads);
  }
  lstm_forward_body<T, false>(a, tid, nthreads);
}

template <typename T>
void lstm_backward_typed(const LstmBackwardArgs& a, int tid, int nthreads) {
  const int64_t T_ = a.T, B = a.B, H = a.H, H4 = 4 * H;
  const int64_t Hp = lstm_padded_units(H);
  const int64_t groups = Hp / kLstmGroup;
  const int64_t g0 = lstm_group_begin(groups, tid, nthreads);
  const int64_t g1 = lstm_group_begin(groups, tid + 1, nthreads);
  const int64_t u0 = g0 * kLstmGroup, u1 = lstm_min(g1 * kLstmGroup, H);
  const T* w = static_cast<const T*>(a.w_hh);
  const T* gh = static_cast<const T*>(a.grad_h);
  const T* c0 = static_cast<const T*>(a.c0);
  const T* gates = static_cast<const T*>(a.gates);
  T* dgx = static_cast<T*>(a.grad_gates_x);

  // Pack the own columns of w_hh (every row); dh = dc = 0 on the own units.
  for (int64_t g = g0; g < g1; ++g) {
    float* p = a.packed + g * H4 * kLstmGroup;
    const int64_t j0 = g * kLstmGroup, nl = lstm_min(kLstmGroup, H - j0);
    for (int64_t r = 0; r < H4; ++r) {
      const T* row = w + r * H + j0;
      float* dst = p + r * kLstmGroup;
      for (int64_t l = 0; l < nl; ++l) dst[l] = to_f32(row[l]);
      for (int64_t l = nl; l < kLstmGroup; ++l) dst[l] = 0.f;
    }
  }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = u0; j < u1; ++j) {
      a.dh[b * Hp + j] = 0.f;
      a.dc[b * Hp + j] = 0.f;
      a.c0f[b * Hp + j] = to_f32(c0[b * H + j]);
    }

  for (int64_t t = T_ - 1; t >= 0; --t) {
    float* da = a.dabuf + (t & 1) * B * H4;
    // dA_t of the own units, from dh_t = grad_h[t] + the recurrent dh, and dc_t.
    for (int64_t b = 0; b < B; ++b) {
      const int64_t row = t * B + b;
      const T* gt = gates + row * H4;
      const T* ght = gh + row * H;
      const float* ct = a.c + row * H;
      const float* gct = a.grad_c + row * a.grad_c_row;  // the gradient of the output c_t
      // c_{t-1}, c0 as fp32 at t = 0 (a pointer, not a branch in the loop: it vectorises)
      const float* cp = t > 0 ? a.c + (row - B) * H : a.c0f + b * Hp;
      float* dh = a.dh + b * Hp;
      float* dc = a.dc + b * Hp;
      float* dab = da + b * H4;
      T* dg = dgx + row * H4;
#pragma omp simd
      for (int64_t j = u0; j < u1; ++j) {
        const float i = to_f32(gt[j]), f = to_f32(gt[H + j]);
        const float gg = to_f32(gt[2 * H + j]), o = to_f32(gt[3 * H + j]);
        const float c_prev = cp[j];
        const float dhv = to_f32(ght[j]) + dh[j];
        const float tc = lstm_tanh(ct[j]);
        const float dcv = dc[j] + gct[j] + dhv * o * (1.f - tc * tc);
        dc[j] = dcv * f;  // dc_{t-1}
        const float dai = dcv * gg * i * (1.f - i);
        const float daf = dcv * c_prev * f * (1.f - f);
        const float dag = dcv * i * (1.f - gg * gg);
        const float dao = dhv * tc * o * (1.f - o);
        dab[j] = dai;
        dab[H + j] = daf;
        dab[2 * H + j] = dag;
        dab[3 * H + j] = dao;
        dg[j] = from_f32<T>(dai);
        dg[H + j] = from_f32<T>(daf);
        dg[2 * H + j] = from_f32<T>(dag);
        dg[3 * H + j] = from_f32<T>(dao);
      }
    }
#pragma omp barrier
    // dh_{t-1}[:, own units] = dA_t @ w_hh[:, own units], from the fp32 dA_t (not the rounded
    // grad_gates_x): every thread reads all of dA_t, each its own columns of w_hh.
    lstm_for_order(g0, g1, a.zigzag && (t & 1), [&](int64_t g) {
      lstm_panel_rows(a.dh + g * kLstmGroup, Hp, da, H4, a.packed + g * H4 * kLstmGroup, B, H4);
    });
  }
  T* gh0 = static_cast<T*>(a.grad_h0);
  T* gc0 = static_cast<T*>(a.grad_c0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = u0; j < u1; ++j) {
      gh0[b * H + j] = from_f32<T>(a.dh[b * Hp + j]);
      gc0[b * H + j] = from_f32<T>(a.dc[b * Hp + j]);
    }
}

void lstm_forward(const LstmForwardArgs& a, int tid, int nthreads) {
  switch (a.dtype) {
    case DType::f32: return lstm_forward_typed<float>(a, tid, nthreads);
    case DType::bf16: return lstm_forward_typed<bf16_t>(a, tid, nthreads);
    default: return lstm_forward_typed<f16_t>(a, tid, nthreads);
  }
}

void lstm_backward(const LstmBackwardArgs& a, int tid, int nthreads) {
  switch (a.dtype) {
    case DType::f32: return lstm_backward_typed<float>(a, tid, nthreads);
    case DType::bf16: return lstm_backward_typed<bf16_t>(a, tid, nthreads);
    default: return lstm_backward_typed<f16_t>(a, tid, nthreads);
  }
}

const LstmKernels lstm_kernels{&lstm_forward, &lstm_backward};
