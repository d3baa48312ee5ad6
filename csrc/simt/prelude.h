// SIMT host harness, part 1: the CUDA language as host C++ (tests only; see README.md).
//
// Included first by every harness translation unit (and by hw_emulation.h/launch_emulation.h,
// which csrc/cuda/hw.cuh and launch.cuh include when ATTNFAST_SIMT_HARNESS is defined). It maps
// the CUDA keywords, built-in variables and device intrinsics onto the fiber runtime of
// runtime.h: every CUDA thread of a block is a fiber on the launching OS thread, blocks run one
// after another, and every synchronising intrinsic (__syncthreads, the warp collectives) is a
// scheduling point where the runtime checks the rules a GPU would silently break on.
//
// __shared__ is `thread_local`: at block scope that is static storage shared by all fibers of
// the block (they run on one OS thread) and private to each OS thread that runs launches. It is
// also valid after `extern`, so `extern __shared__ T name[]` (dynamic shared memory) compiles;
// its definition comes from ATTNFAST_SIMT_DEFINE_EXTERN_SHARED (see runtime.h).
#pragma once
#if !defined(ATTNFAST_SIMT_HARNESS)
#error "csrc/simt/ is the SIMT host harness: compile it with -DATTNFAST_SIMT_HARNESS"
#endif
#if defined(__CUDACC__)
#error "the SIMT harness is host C++: compile it with the host compiler, not nvcc"
#endif

// Defined before the CUDA headers, which keep existing definitions of these (and #undef'd first
// in case a CUDA header was included already).
#undef __host__
#undef __device__
#undef __global__
#undef __noinline__
#undef __launch_bounds__
#undef __grid_constant__
#undef __managed__
#define __host__
#define __device__
#define __global__
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __grid_constant__
#define __managed__
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#undef __shared__
#define __shared__ thread_local
#undef __constant__
#define __constant__ static
#undef __forceinline__
#define __forceinline__ inline __attribute__((always_inline))

#include "simt/runtime.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

inline constexpr int warpSize = 32;

// ---- block synchronisation ----------------------------------------------------------------------
inline void __syncthreads() { ::attnfast::simt::syncthreads(0, nullptr); }
inline int __syncthreads_count(int pred) {
  int n = 0;
  ::attnfast::simt::syncthreads(pred != 0, &n);
  return n;
}
inline int __syncthreads_and(int pred) {
  int n = 0;
  ::attnfast::simt::syncthreads(pred != 0, &n);
  return n == ::attnfast::simt::block_threads();
}
inline int __syncthreads_or(int pred) {
  int n = 0;
  ::attnfast::simt::syncthreads(pred != 0, &n);
  return n != 0;
}
// Fibers run one at a time on one OS thread: every store is visible at the next scheduling point.
inline void __threadfence() {}
inline void __threadfence_block() {}
inline void __threadfence_system() {}
[[noreturn]] inline void __trap() { ::attnfast::simt::fail("__trap() called"); }
inline void __brkpt() { ::attnfast::simt::fail("__brkpt() called"); }
inline void __nanosleep(unsigned) {}

// ---- warp collectives ---------------------------------------------------------------------------
inline unsigned __activemask() { return ::attnfast::simt::active_mask(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::attnfast::simt::warp_collective(mask, ::attnfast::simt::WarpOp::syncwarp, nullptr,
                                    [](void* const*, unsigned) {});
}

namespace attnfast {
namespace simt {
// One lane's part of a shuffle: its value and the lane it reads (or -1: keep its own value).
template <typename T>
struct ShflSlot {
  T value;
  int src;
  T result;
};
template <typename T>
inline T shfl_impl(unsigned mask, T var, int src, const char* name) {
  static_assert(std::is_trivially_copyable<T>::value, "shuffled types must be trivially copyable");
  ShflSlot<T> me{var, src, var};
  warp_collective(mask, WarpOp::shfl, &me, [name](void* const* slots, unsigned participants) {
    for (int l = 0; l < 32; ++l) {
      if (!(participants >> l & 1u)) continue;
      auto* s = static_cast<ShflSlot<T>*>(slots[l]);
      if (s->src < 0 || s->src == l) continue;
      if (!(participants >> s->src & 1u))
        fail(std::string(name) + ": lane " + std::to_string(l) + " reads lane " +
             std::to_string(s->src) + ", which is not in the mask / not active");
      s->result = static_cast<ShflSlot<T>*>(slots[s->src])->value;
    }
  });
  return me.result;
}
inline int shfl_width_check(int width) {
  if (width <= 0 || width > 32 || (width & (width - 1)) != 0)
    fail("shuffle width must be a power of two in [1, 32], got " + std::to_string(width));
  return width;
}
}  // namespace simt
}  // namespace attnfast

template <typename T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize) {
  using namespace ::attnfast::simt;
  const int w = shfl_width_check(width), l = static_cast<int>(lane_id());
  return shfl_impl(mask, var, (l & ~(w - 1)) + (src_lane & (w - 1)), "__shfl_sync");
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {
  using namespace ::attnfast::simt;
  const int w = shfl_width_check(width), l = static_cast<int>(lane_id());
  int src = l ^ lane_mask;
  if (src >= (l & ~(w - 1)) + w || src > 31) src = -1;  // a later segment: own value
  return shfl_impl(mask, var, src, "__shfl_xor_sync");
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  using namespace ::attnfast::simt;
  const int w = shfl_width_check(width), l = static_cast<int>(lane_id());
  const int src = (l & (w - 1)) + static_cast<int>(delta) < w ? l + static_cast<int>(delta) : -1;
  return shfl_impl(mask, var, src, "__shfl_down_sync");
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  using namespace ::attnfast::simt;
  const int w = shfl_width_check(width), l = static_cast<int>(lane_id());
  const int src = (l & (w - 1)) >= static_cast<int>(delta) ? l - static_cast<int>(delta) : -1;
  return shfl_impl(mask, var, src, "__shfl_up_sync");
}

namespace attnfast {
namespace simt {
struct VoteSlot {
  int pred;
  unsigned result;
};
inline unsigned ballot_impl(unsigned mask, int pred) {
  VoteSlot me{pred != 0, 0u};
  warp_collective(mask, WarpOp::vote, &me, [](void* const* slots, unsigned participants) {
    unsigned b = 0;
    for (int l = 0; l < 32; ++l)
      if ((participants >> l & 1u) && static_cast<VoteSlot*>(slots[l])->pred) b |= 1u << l;
    for (int l = 0; l < 32; ++l)
      if (participants >> l & 1u) static_cast<VoteSlot*>(slots[l])->result = b;
  });
  return me.result;
}
}  // namespace simt
}  // namespace attnfast

inline unsigned __ballot_sync(unsigned mask, int pred) {
  return ::attnfast::simt::ballot_impl(mask, pred);
}
inline int __any_sync(unsigned mask, int pred) {
  return ::attnfast::simt::ballot_impl(mask, pred) != 0;
}
inline int __all_sync(unsigned mask, int pred) {
  return ::attnfast::simt::ballot_impl(mask, pred) == (mask & ::attnfast::simt::active_mask());
}
template <typename T>
inline T attnfast_simt_reduce_(unsigned mask, T v, int op) {
  using namespace ::attnfast::simt;
  ShflSlot<T> me{v, op, v};
  warp_collective(mask, WarpOp::reduce, &me, [](void* const* slots, unsigned participants) {
    bool first = true;
    T acc{};
    int kind = 0;
    for (int l = 0; l < 32; ++l) {
      if (!(participants >> l & 1u)) continue;
      auto* s = static_cast<ShflSlot<T>*>(slots[l]);
      kind = s->src;
      if (first) acc = s->value, first = false;
      else if (kind == 0) acc = acc + s->value;
      else if (kind == 1) acc = s->value < acc ? s->value : acc;
      else if (kind == 2) acc = s->value > acc ? s->value : acc;
      else if (kind == 3) acc = acc & s->value;
      else if (kind == 4) acc = acc | s->value;
      else acc = acc ^ s->value;
    }
    for (int l = 0; l < 32; ++l)
      if (participants >> l & 1u) static_cast<ShflSlot<T>*>(slots[l])->result = acc;
  });
  return me.result;
}
inline unsigned __reduce_add_sync(unsigned m, unsigned v) { return attnfast_simt_reduce_(m, v, 0); }
inline int __reduce_add_sync(unsigned m, int v) { return attnfast_simt_reduce_(m, v, 0); }
inline unsigned __reduce_min_sync(unsigned m, unsigned v) { return attnfast_simt_reduce_(m, v, 1); }
inline int __reduce_min_sync(unsigned m, int v) { return attnfast_simt_reduce_(m, v, 1); }
inline unsigned __reduce_max_sync(unsigned m, unsigned v) { return attnfast_simt_reduce_(m, v, 2); }
inline int __reduce_max_sync(unsigned m, int v) { return attnfast_simt_reduce_(m, v, 2); }
inline unsigned __reduce_and_sync(unsigned m, unsigned v) { return attnfast_simt_reduce_(m, v, 3); }
inline unsigned __reduce_or_sync(unsigned m, unsigned v) { return attnfast_simt_reduce_(m, v, 4); }
inline unsigned __reduce_xor_sync(unsigned m, unsigned v) { return attnfast_simt_reduce_(m, v, 5); }

// ---- atomics (relaxed host atomics: other OS threads may run other launches) --------------------
#define ATTNFAST_SIMT_ATOMIC_RMW(NAME, EXPR)                                            \
  template <typename T>                                                                 \
  inline T NAME(T* address, T val) {                                                    \
    T old = __atomic_load_n(address, __ATOMIC_RELAXED);                                 \
    for (;;) {                                                                          \
      const T a = old;                                                                  \
      const T desired = (EXPR);                                                         \
      if (__atomic_compare_exchange(address, &old, &desired, false, __ATOMIC_RELAXED,   \
                                    __ATOMIC_RELAXED))                                  \
        return old;                                                                     \
    }                                                                                   \
  }
ATTNFAST_SIMT_ATOMIC_RMW(atomicAdd, a + val)
ATTNFAST_SIMT_ATOMIC_RMW(atomicSub, a - val)
ATTNFAST_SIMT_ATOMIC_RMW(atomicMin, val < a ? val : a)
ATTNFAST_SIMT_ATOMIC_RMW(atomicMax, val > a ? val : a)
ATTNFAST_SIMT_ATOMIC_RMW(atomicAnd, a & val)
ATTNFAST_SIMT_ATOMIC_RMW(atomicOr, a | val)
ATTNFAST_SIMT_ATOMIC_RMW(atomicXor, a ^ val)
ATTNFAST_SIMT_ATOMIC_RMW(atomicExch, (static_cast<void>(a), val))
ATTNFAST_SIMT_ATOMIC_RMW(atomicInc, (a >= val) ? T(0) : T(a + 1))
ATTNFAST_SIMT_ATOMIC_RMW(atomicDec, (a == T(0) || a > val) ? val : T(a - 1))
#undef ATTNFAST_SIMT_ATOMIC_RMW
template <typename T>
inline T atomicCAS(T* address, T compare, T val) {
  T old = compare;
  __atomic_compare_exchange(address, &old, &val, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return old;
}
#define atomicAdd_block atomicAdd
#define atomicMax_block atomicMax
#define atomicMin_block atomicMin

// ---- integer and bit intrinsics ------------------------------------------------------------------
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) {
  return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x));
}
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
  return __builtin_bswap32(x);
}
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  const unsigned long long v = (static_cast<unsigned long long>(y) << 32) | x;
  unsigned r = 0;
  for (int i = 0; i < 4; ++i) r |= static_cast<unsigned>((v >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
  return r;
}
inline unsigned __umulhi(unsigned a, unsigned b) {
  return static_cast<unsigned>((static_cast<unsigned long long>(a) * b) >> 32);
}
inline int __mulhi(int a, int b) {
  return static_cast<int>((static_cast<long long>(a) * b) >> 32);
}
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return static_cast<unsigned long long>((static_cast<unsigned __int128>(a) * b) >> 64);
}
inline int __mul24(int a, int b) { return (a << 8 >> 8) * (b << 8 >> 8); }
inline unsigned __umul24(unsigned a, unsigned b) { return (a & 0xffffffu) * (b & 0xffffffu); }
inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned s) {
  s &= 31;
  return s == 0 ? hi : (hi << s) | (lo >> (32 - s));
}
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned s) {
  s &= 31;
  return s == 0 ? lo : (lo >> s) | (hi << (32 - s));
}

// ---- bit casts and float intrinsics --------------------------------------------------------------
template <typename To, typename From>
inline To attnfast_simt_bitcast_(From f) {
  static_assert(sizeof(To) == sizeof(From), "bit cast size");
  To t;
  std::memcpy(&t, &f, sizeof t);
  return t;
}
inline unsigned __float_as_uint(float x) { return attnfast_simt_bitcast_<unsigned>(x); }
inline int __float_as_int(float x) { return attnfast_simt_bitcast_<int>(x); }
inline float __uint_as_float(unsigned x) { return attnfast_simt_bitcast_<float>(x); }
inline float __int_as_float(int x) { return attnfast_simt_bitcast_<float>(x); }
inline long long __double_as_longlong(double x) { return attnfast_simt_bitcast_<long long>(x); }
inline double __longlong_as_double(long long x) { return attnfast_simt_bitcast_<double>(x); }

// Fast-math intrinsics: computed accurately on the host (the GPU's are within a few ulp).
inline float __expf(float x) { return std::exp(x); }
inline float __exp10f(float x) { return std::pow(10.0f, x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __log10f(float x) { return std::log10(x); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanf(float x) { return std::tan(x); }
inline void __sincosf(float x, float* s, float* c) { *s = std::sin(x), *c = std::cos(x); }
inline void sincosf(float x, float* s, float* c) { *s = std::sin(x), *c = std::cos(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __frsqrt_rn(float x) { return 1.0f / std::sqrt(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float rcbrtf(float x) { return 1.0f / std::cbrt(x); }
inline float exp10f(float x) { return std::pow(10.0f, x); }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : (x == x ? x : 0.f)); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float normcdff(float x) { return 0.5f * std::erfc(-x * 0.70710678118654752f); }
inline int __float2int_rn(float x) { return static_cast<int>(std::nearbyint(x)); }
inline int __float2int_rz(float x) { return static_cast<int>(x); }
inline int __float2int_rd(float x) { return static_cast<int>(std::floor(x)); }
inline int __float2int_ru(float x) { return static_cast<int>(std::ceil(x)); }
inline unsigned __float2uint_rn(float x) { return static_cast<unsigned>(std::nearbyint(x)); }
inline float __int2float_rn(int x) { return static_cast<float>(x); }
inline float __uint2float_rn(unsigned x) { return static_cast<float>(x); }

// CUDA's overloaded min/max (device code has them for every arithmetic type).
template <typename A, typename B,
          typename = std::enable_if_t<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value>>
inline std::common_type_t<A, B> min(A a, B b) {
  using R = std::common_type_t<A, B>;
  return static_cast<R>(b) < static_cast<R>(a) ? static_cast<R>(b) : static_cast<R>(a);
}
template <typename A, typename B,
          typename = std::enable_if_t<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value>>
inline std::common_type_t<A, B> max(A a, B b) {
  using R = std::common_type_t<A, B>;
  return static_cast<R>(a) < static_cast<R>(b) ? static_cast<R>(b) : static_cast<R>(a);
}

// Cache-hinted loads and stores: plain accesses.
template <typename T> inline T __ldg(const T* p) { return *p; }
template <typename T> inline T __ldcg(const T* p) { return *p; }
template <typename T> inline T __ldca(const T* p) { return *p; }
template <typename T> inline T __ldcs(const T* p) { return *p; }
template <typename T> inline T __ldlu(const T* p) { return *p; }
template <typename T> inline T __ldcv(const T* p) { return *p; }
template <typename T> inline void __stcg(T* p, T v) { *p = v; }
template <typename T> inline void __stcs(T* p, T v) { *p = v; }
template <typename T> inline void __stwb(T* p, T v) { *p = v; }
template <typename T> inline void __stwt(T* p, T v) { *p = v; }

inline long long clock64() { return ::attnfast::simt::clock_ticks(); }
