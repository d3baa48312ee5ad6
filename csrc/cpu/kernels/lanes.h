// Fixed-width lanes for hand-vectorised CPU loops: GCC/Clang vector extensions, 64 bytes wide.
// Under the avx512 target one lane vector is one zmm register; avx2 and the base build lower it to
// two ymm or four xmm operations, so the same source serves every ISA level (csrc/cpu/isa.h).
// Used where `#pragma omp simd` falls short: loops with several reductions, which GCC keeps in
// stack arrays ("omp simd arrays") instead of registers.
//
// Loop bodies are written once as templates over the lane type X, which is either the scalar T
// (for the tail, j >= N - N % lanes) or Lanes<T>::V; the helpers below take both.
// Included inside namespace attnfast::cpu::<isa> (no include guard, like the *_impl.h files).

// Passing 64-byte vectors by value is an ABI change below avx512 (GCC says so with -Wpsabi, at
// every loop body that takes lanes); the bodies are always inlined into one function per ISA, so no
// vector crosses a call boundary. Silenced for the rest of the including (per-ISA) file.
#pragma GCC diagnostic ignored "-Wpsabi"

template <typename T>
struct Lanes;

template <>
struct Lanes<float> {
  typedef float V __attribute__((vector_size(64)));
  using Int = int32_t;  // lane index type, as wide as the element
  typedef Int Index __attribute__((vector_size(64)));
  static constexpr int64_t n = 16;
};

template <>
struct Lanes<double> {
  typedef double V __attribute__((vector_size(64)));
  using Int = int64_t;
  typedef Int Index __attribute__((vector_size(64)));
  static constexpr int64_t n = 8;
};

template <typename X, typename T>
ATTNFAST_INLINE X lanes_load(const T* p) {
  if constexpr (sizeof(X) == sizeof(T)) {
    return *p;
  } else {
    X v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
  }
}

template <typename X, typename T>
ATTNFAST_INLINE void lanes_store(T* p, X v) {
  if constexpr (sizeof(X) == sizeof(T)) {
    *p = v;
  } else {
    __builtin_memcpy(p, &v, sizeof v);
  }
}

// Every lane = s (for the scalar lane type: s itself).
template <typename X, typename T>
ATTNFAST_INLINE X lanes_splat(T s) {
  return X{} + s;
}

template <typename T, typename X>
ATTNFAST_INLINE T lanes_sum(X v) {
  if constexpr (sizeof(X) == sizeof(T)) {
    return v;
  } else {
    T s = 0;
    for (int64_t k = 0; k < Lanes<T>::n; ++k) s += v[k];
    return s;
  }
}

// v with the lane that holds element `skip` set to 0 (lanes hold elements j, j + 1, ...).
template <typename T, typename X>
ATTNFAST_INLINE X lanes_zero_at(X v, int64_t j, int64_t skip) {
  if constexpr (sizeof(X) == sizeof(T)) {
    return j != skip ? v : T(0);
  } else {
    if (skip < j || skip >= j + Lanes<T>::n) return v;
    using Int = typename Lanes<T>::Int;
    typename Lanes<T>::Index lane;
    for (int64_t k = 0; k < Lanes<T>::n; ++k) lane[k] = static_cast<Int>(k);
    return lane != static_cast<Int>(skip - j) ? v : X{};
  }
}

// Software prefetch kPrefetchBytes ahead of a streamed array (for writing too: the line is then
// owned before the store). The hardware prefetchers stop at 4 KiB pages, and the link loops stream
// N x N arrays a row (2 KiB at N = 512) at a time; measured on this project's 2-core machine,
// prefetching 4 KiB ahead took the link backward from 4.4 to 3.5 ms at B = 16, N = 512 on one
// thread. A prefetch past the end of an array is harmless (it never faults). Scalar lanes (the
// tail) do not prefetch.
constexpr int64_t kPrefetchBytes = 4096;

template <typename X, typename T>
ATTNFAST_INLINE void lanes_prefetch(const T* p, bool for_write = false) {
  if constexpr (sizeof(X) != sizeof(T)) {
    if (for_write)
      __builtin_prefetch(p + kPrefetchBytes / sizeof(T), 1);
    else
      __builtin_prefetch(p + kPrefetchBytes / sizeof(T), 0);
  }
}

// Pairwise horizontal add of two lane vectors: [a0+a1, a2+a3, ..., b0+b1, b2+b3, ...].
template <typename T>
ATTNFAST_INLINE typename Lanes<T>::V lanes_hadd(typename Lanes<T>::V a, typename Lanes<T>::V b) {
  using Int = typename Lanes<T>::Int;
  typename Lanes<T>::Index even, odd;
  for (int64_t k = 0; k < Lanes<T>::n; ++k) {
    even[k] = static_cast<Int>(2 * k);
    odd[k] = static_cast<Int>(2 * k + 1);
  }
#if defined(__clang__)
  typename Lanes<T>::V e, o;
  for (int64_t k = 0; k < Lanes<T>::n; ++k) {
    e[k] = even[k] < Lanes<T>::n ? a[even[k]] : b[even[k] - Lanes<T>::n];
    o[k] = odd[k] < Lanes<T>::n ? a[odd[k]] : b[odd[k] - Lanes<T>::n];
  }
  return e + o;
#else
  return __builtin_shuffle(a, b, even) + __builtin_shuffle(a, b, odd);
#endif
}

// For r < nrows <= lanes: norms[r] = rows[r * ld, :W] . rows[r * ld, :W] (when norms is not
// null) and out[h][r] = rows[r * ld, :W] . keys[h][:W] for the four keys. Each row is read once
// for all of them (the rows stream from L2; one pass per key made the dots bandwidth-bound), into
// a lane-vector accumulator per (row, key); then one tree of pairwise horizontal adds per key
// (log2(lanes) levels) leaves row r's sum in lane r -- about three vector operations per dot
// instead of a horizontal reduction each, which dominated dots as short as W = 64.
template <typename T>
ATTNFAST_INLINE void lanes_dot_rows4(const T* rows, int64_t ld, int64_t nrows, const T* const* keys,
                                     int64_t W, T* norms, T* const* out) {
  using V = typename Lanes<T>::V;
  constexpr int64_t n = Lanes<T>::n;
  V acc[5][n];
  T tail[5][n];
  for (int64_t h = 0; h < 5; ++h)
    for (int64_t r = 0; r < n; ++r) {
      acc[h][r] = V{};
      tail[h][r] = 0;
    }
  const int64_t wv = W - W % n;
  for (int64_t r = 0; r < nrows; ++r) {
    const T* row = rows + r * ld;
    V a0{}, a1{}, a2{}, a3{}, an{};
    for (int64_t c = 0; c < wv; c += n) {
      const V x = lanes_load<V>(row + c);
      an += x * x;
      a0 += x * lanes_load<V>(keys[0] + c);
      a1 += x * lanes_load<V>(keys[1] + c);
      a2 += x * lanes_load<V>(keys[2] + c);
      a3 += x * lanes_load<V>(keys[3] + c);
    }
    acc[0][r] = a0;
    acc[1][r] = a1;
    acc[2][r] = a2;
    acc[3][r] = a3;
    acc[4][r] = an;
    for (int64_t c = wv; c < W; ++c) {
      for (int64_t h = 0; h < 4; ++h) tail[h][r] += row[c] * keys[h][c];
      tail[4][r] += row[c] * row[c];
    }
  }
  for (int64_t h = 0; h < 5; ++h) {
    if (h == 4 && norms == nullptr) break;
    for (int64_t width = n; width > 1; width /= 2)
      for (int64_t k = 0; k < width / 2; ++k) acc[h][k] = lanes_hadd<T>(acc[h][2 * k], acc[h][2 * k + 1]);
    T* dst = h < 4 ? out[h] : norms;
    for (int64_t r = 0; r < nrows; ++r) dst[r] = acc[h][0][r] + tail[h][r];
  }
}

// dots[h * ldd + i] = rows[i * ld, :W] . keys[h * W, :W] for i < nrows, h < H, and, when norms is
// not null, norms[i] = rows[i * ld, :W] . rows[i * ld, :W] (also when H = 0). Rows go lanes-many
// and keys four at a time through lanes_dot_rows4, each row read once per group of four keys; the
// padded keys of the last group re-read a real key and write to a stack sink.
template <typename T>
void lanes_dot_rows_keys(const T* rows, int64_t ld, int64_t nrows, const T* keys, int64_t H,
                         int64_t W, T* norms, T* dots, int64_t ldd) {
  constexpr int64_t n = Lanes<T>::n;
  T sink[n];
  for (int64_t g = 0; g < H || (g == 0 && norms != nullptr); g += 4) {
    const T* key[4];
    for (int64_t h = 0; h < 4; ++h) key[h] = g + h < H ? keys + (g + h) * W : (H > 0 ? keys : rows);
    for (int64_t i0 = 0; i0 < nrows; i0 += n) {
      const int64_t nr = nrows - i0 < n ? nrows - i0 : n;
      T* out[4];
      for (int64_t h = 0; h < 4; ++h) out[h] = g + h < H ? dots + (g + h) * ldd + i0 : sink;
      lanes_dot_rows4(rows + i0 * ld, ld, nr, key, W, g == 0 && norms ? norms + i0 : nullptr, out);
    }
  }
}
