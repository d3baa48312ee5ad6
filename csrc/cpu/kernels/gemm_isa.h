// Global-scope part of the AVX-512 GEMM kernels, included by cpu/isa_kernels.h before it opens
// its per-ISA namespace: decides from ATTNFAST_CPU_ISA (set by each isa_*.cpp) whether this TU
// compiles the intrinsics kernels, and includes <immintrin.h> there.
//
// Why not `#ifdef __AVX512F__`: g++ does not update the predefined ISA macros for a
// `#pragma GCC target` (isa_avx512.cpp turns AVX-512 on with the pragma, not with -m flags),
// so the TU is recognised by its ATTNFAST_CPU_ISA name instead. The immintrin intrinsics are
// always_inline `gnu_inline` functions: nothing from this header is emitted out of line, so no
// AVX-512 code can be merged by the linker into the base/avx2 TUs.
#pragma once

#define ATTNFAST_CPU_ISA_LEVEL_base 0
#define ATTNFAST_CPU_ISA_LEVEL_avx2 1
#define ATTNFAST_CPU_ISA_LEVEL_avx512 2
#define ATTNFAST_CPU_ISA_LEVEL_CAT(prefix, isa) prefix##isa
#define ATTNFAST_CPU_ISA_LEVEL_OF(isa) ATTNFAST_CPU_ISA_LEVEL_CAT(ATTNFAST_CPU_ISA_LEVEL_, isa)

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    ATTNFAST_CPU_ISA_LEVEL_OF(ATTNFAST_CPU_ISA) == 2
#define ATTNFAST_CPU_GEMM_AVX512 1
#include <immintrin.h>
#else
#define ATTNFAST_CPU_GEMM_AVX512 0
#endif
