// Memory addressing CPU loops, included once per ISA inside namespace attnfast::cpu::<isa>
// (csrc/cpu/memory_isa_*.cpp). Inner loops run over contiguous rows (N or W) with
// `#pragma omp simd`; the per-element formulas are csrc/common/memory_math.h's. Accumulations
// are in T (float32 or float64), like the reference's. No include guard on purpose.

namespace mm = ::attnfast::memory;

// ---- stable argsort (bottom-up merge sort; ties keep the lower index first, like torch's
// stable sort). Insertion sort on runs of 16, then merges: O(N log N), no allocation.
template <typename T>
int32_t* stable_argsort(const T* key, int32_t* idx, int32_t* tmp, int64_t n) {
  const int64_t run = 16;
  for (int64_t lo = 0; lo < n; lo += run) {
    const int64_t hi = lo + run < n ? lo + run : n;
    for (int64_t i = lo; i < hi; ++i) {
      const int32_t v = static_cast<int32_t>(i);
      int64_t j = i;
      while (j > lo && key[v] < key[idx[j - 1]]) {  // strict: equal keys stay in index order
        idx[j] = idx[j - 1];
        --j;
      }
      idx[j] = v;
    }
  }
  int32_t* src = idx;
  int32_t* dst = tmp;
  for (int64_t width = run; width < n; width *= 2) {
    for (int64_t lo = 0; lo < n; lo += 2 * width) {
      const int64_t mid = lo + width < n ? lo + width : n;
      const int64_t hi = lo + 2 * width < n ? lo + 2 * width : n;
      int64_t l = lo, r = mid, o = lo;
      while (l < mid && r < hi) dst[o++] = key[src[r]] < key[src[l]] ? src[r++] : src[l++];
      while (l < mid) dst[o++] = src[l++];
      while (r < hi) dst[o++] = src[r++];
    }
    int32_t* t = src;
    src = dst;
    dst = t;
  }
  return src;  // idx or tmp, whichever holds the result
}

template <typename T>
ATTNFAST_INLINE T dot_row(const T* a, const T* b, int64_t n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// ---- content addressing ----------------------------------------------------------------------

template <typename T>
void content_forward_impl(const ContentArgs<T>& a, int64_t b0, int64_t b1) {
  const int64_t N = a.N, W = a.W, H = a.H;
  for (int64_t b = b0; b < b1; ++b) {
    const T* mem = a.memory + b * N * W;
    T* mnorm = a.scratch + b * a.scratch_stride;
    for (int64_t i = 0; i < N; ++i) mnorm[i] = mm::norm_eps(dot_row(mem + i * W, mem + i * W, W), a.eps);
    for (int64_t h = 0; h < H; ++h) {
      const T* key = a.keys + (b * H + h) * W;
      const T beta = a.strengths[b * H + h];
      const T knorm = mm::norm_eps(dot_row(key, key, W), a.eps);
      T* out = a.weights + (b * H + h) * N;
      T mx = -INFINITY;
      for (int64_t i = 0; i < N; ++i) {
        const T z = beta * mm::cosine(dot_row(key, mem + i * W, W), knorm, mnorm[i], a.eps);
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
    T* ddot = cm + N;          // (H, N)
    for (int64_t i = 0; i < N; ++i) {
      mnorm[i] = mm::norm_eps(dot_row(mem + i * W, mem + i * W, W), a.eps);
      cm[i] = 0;
    }
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
      for (int64_t i = 0; i < N; ++i) {
        const T* row = mem + i * W;
        const T D = knorm * mnorm[i] + a.eps;
        const T sim = dot_row(key, row, W) / D;
        const T gs = w[i] * (g[i] - gw);
        gbeta += gs * sim;
        const T gsim = beta * gs;
        const T gdot = gsim / D;
        const T gD = -gsim * sim / D;
        dd[i] = gdot;
        cm[i] += gD * knorm;
        dD_mnorm += gD * mnorm[i];
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

// One pass over each link row i: the new row (kept in L1 while the R reads use it), forward
// read f[i] = row . rw (a reduction), backward read b += rw[i] row (an axpy over j).
template <typename T>
void link_forward_impl(const LinkArgs<T>& a, int64_t b0, int64_t b1) {
  const int64_t N = a.N, Hw = a.Hw, R = a.R;
  for (int64_t b = b0; b < b1; ++b) {
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
      for (int64_t r = 0; r < R; ++r) {
        T* bk = a.bwd + ((b * R + r) * Hw + h) * N;
        for (int64_t j = 0; j < N; ++j) bk[j] = 0;
      }
      for (int64_t i = 0; i < N; ++i) {
        const T* row = L + i * N;
        T* nrow = NL + i * N;
        const T wi = w[i];
#pragma omp simd
        for (int64_t j = 0; j < N; ++j) nrow[j] = mm::link_update(row[j], wi, w[j], p[j]);
        nrow[i] = 0;
        for (int64_t r = 0; r < R; ++r) {
          const T* rw = a.rw + (b * R + r) * N;
          T* bk = a.bwd + ((b * R + r) * Hw + h) * N;
          a.fwd[((b * R + r) * Hw + h) * N + i] = dot_row(nrow, rw, N);
          const T ri = rw[i];
#pragma omp simd
          for (int64_t j = 0; j < N; ++j) bk[j] += ri * nrow[j];
        }
      }
    }
  }
}

// Backward, row by row, recomputing the new row: G = total gradient on new_link[i, :]
// (= g_link + sum_r g_fwd[r, i] rw_r + rw_r[i] g_bwd_r, zero on the diagonal), then
// d link = G (1 - w_i - w_j), d w_i += G . (p - L_i), d w_j -= G_j L_ij, d p_j += G_j w_i, and the
// reads: d rw_r += g_fwd[r, i] new_row, d rw_r[i] += new_row . g_bwd_r.
template <typename T>
void link_backward_impl(const LinkArgs<T>& a, int64_t b0, int64_t b1) {
  const int64_t N = a.N, Hw = a.Hw, R = a.R;
  for (int64_t b = b0; b < b1; ++b) {
    T* G = a.scratch + b * a.scratch_stride;
    T* nrow = G + N;
    T* drw_b = a.d_rw + b * R * N;
    for (int64_t k = 0; k < R * N; ++k) drw_b[k] = 0;
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
        const T* row = L + i * N;
        const T* grow = gL + i * N;
        T* drow = dL + i * N;
        const T wi = w[i];
#pragma omp simd
        for (int64_t j = 0; j < N; ++j) {
          G[j] = grow[j];
          nrow[j] = mm::link_update(row[j], wi, w[j], p[j]);
        }
        nrow[i] = 0;
        for (int64_t r = 0; r < R; ++r) {
          const int64_t o = ((b * R + r) * Hw + h) * N;
          const T* rw = a.rw + (b * R + r) * N;
          const T* gb = a.g_bwd + o;
          const T gf = a.g_fwd[o + i];
          const T ri = rw[i];
          T* drw = drw_b + r * N;
#pragma omp simd
          for (int64_t j = 0; j < N; ++j) {
            G[j] += gf * rw[j] + ri * gb[j];
            drw[j] += gf * nrow[j];
          }
          drw[i] += dot_row(nrow, gb, N);
        }
        G[i] = 0;
        T dwi = 0;
#pragma omp simd reduction(+ : dwi)
        for (int64_t j = 0; j < N; ++j) {
          drow[j] = G[j] * (T(1) - wi - w[j]);
          dwi += G[j] * (p[j] - row[j]);
          dw[j] -= G[j] * row[j];
          dp[j] += G[j] * wi;
        }
        dw[i] += dwi;
      }
    }
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
