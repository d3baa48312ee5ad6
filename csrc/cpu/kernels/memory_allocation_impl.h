// DNC allocation CPU loops: the allocation weights (a stable sort of the usage per write head)
// and the usage update. Part of memory_impl.h (included once per ISA, no include guard).

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
