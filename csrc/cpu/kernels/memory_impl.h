// Memory addressing CPU loops, included once per ISA inside namespace attnfast::cpu::<isa>
// (csrc/cpu/memory_isa_*.cpp). Inner loops run over contiguous rows (N or W) with
// `#pragma omp simd`; the per-element formulas are csrc/common/memory_math.h's. Accumulations
// are in T (float32 or float64), like the reference's. No include guard on purpose.

namespace mm = ::attnfast::memory;

#include "cpu/kernels/lanes.h"

// ---- stable argsort -----------------------------------------------------------------------------
// LSD radix sort of the indices by the keys' bits, 8 bits a pass (4 passes for float, 8 for
// double; a pass whose digit is the same for every key is skipped, as the top bytes of usages in
// [0, 1] mostly are). Each pass is stable, so equal keys keep the lower index first, like torch's
// stable sort; -0.0 sorts as 0.0 and NaN last, as in torch. No comparisons to mispredict: the
// bottom-up merge sort it replaced took ~17 us per 512 keys, most of a DNC allocation.

// An unsigned integer whose order is the order of x: flip every bit of a negative number, only
// the sign bit of a positive one.
template <typename T>
ATTNFAST_INLINE auto radix_key(T x) {
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  if (x == T(0)) x = T(0);                   // -0.0 -> 0.0
  if (x != x) x = static_cast<T>(__builtin_nan(""));  // every NaN -> one positive NaN
  U u;
  __builtin_memcpy(&u, &x, sizeof u);
  const U sign = U(1) << (8 * sizeof(U) - 1);
  return (u & sign) ? static_cast<U>(~u) : static_cast<U>(u | sign);
}

// Returns idx or tmp, whichever holds the permutation (both hold n entries).
template <typename T>
int32_t* stable_argsort(const T* key, int32_t* idx, int32_t* tmp, int64_t n) {
  for (int64_t i = 0; i < n; ++i) idx[i] = static_cast<int32_t>(i);
  int32_t* src = idx;
  int32_t* dst = tmp;
  for (int shift = 0; shift < static_cast<int>(8 * sizeof(T)); shift += 8) {
    int64_t start[257] = {};
    for (int64_t j = 0; j < n; ++j) ++start[((radix_key(key[src[j]]) >> shift) & 255) + 1];
    bool one_digit = false;
    for (int d = 1; d <= 256; ++d) one_digit = one_digit || start[d] == n;
    if (one_digit) continue;  // the pass would keep the order as it is
    for (int d = 1; d <= 256; ++d) start[d] += start[d - 1];
    for (int64_t j = 0; j < n; ++j) dst[start[(radix_key(key[src[j]]) >> shift) & 255]++] = src[j];
    int32_t* t = src;
    src = dst;
    dst = t;
  }
  return src;
}

template <typename T>
ATTNFAST_INLINE T dot_row(const T* a, const T* b, int64_t n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// ---- content addressing ----------------------------------------------------------------------

// |M_i| for every memory row (into mnorm) and key_h . M_i for every head (into dots + h * ldd).
template <typename T>
void content_dots(const T* mem, int64_t N, int64_t W, const T* keys, int64_t H, T eps, T* mnorm,
                  T* dots, int64_t ldd) {
  lanes_dot_rows_keys(mem, W, N, keys, H, W, mnorm, dots, ldd);
  for (int64_t i = 0; i < N; ++i) mnorm[i] = mm::norm_eps(mnorm[i], eps);
}

template <typename T>
void content_forward_impl(const ContentArgs<T>& a, int64_t b0, int64_t b1) {
  const int64_t N = a.N, W = a.W, H = a.H;
  for (int64_t b = b0; b < b1; ++b) {
    const T* mem = a.memory + b * N * W;
    T* mnorm = a.scratch + b * a.scratch_stride;
    // key . M_i for every head, straight into the output rows (turned into weights below)
    content_dots(mem, N, W, a.keys + b * H * W, H, a.eps, mnorm, a.weights + b * H * N, N);
    for (int64_t h = 0; h < H; ++h) {
      const T* key = a.keys + (b * H + h) * W;
      const T beta = a.strengths[b * H + h];
      const T knorm = mm::norm_eps(dot_row(key, key, W), a.eps);
      T* out = a.weights + (b * H + h) * N;
      T mx = -INFINITY;
#pragma omp simd reduction(max : mx)
      for (int64_t i = 0; i < N; ++i) {
        const T z = beta * mm::cosine(out[i], knorm, mnorm[i], a.eps);
        out[i] = z;
        mx = z > mx ? z : mx;
      }
      // softmax with the max subtracted: exp never overflows, the largest term is 1.
      T sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int64_t i = 0; i < N; ++i) {
        const T e = mm::exp_t(out[i] - mx);
        out[i] = e;
        sum += e;
      }
      const T inv = T(1) / sum;
#pragma omp simd
      for (int64_t i = 0; i < N; ++i) out[i] *= inv;
    }
  }
}

// d(softmax(beta sim)) -> d sim, d beta; sim = dot / D, D = |k| |M_i| + eps;
// d dot = d sim / D; d D = -d sim sim / D; |x|' = x / |x|.
template <typename T>
void content_backward_impl(const ContentArgs<T>& a, int64_t b0, int64_t b1) {
  const int64_t N = a.N, W = a.W, H = a.H;
  for (int64_t b = b0; b < b1; ++b) {
    const T* mem = a.memory + b * N * W;
    T* mnorm = a.scratch + b * a.scratch_stride;
    T* cm = mnorm + N;         // sum_h dD_hi |k_h|
    T* ddot = cm + N;          // (H, N): key . M_i, replaced by d dot below
    content_dots(mem, N, W, a.keys + b * H * W, H, a.eps, mnorm, ddot, N);
    for (int64_t i = 0; i < N; ++i) cm[i] = 0;
    for (int64_t h = 0; h < H; ++h) {
      const T* key = a.keys + (b * H + h) * W;
      const T beta = a.strengths[b * H + h];
      const T knorm = mm::norm_eps(dot_row(key, key, W), a.eps);
      const T* w = a.weights + (b * H + h) * N;
      const T* g = a.grad + (b * H + h) * N;
      T* gk = a.grad_keys + (b * H + h) * W;
      T* dd = ddot + h * N;
      const T gw = dot_row(g, w, N);
      for (int64_t c = 0; c < W; ++c) gk[c] = 0;
      T gbeta = 0, dD_mnorm = 0;
      // The per-row scalars first, in a loop of their own so that it vectorises (four divisions
      // per row: as a scalar loop around the W-long axpy below they were most of the backward).
#pragma omp simd reduction(+ : gbeta, dD_mnorm)
      for (int64_t i = 0; i < N; ++i) {
        const T D = knorm * mnorm[i] + a.eps;
        const T sim = dd[i] / D;
        const T gs = w[i] * (g[i] - gw);
        gbeta += gs * sim;
        const T gsim = beta * gs;
        const T gdot = gsim / D;
        const T gD = -gsim * sim / D;
        dd[i] = gdot;
        cm[i] += gD * knorm;
        dD_mnorm += gD * mnorm[i];
      }
      for (int64_t i = 0; i < N; ++i) {
        const T* row = mem + i * W;
        const T gdot = dd[i];
#pragma omp simd
        for (int64_t c = 0; c < W; ++c) gk[c] += gdot * row[c];
      }
      const T kscale = dD_mnorm / knorm;
#pragma omp simd
      for (int64_t c = 0; c < W; ++c) gk[c] += kscale * key[c];
      a.grad_strengths[b * H + h] = gbeta;
    }
    for (int64_t i = 0; i < N; ++i) {
      const T* row = mem + i * W;
      T* gm = a.grad_memory + (b * N + i) * W;
      const T mscale = cm[i] / mnorm[i];
#pragma omp simd
      for (int64_t c = 0; c < W; ++c) gm[c] = mscale * row[c];
      for (int64_t h = 0; h < H; ++h) {
        const T* key = a.keys + (b * H + h) * W;
        const T d = ddot[h * N + i];
#pragma omp simd
        for (int64_t c = 0; c < W; ++c) gm[c] += d * key[c];
      }
    }
  }
}

// ---- allocation --------------------------------------------------------------------------------

// One head: a[order_j] = (1 - s_j) prod_{i<j} s_i over the usage sorted ascending. The running
// product is taken in sorted order, as torch's cumprod does.
template <typename T>
void allocate_one(const T* u, const int32_t* order, T* out, int64_t N, T eps) {
  T prod = 1;
  for (int64_t j = 0; j < N; ++j) {
    const int32_t i = order[j];
    const T s = mm::squash_usage(u[i], eps);
    out[i] = (T(1) - s) * prod;
    prod *= s;
  }
}

template <typename T>
void allocation_forward_impl(const AllocationArgs<T>& a, int64_t b0, int64_t b1) {
  const int64_t N = a.N, Hw = a.Hw;
  for (int64_t b = b0; b < b1; ++b) {
    T* u = a.scratch + b * a.scratch_stride;
    int32_t* idx = a.order + b * a.order_stride;
    for (int64_t i = 0; i < N; ++i) u[i] = a.usage[b * N + i];
    for (int64_t h = 0; h < Hw; ++h) {
      T* out = a.alloc + (b * Hw + h) * N;
      const int32_t* order = stable_argsort(u, idx, idx + N, N);
      allocate_one(u, order, out, N, a.eps);
      if (h + 1 < Hw) {
        const T g = a.gates[b * Hw + h];
#pragma omp simd
        for (int64_t i = 0; i < N; ++i) u[i] = mm::usage_after_alloc(u[i], g, out[i]);
      }
    }
  }
}

// Backward: recompute the per-head usages and permutations, then reverse over heads. Through one
// head's cumulative product, reverse accumulation (no division by s): with G_j = dL/dP_j,
// ds_j = P_j (G_{j+1} - ga_j), G_j = ga_j (1 - s_j) + G_{j+1} s_j.
template <typename T>
void allocation_backward_impl(const AllocationArgs<T>& a, int64_t b0, int64_t b1) {
  const int64_t N = a.N, Hw = a.Hw;
  for (int64_t b = b0; b < b1; ++b) {
    T* U = a.scratch + b * a.scratch_stride;  // (Hw + 1, N): the usage each head saw
    T* A = U + (Hw + 1) * N;                   // (Hw, N)
    T* P = A + Hw * N;                         // (N,) exclusive products, sorted order
    T* du = P + N;
    T* ga = du + N;
    int32_t* perms = a.order + b * a.order_stride;  // (Hw, N) + N merge buffer
    int32_t* tmp = perms + Hw * N;
    for (int64_t i = 0; i < N; ++i) U[i] = a.usage[b * N + i];
    for (int64_t h = 0; h < Hw; ++h) {
      int32_t* ph = perms + h * N;
      const int32_t* sorted = stable_argsort(U + h * N, ph, tmp, N);
      if (sorted != ph)
        for (int64_t j = 0; j < N; ++j) ph[j] = sorted[j];
      allocate_one(U + h * N, ph, A + h * N, N, a.eps);
      const T g = a.gates[b * Hw + h];
#pragma omp simd
      for (int64_t i = 0; i < N; ++i)
        U[(h + 1) * N + i] = mm::usage_after_alloc(U[h * N + i], g, A[h * N + i]);
    }
    for (int64_t i = 0; i < N; ++i) du[i] = 0;
    for (int64_t h = Hw - 1; h >= 0; --h) {
      const T* uh = U + h * N;
      const T* ah = A + h * N;
      const T* gh = a.grad + (b * Hw + h) * N;
      const T g = a.gates[b * Hw + h];
      // u_next = u + (1 - u) g a: du_next flows to u, g and a.
      T dg = 0;
#pragma omp simd reduction(+ : dg)
      for (int64_t i = 0; i < N; ++i) {
        const T free = T(1) - uh[i];
        dg += du[i] * free * ah[i];
        ga[i] = gh[i] + du[i] * free * g;
        du[i] = du[i] * (T(1) - g * ah[i]);
      }
      a.grad_gates[b * Hw + h] = dg;
      const int32_t* ph = perms + h * N;
      T prod = 1;
      for (int64_t j = 0; j < N; ++j) {
        P[j] = prod;
        prod *= mm::squash_usage(uh[ph[j]], a.eps);
      }
      T G = 0;
      const T dsquash = T(1) - a.eps;
      for (int64_t j = N - 1; j >= 0; --j) {
        const int32_t i = ph[j];
        const T s = mm::squash_usage(uh[i], a.eps);
        const T ds = P[j] * (G - ga[i]);
        G = ga[i] * (T(1) - s) + G * s;
        du[i] += ds * dsquash;
      }
    }
    for (int64_t i = 0; i < N; ++i) a.grad_usage[b * N + i] = du[i];
  }
}

// ---- erase / add write -------------------------------------------------------------------------

template <typename T>
void write_forward_impl(const WriteArgs<T>& a, int64_t b0, int64_t b1) {
  const int64_t N = a.N, W = a.W, Hw = a.Hw;
  for (int64_t b = b0; b < b1; ++b) {
    T* keep = a.scratch + b * a.scratch_stride;
    for (int64_t i = 0; i < N; ++i) {
      const T* m = a.memory + (b * N + i) * W;
      T* o = a.out + (b * N + i) * W;
      for (int64_t c = 0; c < W; ++c) keep[c] = 1;
      for (int64_t h = 0; h < Hw; ++h) {
        const T w = a.ww[(b * Hw + h) * N + i];
        const T* e = a.erase + (b * Hw + h) * W;
#pragma omp simd
        for (int64_t c = 0; c < W; ++c) keep[c] *= T(1) - w * e[c];
      }
#pragma omp simd
      for (int64_t c = 0; c < W; ++c) o[c] = m[c] * keep[c];
      for (int64_t h = 0; h < Hw; ++h) {
        const T w = a.ww[(b * Hw + h) * N + i];
        const T* v = a.add + (b * Hw + h) * W;
#pragma omp simd
        for (int64_t c = 0; c < W; ++c) o[c] += w * v[c];
      }
    }
  }
}

// d/dw_h and d/de_h of the erase product use the product over the other heads (computed
// directly: Hw is small, and dividing by 1 - w e would fail at w e = 1).
template <typename T>
void write_backward_impl(const WriteArgs<T>& a, int64_t b0, int64_t b1) {
  const int64_t N = a.N, W = a.W, Hw = a.Hw;
  for (int64_t b = b0; b < b1; ++b) {
    T* keep = a.scratch + b * a.scratch_stride;
    T* other = keep + W;
    T* gm_ex = other + W;
    T* ge = a.grad_erase + b * Hw * W;
    T* gv = a.grad_add + b * Hw * W;
    for (int64_t k = 0; k < Hw * W; ++k) ge[k] = gv[k] = 0;
    for (int64_t i = 0; i < N; ++i) {
      const T* m = a.memory + (b * N + i) * W;
      const T* g = a.grad + (b * N + i) * W;
      T* gm = a.grad_memory + (b * N + i) * W;
      for (int64_t c = 0; c < W; ++c) keep[c] = 1;
      for (int64_t h = 0; h < Hw; ++h) {
        const T w = a.ww[(b * Hw + h) * N + i];
        const T* e = a.erase + (b * Hw + h) * W;
#pragma omp simd
        for (int64_t c = 0; c < W; ++c) keep[c] *= T(1) - w * e[c];
      }
#pragma omp simd
      for (int64_t c = 0; c < W; ++c) {
        gm[c] = g[c] * keep[c];
        gm_ex[c] = g[c] * m[c];
      }
      for (int64_t h = 0; h < Hw; ++h) {
        const T w = a.ww[(b * Hw + h) * N + i];
        const T* e = a.erase + (b * Hw + h) * W;
        const T* v = a.add + (b * Hw + h) * W;
        for (int64_t c = 0; c < W; ++c) other[c] = 1;
        for (int64_t h2 = 0; h2 < Hw; ++h2) {
          if (h2 == h) continue;
          const T w2 = a.ww[(b * Hw + h2) * N + i];
          const T* e2 = a.erase + (b * Hw + h2) * W;
#pragma omp simd
          for (int64_t c = 0; c < W; ++c) other[c] *= T(1) - w2 * e2[c];
        }
        T dw = 0;
        T* geh = ge + h * W;
        T* gvh = gv + h * W;
#pragma omp simd reduction(+ : dw)
        for (int64_t c = 0; c < W; ++c) {
          const T t = gm_ex[c] * other[c];  // dL / d(1 - w e_c)
          dw += g[c] * v[c] - t * e[c];
          geh[c] -= t * w;
          gvh[c] += g[c] * w;
        }
        a.grad_ww[(b * Hw + h) * N + i] = dw;
      }
    }
  }
}

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

template <typename T>
constexpr MemoryKernelsT<T> memory_table() {
  return MemoryKernelsT<T>{&content_forward_impl<T>,    &content_backward_impl<T>,
                           &allocation_forward_impl<T>, &allocation_backward_impl<T>,
                           &write_forward_impl<T>,      &write_backward_impl<T>,
                           &link_forward_impl<T>,       &link_backward_impl<T>};
}

extern const MemoryKernels memory_kernels;
const MemoryKernels memory_kernels{memory_table<float>(), memory_table<double>()};
