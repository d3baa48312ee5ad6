// CPU kernels for AVX2 + FMA + F16C (Haswell / Zen 1 and later).
#include <cmath>  // std headers before the target pragma (isa_kernels.h)
#include <cstdint>
#include <type_traits>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx2,fma,f16c,bmi,bmi2")
#endif
// (other targets: the generic build under this name)
#define ATTNFAST_CPU_ISA avx2
#include "cpu/isa_kernels.h"
