// Loops of the second group of memory ops (args in memory_extra.h), compiled once, generically
// (csrc/cpu/memory_extra.cpp): they are short per batch element and bound by memory traffic
// and dispatch overhead, not by vector width. Inner loops run over contiguous rows with
// `#pragma omp simd`; accumulations are in T (float32 or float64), like the reference's.
// Each formula is written in the reference's operation order (attnfast/reference/memory.py).
#pragma once
#include <cmath>
#include <cstdint>

#include "common/memory_math.h"
#include "cpu/kernels/memory_extra.h"

namespace attnfast {
namespace cpu {
namespace extra {

namespace mm = ::attnfast::memory;

#include "cpu/kernels/lanes.h"

ATTNFAST_INLINE float log_t(float x) { return std::log(x); }
ATTNFAST_INLINE double log_t(double x) { return std::log(x); }
ATTNFAST_INLINE float pow_t(float x, float y) { return std::pow(x, y); }
ATTNFAST_INLINE double pow_t(double x, double y) { return std::pow(x, y); }

template <typename T>
ATTNFAST_INLINE T dot(const T* a, const T* b, int64_t n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// (o mod n) in [0, n) for any sign of o (a shift offset may exceed n in magnitude).
ATTNFAST_INLINE int64_t wrap(int64_t o, int64_t n) { return ((o % n) + n) % n; }

// dst[i] += s * src[(i - o) mod n], o = offset already wrapped into [0, n): two contiguous
// segments, so both loops vectorise (torch.roll(src, o)[i] == src[(i - o) mod n]).
template <typename T>
ATTNFAST_INLINE void roll_axpy(T* dst, const T* src, T s, int64_t o, int64_t n) {
#pragma omp simd
  for (int64_t i = o; i < n; ++i) dst[i] += s * src[i - o];
#pragma omp simd
  for (int64_t i = 0; i < o; ++i) dst[i] += s * src[i - o + n];
}

// sum_i a[i] * src[(i - o) mod n], o in [0, n).
template <typename T>
ATTNFAST_INLINE T roll_dot(const T* a, const T* src, int64_t o, int64_t n) {
  return dot(a + o, src, n - o) + dot(a, src + n - o, o);
}

// ---- NTM location addressing ------------------------------------------------------------------

// wg = g c + (1 - g) w_prev; ws = sum_k s_k roll(wg, k - S/2) (offset +1 moves weight from i to
// i + 1). Returns nothing; fills wg and ws (n each).
template <typename T>
void ntm_shifted(const NtmLocationArgs<T>& a, int64_t bh, T* wg, T* ws) {
  const int64_t N = a.N, S = a.S, half = S / 2;
  const T g = a.gate[bh];
  const T* c = a.content + bh * N;
  const T* wp = a.prev + bh * N;
  const T* s = a.shift + bh * S;
#pragma omp simd
  for (int64_t i = 0; i < N; ++i) {
    wg[i] = g * c[i] + (T(1) - g) * wp[i];
    ws[i] = 0;
  }
  for (int64_t k = 0; k < S; ++k) roll_axpy(ws, wg, s[k], wrap(k - half, N), N);
}

// Sharpening: p_i = ws_i^gamma where ws_i > 0, else exactly 0 -- a one-hot shift of a one-hot
// weighting leaves zeros, and 0^gamma must give 0 with a finite gamma gradient (the reference's
// torch.where; d/dgamma ws^gamma = ws^gamma log ws is taken only where ws > 0). Returns sum p.
template <typename T>
T ntm_sharpen(const T* ws, T gamma, T* p, int64_t N) {
  T sum = 0;
  for (int64_t i = 0; i < N; ++i) {
    p[i] = ws[i] > T(0) ? pow_t(ws[i], gamma) : T(0);
    sum += p[i];
  }
  return sum;
}

template <typename T>
void ntm_location_forward_impl(const NtmLocationArgs<T>& a, int64_t b0, int64_t b1) {
  const int64_t N = a.N, H = a.H;
  for (int64_t b = b0; b < b1; ++b) {
    T* wg = a.scratch + b * a.scratch_stride;
    T* ws = wg + N;
    for (int64_t h = 0; h < H; ++h) {
      const int64_t bh = b * H + h;
      ntm_shifted(a, bh, wg, ws);
      T* out = a.weights + bh * N;
      // sum p = 0 only if every shifted weight is 0 (all-zero inputs): NaN, as in the reference.
      const T inv = T(1) / ntm_sharpen(ws, a.gamma[bh], out, N);
#pragma omp simd
      for (int64_t i = 0; i < N; ++i) out[i] *= inv;
    }
  }
}

// out = p / P: dp_i = (g_i - sum_j g_j out_j) / P; dws_i = dp_i gamma ws_i^(gamma-1) (ws_i > 0);
// dgamma = sum_{ws_i > 0} dp_i p_i log ws_i; the shift's adjoint is the opposite roll;
// dc = g dwg, dw_prev = (1 - g) dwg, dgate = sum dwg (c - w_prev).
template <typename T>
void ntm_location_backward_impl(const NtmLocationArgs<T>& a, int64_t b0, int64_t b1) {
  const int64_t N = a.N, H = a.H, S = a.S, half = S / 2;
  for (int64_t b = b0; b < b1; ++b) {
    T* wg = a.scratch + b * a.scratch_stride;
    T* ws = wg + N;
    T* p = ws + N;  // p, then dws in place
    T* dwg = p + N;
    for (int64_t h = 0; h < H; ++h) {
      const int64_t bh = b * H + h;
      ntm_shifted(a, bh, wg, ws);
      const T gamma = a.gamma[bh];
      const T P = ntm_sharpen(ws, gamma, p, N);
      const T* go = a.grad + bh * N;
      const T inv = T(1) / P;
      T gdot = 0;
#pragma omp simd reduction(+ : gdot)
      for (int64_t i = 0; i < N; ++i) gdot += go[i] * (p[i] * inv);
      T dgamma = 0;
      for (int64_t i = 0; i < N; ++i) {
        const T dp = (go[i] - gdot) * inv;
        if (ws[i] > T(0)) {
          dgamma += dp * p[i] * log_t(ws[i]);
          p[i] = dp * gamma * pow_t(ws[i], gamma - T(1));
        } else {
          p[i] = 0;
        }
      }
      a.d_gamma[bh] = dgamma;
      const T* dws = p;
      const T* s = a.shift + bh * S;
      T* ds = a.d_shift + bh * S;
      for (int64_t i = 0; i < N; ++i) dwg[i] = 0;
      for (int64_t k = 0; k < S; ++k) {
        const int64_t o = wrap(k - half, N);
        ds[k] = roll_dot(dws, wg, o, N);
        roll_axpy(dwg, dws, s[k], wrap(half - k, N), N);  // dwg[j] += s_k dws[(j + k - S/2) mod N]
      }
      const T g = a.gate[bh];
      const T* c = a.content + bh * N;
      const T* wp = a.prev + bh * N;
      T* dc = a.d_content + bh * N;
      T* dprev = a.d_prev + bh * N;
      T dg = 0;
#pragma omp simd reduction(+ : dg)
      for (int64_t i = 0; i < N; ++i) {
        dc[i] = g * dwg[i];
        dprev[i] = (T(1) - g) * dwg[i];
        dg += dwg[i] * (c[i] - wp[i]);
      }
      a.d_gate[bh] = dg;
    }
  }
}

// ---- Graves' window -----------------------------------------------------------------------------

// raw[u] = sum_k alpha_k exp(-beta_k (kappa_k - (u + 1))^2): characters are numbered from 1.
template <typename T>
void graves_raw_phi(const T* ah, const T* bh, const T* kap, int64_t K, int64_t U, T* raw) {
  for (int64_t u = 0; u < U; ++u) raw[u] = 0;
  for (int64_t k = 0; k < K; ++k) {
    const T alpha = mm::exp_t(ah[k]), nbeta = -mm::exp_t(bh[k]), kp = kap[k];
#pragma omp simd
    for (int64_t u = 0; u < U; ++u) {
      const T d = kp - T(u + 1);
      raw[u] += alpha * mm::exp_t(nbeta * d * d);
    }
  }
}

template <typename T>
void graves_forward_impl(const GravesArgs<T>& a, int64_t b0, int64_t b1) {
  const int64_t Tn = a.T_, K = a.K, U = a.U, C = a.C;
  for (int64_t b = b0; b < b1; ++b) {
    const T* chars = a.chars + b * U * C;
    const T* mask = a.mask ? a.mask + b * U : nullptr;
    T* run = a.scratch + b * a.scratch_stride;  // running sum of exp(kappa_hat) (K)
    for (int64_t t = 0; t < Tn; ++t) {
      const int64_t bt = b * Tn + t;
      T* kap = a.kappa + bt * K;
      const T* kh = a.kappa_hat + bt * K;
      // kappa_t = (sum_{t' <= t} exp(kappa_hat_t')) + kappa0: the running sum first, as the
      // reference's cumsum, then the offset.
      for (int64_t k = 0; k < K; ++k) {
        run[k] = (t > 0 ? run[k] : T(0)) + mm::exp_t(kh[k]);
        kap[k] = run[k] + a.kappa0[b * K + k];
      }
      T* phi = a.phi + bt * U;
      graves_raw_phi(a.alpha_hat + bt * K, a.beta_hat + bt * K, kap, K, U, phi);
      if (mask) {
#pragma omp simd
        for (int64_t u = 0; u < U; ++u) phi[u] *= mask[u];
      }
      T* w = a.window + bt * C;
      for (int64_t c = 0; c < C; ++c) w[c] = 0;
      for (int64_t u = 0; u < U; ++u) {
        const T pu = phi[u];
        const T* row = chars + u * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) w[c] += pu * row[c];
      }
    }
  }
}

// dphi = g_phi + chars g_window; through the mask: draw = dphi mask, dmask = sum_t dphi raw;
// with e = exp(-beta d^2), d = kappa - u: dalpha_hat = alpha sum_u draw e,
// dbeta_hat = -beta sum_u draw alpha e d^2, dkappa = g_kappa - 2 beta sum_u draw alpha e d;
// kappa is a cumsum of exp(kappa_hat) plus kappa0, so dkappa_hat_t = exp(kappa_hat_t) times the
// suffix sum of dkappa from t on, and dkappa0 the total.
template <typename T>
void graves_backward_impl(const GravesArgs<T>& a, int64_t b0, int64_t b1) {
  const int64_t Tn = a.T_, K = a.K, U = a.U, C = a.C;
  for (int64_t b = b0; b < b1; ++b) {
    T* raw = a.scratch + b * a.scratch_stride;
    T* dphi = raw + U;
    T* kap = dphi + U;  // running kappa (K)
    const T* chars = a.chars + b * U * C;
    const T* mask = a.mask ? a.mask + b * U : nullptr;
    T* dchars = a.d_chars + b * U * C;
    T* dmask = a.d_mask ? a.d_mask + b * U : nullptr;
    for (int64_t i = 0; i < U * C; ++i) dchars[i] = 0;
    if (dmask)
      for (int64_t u = 0; u < U; ++u) dmask[u] = 0;
    for (int64_t k = 0; k < K; ++k) kap[k] = 0;
    for (int64_t t = 0; t < Tn; ++t) {
      const int64_t bt = b * Tn + t;
      const T* ah = a.alpha_hat + bt * K;
      const T* bhat = a.beta_hat + bt * K;
      const T* kh = a.kappa_hat + bt * K;
      for (int64_t k = 0; k < K; ++k) kap[k] += mm::exp_t(kh[k]);
      // kap holds the running sum; kappa = kap + kappa0 (same order as the forward).
      T* dkap = a.d_kappa_hat + bt * K;  // dkappa_t, turned into dkappa_hat after the t loop
      for (int64_t k = 0; k < K; ++k) dkap[k] = kap[k] + a.kappa0[b * K + k];
      graves_raw_phi(ah, bhat, dkap, K, U, raw);
      const T* gw = a.g_window + bt * C;
      const T* gp = a.g_phi + bt * U;
      for (int64_t u = 0; u < U; ++u) {
        const T* row = chars + u * C;
        const T pu = mask ? raw[u] * mask[u] : raw[u];
        T* drow = dchars + u * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) drow[c] += pu * gw[c];
        const T d = gp[u] + dot(row, gw, C);
        if (mask) {
          dmask[u] += d * raw[u];
          dphi[u] = d * mask[u];
        } else {
          dphi[u] = d;
        }
      }
      for (int64_t k = 0; k < K; ++k) {
        const T alpha = mm::exp_t(ah[k]), beta = mm::exp_t(bhat[k]), kp = dkap[k];
        T sa = 0, sb = 0, sk = 0;
#pragma omp simd reduction(+ : sa, sb, sk)
        for (int64_t u = 0; u < U; ++u) {
          const T d = kp - T(u + 1);
          const T e = mm::exp_t(-beta * d * d);
          const T de = dphi[u] * e;
          sa += de;
          sb += de * d * d;
          sk += de * d;
        }
        a.d_alpha_hat[bt * K + k] = alpha * sa;
        a.d_beta_hat[bt * K + k] = -beta * alpha * sb;
        dkap[k] = a.g_kappa[bt * K + k] - T(2) * beta * alpha * sk;
      }
    }
    // Suffix sums over t of dkappa, times exp(kappa_hat).
    T* acc = kap;
    for (int64_t k = 0; k < K; ++k) acc[k] = 0;
    for (int64_t t = Tn - 1; t >= 0; --t) {
      const int64_t bt = b * Tn + t;
      for (int64_t k = 0; k < K; ++k) {
        acc[k] += a.d_kappa_hat[bt * K + k];
        a.d_kappa_hat[bt * K + k] = acc[k] * mm::exp_t(a.kappa_hat[bt * K + k]);
      }
    }
    for (int64_t k = 0; k < K; ++k) a.d_kappa0[b * K + k] = acc[k];
  }
}

// ---- DNC usage ----------------------------------------------------------------------------------

// keep[i] = prod_h (1 - ww_h[i]), psi[i] = prod_r (1 - f_r rw_r[i]).
template <typename T>
void usage_products(const UsageArgs<T>& a, int64_t b, T* keep, T* psi) {
  const int64_t N = a.N;
  for (int64_t i = 0; i < N; ++i) keep[i] = psi[i] = 1;
  for (int64_t h = 0; h < a.Hw; ++h) {
    const T* w = a.ww + (b * a.Hw + h) * N;
#pragma omp simd
    for (int64_t i = 0; i < N; ++i) keep[i] *= T(1) - w[i];
  }
  for (int64_t r = 0; r < a.R; ++r) {
    const T f = a.free[b * a.R + r];
    const T* w = a.rw + (b * a.R + r) * N;
#pragma omp simd
    for (int64_t i = 0; i < N; ++i) psi[i] *= T(1) - f * w[i];
  }
}

template <typename T>
void usage_forward_impl(const UsageArgs<T>& a, int64_t b0, int64_t b1) {
  const int64_t N = a.N;
  for (int64_t b = b0; b < b1; ++b) {
    T* keep = a.out + b * N;  // the output row holds prod_h (1 - ww) until overwritten
    T* psi = a.scratch + b * a.scratch_stride;
    usage_products(a, b, keep, psi);
    const T* u = a.usage + b * N;
#pragma omp simd
    for (int64_t i = 0; i < N; ++i) {
      const T written = T(1) - keep[i];
      keep[i] = (u[i] + (T(1) - u[i]) * written) * psi[i];
    }
  }
}

// out = u' psi: du = g psi (1 - written) (write weights carry no gradient: stop_gradient);
// dpsi = g u'; through the product over read heads, the exclusive product of the other factors
// is recomputed per head (O(R^2 N), R is a handful) so a factor 1 - f rw = 0 needs no division.
template <typename T>
void usage_backward_impl(const UsageArgs<T>& a, int64_t b0, int64_t b1) {
  const int64_t N = a.N, R = a.R;
  for (int64_t b = b0; b < b1; ++b) {
    T* keep = a.scratch + b * a.scratch_stride;
    T* psi = keep + N;
    T* excl = psi + N;
    usage_products(a, b, keep, psi);
    const T* u = a.usage + b * N;
    const T* g = a.grad + b * N;
    T* du = a.d_usage + b * N;
#pragma omp simd
    for (int64_t i = 0; i < N; ++i) {
      const T written = T(1) - keep[i];
      du[i] = g[i] * psi[i] * (T(1) - written);
      psi[i] = g[i] * (u[i] + (T(1) - u[i]) * written);  // psi now holds dpsi
    }
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t i = 0; i < N; ++i) excl[i] = psi[i];
      for (int64_t q = 0; q < R; ++q) {
        if (q == r) continue;
        const T f = a.free[b * R + q];
        const T* w = a.rw + (b * R + q) * N;
#pragma omp simd
        for (int64_t i = 0; i < N; ++i) excl[i] *= T(1) - f * w[i];
      }
      const T f = a.free[b * R + r];
      const T* w = a.rw + (b * R + r) * N;
      T* dw = a.d_rw + (b * R + r) * N;
      T df = 0;
#pragma omp simd reduction(+ : df)
      for (int64_t i = 0; i < N; ++i) {
        dw[i] = -f * excl[i];
        df -= excl[i] * w[i];
      }
      a.d_free[b * R + r] = df;
    }
  }
}

// ---- memory read --------------------------------------------------------------------------------

// Slot-major: each memory row is read once and added to all R outputs (R W values, in L1).
template <typename T>
void read_forward_impl(const ReadArgs<T>& a, int64_t b0, int64_t b1) {
  const int64_t N = a.N, W = a.W, R = a.R;
  for (int64_t b = b0; b < b1; ++b) {
    const T* mem = a.memory + b * N * W;
    T* out = a.words + b * R * W;
    for (int64_t c = 0; c < R * W; ++c) out[c] = 0;
    for (int64_t i = 0; i < N; ++i) {
      const T* row = mem + i * W;
      for (int64_t r = 0; r < R; ++r) {
        const T wi = a.rw[(b * R + r) * N + i];
        T* o = out + r * W;
#pragma omp simd
        for (int64_t c = 0; c < W; ++c) o[c] += wi * row[c];
      }
    }
  }
}

// dM[i, :] = sum_r rw[r, i] g[r, :]; drw[r, i] = g[r, :] . M[i, :], four heads per pass over the
// memory rows (lanes_dot_rows_keys; a horizontal reduction per (r, i) dot made this the slowest
// of the memory ops' backward passes at W = 64).
template <typename T>
void read_backward_impl(const ReadArgs<T>& a, int64_t b0, int64_t b1) {
  const int64_t N = a.N, W = a.W, R = a.R;
  for (int64_t b = b0; b < b1; ++b) {
    const T* mem = a.memory + b * N * W;
    const T* g = a.grad + b * R * W;
    using V = typename Lanes<T>::V;
    constexpr int64_t n = Lanes<T>::n;
    const int64_t wv = W - W % n;
    for (int64_t i = 0; i < N; ++i) {
      T* dm = a.d_memory + (b * N + i) * W;
      const T* rwi = a.rw + b * R * N + i;  // rw[r, i] at rwi[r * N]
      for (int64_t c = 0; c < wv; c += n) {  // each lane vector of dM's row summed in a register
        V acc{};
        for (int64_t r = 0; r < R; ++r) acc += rwi[r * N] * lanes_load<V>(g + r * W + c);
        lanes_store(dm + c, acc);
      }
      for (int64_t c = wv; c < W; ++c) {
        T acc = 0;
        for (int64_t r = 0; r < R; ++r) acc += rwi[r * N] * g[r * W + c];
        dm[c] = acc;
      }
    }
    lanes_dot_rows_keys(mem, W, N, g, R, W, static_cast<T*>(nullptr), a.d_rw + b * R * N, N);
  }
}

}  // namespace extra
}  // namespace cpu
}  // namespace attnfast
