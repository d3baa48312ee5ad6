// DNC temporal link CPU loops: the link update fused with the directional reads through the new
// link. Part of memory_impl.h (included once per ISA, no include guard).

// ---- temporal link + directional reads ---------------------------------------------------------
//
// The link is the only N x N tensor, so these loops are built to touch each link element once per
// direction: one pass over row i of the link computes the new row and everything the R read heads
// need from it. Read heads go four at a time (kLinkHeads): the four heads' rows (N floats each)
// sit in L1 and their updates are plain vector FMAs inside the same j loop. The heads are copied
// into the call's scratch, padded with zero heads up to a multiple of four, so R = 1..4 run one
// pass and larger R a pass per group; a zero head contributes exact zeros. The diagonal (new link
// L'[i, i] = 0, and its gradient) is a select inside the loop, not a second pass.

// dst[r * hs, :N] = src[r * stride, :N] for r < R, zero rows up to R4.
template <typename T>
void pad_heads(T* dst, int64_t hs, const T* src, int64_t stride, int64_t R, int64_t R4, int64_t N) {
  for (int64_t r = 0; r < R4; ++r)
    for (int64_t j = 0; j < N; ++j) dst[r * hs + j] = r < R ? src[r * stride + j] : T(0);
}

// Row i of one (batch, write head) and four read heads: what the lane loops below read.
template <typename T>
struct LinkRow {
  const T* row;  // L[i, :]
  const T* w;    // write weights
  const T* p;    // precedence
  const T* rw;   // 4 padded read-weight rows, stride hs (link_head_stride)
  int64_t hs;
  T wi;
  T ri[kLinkHeads];  // rw_r[i]
};

// Forward of lanes j.. of row i: L'[i, j] = (1 - w_i - w_j) L[i, j] + w_i p_j (mm::link_update;
// 0 at j = i), f_r[i] += L'[i, j] rw_r[j], bk_r[j] += rw_r[i] L'[i, j].
template <typename T, typename X>
ATTNFAST_INLINE void link_forward_lanes(int64_t i, int64_t j, const LinkRow<T>& q, T* nrow, T* bk,
                                        X (&f)[kLinkHeads]) {
  lanes_prefetch<X>(q.row + j);
  lanes_prefetch<X>(nrow + j, true);
  const X c = lanes_splat<X>(T(1) - q.wi) - lanes_load<X>(q.w + j);
  const X nl = lanes_zero_at<T>(c * lanes_load<X>(q.row + j) + q.wi * lanes_load<X>(q.p + j), j, i);
  lanes_store(nrow + j, nl);
  for (int64_t r = 0; r < kLinkHeads; ++r) {
    f[r] += nl * lanes_load<X>(q.rw + r * q.hs + j);
    lanes_store(bk + r * q.hs + j, lanes_load<X>(bk + r * q.hs + j) + q.ri[r] * nl);
  }
}

template <typename T>
ATTNFAST_INLINE void link_forward_row(int64_t N, int64_t i, const LinkRow<T>& q, T* nrow, T* bk,
                                      T* f) {
  using V = typename Lanes<T>::V;
  V fv[kLinkHeads] = {};
  T fs[kLinkHeads] = {};
  int64_t j = 0;
  for (; j + Lanes<T>::n <= N; j += Lanes<T>::n) link_forward_lanes(i, j, q, nrow, bk, fv);
  for (; j < N; ++j) link_forward_lanes(i, j, q, nrow, bk, fs);
  for (int64_t r = 0; r < kLinkHeads; ++r) f[r] = lanes_sum<T>(fv[r]) + fs[r];
}

template <typename T>
void link_forward_impl(const LinkArgs<T>& a, int64_t b0, int64_t b1) {
  const int64_t N = a.N, Hw = a.Hw, R = a.R, R4 = link_heads_padded(R), hs = link_head_stride(N);
  for (int64_t b = b0; b < b1; ++b) {
    T* rw4 = a.scratch;
    T* bk4 = rw4 + R4 * hs;
    pad_heads(rw4, hs, a.rw + b * R * N, N, R, R4, N);
    for (int64_t h = 0; h < Hw; ++h) {
      const int64_t bh = b * Hw + h;
      const T* L = a.link + bh * N * N;
      T* NL = a.new_link + bh * N * N;
      const T* p = a.prec + bh * N;
      const T* w = a.ww + bh * N;
      T wsum = 0;
      for (int64_t j = 0; j < N; ++j) wsum += w[j];
      T* np = a.new_prec + bh * N;
#pragma omp simd
      for (int64_t j = 0; j < N; ++j) np[j] = mm::precedence_update(p[j], wsum, w[j]);
      for (int64_t k = 0; k < R4 * hs; ++k) bk4[k] = 0;
      T f4[kLinkHeads];
      for (int64_t i = 0; i < N; ++i) {
        // Heads past the first group recompute the new row (cheap) and store it again (L1-hot).
        for (int64_t g = 0; g < R4; g += kLinkHeads) {
          LinkRow<T> q{L + i * N, w, p, rw4 + g * hs, hs, w[i], {}};
          for (int64_t r = 0; r < kLinkHeads; ++r) q.ri[r] = q.rw[r * hs + i];
          link_forward_row(N, i, q, NL + i * N, bk4 + g * hs, f4);
          for (int64_t r = g; r < g + kLinkHeads && r < R; ++r)
            a.fwd[((b * R + r) * Hw + h) * N + i] = f4[r - g];
        }
      }
      for (int64_t r = 0; r < R; ++r) {
        T* bk = a.bwd + ((b * R + r) * Hw + h) * N;
        for (int64_t j = 0; j < N; ++j) bk[j] = bk4[r * hs + j];
      }
    }
  }
}

// Backward of row i for heads g..g+3, recomputing the new row L'[i, :]. G = total gradient on
// L'[i, :] = g_link[i, :] + sum_r (g_fwd[r, i] rw_r + rw_r[i] g_bwd_r), zero on the diagonal.
// Every group adds its heads' terms to G (`base` is g_link's row, or the partial sum in scratch
// when there is more than one group) and does the reads' gradients: d rw_r += g_fwd[r, i] L'[i, :],
// d rw_r[i] += L'[i, :] . g_bwd_r. The last group also applies G: d link = G (1 - w_i - w_j),
// d w_i += G . (p - L[i, :]), d w_j -= G_j L_ij, d p_j += G_j w_i.
template <typename T>
struct LinkRowGrad {
  const T* gb;   // 4 padded g_bwd rows, stride hs
  T* drw;        // 4 padded d rw rows, stride hs
  const T* base; // G so far: g_link[i, :] or the partial sum
  T* G;          // partial sum out (not the last group)
  T* drow;       // d link[i, :] (last group)
  T* dw;
  T* dp;
  T gf[kLinkHeads];  // g_fwd[r, i]
};

template <typename T, bool kLast, typename X>
ATTNFAST_INLINE void link_backward_lanes(int64_t i, int64_t j, const LinkRow<T>& q,
                                         const LinkRowGrad<T>& d, X (&dots)[kLinkHeads], X& s) {
  lanes_prefetch<X>(q.row + j);
  lanes_prefetch<X>(d.base + j);
  lanes_prefetch<X>(d.drow + j, true);
  const X row = lanes_load<X>(q.row + j), p = lanes_load<X>(q.p + j);
  const X c = lanes_splat<X>(T(1) - q.wi) - lanes_load<X>(q.w + j);
  const X nl = lanes_zero_at<T>(c * row + q.wi * p, j, i);
  X g = lanes_load<X>(d.base + j);
  for (int64_t r = 0; r < kLinkHeads; ++r) {
    const X gb = lanes_load<X>(d.gb + r * q.hs + j);
    g += d.gf[r] * lanes_load<X>(q.rw + r * q.hs + j) + q.ri[r] * gb;
    lanes_store(d.drw + r * q.hs + j, lanes_load<X>(d.drw + r * q.hs + j) + d.gf[r] * nl);
    dots[r] += nl * gb;
  }
  if constexpr (kLast) {
    g = lanes_zero_at<T>(g, j, i);
    lanes_store(d.drow + j, g * c);
    s += g * (p - row);
    lanes_store(d.dw + j, lanes_load<X>(d.dw + j) - g * row);
    lanes_store(d.dp + j, lanes_load<X>(d.dp + j) + g * q.wi);
  } else {
    lanes_store(d.G + j, g);
  }
}

template <typename T, bool kLast>
ATTNFAST_INLINE void link_backward_row(int64_t N, int64_t i, const LinkRow<T>& q,
                                       const LinkRowGrad<T>& d, T& dwi) {
  using V = typename Lanes<T>::V;
  V dv[kLinkHeads] = {}, sv = {};
  T ds[kLinkHeads] = {}, ss = 0;
  int64_t j = 0;
  for (; j + Lanes<T>::n <= N; j += Lanes<T>::n) link_backward_lanes<T, kLast>(i, j, q, d, dv, sv);
  for (; j < N; ++j) link_backward_lanes<T, kLast>(i, j, q, d, ds, ss);
  for (int64_t r = 0; r < kLinkHeads; ++r) d.drw[r * q.hs + i] += lanes_sum<T>(dv[r]) + ds[r];
  if constexpr (kLast) dwi += lanes_sum<T>(sv) + ss;
}

template <typename T>
void link_backward_impl(const LinkArgs<T>& a, int64_t b0, int64_t b1) {
  const int64_t N = a.N, Hw = a.Hw, R = a.R, R4 = link_heads_padded(R), hs = link_head_stride(N);
  for (int64_t b = b0; b < b1; ++b) {
    T* rw4 = a.scratch;
    T* gb4 = rw4 + R4 * hs;
    T* gf4 = gb4 + R4 * hs;
    T* drw4 = gf4 + R4 * hs;
    T* G = drw4 + R4 * hs;
    pad_heads(rw4, hs, a.rw + b * R * N, N, R, R4, N);
    for (int64_t k = 0; k < R4 * hs; ++k) drw4[k] = 0;
    for (int64_t h = 0; h < Hw; ++h) {
      const int64_t bh = b * Hw + h;
      const T* L = a.link + bh * N * N;
      const T* gL = a.g_link + bh * N * N;
      T* dL = a.d_link + bh * N * N;
      const T* p = a.prec + bh * N;
      const T* w = a.ww + bh * N;
      const T* gp = a.g_prec + bh * N;
      T* dp = a.d_prec + bh * N;
      T* dw = a.d_ww + bh * N;
      pad_heads(gb4, hs, a.g_bwd + (b * R * Hw + h) * N, Hw * N, R, R4, N);
      pad_heads(gf4, hs, a.g_fwd + (b * R * Hw + h) * N, Hw * N, R, R4, N);
      T wsum = 0, gp_p = 0;
      for (int64_t j = 0; j < N; ++j) {
        wsum += w[j];
        gp_p += gp[j] * p[j];
      }
      // precedence: p' = (1 - sum w) p + w
#pragma omp simd
      for (int64_t j = 0; j < N; ++j) {
        dp[j] = gp[j] * (T(1) - wsum);
        dw[j] = gp[j] - gp_p;
      }
      for (int64_t i = 0; i < N; ++i) {
        T dwi = 0;
        const T* base = gL + i * N;
        for (int64_t g = 0; g < R4; g += kLinkHeads) {
          LinkRow<T> q{L + i * N, w, p, rw4 + g * hs, hs, w[i], {}};
          LinkRowGrad<T> d{gb4 + g * hs, drw4 + g * hs, base, G, dL + i * N, dw, dp, {}};
          for (int64_t r = 0; r < kLinkHeads; ++r) {
            q.ri[r] = q.rw[r * hs + i];
            d.gf[r] = gf4[(g + r) * hs + i];
          }
          if (g + kLinkHeads < R4) {
            link_backward_row<T, false>(N, i, q, d, dwi);
            base = G;
          } else {
            link_backward_row<T, true>(N, i, q, d, dwi);
          }
        }
        dw[i] += dwi;
      }
    }
    T* drw_b = a.d_rw + b * R * N;
    for (int64_t r = 0; r < R; ++r)
      for (int64_t j = 0; j < N; ++j) drw_b[r * N + j] = drw4[r * hs + j];
  }
}
