// CPU kernels for the x86-64 baseline (SSE2) and for non-x86 targets.
#include <cmath>  // std headers first, as in the other isa_*.cpp (isa_kernels.h)
#include <cstdint>
#include <type_traits>

#define ATTNFAST_CPU_ISA base
#include "cpu/isa_kernels.h"
