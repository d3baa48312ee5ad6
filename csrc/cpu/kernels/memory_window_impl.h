// Graves' soft window CPU loops. Part of memory_impl.h (included once per ISA, no include guard).

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
        const T d = gp[u] + dot_row(row, gw, C);
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
