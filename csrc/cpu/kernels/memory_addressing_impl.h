// Memory addressing CPU loops: content addressing, then NTM location addressing (interpolation,
// circular shift, sharpening). Part of memory_impl.h (included once per ISA, no include guard).

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

ATTNFAST_INLINE float log_t(float x) { return std::log(x); }
ATTNFAST_INLINE double log_t(double x) { return std::log(x); }
ATTNFAST_INLINE float pow_t(float x, float y) { return std::pow(x, y); }
ATTNFAST_INLINE double pow_t(double x, double y) { return std::pow(x, y); }

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
  return dot_row(a + o, src, n - o) + dot_row(a, src + n - o, o);
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
