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
