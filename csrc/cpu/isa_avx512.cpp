// CPU kernels for AVX-512 (F, BW, VL, DQ, BF16: Cooper Lake, Sapphire Rapids, Zen 4 and later).
#include <cmath>  // std headers before the target pragma (isa_kernels.h)
#include <cstdint>
#include <type_traits>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c,bmi,bmi2")
#endif
// (other targets: the generic build under this name)
#define ATTNFAST_CPU_ISA avx512
#include "cpu/isa_kernels.h"
