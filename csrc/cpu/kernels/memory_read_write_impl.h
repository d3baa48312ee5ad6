// Memory write (erase / add) and read CPU loops. Part of memory_impl.h (included once per ISA, no
// include guard).

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

// ---- DNC read: read-mode mix + read -------------------------------------------------------------

// rw[r] = (pi_c c + sum_h pi_f,h f_h) + sum_h pi_b,h b_h for batch element b, in the reference's
// order (the two sums over heads in head order, then added to the content term).
template <typename T>
void read_mix_weights(const ReadMixArgs<T>& a, int64_t b, T* rw) {
  const int64_t N = a.read.N, R = a.read.R, Hw = a.Hw, M = 1 + 2 * Hw;
  for (int64_t r = 0; r < R; ++r) {
    const int64_t br = b * R + r;
    const T* mode = a.mode + br * M;
    const T* c = a.content + br * N;
    T* out = rw + r * N;
    const T pc = mode[2 * Hw];
    for (int64_t i = 0; i < N; ++i) {
      T f = 0, k = 0;
      for (int64_t h = 0; h < Hw; ++h) {
        f += mode[Hw + h] * a.fwd[(br * Hw + h) * N + i];
        k += mode[h] * a.bwd[(br * Hw + h) * N + i];
      }
      out[i] = (pc * c[i] + f) + k;
    }
  }
}

template <typename T>
void read_mix_forward_impl(const ReadMixArgs<T>& a, int64_t b0, int64_t b1) {
  const int64_t N = a.read.N, R = a.read.R;
  for (int64_t b = b0; b < b1; ++b) {
    read_mix_weights(a, b, a.rw + b * R * N);  // the read_weights output
    read_forward_impl(a.read, b, b + 1);
  }
}

// d rw = grad_rw + (the read's d rw); d c = pi_c d rw, d f_h = pi_f,h d rw, d b_h = pi_b,h d rw;
// d pi = the dots of d rw with c, f_h, b_h over the slots.
template <typename T>
void read_mix_backward_impl(const ReadMixArgs<T>& a, int64_t b0, int64_t b1) {
  const int64_t N = a.read.N, R = a.read.R, Hw = a.Hw, M = 1 + 2 * Hw;
  for (int64_t b = b0; b < b1; ++b) {
    read_mix_weights(a, b, a.rw + b * R * N);  // the glue's buffer
    read_backward_impl(a.read, b, b + 1);
    for (int64_t r = 0; r < R; ++r) {
      const int64_t br = b * R + r;
      const T* mode = a.mode + br * M;
      T* drw = a.read.d_rw + br * N;  // the read's d rw, then the total
      const T* g = a.grad_rw + br * N;
#pragma omp simd
      for (int64_t i = 0; i < N; ++i) drw[i] += g[i];
      const T* c = a.content + br * N;
      T* dc = a.d_content + br * N;
      const T pc = mode[2 * Hw];
      T dpc = 0;
#pragma omp simd reduction(+ : dpc)
      for (int64_t i = 0; i < N; ++i) {
        dc[i] = pc * drw[i];
        dpc += drw[i] * c[i];
      }
      a.d_mode[br * M + 2 * Hw] = dpc;
      for (int64_t h = 0; h < Hw; ++h) {
        const int64_t row = (br * Hw + h) * N;
        const T pf = mode[Hw + h], pb = mode[h];
        T dpf = 0, dpb = 0;
#pragma omp simd reduction(+ : dpf, dpb)
        for (int64_t i = 0; i < N; ++i) {
          a.d_fwd[row + i] = pf * drw[i];
          a.d_bwd[row + i] = pb * drw[i];
          dpf += drw[i] * a.fwd[row + i];
          dpb += drw[i] * a.bwd[row + i];
        }
        a.d_mode[br * M + Hw + h] = dpf;
        a.d_mode[br * M + h] = dpb;
      }
    }
  }
}
