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
// Per batch element b, its scratch holds U ((Hw + 1) N: the usage each head saw), A (Hw N: the
// allocations), P, du, ga (N each); its order (Hw, N) permutations + an N merge buffer.
template <typename T>
struct AllocationRows {
  T *U, *A, *P, *du, *ga;
  int32_t *perms, *tmp;
};

template <typename T>
AllocationRows<T> allocation_rows(const AllocationArgs<T>& a, int64_t b) {
  const int64_t N = a.N, Hw = a.Hw;
  AllocationRows<T> r;
  r.U = a.scratch + b * a.scratch_stride;
  r.A = r.U + (Hw + 1) * N;
  r.P = r.A + Hw * N;
  r.du = r.P + N;
  r.ga = r.du + N;
  r.perms = a.order + b * a.order_stride;
  r.tmp = r.perms + Hw * N;
  return r;
}

// The forward of batch element b again, keeping every head's usage, allocation and permutation.
template <typename T>
void allocation_recompute(const AllocationArgs<T>& a, int64_t b, const AllocationRows<T>& r) {
  const int64_t N = a.N, Hw = a.Hw;
  for (int64_t i = 0; i < N; ++i) r.U[i] = a.usage[b * N + i];
  for (int64_t h = 0; h < Hw; ++h) {
    int32_t* ph = r.perms + h * N;
    const int32_t* sorted = stable_argsort(r.U + h * N, ph, r.tmp, N);
    if (sorted != ph)
      for (int64_t j = 0; j < N; ++j) ph[j] = sorted[j];
    allocate_one(r.U + h * N, ph, r.A + h * N, N, a.eps);
    const T g = a.gates[b * Hw + h];
#pragma omp simd
    for (int64_t i = 0; i < N; ++i)
      r.U[(h + 1) * N + i] = mm::usage_after_alloc(r.U[h * N + i], g, r.A[h * N + i]);
  }
}

// The reverse pass of batch element b from dL/d allocation `grad` (Hw, N), after
// allocation_recompute: writes grad_usage[b] and grad_gates[b].
template <typename T>
void allocation_reverse(const AllocationArgs<T>& a, int64_t b, const T* grad,
                        const AllocationRows<T>& r) {
  const int64_t N = a.N, Hw = a.Hw;
  T* du = r.du;
  T* ga = r.ga;
  for (int64_t i = 0; i < N; ++i) du[i] = 0;
  for (int64_t h = Hw - 1; h >= 0; --h) {
    const T* uh = r.U + h * N;
    const T* ah = r.A + h * N;
    const T* gh = grad + h * N;
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
    const int32_t* ph = r.perms + h * N;
    T prod = 1;
    for (int64_t j = 0; j < N; ++j) {
      r.P[j] = prod;
      prod *= mm::squash_usage(uh[ph[j]], a.eps);
    }
    T G = 0;
    const T dsquash = T(1) - a.eps;
    for (int64_t j = N - 1; j >= 0; --j) {
      const int32_t i = ph[j];
      const T s = mm::squash_usage(uh[i], a.eps);
      const T ds = r.P[j] * (G - ga[i]);
      G = ga[i] * (T(1) - s) + G * s;
      du[i] += ds * dsquash;
    }
  }
  for (int64_t i = 0; i < N; ++i) a.grad_usage[b * N + i] = du[i];
}

template <typename T>
void allocation_backward_impl(const AllocationArgs<T>& a, int64_t b0, int64_t b1) {
  for (int64_t b = b0; b < b1; ++b) {
    const AllocationRows<T> r = allocation_rows(a, b);
    allocation_recompute(a, b, r);
    allocation_reverse(a, b, a.grad + b * a.Hw * a.N, r);
  }
}

// ---- DNC write weights --------------------------------------------------------------------------
// ww = gw (ga a + (1 - ga) c) with a the allocation under the gates ga * gw (as the reference:
// the product of the two gates, then the allocation, then the mix).

template <typename T>
void write_weights_gates(const WriteWeightsArgs<T>& a, int64_t b) {
  for (int64_t h = 0; h < a.alloc.Hw; ++h) {
    const int64_t k = b * a.alloc.Hw + h;
    a.gates[k] = a.ga[k] * a.gw[k];
  }
}

template <typename T>
void write_weights_forward_impl(const WriteWeightsArgs<T>& a, int64_t b0, int64_t b1) {
  const int64_t N = a.alloc.N, Hw = a.alloc.Hw;
  for (int64_t b = b0; b < b1; ++b) {
    write_weights_gates(a, b);
    allocation_forward_impl(a.alloc, b, b + 1);  // every head's usage update reads the raw a
    for (int64_t h = 0; h < Hw; ++h) {
      const int64_t k = b * Hw + h;
      const T ga = a.ga[k], gw = a.gw[k];
      T* w = a.alloc.alloc + k * N;
      const T* c = a.content + k * N;
#pragma omp simd
      for (int64_t i = 0; i < N; ++i) w[i] = mm::write_weight(ga, gw, w[i], c[i]);
    }
  }
}

// With t = ga a + (1 - ga) c, ww = gw t: dt = g gw; d gw = sum_i g t; d a = dt ga;
// d c = dt (1 - ga); d ga = sum_i dt (a - c); then the allocation's reverse pass from d a, whose
// gate gradient dg (gate = ga gw) adds dg gw to d ga and dg ga to d gw.
template <typename T>
void write_weights_backward_impl(const WriteWeightsArgs<T>& a, int64_t b0, int64_t b1) {
  const AllocationArgs<T>& al = a.alloc;
  const int64_t N = al.N, Hw = al.Hw;
  for (int64_t b = b0; b < b1; ++b) {
    write_weights_gates(a, b);
    const AllocationRows<T> r = allocation_rows(al, b);
    allocation_recompute(al, b, r);
    T* G = r.ga + N;  // (Hw, N): d allocation, after the allocation backward's rows
    for (int64_t h = 0; h < Hw; ++h) {
      const int64_t k = b * Hw + h;
      const T ga = a.ga[k], gw = a.gw[k];
      const T* g = a.grad + k * N;
      const T* c = a.content + k * N;
      const T* ah = r.A + h * N;
      T* gh = G + h * N;
      T* dc = a.d_content + k * N;
      T dga = 0, dgw = 0;
#pragma omp simd reduction(+ : dga, dgw)
      for (int64_t i = 0; i < N; ++i) {
        const T dt = g[i] * gw;
        dgw += g[i] * (ga * ah[i] + (T(1) - ga) * c[i]);
        dga += dt * (ah[i] - c[i]);
        gh[i] = dt * ga;
        dc[i] = dt * (T(1) - ga);
      }
      a.d_ga[k] = dga;
      a.d_gw[k] = dgw;
    }
    allocation_reverse(al, b, G, r);
    for (int64_t h = 0; h < Hw; ++h) {
      const int64_t k = b * Hw + h;
      const T dg = al.grad_gates[k];
      a.d_ga[k] += dg * a.gw[k];
      a.d_gw[k] += dg * a.ga[k];
    }
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
